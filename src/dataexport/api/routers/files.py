"""`GET /files/{key}`: downloads of local-storage files through signed, expiring URLs (no token needed)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from dataexport.api.context import AppContext
from dataexport.api.deps import get_context
from dataexport.errors import NotFound
from dataexport.storage.http import signed_file_response
from dataexport.storage.local import LocalStorage

router = APIRouter(tags=["files"])

_PART = {"schema": {"type": "string", "format": "binary"}}
_TEXT = {"text/plain": {"schema": {"type": "string"}}}
# What the route really answers (storage.http): the part's bytes, or a short text reason.
_ANSWERS = {
    200: {"description": "The whole part", "content": {"application/gzip": _PART, "application/octet-stream": _PART}},
    206: {
        "description": "One byte range of the part (Range: bytes=...)",
        "content": {"application/gzip": _PART, "application/octet-stream": _PART},
    },
    403: {"description": "Missing or invalid signature", "content": _TEXT},
    404: {
        "description": "No such file (JSON envelope when storage is S3, whose URLs are presigned)",
        "content": {**_TEXT, "application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}},
    },
    410: {"description": "The download link has expired", "content": _TEXT},
    416: {
        "description": "The range starts past the end of the part",
        "content": {"application/gzip": _PART, "application/octet-stream": _PART},
    },
}


@router.get(
    "/files/{key:path}",
    summary="Download an export part (signed URL from a run's files[].url)",
    response_class=StreamingResponse,
    responses=_ANSWERS,
)
def download(key: str, request: Request, ctx: AppContext = Depends(get_context)):
    return _answer(key, request, ctx, with_body=True)


# HEAD: what GET would answer (status, size, signature and expiry checks) without the bytes; download tools ask
# it first. Left out of the OpenAPI document, which describes HEAD through GET (RFC 9110).
@router.head("/files/{key:path}", include_in_schema=False)
def head(key: str, request: Request, ctx: AppContext = Depends(get_context)):
    return _answer(key, request, ctx, with_body=False)


def _answer(key: str, request: Request, ctx: AppContext, *, with_body: bool) -> Response:
    if not isinstance(ctx.storage, LocalStorage):  # S3 deployments hand out presigned S3 URLs instead
        raise NotFound("No such file.")
    status, headers, body = signed_file_response(
        ctx.storage,
        key,
        request.query_params.get("expires"),
        request.query_params.get("sig"),
        request.headers.get("range"),
        ctx.clock(),
        with_body=with_body,
    )
    if not with_body:
        return Response(b"", status_code=status, headers=headers)  # headers keep the GET's Content-Length
    if isinstance(body, bytes):
        return Response(body, status_code=status, headers=headers)
    return StreamingResponse(body, status_code=status, headers=headers)
