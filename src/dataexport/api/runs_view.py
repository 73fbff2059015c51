"""A run with its downloadable files: signed, expiring URLs built by the storage backend."""

from __future__ import annotations

from fastapi import Request
from sqlalchemy import Row

from dataexport.api.context import AppContext
from dataexport.api.presenters import inclusive_end, run_out
from dataexport.domain.timeparse import format_instant as iso
from dataexport.metadata.models import JobRun, RunFile


def base_url(ctx: AppContext, request: Request) -> str:
    return (ctx.settings.public_base_url or str(request.base_url)).rstrip("/")


def run_detail(ctx: AppContext, request: Request, run: JobRun | Row, files: list[RunFile] | list[Row]) -> dict:
    now = ctx.clock()
    live = [f for f in files if f.expiration_date > now]
    out = run_out(run)
    out["files"] = [
        {
            "partId": f.part_id,
            "fileSize": f.size,
            "url": _url(ctx, request, f.key, f.expiration_date),
            "expirationDate": iso(f.expiration_date),
        }
        for f in live
    ]
    out["from"] = iso(run.window_start)
    out["to"] = iso(inclusive_end(run.window_end))
    out["rows"] = run.rows
    out["manifestUrl"] = (
        _url(ctx, request, run.manifest_key, live[0].expiration_date) if run.manifest_key and live else None
    )
    out["errorMessage"] = run.error
    return out


def _url(ctx: AppContext, request: Request, key: str, expires_at) -> str:
    if ctx.storage is None:
        raise RuntimeError("no storage configured")
    return ctx.storage.download_url(key, expires_at=expires_at, base_url=base_url(ctx, request))
