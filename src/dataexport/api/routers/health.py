from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from sqlalchemy import text

from dataexport.api.context import AppContext
from dataexport.api.deps import get_context

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process answers")
def healthz():
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: the metadata DB answers",
    responses={503: {"description": "The metadata DB does not answer"}},
)
def readyz(ctx: AppContext = Depends(get_context)):
    try:
        with ctx.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:
        return JSONResponse({"status": "unavailable", "database": "down"}, status_code=503)
    return {"status": "ok", "database": "up"}
