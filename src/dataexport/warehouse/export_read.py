"""The warehouse's read side of an export: the rows of one window, streamed as Arrow batches shaped for the format.

A window whose export aggregates per session (scope sessions, or views with session columns or a segment) is
read in slices of whole sessions (slices.py), each a query of its own, one after the other: DuckDB's memory
is then that of one slice whatever the window's size. How many pageviews a slice may hold comes from the
memory limit and the query's width (its number of per-session aggregates); it is measured, not guessed,
by `bench/export.py`. Exports without an aggregate stream in one query.

DuckDB's errors become ours here, with whether a retry can help: an I/O error may pass (a compaction swapped
the partition away while we read it); running out of memory, or any other failure of the same query over
the same data, would happen again, so it fails the run at once, saying what the operator can change.

The mechanics take Parquet files listed by session day; a second warehouse backend reuses them with its own
listing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ByteSize

from dataexport.domain.enums import Scope
from dataexport.domain.fieldspec import FieldSpec
from dataexport.domain.segment_filter import SegmentFilter
from dataexport.errors import ExtractionError, ExtractionOutOfMemory, PermanentExtractionError
from dataexport.warehouse.arrow_stream import stream_arrow
from dataexport.warehouse.layout import partition_files_by_day
from dataexport.warehouse.query import Output, build_export_query, build_pageview_count_query
from dataexport.warehouse.slices import Partition, ReadSlice, RowGroup, SessionSlice, plan_slices

# Cells (rows x columns) of one Arrow batch: 32k rows of a narrow export, fewer of a wide one, so that the
# batches in flight stay a few MB whatever the width (32k rows of every field held 100+ MB more at the peak,
# for no speed), while per-batch overhead stays negligible.
BATCH_CELLS = 256 * 1024
BATCH_ROWS_RANGE = (1024, 32 * 1024)
# Bytes of DuckDB memory a pageview of a slice takes: a base, plus this much per per-session aggregate.
# Fitted on the demo data in bench/export.py (every session field: about 700-900 B a pageview), with room
# for sessions of long lists and for the scan's own buffers (the part of the limit not given to slices).
BYTES_PER_PAGEVIEW = 100
BYTES_PER_AGGREGATE = 20
SLICE_SHARE_OF_MEMORY = 0.5

# How much of a streaming result DuckDB 1.5 computes ahead of the reader. With JSONL lines of every field its
# default (976 KiB) held 170 MB more at the peak than this (1M pageviews, views x all, the read alone: 525 MB
# against 360 MB; a 16 MB buffer 613 MB), for no speed we could tell apart on a noisy machine.
STREAMING_BUFFER = "64KB"


@dataclass(frozen=True)
class ExportRequest:
    """What one export reads: the rows of a window of a project's sessions, as the job asks for them."""

    project_id: int
    scope: Scope
    fields: list[FieldSpec]
    window_start: datetime
    window_end: datetime
    timezone: str
    device_ids: tuple[int, ...] | None
    segment_filter: SegmentFilter | None
    output: Output
    ordered: bool = False


@dataclass(frozen=True)
class ReadLimits:
    threads: int
    memory_limit: int  # DuckDB's, in bytes
    spill_dir: Path
    rows_per_slice: int | None = None  # None: derived from memory_limit and the query's width


class ExportStream:
    """The batches of one export, slice after slice; iterate once. `progress`: the share of slices read (0..1)."""

    def __init__(
        self,
        conn: duckdb.DuckDBPyConnection,
        request: ExportRequest,
        limits: ReadLimits,
        columns: list[str],
        pageviews: int,
        slices: list[ReadSlice],
    ) -> None:
        self.columns = columns
        self.pageviews = pageviews  # in the window (before any segment)
        self.slices = slices
        self.slices_done = 0
        self._conn, self._request, self._limits = conn, request, limits

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        for read in self.slices:
            query = _query(list(read.files), self._request, read.session_slice)
            with _translated(self._limits, self):
                yield from stream_arrow(self._conn, query.sql, query.params, batch_rows(len(query.columns)))
            self.slices_done += 1

    @property
    def progress(self) -> float:
        return self.slices_done / len(self.slices)


