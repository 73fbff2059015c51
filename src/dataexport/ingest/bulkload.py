"""Bulk load of hit files (JSONL, CSV, Parquet) into the store, streamed in chunks.

Every record goes through the same `hits` rules as the ingest endpoint. File-specific
decisions:
- Columns the server derives (project_id, user_id, ingested_at) are ignored in files, because a file
  exported from a warehouse carries them; they are recomputed.
- CSV cells are text: an empty cell is absent, numbers and epoch milliseconds are read as numbers,
  nested columns hold JSON text. Parquet timestamps are taken as they are (UTC).
- Dynamic variables in the stored shape ({key, string_value, number_value}) are read as {key, value}.
- A chunk is stored as one batch whose id hashes its natural keys, so loading the same file again
  stores nothing twice.
- Record numbers in rejections are 1-based (JSONL: the line; CSV: the data row; Parquet: the row).
- Times: a record later than now plus the ingest clock skew is refused, as over HTTP; so is one whose session
  starts before the project's retention (the next retention sweep would delete it). History may span any number of
  session days (no per-batch bound on partitions: a chunk of history covers many days by nature).
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from dataexport.errors import FieldError, ValidationFailed
from dataexport.gc_tuning import settle_heap
from dataexport.ingest.hits import HitError, validate_hit
from dataexport.ingest.hits_columnar import HitWindow, refuse_outside, validate_batch
from dataexport.ingest.hits_msgspec import decode_lines
from dataexport.ingest.hits_rules import DERIVED, FLOAT, INT, SCALARS, TS
from dataexport.ingest.load_workers import default_workers, fork_server
from dataexport.warehouse.backend import PreparedBatch, Stager, Warehouse
from dataexport.warehouse.schema import PAGEVIEW_SCHEMA

CHUNK_ROWS = 20_000  # CSV and Parquet chunks
JSONL_CHUNK_BYTES = 16 * 1024 * 1024  # JSONL is cut in byte ranges of whole lines: the workers read them
FAST_SLICE = 2_000  # a bad record sends only its slice through the slower per-hit validator
MAX_SAMPLES = 20
# What a damaged or exotic input file raises while decoding (bad UTF-8, oversized CSV cells, corrupt Parquet,
# timestamps Python cannot hold).
UNREADABLE = (UnicodeDecodeError, csv.Error, pa.ArrowInvalid, OverflowError, ValueError)
Progress = Callable[[int, int], None]  # (bytes done, bytes total) over all files: fits Rich's update()


@dataclass(frozen=True)
class Rejection:
    path: str
    index: int
    field: str
    message: str


@dataclass
class LoadSummary:
    rows_stored: int = 0
    rows_rejected: int = 0
    rows_already_stored: int = 0  # in chunks loaded before (same file loaded again)
    reasons: Counter = field(default_factory=Counter)  # (field, message) -> count
    samples: list[Rejection] = field(default_factory=list)


def load_files(
    warehouse: Warehouse,
    project_id: int,
    paths: list[Path],
    progress: Progress | None = None,
    *,
    workers: int | None = None,
    window: HitWindow | None = None,
) -> LoadSummary:
    """Validate and store every record of `paths`, chunk by chunk (memory stays flat whatever the size).

    Reading, decoding, validation and writing a chunk's files run in `workers` processes (default: one per CPU,
    up to 4, for inputs over PARALLEL_MIN_BYTES), which prepare them with the warehouse's stager; this
    process commits the chunks, in file order. `window` bounds the records' times (default: not after now plus
    the default clock skew; `dataexport load` adds the project's retention).
    """
    paths = [Path(p) for p in paths]
    for p in paths:
        if _reader_for(p) is None:
            message = "must end in .jsonl, .ndjson, .json, .csv or .parquet"
            raise ValidationFailed(f"Unsupported file type: {p.name}.", [FieldError("paths", message)])
        if not p.is_file():
            raise ValidationFailed(f"No such file: {p}.", [FieldError("paths", "must name existing files")])
    total = sum(p.stat().st_size for p in paths)
    if workers is None:
        workers = default_workers(paths)
    summary = LoadSummary()
    done_before = 0
    target = (project_id, warehouse.stager(), window or HitWindow.at(datetime.now(UTC)))
    with _Pipeline(workers, target) as pipeline:
        for path in paths:
            reader = _reader_for(path)
            assert reader is not None
            lines_before = 0  # JSONL chunks number their lines from 1: this makes the numbers the file's
            try:
                for (staged, errors, rejected, lines), done_in_file in pipeline.map(reader(path)):
                    if lines_before:
                        errors = [replace(e, index=e.index + lines_before) for e in errors]
                    lines_before += lines
                    _count_rejections(summary, str(path), errors)
                    summary.rows_rejected += rejected
                    if staged is not None and staged.rows:
                        stored = warehouse.commit(project_id, staged)
                        if stored.duplicate:
                            summary.rows_already_stored += stored.rows
                        else:
                            summary.rows_stored += stored.rows
                    if progress is not None:
                        progress(done_before + done_in_file, total)
            except UNREADABLE as exc:
                # The chunks stored before are kept; loading the file again after a fix stores the rest only.
                raise ValidationFailed(
                    f"{path.name} could not be read after {summary.rows_stored} stored rows: {str(exc)[:200]}",
                    [FieldError("paths", f"{path.name}: {type(exc).__name__}: {str(exc)[:200]}")],
                ) from None
            done_before += path.stat().st_size
    return summary


class _Pipeline:
    """Runs `process_chunk` in worker processes with a bounded number of chunks in flight, in order.

    A chunk staged by a worker whose result is never committed (the load failed meanwhile) leaves files in
    the staging directory: no commit line names them, so the next store opened on the root removes them.
    """

    def __init__(self, workers: int, target: tuple[int, Stager, HitWindow]):
        self.workers = workers
        self.target = target  # (project id, the warehouse's stager, time window)
        self.pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> _Pipeline:
        if self.workers > 1:
            self.pool = ProcessPoolExecutor(self.workers, mp_context=fork_server(), initializer=settle_heap)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def map(self, chunks: Iterator[tuple[tuple, int]]) -> Iterator[tuple[tuple, int]]:
        if self.pool is None:
            for chunk, done in chunks:
                yield process_chunk(chunk, self.target), done
            return
        in_flight: deque = deque()
        for chunk, done in chunks:
            in_flight.append((self.pool.submit(process_chunk, chunk, self.target), done))
            if len(in_flight) >= 2 * self.workers:
                future, d = in_flight.popleft()
                yield future.result(), d
        while in_flight:
            future, d = in_flight.popleft()
            yield future.result(), d


def process_chunk(
    chunk: tuple, target: tuple[int, Stager, HitWindow]
) -> tuple[PreparedBatch | None, list[HitError], int, int]:
    """Read one chunk of a file, validate it and stage its files (runs in a worker process).

    Returns the staged batch, the rejections, their count, and the chunk's number of lines (JSONL: its
    rejections are numbered from the chunk's first line; 0 for the other formats, numbered in the file).
    """
    kind, payload = chunk
    project_id, stager, window = target
    lines = 0
    if kind == "jsonl":
        table, errors, rejected, numbers, lines = _jsonl_table(*payload)
    else:
        table, errors, rejected, numbers = _validate(_DECODERS[kind](payload))
    table, refused, refused_count = refuse_outside(table, window, numbers)
    if refused:
        errors = sorted([*errors, *refused], key=lambda e: e.index)
        rejected += refused_count
    staged = stager.prepare(project_id, table) if table.num_rows else None
    return staged, errors, rejected, lines


def _jsonl_table(path: str, start: int, end: int) -> tuple[pa.Table, list[HitError], int, np.ndarray, int]:
    """The chunk's valid records as a table, the rejections, their count, the line number (from the chunk's first
    line) of each row, and the chunk's number of lines."""
    with open(path, "rb") as f:
        f.seek(start)
        block = f.read(end - start)
    lines = block.split(b"\n")
    # Blank lines are skipped, but keep their number. (`isspace` is `not strip()` without copying each line.)
    kept = [i for i, line in enumerate(lines) if line and not line.isspace()]
    tables, errors, rejected, numbers = [PAGEVIEW_SCHEMA.empty_table()], [], 0, []
    for first in range(0, len(kept), FAST_SLICE):
        indexes = kept[first : first + FAST_SLICE]
        table = decode_lines([lines[i] for i in indexes])
        if table is None:  # a bad line, or the file carries derived columns: the general path
            table, errs, rej, nums = _validate(_decode_jsonl([(1 + i, lines[i]) for i in indexes]))
            errors.extend(errs)
            rejected += rej
            numbers.append(nums)
        else:
            numbers.append(np.asarray(indexes, np.int64) + 1)
        tables.append(table)
    row_numbers = np.concatenate(numbers) if numbers else np.zeros(0, np.int64)
    return pa.concat_tables(tables), errors, rejected, row_numbers, len(lines) - 1  # = block.count(b"\n")


