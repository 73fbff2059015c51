"""One run's extraction: job spec -> the warehouse's export stream of the window -> gzip parts on local disk."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from dataexport.domain.enums import DEVICE_IDS_BY_LABEL, DeviceLabel, Format, Scope
from dataexport.domain.fieldspec import FieldSpec
from dataexport.domain.segment_filter import SegmentFilter
from dataexport.warehouse.export_read import ExportRequest, ReadLimits, open_export
from dataexport.writers import PartInfo, write_parts


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


def extract(
    spec: ExtractionSpec,
    *,
    warehouse_root: Path,
    work_dir: Path,
    part_max_bytes: int,
    gzip_level: int,
    threads: int,
    memory_limit: int = 192_000_000,
    ordered: bool = False,
    rows_per_slice: int | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> list[PartInfo]:
    request = ExportRequest(
        project_id=spec.project_id,
        scope=spec.scope,
        fields=spec.fields,
        window_start=spec.window_start,
        window_end=spec.window_end,
        timezone=spec.timezone,
        device_ids=DEVICE_IDS_BY_LABEL[spec.device_label],
        segment_filter=spec.segment_filter,
        output="csv" if spec.format is Format.CSV else "jsonl",
        ordered=ordered,
    )
    work_dir.mkdir(parents=True, exist_ok=True)
    # A bounded memory limit with a spill directory, and slices of whole sessions, keep a worker's memory
    # flat whatever the window's size.
    limits = ReadLimits(
        threads=threads, memory_limit=memory_limit, spill_dir=work_dir / "duckdb-spill", rows_per_slice=rows_per_slice
    )
    with open_export(warehouse_root, request, limits) as stream:

        def progress(rows: int) -> None:
            if on_progress is not None:
                read = max(stream.progress, rows / max(stream.pageviews, 1))  # rows: views; slices: sessions
                on_progress(min(99.0, 100.0 * read))

        return write_parts(
            stream,
            fmt=spec.format,
            columns=stream.columns,
            work_dir=work_dir,
            part_max_bytes=part_max_bytes,
            gzip_level=gzip_level,
            threads=threads,
            on_progress=progress,
        )
