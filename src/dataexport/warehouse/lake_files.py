"""The Parquet files an ingest commit adds to the lake: encoded here with pyarrow and put under the pageviews
table's data path (a directory or S3), then registered by the commit with `ducklake_add_data_files`.

Why not DuckDB's own INSERT: it encodes the nested pageview columns at several times pyarrow's cost, and that
encoding was most of a lake commit's CPU (docs/warehouse-interface.md, section 3). The file is written before the
commit that adds it; if the commit is never made, the file is deleted (or, after a crash, left to the orphaned-file
cleanup of maintenance, which only deletes files no snapshot knows).
"""

from __future__ import annotations

import os
import uuid
from contextlib import suppress
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from dataexport.warehouse.embedded.durable import fsync_dir, makedirs_durable
from dataexport.warehouse.schema import FRESH_FILE_OPTIONS, FRESH_FILE_STATISTICS

if TYPE_CHECKING:
    from dataexport.storage.s3 import S3Storage

# As the embedded backend's fresh files (fast to write, merged later), with user_id statistics too: the catalog
# keeps them per file, and the export's slices of a day (LakeSource.row_groups) are cut from them.
LAKE_FILE_OPTIONS = {**FRESH_FILE_OPTIONS, "write_statistics": [*FRESH_FILE_STATISTICS, "user_id"]}


def encode(table: pa.Table) -> pa.Buffer:
    """The table as one Parquet file, in memory."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **LAKE_FILE_OPTIONS)
    return sink.getvalue()


def partition_file(project_id: int, day: date) -> str:
    """A new file's path under the table's data path, hive style: DuckLake reads the partition values from it."""
    return f"project_id={project_id}/session_day={day.isoformat()}/ducklake-{uuid.uuid4()}.parquet"


class LocalTableFiles:
    """The table's files in a directory (a lake whose data path is local)."""

    def __init__(self, table_dir: str) -> None:
        self._root = Path(table_dir)

    def put(self, relative: str, data: pa.Buffer) -> str:
        """Write and fsync the file (and a new partition directory): the catalog commit that follows makes it
        part of the lake, so its bytes must be on disk first. Returns the path to register."""
        path = self._root / relative
        makedirs_durable(path.parent)
        with open(path, "wb") as f:
            f.write(memoryview(data))
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(path.parent)
        return str(path)

    def delete(self, location: str) -> None:
        with suppress(FileNotFoundError):
            os.unlink(location)


class S3TableFiles:
    """The table's files on S3: one PUT each, visible all at once."""

    def __init__(self, table_url: str, storage: S3Storage) -> None:
        self._url = table_url.rstrip("/") + "/"  # s3://bucket/prefix/main/pageviews/
        self._storage = storage  # its prefix is the table's key prefix

    def put(self, relative: str, data: pa.Buffer) -> str:
        self._storage.put_bytes(relative, data.to_pybytes())
        return self._url + relative

    def delete(self, location: str) -> None:
        self._storage.delete(location.removeprefix(self._url))
