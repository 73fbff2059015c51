"""Bulk load of hit files (JSONL, CSV, Parquet) into the store, streamed in chunks.

Every record goes through the same `hits.validate_hit` rules as the ingest endpoint. File-specific
decisions:
- Columns the server derives (project_id, user_id, ingested_at) are ignored in files, because a file
  exported from a warehouse carries them; they are recomputed.
- CSV cells are text: an empty cell is absent, numbers and epoch milliseconds are read as numbers,
  nested columns hold JSON text. Parquet timestamps are taken as they are (UTC).
- Dynamic variables in the stored shape ({key, string_value, number_value}) are read as {key, value}.
- A chunk is stored as one batch whose id hashes its natural keys, so loading the same file again
  stores nothing twice.
- Record numbers in rejections are 1-based (JSONL: the line; CSV: the data row; Parquet: the row).
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pyarrow.parquet as pq

from dataexport.errors import FieldError, ValidationFailed
from dataexport.warehouse.hits import _FLOAT, _INT, _TS, DERIVED, SCALARS, HitError, validate_hit
from dataexport.warehouse.store import PageviewStore

CHUNK_ROWS = 20_000
MAX_SAMPLES = 20
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
    store: PageviewStore, project_id: int, paths: list[Path], progress: Progress | None = None
) -> LoadSummary:
    paths = [Path(p) for p in paths]
    for p in paths:
        if _reader_for(p) is None:
            message = "must end in .jsonl, .ndjson, .json, .csv or .parquet"
            raise ValidationFailed(f"Unsupported file type: {p.name}.", [FieldError("paths", message)])
        if not p.is_file():
            raise ValidationFailed(f"No such file: {p}.", [FieldError("paths", "must name existing files")])
    total = sum(p.stat().st_size for p in paths)
    summary = LoadSummary()
    done_before = 0
    for path in paths:
        reader = _reader_for(path)
        assert reader is not None
        for records, done_in_file in reader(path):
            rows, errors, rejected = _validate(records)
            _count_rejections(summary, str(path), errors)
            summary.rows_rejected += rejected
            if rows:
                stored = store.append(project_id, rows)
                if stored.duplicate:
                    summary.rows_already_stored += stored.rows
                else:
                    summary.rows_stored += stored.rows
            if progress is not None:
                progress(done_before + done_in_file, total)
        done_before += path.stat().st_size
    return summary


def _validate(records: list[tuple[int, object]]) -> tuple[list[dict], list[HitError], int]:
    rows, errors, rejected = [], [], 0
    for index, record in records:
        if record is _NOT_JSON:
            row, errs = None, [HitError(index, "record", "is not valid JSON")]
        elif record is _NOT_CSV_ROW:
            row, errs = None, [HitError(index, "record", "has not as many cells as the header")]
        else:
            row, errs = validate_hit(record, index)
        if row is not None:
            rows.append(row)
        else:
            errors.extend(errs)
            rejected += 1
    return rows, errors, rejected


def _count_rejections(summary: LoadSummary, path: str, errors: list[HitError]) -> None:
    for e in errors:
        summary.reasons[e.reason] += 1
        if len(summary.samples) < MAX_SAMPLES:
            summary.samples.append(Rejection(path, e.index, e.field, e.message))


Chunks = Iterator[tuple[list[tuple[int, object]], int]]  # ([(record number, record)], bytes of the file read)
_NOT_JSON = object()
_NOT_CSV_ROW = object()


def _reader_for(path: Path) -> Callable[[Path], Chunks] | None:
    suffix = path.suffix.lower()
    return {".jsonl": _jsonl_chunks, ".json": _jsonl_chunks, ".ndjson": _jsonl_chunks, ".csv": _csv_chunks,
            ".parquet": _parquet_chunks}.get(suffix)


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
    records: list = []
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append((number, as_hit(orjson.loads(line))))
            except orjson.JSONDecodeError:
                records.append((number, _NOT_JSON))
            if len(records) >= CHUNK_ROWS:
                yield records, f.tell()
                records = []
        if records:
            yield records, f.tell()


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
    if kind in (_INT, _TS) and _INTEGER.match(cell):
        return int(cell)
    if kind == _FLOAT:
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
        records: list = []
        for number, cells in enumerate(rows, 1):
            if len(cells) != len(header):
                records.append((number, _NOT_CSV_ROW))
            else:
                record = {col: _csv_cell(col, cell) for col, cell in zip(header, cells, strict=True)}
                records.append((number, as_hit({k: v for k, v in record.items() if v is not None})))
            if len(records) >= CHUNK_ROWS:
                yield records, raw.tell()
                records = []
        if records:
            yield records, raw.tell()


def _parquet_chunks(path: Path) -> Chunks:
    pf = pq.ParquetFile(path)
    total_rows = max(pf.metadata.num_rows, 1)
    size = path.stat().st_size
    done = 0
    for batch in pf.iter_batches(batch_size=CHUNK_ROWS):
        records = [
            (done + i, as_hit({k: v for k, v in r.items() if v is not None}))
            for i, r in enumerate(batch.to_pylist(), 1)
        ]
        done += len(records)
        yield records, size * done // total_rows
