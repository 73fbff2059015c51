"""`POST /ingest/v1/pageviews`: pageview hits from a tracker or a server, authenticated by the project's ingest key.

A 2xx means the stored hits are durable. Good hits are stored and bad ones reported in the same answer; only
when no hit of the batch could be stored is the answer a 400. A retried batch (same hits, or the same
`Idempotency-Key` with the same hits) is stored once; the same key with other hits is a 422.

Nothing is done for a request before its ingest key is known good: the key is checked (one indexed read) before a
byte of the body is read, so an anonymous client cannot make the server buffer 32 MB bodies. The body is then read
with a cap and a deadline (api/body.py). The body-buffering middleware of the other routes leaves this one alone.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header, Request
from sqlalchemy import Connection
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from dataexport.api.body import read_body
from dataexport.api.context import AppContext, ProjectInfo
from dataexport.api.deps import get_context, request_db
from dataexport.api.envelope import ok
from dataexport.api.schemas import Envelope, ErrorEnvelope, IngestResultOut
from dataexport.errors import AuthError, FieldError, ValidationFailed
from dataexport.ingest.hits_columnar import HitWindow
from dataexport.ingest.requests import check_request, store_request
from dataexport.metadata.repositories import tenants
from dataexport.security.secrets import hash_ingest_key

router = APIRouter(tags=["ingest"])

MAX_BODY = 32 * 1024 * 1024


def _project_of_key(conn: Connection, ctx: AppContext, key: str) -> ProjectInfo:
    """The project whose ingest key this is (its retention bounds the hits), or AuthError. The key is read each
    time, so a rotated key stops working at once; the project row comes from the app's short-lived cache."""
    project_id = tenants.project_id_by_ingest_key_hash(conn, hash_ingest_key(key))
    if project_id is None:
        raise AuthError("The ingest key is not valid.", error_code="INGEST_KEY_INVALID")
    project = ctx.projects.get(project_id)
    if project is None:
        with Session(bind=conn) as session:
            row = tenants.get_project(session, project_id)
            if row is None:  # deleted between the two reads
                raise AuthError("The ingest key is not valid.", error_code="INGEST_KEY_INVALID")
            project = ProjectInfo(
                id=row.id, account_id=row.account_id, timezone=row.timezone, retention_days=row.retention_days
            )
        ctx.projects.put(project)
    return project


# Batches one process ingests at once; the others wait on the event loop, not in threads. Ingest is CPU-bound
# Python: more threads only fight over the GIL, each costing more CPU per hit (bench/ingest.py --http: 46 µs a
# hit with 8 at once, 29 µs with 2), while a second one overlaps its parsing with the other's file writes.
INGEST_BATCHES_AT_ONCE = 2  # the app's `ingest_gate` semaphore (api.app.create_app)


@router.post(
    "/ingest/v1/pageviews",
    summary='Ingest pageview hits (JSON array, {"hits": [...]}, or NDJSON)',
    response_model=Envelope[IngestResultOut],
    responses={
        400: {"model": ErrorEnvelope, "description": "No hit of the batch could be stored, or the body is invalid"},
        401: {"model": ErrorEnvelope, "description": "The ingest key is missing or not valid"},
        408: {"model": ErrorEnvelope, "description": "The body did not arrive within the body timeout"},
        413: {"model": ErrorEnvelope, "description": "The body is over 32 MB"},
        422: {"model": ErrorEnvelope, "description": "The Idempotency-Key was used before with other hits"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
                "application/x-ndjson": {"schema": {"type": "string"}},
            },
        }
    },
)
async def ingest_pageviews(
    request: Request,
    ctx: AppContext = Depends(get_context),
    x_ingest_key: str | None = Header(None, description="The project's ingest key (or Authorization: Bearer)"),
    idempotency_key: str | None = Header(None, max_length=200),
):
    bearer = request.headers.get("authorization", "")
    key = x_ingest_key or (bearer[7:].strip() if bearer.lower().startswith("bearer ") else None)
    if not key:
        raise AuthError("The ingest key is missing.", error_code="INGEST_KEY_MISSING")
    project = await request_db(request).read(_project_of_key, ctx, key)
    raw = await read_body(request, limit=MAX_BODY, timeout=ctx.settings.body_timeout_seconds)
    ndjson = "ndjson" in request.headers.get("content-type", "").lower()
    settings = ctx.settings

    def check():
        now = ctx.clock()
        window = HitWindow.at(
            now, max_future_seconds=settings.ingest_max_future_seconds, retention_days=project.retention_days
        )
        return check_request(
            ctx.pageviews,
            project.id,
            raw,
            ndjson=ndjson,
            idempotency_key=idempotency_key,
            now=now,
            window=window,
            max_session_days=settings.ingest_max_partitions_per_batch,
        )

    # Checking and preparing a batch is CPU-bound Python: it runs under the gate. Its commit mostly waits (an
    # fsync'd log line, a lake commit shared by the batches waiting for it), so it runs outside, and the next
    # batches are checked meanwhile (bench/ingest.py --http measures both backends: keeping the lake's commit under
    # the gate left its groups at one batch; moving the embedded store's file writes out of it made them fight).
    async with request.app.state.ingest_gate:
        checked = await run_in_threadpool(check)
    result = await run_in_threadpool(store_request, ctx.pageviews, project.id, checked)
    errors = [{"index": e.index, "field": e.field, "message": e.message} for e in result.errors]
    if result.stored == 0 and result.rejected > 0:
        raise ValidationFailed(
            "No hit of the batch could be stored.",
            [FieldError(f"hits[{e.index}].{e.field}", e.message) for e in result.errors],
            error_code="INVALID_HITS",
        )
    return ok(
        {
            "batchId": result.batch_id,
            "stored": result.stored,
            "rejected": result.rejected,
            "duplicate": result.duplicate,
            "errors": errors,
        }
    )