def _validate(records: list[tuple[int, object]]) -> tuple[pa.Table, list[HitError], int, np.ndarray]:
    """Slices that the columnar path proves valid skip the per-hit validator; others go through it. Returns the
    table of valid records, the rejections, their count and the record number of each row."""
    tables, errors, rejected, numbers = [], [], 0, []
    for start in range(0, len(records), FAST_SLICE):
        part = records[start : start + FAST_SLICE]
        table = validate_batch([r for _, r in part])  # sentinels are not dicts: they make it step aside
        if table is not None:
            tables.append(table)
            numbers.extend(number for number, _ in part)
            continue
        rows = []
        for index, record in part:
            if record is _NOT_JSON:
                row, errs = None, [HitError(index, "record", "is not valid JSON")]
            elif record is _NOT_CSV_ROW:
                row, errs = None, [HitError(index, "record", "has not as many cells as the header")]
            else:
                row, errs = validate_hit(record, index)
            if row is not None:
                rows.append(row)
                numbers.append(index)
            else:
                errors.extend(errs)
                rejected += 1
        tables.append(pa.Table.from_pylist(rows, schema=PAGEVIEW_SCHEMA))
    table = pa.concat_tables(tables) if tables else PAGEVIEW_SCHEMA.empty_table()
    return table, errors, rejected, np.asarray(numbers, np.int64)


