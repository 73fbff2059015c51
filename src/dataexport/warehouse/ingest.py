"""The ingest path of the HTTP endpoint: JSON bytes -> hits -> validated rows -> store.

Good hits are stored and bad ones reported, in the same answer: one typo must not lose a batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import orjson

from dataexport.errors import FieldError, ValidationFailed
from dataexport.warehouse.hits import HitBatch, HitError
from dataexport.warehouse.hits_columnar import validate_to_table
from dataexport.warehouse.hits_msgspec import decode_batch
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
        raise ValidationFailed(
            "Too many hits in one request.", [FieldError("hits", f"must have at most {MAX_HITS_PER_REQUEST} hits")]
        )
    return payload


def ingest(
    store: PageviewStore,
    project_id: int,
    body: bytes,
    *,
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> IngestResult:
    """Validate and store one request's hits. A retried request (same hits or same key) is stored once."""
    table = decode_batch(body)  # the fast path proves a batch valid, or steps aside
    if table is None:
        table, rejections = validate_to_table(parse_hits(body))
    elif table.num_rows > MAX_HITS_PER_REQUEST:
        parse_hits(body)  # raises the same error as the slow path
    else:
        rejections = HitBatch()
    stored = store.append(project_id, table, batch_key=idempotency_key, now=now)
    return IngestResult(
        batch_id=stored.batch_id,
        stored=stored.rows,
        rejected=rejections.rejected,
        duplicate=stored.duplicate,
        errors=rejections.errors[:MAX_ERRORS_REPORTED],
    )
