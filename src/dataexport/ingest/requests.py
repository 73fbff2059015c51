"""The ingest path of the HTTP endpoint: JSON bytes -> hits -> validated rows -> store.

Good hits are stored and bad ones reported, in the same answer: one typo must not lose a batch. In JSON Lines
(NDJSON) that includes a line that is not JSON: each line is a hit of its own, numbered among the non-blank lines.
Hits outside the time window (in the future, or older than the project keeps) are refused one by one too; a batch
spread over too many session days is refused whole, since each day is a file of its own in the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import orjson
import pyarrow as pa

from dataexport.errors import FieldError, ValidationFailed
from dataexport.ingest.hits import NOT_JSON, HitBatch, HitError
from dataexport.ingest.hits_columnar import HitWindow, refuse_outside, session_days, validate_to_table
from dataexport.ingest.hits_msgspec import decode_batch, decode_lines
from dataexport.warehouse.backend import PreparedBatch, Warehouse

MAX_HITS_PER_REQUEST = 10_000
MAX_ERRORS_REPORTED = 100


@dataclass(frozen=True)
class IngestResult:
    batch_id: str
    stored: int
    rejected: int
    duplicate: bool
    errors: list[HitError] = field(default_factory=list)  # at most MAX_ERRORS_REPORTED


def _too_many() -> ValidationFailed:
    return ValidationFailed(
        "Too many hits in one request.", [FieldError("hits", f"must have at most {MAX_HITS_PER_REQUEST} hits")]
    )


def parse_hits(body: bytes) -> list:
    """A JSON array of hits, or an object {"hits": [...]}; anything else is a ValidationFailed."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed("Body is not valid JSON.", [FieldError("body", f"invalid JSON: {exc}")]) from None
    if isinstance(payload, dict) and set(payload) == {"hits"}:
        payload = payload["hits"]
    if not isinstance(payload, list):
        raise ValidationFailed(
            "Body must be a JSON array of hits.", [FieldError("body", 'must be an array of hits or {"hits": [...]}')]
        )
    if len(payload) > MAX_HITS_PER_REQUEST:
        raise _too_many()
    return payload


def _json_or_not(line: bytes) -> object:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return NOT_JSON


def _validated(body: bytes, ndjson: bool) -> tuple[pa.Table, HitBatch, int]:
    """The valid hits as a table, the rejections, and the number of hits in the request."""
    if ndjson:
        lines = [line for line in body.split(b"\n") if line and not line.isspace()]
        if len(lines) > MAX_HITS_PER_REQUEST:
            raise _too_many()
        table = decode_lines(lines)  # the fast path proves a batch valid, or steps aside
        if table is not None:
            return table, HitBatch(), len(lines)
        return *validate_to_table([_json_or_not(x) for x in lines]), len(lines)
    table = decode_batch(body)
    if table is None:
        hits = parse_hits(body)
        return *validate_to_table(hits), len(hits)
    if table.num_rows > MAX_HITS_PER_REQUEST:
        parse_hits(body)  # raises the same error as the slow path
    return table, HitBatch(), table.num_rows


def _row_numbers(count: int, rejections: HitBatch) -> np.ndarray | None:
    """The index of each table row among the request's hits (the rejected ones are not rows); None: row i is hit
    i. Every rejected hit has at least one error naming its index."""
    if not rejections.rejected:
        return None
    return np.setdiff1d(np.arange(count), np.fromiter((e.index for e in rejections.errors), np.int64))


def _too_many_days(days: int, limit: int) -> ValidationFailed:
    return ValidationFailed(
        "The batch spans too many session days.",
        [
            FieldError(
                "hits",
                f"must touch at most {limit} session days (the UTC day of each hit's session_time, "
                f"one file each in the store); these touch {days}: send fewer days a request",
            )
        ],
    )


@dataclass(frozen=True)
class CheckedRequest:
    """One request's hits after validation: the batch prepared for its commit, and what was refused (with why)."""

    batch: PreparedBatch
    rejected: int
    errors: list[HitError]


def ingest(
    warehouse: Warehouse,
    project_id: int,
    body: bytes,
    *,
    ndjson: bool = False,
    idempotency_key: str | None = None,
    now: datetime | None = None,
    window: HitWindow | None = None,
    max_session_days: int | None = None,
) -> IngestResult:
    """Validate and store one request's hits: `check_request`, then `store_request`."""
    checked = check_request(
        warehouse,
        project_id,
        body,
        ndjson=ndjson,
        idempotency_key=idempotency_key,
        now=now,
        window=window,
        max_session_days=max_session_days,
    )
    return store_request(warehouse, project_id, checked)


def check_request(
    warehouse: Warehouse,
    project_id: int,
    body: bytes,
    *,
    ndjson: bool = False,
    idempotency_key: str | None = None,
    now: datetime | None = None,
    window: HitWindow | None = None,
    max_session_days: int | None = None,
) -> CheckedRequest:
    """The CPU-bound half of an ingest: validate one request's hits (a JSON array, or {"hits": [...]}, or JSON
    Lines when `ndjson`) and prepare them with the warehouse's stager (the embedded one writes the batch's files;
    the lake's computes its id and fingerprint).

    `window` bounds the hits' times (default: no later than `now` plus the default clock skew, no lower bound);
    `max_session_days` the distinct session days of the batch (default: no bound).
    """
    table, rejections, count = _validated(body, ndjson)
    if window is None:
        window = HitWindow.at(now or datetime.now(UTC))
    table, refused, refused_count = refuse_outside(table, window, _row_numbers(count, rejections))
    errors = rejections.errors
    if refused:
        errors = sorted([*errors, *refused], key=lambda e: e.index)  # stable: a hit's errors stay in their order
    if max_session_days is not None:
        days = session_days(table)
        if days > max_session_days:
            raise _too_many_days(days, max_session_days)
    batch = warehouse.stager().prepare(project_id, table, batch_key=idempotency_key, now=now)
    return CheckedRequest(batch, rejections.rejected + refused_count, errors)


def store_request(warehouse: Warehouse, project_id: int, checked: CheckedRequest) -> IngestResult:
    """The commit of a checked request, which mostly waits (for fsyncs, for a lake commit shared by the batches
    waiting for it). A retried request (same hits or same key) is stored once; a key sent again with other hits
    raises IdempotencyKeyReused."""
    stored = warehouse.commit(project_id, checked.batch)
    return IngestResult(
        batch_id=stored.batch_id,
        stored=stored.rows,
        rejected=checked.rejected,
        duplicate=stored.duplicate,
        errors=checked.errors[:MAX_ERRORS_REPORTED],
    )
