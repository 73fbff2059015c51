"""The warehouse's read side of an export: the rows of one window, streamed as Arrow batches shaped for the format.

A window whose export aggregates per session (scope sessions, or views with session columns or a segment) is
read in slices of whole sessions (slices.py), each a query of its own, one after the other: DuckDB's memory
is then that of one slice whatever the window's size. How many pageviews a slice may hold comes from the
memory limit and the query's width (its number of per-session aggregates); it is measured, not guessed,
by `bench/export.py`. Exports without an aggregate stream in one query.

DuckDB's errors become ours here, with whether a retry can help: an I/O error may pass (a compaction swapped
the partition away while we read it); running out of memory, or any other failure of the same query over
the same data, would happen again, so it fails the run at once, saying what the operator can change.

The mechanics are the same for every backend: it gives the window's pageviews as a relation per session day
(backend.PageviewSource), and what it knows of each day's row groups.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import duckdb
import pyarrow as pa
from pydantic import ByteSize

from dataexport.catalog.sql import Sql
from dataexport.domain.enums import Scope
from dataexport.domain.fieldspec import FieldSpec
from dataexport.domain.segment_filter import SegmentFilter
from dataexport.errors import ExtractionError, ExtractionOutOfMemory, PermanentExtractionError
from dataexport.query.export_sql import Output, build_export_query, build_pageview_count_query
from dataexport.query.slices import Partition, ReadSlice, SessionSlice, plan_slices
from dataexport.warehouse.arrow_stream import stream_arrow
from dataexport.warehouse.backend import PageviewSource, ReadLimits, Warehouse
from dataexport.warehouse.batches import MS_PER_DAY
from dataexport.warehouse.relations import empty_source

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


class ExportStream:
    """The batches of one export, slice after slice; iterate once. `progress`: the share of slices read (0..1)."""

    def __init__(
        self,
        source: PageviewSource,
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
        self._source, self._request, self._limits = source, request, limits

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        for read in self.slices:
            query = _query(self._source.relation(read.days), self._request, read.session_slice)
            with _translated(self._limits, self):
                yield from stream_arrow(self._source.conn, query.sql, query.params, batch_rows(len(query.columns)))
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
def open_export(warehouse: Warehouse, request: ExportRequest, limits: ReadLimits) -> Iterator[ExportStream]:
    """The export of `request` from `warehouse`. Raises ValidationFailed on bad input."""
    query = _query(empty_source(), request, None)  # validates the request before anything runs
    with ExitStack() as stack:
        with _translated(limits):  # opening a lake's connection fails like a read: an I/O error may pass
            window = (request.window_start, request.window_end)
            source = stack.enter_context(warehouse.read(request.project_id, *window, limits))
            rows_by_day = _count_by_day(source, request) if source.days else {}
        yield _stream(source, query.session_aggregates, query.columns, rows_by_day, request, limits)


def _stream(
    source: PageviewSource,
    session_aggregates: int,
    columns: list[str],
    rows_by_day: dict,
    request: ExportRequest,
    limits: ReadLimits,
) -> ExportStream:
    pageviews = sum(rows_by_day.values())
    reads = [ReadSlice(tuple(source.days), None)]
    if session_aggregates > 0:
        per_slice = limits.rows_per_slice or rows_per_slice(limits.memory_limit, session_aggregates)
        with _translated(limits):
            partitions = _partitions(source, rows_by_day, request, sliced=pageviews > per_slice)
        reads = plan_slices(partitions, rows_per_slice=per_slice, ordered=request.ordered)
    return ExportStream(source, request, limits, columns, pageviews, reads)


def _partitions(source: PageviewSource, rows_by_day: dict, request: ExportRequest, *, sliced: bool) -> list[Partition]:
    out = []
    for day in source.days:
        day_start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        out.append(
            Partition(
                day=day,
                rows=rows_by_day.get(day, 0),
                start=max(day_start, request.window_start),
                end=min(day_start + timedelta(days=1), request.window_end),
                # Only a window that needs slicing pays for its row groups (a footer read, a catalog query).
                row_groups=source.row_groups(day) if sliced else (),
            )
        )
    return out


def _query(source: Sql, request: ExportRequest, session_slice: SessionSlice | None):
    return build_export_query(
        source=source,
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


def _count_by_day(source: PageviewSource, request: ExportRequest) -> dict:
    """The window's pageviews of each session day (before any segment)."""
    sql, params = build_pageview_count_query(
        source=source.relation(source.days),
        project_id=request.project_id,
        window_start=request.window_start,
        window_end=request.window_end,
        device_ids=request.device_ids,
    )
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    rows = source.conn.execute(sql, params).fetchall()
    return {(epoch + timedelta(milliseconds=int(day) * MS_PER_DAY)).date(): int(n) for day, n in rows}


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