def _count_rejections(summary: LoadSummary, path: str, errors: list[HitError]) -> None:
    for e in errors:
        summary.reasons[e.reason] += 1
        if len(summary.samples) < MAX_SAMPLES:
            summary.samples.append(Rejection(path, e.index, e.field, e.message))


Chunks = Iterator[tuple[tuple[str, object], int]]  # ((decoder, raw chunk), bytes of the file read so far)
_NOT_JSON = object()
_NOT_CSV_ROW = object()


def _reader_for(path: Path) -> Callable[[Path], Chunks] | None:
    suffix = path.suffix.lower()
    return {
        ".jsonl": _jsonl_chunks,
        ".json": _jsonl_chunks,
        ".ndjson": _jsonl_chunks,
        ".csv": _csv_chunks,
        ".parquet": _parquet_chunks,
    }.get(suffix)


def as_hit(record: object) -> object:
    """A record of a file (or a stored row) as a hit: derived columns dropped, dynamic vars as {key, value}."""
    if type(record) is dict:
        for key in DERIVED:
            record.pop(key, None)
        dyn = record.get("dynamic_vars")
        if type(dyn) is list and dyn and type(dyn[0]) is dict and "string_value" in dyn[0]:
            record["dynamic_vars"] = [_stored_dynamic_var(d) for d in dyn]
    return record


def _stored_dynamic_var(d: object) -> object:
    if type(d) is not dict or "string_value" not in d:
        return d
    value = d["string_value"] if d.get("string_value") is not None else d.get("number_value")
    return {"key": d.get("key"), "value": value}


def _jsonl_chunks(path: Path) -> Chunks:
    """Byte ranges of whole lines, about JSONL_CHUNK_BYTES each: the workers read them (this process only looks
    for line ends)."""
    size = path.stat().st_size
    start = 0
    with open(path, "rb") as f:
        while start < size:
            f.seek(min(start + JSONL_CHUNK_BYTES, size))
            f.readline()  # to the end of the line the block size cut (nothing at the end of the file)
            end = f.tell()
            yield ("jsonl", (str(path), start, end)), end
            start = end


def _decode_jsonl(lines: list[tuple[int, bytes]]) -> list[tuple[int, object]]:
    records = []
    for number, line in lines:
        try:
            records.append((number, as_hit(orjson.loads(line))))
        except orjson.JSONDecodeError:
            records.append((number, _NOT_JSON))
    return records


_INTEGER = re.compile(r"-?\d+\Z")


def _csv_cell(column: str, cell: str) -> object:
    if cell == "":
        return None
    check = SCALARS.get(column)
    if check is None:
        if column in DERIVED:
            return cell
        try:
            return orjson.loads(cell)  # nested columns hold JSON text
        except orjson.JSONDecodeError:
            return cell
    kind = check[0]
    if kind in (INT, TS) and _INTEGER.match(cell):
        return int(cell)
    if kind == FLOAT:
        try:
            return float(cell)
        except ValueError:
            return cell
    return cell


def _csv_chunks(path: Path) -> Chunks:
    with open(path, "rb") as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        rows = csv.reader(text)
        header = next(rows, None)
        if header is None:
            return
        chunk: list = []
        for number, cells in enumerate(rows, 1):
            chunk.append((number, cells))
            if len(chunk) >= CHUNK_ROWS:
                yield ("csv", (header, chunk)), raw.tell()
                chunk = []
        if chunk:
            yield ("csv", (header, chunk)), raw.tell()


def _decode_csv(payload: tuple[list[str], list]) -> list[tuple[int, object]]:
    header, rows = payload
    records = []
    for number, cells in rows:
        if len(cells) != len(header):
            records.append((number, _NOT_CSV_ROW))
            continue
        record = {col: _csv_cell(col, cell) for col, cell in zip(header, cells, strict=True)}
        records.append((number, as_hit({k: v for k, v in record.items() if v is not None})))
    return records


def _parquet_chunks(path: Path) -> Chunks:
    pf = pq.ParquetFile(path)
    total_rows = max(pf.metadata.num_rows, 1)
    size = path.stat().st_size
    done = 0
    for batch in pf.iter_batches(batch_size=CHUNK_ROWS):
        yield ("parquet", (done, batch)), size * (done + batch.num_rows) // total_rows
        done += batch.num_rows


def _decode_parquet(payload: tuple[int, pa.RecordBatch]) -> list[tuple[int, object]]:
    done, batch = payload
    return [
        (done + i, as_hit({k: v for k, v in r.items() if v is not None})) for i, r in enumerate(batch.to_pylist(), 1)
    ]


_DECODERS = {"csv": _decode_csv, "parquet": _decode_parquet}  # JSONL: _jsonl_table
