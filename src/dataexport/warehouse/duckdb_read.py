"""The DuckDB connection a read of the warehouse runs on, bounded by the read's limits."""

from __future__ import annotations

import duckdb

from dataexport.warehouse.backend import ReadLimits
from dataexport.warehouse.duckdb_extensions import connect

# How much of a streaming result DuckDB 1.5 computes ahead of the reader. With JSONL lines of every field its
# default (976 KiB) held 170 MB more at the peak than this (1M pageviews, views x all, the read alone: 525 MB
# against 360 MB; a 16 MB buffer 613 MB), for no speed we could tell apart on a noisy machine.
STREAMING_BUFFER = "64KB"


def read_config(limits: ReadLimits) -> dict[str, str | bool | int]:
    """A bounded memory limit with a spill directory: a read's memory stays flat whatever the window's size."""
    return {
        "threads": limits.threads,
        "memory_limit": f"{limits.memory_limit}B",
        "temp_directory": str(limits.spill_dir),
        "preserve_insertion_order": False,
    }


def read_connection(limits: ReadLimits) -> duckdb.DuckDBPyConnection:
    # DuckDB creates its temp directory only when it first spills, and only its last component: a read that spills
    # in a data dir without `work/` yet (an API process's listings) failed with an IO error, as a 500.
    limits.spill_dir.mkdir(parents=True, exist_ok=True)
    conn = connect(config=read_config(limits), extensions=())
    # Set per connection (DuckDB refuses it as a global option).
    conn.execute(f"SET streaming_buffer_size = '{STREAMING_BUFFER}'")
    return conn