def batch_rows(columns: int) -> int:
    low, high = BATCH_ROWS_RANGE
    return max(low, min(high, BATCH_CELLS // max(columns, 1)))


def rows_per_slice(memory_limit: int, session_aggregates: int) -> int:
    """Pageviews one slice may hold under the memory limit (bytes), for a query with this many per-session
    aggregates."""
    per_pageview = BYTES_PER_PAGEVIEW + BYTES_PER_AGGREGATE * session_aggregates
    return max(1, int(memory_limit * SLICE_SHARE_OF_MEMORY / per_pageview))


@contextmanager
def open_export(warehouse_root: Path, request: ExportRequest, limits: ReadLimits) -> Iterator[ExportStream]:
    """The export of `request` from the embedded Parquet warehouse. Raises ValidationFailed on bad input."""
    days = partition_files_by_day(warehouse_root, request.project_id, request.window_start, request.window_end)
    with open_export_of_days(days, request, limits) as stream:
        yield stream


@contextmanager
def open_export_of_days(
    days: list[tuple[date, list[str]]], request: ExportRequest, limits: ReadLimits
) -> Iterator[ExportStream]:
    """The export of `request` over Parquet files listed by session day (in day order)."""
    files = [f for _day, day_files in days for f in day_files]
    query = _query(files, request, None)  # validates the request before anything runs
    conn = duckdb.connect(
        config={
            "threads": limits.threads,
            "memory_limit": f"{limits.memory_limit}B",
            "temp_directory": str(limits.spill_dir),
            "preserve_insertion_order": False,
        }
    )
    try:
        # Set per connection (DuckDB refuses it as a global option).
        conn.execute(f"SET streaming_buffer_size = '{STREAMING_BUFFER}'")
        with _translated(limits):
            rows_by_file = _count_by_file(conn, files, request) if files else {}
        pageviews = sum(rows_by_file.values())
        reads = [ReadSlice(tuple(files), None)]
        if query.session_aggregates > 0:
            per_slice = limits.rows_per_slice or rows_per_slice(limits.memory_limit, query.session_aggregates)
            partitions = _partitions(days, rows_by_file, request, sliced=pageviews > per_slice)
            reads = plan_slices(partitions, rows_per_slice=per_slice, ordered=request.ordered)
        yield ExportStream(conn, request, limits, query.columns, pageviews, reads)
    finally:
        conn.close()


def _partitions(
    days: list[tuple[date, list[str]]], rows_by_file: dict[str, int], request: ExportRequest, *, sliced: bool
) -> list[Partition]:
    out = []
    for day, files in days:
        day_start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        largest = max(files, key=lambda f: rows_by_file.get(f, 0))
        out.append(
            Partition(
                files=tuple(files),
                rows=sum(rows_by_file.get(f, 0) for f in files),
                start=max(day_start, request.window_start),
                end=min(day_start + timedelta(days=1), request.window_end),
                # Only a window that needs slicing pays for reading a footer.
                row_groups=_row_groups(largest) if sliced else (),
            )
        )
    return out


def _row_groups(path: str) -> tuple[RowGroup, ...]:
    """The user_id statistics of each row group of a Parquet file, from its footer."""
    metadata = pq.ParquetFile(path).metadata
    names = [metadata.schema.column(i).path for i in range(metadata.num_columns)]
    if "user_id" not in names:
        return ()
    column = names.index("user_id")
    groups = []
    for i in range(metadata.num_row_groups):
        group = metadata.row_group(i)
        stats = group.column(column).statistics
        known = stats is not None and stats.has_min_max
        groups.append(RowGroup(stats.min if known else None, stats.max if known else None, group.num_rows))
    return tuple(groups)


def _query(files: list[str], request: ExportRequest, session_slice: SessionSlice | None):
    return build_export_query(
        files=files,
        project_id=request.project_id,
        scope=request.scope,
        fields=request.fields,
        window_start=request.window_start,
        window_end=request.window_end,
        timezone=request.timezone,
        device_ids=request.device_ids,
        segment_filter=request.segment_filter,
        output=request.output,
        ordered=request.ordered,
        session_slice=session_slice,
    )


def _count_by_file(conn: duckdb.DuckDBPyConnection, files: list[str], request: ExportRequest) -> dict[str, int]:
    sql, params = build_pageview_count_query(
        files=files,
        project_id=request.project_id,
        window_start=request.window_start,
        window_end=request.window_end,
        device_ids=request.device_ids,
    )
    return {name: int(rows) for name, rows in conn.sql(sql, params=params).fetchall()}


@contextmanager
def _translated(limits: ReadLimits, stream: ExportStream | None = None) -> Iterator[None]:
    try:
        yield
    except duckdb.OutOfMemoryException as exc:
        raise ExtractionOutOfMemory(_out_of_memory_message(limits, stream)) from exc
    except (duckdb.IOException, duckdb.InterruptException) as exc:
        raise ExtractionError(f"Reading the window's pageviews failed: {exc}") from exc
    except duckdb.Error as exc:
        raise PermanentExtractionError(f"The export query failed: {exc}") from exc
    except OSError as exc:
        # A failure after the first batch reaches us through pyarrow's reader as an OSError carrying DuckDB's
        # message ("Out of Memory Error: ...", "IO Error: ..."): the same verdicts as above, by that message.
        message = str(exc)
        if "Out of Memory Error" in message:
            raise ExtractionOutOfMemory(_out_of_memory_message(limits, stream)) from exc
        if any(kind in message for kind in _PERMANENT_DUCKDB_ERRORS):
            raise PermanentExtractionError(f"The export query failed: {message}") from exc
        raise ExtractionError(f"Reading the window's pageviews failed: {message}") from exc


# DuckDB error kinds that the same query over the same data repeats (any other failure may pass: I/O).
_PERMANENT_DUCKDB_ERRORS = (
    "Invalid Input Error",
    "Conversion Error",
    "Binder Error",
    "Parser Error",
    "Catalog Error",
    "Not implemented Error",
    "Invalid Error",
    "Out of Range Error",
)


def _out_of_memory_message(limits: ReadLimits, stream: ExportStream | None) -> str:
    where = ""
    if stream is not None and len(stream.slices) == 1:
        where = f" for the window's {stream.pageviews:,} pageviews, read in one slice"
    elif stream is not None:
        each = max(1, stream.pageviews // len(stream.slices))
        where = f" for a slice of about {each:,} pageviews (the window's {stream.pageviews:,} in {len(stream.slices)})"
    limit = ByteSize(limits.memory_limit).human_readable(decimal=True)
    return (
        f"The export ran out of memory: DuckDB needed more than its limit of {limit}{where}. "
        "Retrying would fail the same way. Lower DATAEXPORT_EXPORT_SLICE_ROWS (smaller slices) or raise "
        "DATAEXPORT_DUCKDB_MEMORY_LIMIT, then run the export again."
    )
