"""The ingest path of the HTTP endpoint: JSON bytes -> hits -> validated rows -> store.

Good hits are stored and bad ones reported, in the same answer: one typo must not lose a batch. In JSON Lines
(NDJSON) that includes a line that is not JSON: each line is a hit of its own, numbered among the non-blank lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import orjson
import pyarrow as pa

from dataexport.errors import FieldError, ValidationFailed
from dataexport.warehouse.hits import NOT_JSON, HitBatch, HitError
from dataexport.warehouse.hits_columnar import validate_to_table
from dataexport.warehouse.hits_msgspec import decode_batch, decode_lines
from dataexport.warehouse.store import PageviewStore

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


def _validated(body: bytes, ndjson: bool) -> tuple[pa.Table, HitBatch]:
    if ndjson:
        lines = [line for line in body.split(b"\n") if line and not line.isspace()]
        if len(lines) > MAX_HITS_PER_REQUEST:
            raise _too_many()
        table = decode_lines(lines)  # the fast path proves a batch valid, or steps aside
        return (table, HitBatch()) if table is not None else validate_to_table([_json_or_not(x) for x in lines])
    table = decode_batch(body)
    if table is None:
        return validate_to_table(parse_hits(body))
    if table.num_rows > MAX_HITS_PER_REQUEST:
        parse_hits(body)  # raises the same error as the slow path
    return table, HitBatch()


def ingest(
    store: PageviewStore,
    project_id: int,
    body: bytes,
    *,
    ndjson: bool = False,
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> IngestResult:
    """Validate and store one request's hits: a JSON array (or {"hits": [...]}), or JSON Lines when `ndjson`. A
    retried request (same hits or same key) is stored once."""
    table, rejections = _validated(body, ndjson)
    stored = store.append(project_id, table, batch_key=idempotency_key, now=now)
    return IngestResult(
        batch_id=stored.batch_id,
        stored=stored.rows,
        rejected=rejections.rejected,
        duplicate=stored.duplicate,
        errors=rejections.errors[:MAX_ERRORS_REPORTED],
    )
