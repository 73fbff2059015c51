"""`GET /files/{key}`: downloads of local-storage files through signed, expiring URLs (no token needed)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from dataexport.api.context import AppContext
from dataexport.api.deps import get_context
from dataexport.errors import NotFound
from dataexport.storage.http import signed_file_response
from dataexport.storage.local import LocalStorage

router = APIRouter(tags=["files"])


@router.get("/files/{key:path}", summary="Download an export part (signed URL from a run's files[].url)",
            response_class=StreamingResponse)
def download(key: str, request: Request, ctx: AppContext = Depends(get_context)):
    if not isinstance(ctx.storage, LocalStorage):  # S3 deployments hand out presigned S3 URLs instead
        raise NotFound("No such file.")
    status, headers, body = signed_file_response(
        ctx.storage, key, request.query_params.get("expires"), request.query_params.get("sig"),
        request.headers.get("range"), ctx.clock(),
    )
    return StreamingResponse(body, status_code=status, headers=headers)
