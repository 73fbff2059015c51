"""The tracking tag's routes: `GET /tag/<tagId>.js` serves the tag, `POST /collect/v1/<tagId>` takes its beacons.

A tag id is public (it is in every instrumented page), so it authenticates nothing by itself: a beacon is taken
only from a page of one of the project's allowed origins (the `Origin` header, or the Referer's origin when a
browser sends none), and each client address gets a rate per tag id. Everything else is the ingest path's: the
beacon's views become hits (collect/beacon.py), are validated by the same rules and stored by the same durable
commit, many beacons in one batch (collect/combiner.py). A beacon resent (same `batch`) is stored once, also when
the server would derive other hits from it the second time (a later clock, a moved address).

CORS: beacons are "simple" requests (text/plain bodies), so browsers send no preflight for them; a preflight is
still answered (allowed origins only) for clients that send JSON. Answers to an allowed origin carry
`Access-Control-Allow-Origin` for it, errors included.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import Connection

from dataexport.api.body import read_body
from dataexport.api.context import AppContext, TtlCache
from dataexport.api.deps import get_context, request_db
from dataexport.api.envelope import error_body, ok
from dataexport.api.runs_view import base_url
from dataexport.api.schemas import Envelope, ErrorEnvelope, IngestResultOut
from dataexport.collect.beacon import MAX_BODY, Client, decode_beacon, hits_of
from dataexport.collect.combiner import BeaconCombiner, Target
from dataexport.collect.geo import GeoLookup
from dataexport.collect.origins import is_allowed, origin_of_referer
from dataexport.collect.tagscript import TAG_MAX_AGE_SECONDS, served_tag
from dataexport.collect.useragent import describe
from dataexport.errors import DataExportError, FieldError, Forbidden, NotFound, TooManyRequests
from dataexport.metadata.repositories import tenants
from dataexport.security.throttle import RequestRate, source_of

router = APIRouter(tags=["collect"])

TAG_ID = re.compile(r"^[0-9a-f]{16}$")
TAG_TTL_SECONDS = 5.0  # a changed allowed origin or a rotated tag id applies this fast in every process


@dataclass(frozen=True, slots=True)
class TagProject:
    project_id: int
    retention_days: int
    allowed_origins: tuple[str, ...]


class Collection:
    """One API process's collection state: tag ids seen lately, the per-client rate, the GeoIP databases, and the
    combiner that stores beacons together."""

    def __init__(self, ctx: AppContext, gate: asyncio.Semaphore) -> None:
        settings = ctx.settings
        self.combiner = BeaconCombiner(
            engine=ctx.engine, warehouse=lambda: ctx.pageviews, settings=settings, clock=ctx.clock, gate=gate
        )
        self.rate = RequestRate(per_minute=settings.collect_beacons_per_minute, burst=settings.collect_burst)
        self.geo = GeoLookup(settings.geoip_dir)
        # Tag ids seen lately, unknown ones included (None): a page view costs no DB read per beacon.
        self.tags: TtlCache[str, TagProject | None] = TtlCache(TAG_TTL_SECONDS)


def _collection(request: Request) -> Collection:
    return request.app.state.collection


def _read_tag(conn: Connection, tag_id: str) -> TagProject | None:
    row = tenants.project_by_tag_id(conn, tag_id)
    if row is None:
        return None
    return TagProject(row.id, row.retention_days, tuple(row.allowed_origins or ()))


async def _tag_project(request: Request, tag_id: str) -> TagProject:
    if not TAG_ID.match(tag_id):
        raise NotFound("Unknown tag id.", error_code="TAG_NOT_FOUND")
    collection = _collection(request)
    known, project = collection.tags.lookup(tag_id)
    if not known:
        project = await request_db(request).read(_read_tag, tag_id)
        collection.tags.put(tag_id, project)
    if project is None:
        raise NotFound("Unknown tag id.", error_code="TAG_NOT_FOUND")
    return project


def _origin(request: Request) -> str | None:
    return request.headers.get("origin") or origin_of_referer(request.headers.get("referer"))


def _cors(origin: str | None, allowed: bool) -> dict[str, str]:
    headers = {"Vary": "Origin"}
    if allowed and origin:
        headers["Access-Control-Allow-Origin"] = origin
    return headers


@router.get(
    "/tag/{tag_id}.js",
    summary="The tracking tag of a project (JavaScript)",
    response_class=Response,
    responses={
        200: {"content": {"application/javascript": {"schema": {"type": "string"}}}, "description": "The tag"},
        304: {"description": "Not modified (If-None-Match)"},
        404: {"model": ErrorEnvelope, "description": "Unknown tag id"},
    },
)
async def tag_script(tag_id: str, request: Request, ctx: AppContext = Depends(get_context)):
    await _tag_project(request, tag_id)
    tag = served_tag(tag_id, f"{base_url(ctx, request)}/collect/v1/{tag_id}")
    gzipped = "gzip" in request.headers.get("accept-encoding", "")
    headers = {
        "Cache-Control": f"public, max-age={TAG_MAX_AGE_SECONDS}",
        "ETag": tag.gzip_etag if gzipped else tag.etag,
        "Vary": "Accept-Encoding",
        # Pages of any origin load it (a <script> tag needs no CORS); this only lets them read it with fetch.
        "Access-Control-Allow-Origin": "*",
    }
    if request.headers.get("if-none-match") == headers["ETag"]:
        return Response(status_code=304, headers=headers)
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    body = tag.gzipped if gzipped else tag.body
    return Response(body, media_type="application/javascript; charset=utf-8", headers=headers)


@router.options("/collect/v1/{tag_id}", include_in_schema=False)
async def collect_preflight(tag_id: str, request: Request):
    project = await _tag_project(request, tag_id)
    origin = request.headers.get("origin")
    if not is_allowed(origin, list(project.allowed_origins)):
        return Response(status_code=403, headers=_cors(origin, False))
    headers = _cors(origin, True) | {
        "Access-Control-Allow-Methods": "POST",
        "Access-Control-Allow-Headers": "Content-Type",
        "Access-Control-Max-Age": "86400",
    }
    return Response(status_code=204, headers=headers)


@router.post(
    "/collect/v1/{tag_id}",
    summary="Take a beacon of the tracking tag (docs/tag-protocol.md)",
    response_model=Envelope[IngestResultOut],
    responses={
        400: {"model": ErrorEnvelope, "description": "The body is not a beacon"},
        403: {"model": ErrorEnvelope, "description": "The page's origin is not allowed for this tag id"},
        404: {"model": ErrorEnvelope, "description": "Unknown tag id"},
        408: {"model": ErrorEnvelope, "description": "The body did not arrive within the body timeout"},
        413: {"model": ErrorEnvelope, "description": "The body is over 64 KiB"},
        429: {"model": ErrorEnvelope, "description": "This client sends too many beacons"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"text/plain": {"schema": {"type": "string", "description": "A beacon, as JSON text"}}},
        }
    },
)
async def collect(tag_id: str, request: Request, ctx: AppContext = Depends(get_context)):
    origin = _origin(request)
    allowed = False
    try:
        project = await _tag_project(request, tag_id)
        allowed = is_allowed(origin, list(project.allowed_origins))
        if not allowed:
            raise Forbidden(
                "This page's origin may not send beacons for this tag id.",
                [FieldError("Origin", f"{origin or 'no origin'} is not an allowed origin of the project")],
                error_code="ORIGIN_NOT_ALLOWED",
            )
        address = request.client.host if request.client else None
        verdict = _collection(request).rate.take((tag_id, source_of(address)), time.monotonic())
        if not verdict.allowed:
            raise TooManyRequests("Too many beacons from this client.", retry_after=verdict.retry_after)
        body = await read_body(request, limit=MAX_BODY, timeout=ctx.settings.body_timeout_seconds)
        result = await _store(request, ctx, project, body, address)
    except DataExportError as exc:
        headers = _cors(origin, allowed)
        if isinstance(exc, TooManyRequests):
            headers["Retry-After"] = str(exc.retry_after)
        content = error_body(exc.error_code, exc.message, [e.as_dict() for e in exc.errors])
        return JSONResponse(content, status_code=exc.status, headers=headers)
    return JSONResponse(ok(result), headers=_cors(origin, allowed))


async def _store(request: Request, ctx: AppContext, project: TagProject, body: bytes, address: str | None) -> dict:
    beacon = decode_beacon(body)
    collection = _collection(request)
    city, country = collection.geo.place_of(address)
    client = Client(describe(request.headers.get("user-agent", "")[:1024]), city, country)
    hits = hits_of(beacon, client, int(ctx.clock().timestamp() * 1000))
    return await collection.combiner.submit(Target(project.project_id, project.retention_days), beacon.batch, hits)
