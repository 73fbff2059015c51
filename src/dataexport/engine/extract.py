"""One run's extraction: the warehouse's export stream of the window -> gzip parts on local disk."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dataexport.domain.enums import Format
from dataexport.query.export_read import ExportRequest, open_export
from dataexport.query.export_sql import Output
from dataexport.warehouse.backend import ReadLimits, Warehouse
from dataexport.writers import PartInfo, write_parts


def output_for(fmt: Format) -> Output:
    """What the export query shapes its rows as, for a job's format."""
    return "csv" if fmt is Format.CSV else "jsonl"


def extract(
    request: ExportRequest,
    *,
    fmt: Format,
    warehouse: Warehouse,
    work_dir: Path,
    part_max_bytes: int,
    gzip_level: int,
    threads: int,
    memory_limit: int = 192_000_000,
    rows_per_slice: int | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> list[PartInfo]:
    """Write the rows of `request` (whose output is `output_for(fmt)`) as `fmt` parts in `work_dir`."""
    work_dir.mkdir(parents=True, exist_ok=True)
    # A bounded memory limit with a spill directory, and slices of whole sessions, keep a worker's memory
    # flat whatever the window's size.
    limits = ReadLimits(
        threads=threads, memory_limit=memory_limit, spill_dir=work_dir / "duckdb-spill", rows_per_slice=rows_per_slice
    )
    with open_export(warehouse, request, limits) as stream:

        def progress(rows: int) -> None:
            if on_progress is not None:
                read = max(stream.progress, rows / max(stream.pageviews, 1))  # rows: views; slices: sessions
                on_progress(min(99.0, 100.0 * read))

        return write_parts(
            stream,
            fmt=fmt,
            columns=stream.columns,
            work_dir=work_dir,
            part_max_bytes=part_max_bytes,
            gzip_level=gzip_level,
            threads=threads,
            on_progress=progress,
        )
