"""One run's extraction: job spec -> DuckDB query over the window's Parquet files -> gzip parts on local disk."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from dataexport.domain.enums import DEVICE_IDS_BY_LABEL, DeviceLabel, Format, Scope
from dataexport.domain.fieldspec import FieldSpec
from dataexport.domain.segment_filter import SegmentFilter
from dataexport.warehouse.layout import partition_files
from dataexport.warehouse.query import build_export_query
from dataexport.writers import PartInfo, write_parts

# 32k rows: small enough that batches in flight stay a few MB (10M rows peak at ~400 MB), large enough to
# keep per-batch overhead negligible (it was also faster than 128k in bench/export.py).
BATCH_ROWS = 32 * 1024


@dataclass(frozen=True)
class ExtractionSpec:
    project_id: int
    timezone: str
    scope: Scope
    format: Format
    fields: list[FieldSpec]
    device_label: DeviceLabel
    segment_filter: SegmentFilter | None
    window_start: datetime
    window_end: datetime


def estimate_rows(files: list[str]) -> int:
    """Rows stored in the window's partitions, from Parquet footers only: an upper bound for progress."""
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files) or 1


def extract(
    spec: ExtractionSpec, *, warehouse_root: Path, work_dir: Path, part_max_bytes: int, gzip_level: int,
    threads: int, memory_limit: str = "256MB", ordered: bool = False,
    on_progress: Callable[[float], None] | None = None,
) -> list[PartInfo]:
    files = partition_files(warehouse_root, spec.project_id, spec.window_start, spec.window_end)
    query = build_export_query(
        files=files, project_id=spec.project_id, scope=spec.scope, fields=spec.fields,
        window_start=spec.window_start, window_end=spec.window_end, timezone=spec.timezone,
        device_ids=DEVICE_IDS_BY_LABEL[spec.device_label], segment_filter=spec.segment_filter,
        output="csv" if spec.format is Format.CSV else "jsonl", ordered=ordered,
    )
    estimate = estimate_rows(files) if files else 1

    def progress(rows: int) -> None:
        if on_progress is not None:
            on_progress(min(99.0, 100.0 * rows / estimate))

    work_dir.mkdir(parents=True, exist_ok=True)
    # A bounded memory limit with a spill directory keeps a worker's memory flat whatever the window's size.
    conn = duckdb.connect(config={"threads": threads, "memory_limit": memory_limit,
                                  "temp_directory": str(work_dir / "duckdb-spill")})
    try:
        # A relation streams its result as Arrow batches; execute() would materialise a copy first.
        reader = conn.sql(query.sql, params=query.params).to_arrow_reader(BATCH_ROWS)
        return write_parts(
            reader, fmt=spec.format, columns=query.columns, work_dir=work_dir, part_max_bytes=part_max_bytes,
            gzip_level=gzip_level, threads=threads, on_progress=progress,
        )
    finally:
        conn.close()
