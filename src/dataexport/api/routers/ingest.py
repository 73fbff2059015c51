"""`POST /ingest/v1/pageviews`: pageview hits from a tracker or a server, authenticated by the project's ingest key.

A 2xx means the stored hits are durable. Good hits are stored and bad ones reported in the same answer; only
when no hit of the batch could be stored is the answer a 400. A retried batch (same hits, or the same
`Idempotency-Key`) is stored once.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header, Request
from starlette.concurrency import run_in_threadpool

from dataexport.api.context import AppContext
from dataexport.api.deps import get_context
from dataexport.api.envelope import ok
from dataexport.api.schemas import Envelope, ErrorEnvelope, IngestResultOut
from dataexport.errors import AuthError, FieldError, ValidationFailed
from dataexport.metadata.repositories import tenants
from dataexport.security.secrets import hash_ingest_key
from dataexport.warehouse.ingest import ingest

router = APIRouter(tags=["ingest"])

MAX_BODY = 32 * 1024 * 1024


def _project_id(ctx: AppContext, key: str | None) -> int:
    if not key:
        raise AuthError("The ingest key is missing.", error_code="INGEST_KEY_MISSING")
    with ctx.engine.connect() as conn:
        project_id = tenants.project_id_by_ingest_key_hash(conn, hash_ingest_key(key))
    if project_id is None:
        raise AuthError("The ingest key is not valid.", error_code="INGEST_KEY_INVALID")
    return project_id


# Batches one process ingests at once; the others wait on the event loop, not in threads. Ingest is CPU-bound
# Python: more threads only fight over the GIL, each costing more CPU per hit (bench/ingest.py --http: 46 µs a
# hit with 8 at once, 29 µs with 2), while a second one overlaps its parsing with the other's file writes.
INGEST_BATCHES_AT_ONCE = 2  # the app's `ingest_gate` semaphore (api.app.create_app)


@router.post(
    "/ingest/v1/pageviews",
    summary="Ingest pageview hits (JSON array, {\"hits\": [...]}, or NDJSON)",
    response_model=Envelope[IngestResultOut],
    responses={
        400: {"model": ErrorEnvelope, "description": "No hit of the batch could be stored, or the body is invalid"},
        401: {"model": ErrorEnvelope, "description": "The ingest key is missing or not valid"},
    },
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
        "application/x-ndjson": {"schema": {"type": "string"}},
    }}},
)
async def ingest_pageviews(
    request: Request,
    ctx: AppContext = Depends(get_context),
    x_ingest_key: str | None = Header(None, description="The project's ingest key (or Authorization: Bearer)"),
    idempotency_key: str | None = Header(None, max_length=200),
):
    bearer = request.headers.get("authorization", "")
    key = x_ingest_key or (bearer[7:].strip() if bearer.lower().startswith("bearer ") else None)
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise ValidationFailed("The request body is too large.", [FieldError("body", "must be at most 32 MB")])
    ndjson = "ndjson" in request.headers.get("content-type", "").lower()

    def work():
        project_id = _project_id(ctx, key)
        return ingest(ctx.warehouse, project_id, raw, ndjson=ndjson, idempotency_key=idempotency_key, now=ctx.clock())

    async with request.app.state.ingest_gate:
        result = await run_in_threadpool(work)
    errors = [{"index": e.index, "field": e.field, "message": e.message} for e in result.errors]
    if result.stored == 0 and result.rejected > 0:
        raise ValidationFailed(
            "No hit of the batch could be stored.",
            [FieldError(f"hits[{e.index}].{e.field}", e.message) for e in result.errors],
            error_code="INVALID_HITS",
        )
    return ok({"batchId": result.batch_id, "stored": result.stored, "rejected": result.rejected,
               "duplicate": result.duplicate, "errors": errors})
