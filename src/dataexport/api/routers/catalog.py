"""Exportable fields, custom variables and dynamic variable keys."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool

from dataexport import catalog
from dataexport.api.deps import Caller, get_caller
from dataexport.api.envelope import ok
from dataexport.api.listing import enum_filter
from dataexport.api.schemas import (
    ERROR_RESPONSES,
    CustomVarOut,
    DynamicVarKeyOut,
    Envelope,
    ExportableFieldOut,
)
from dataexport.config import Settings
from dataexport.domain.enums import Scope
from dataexport.domain.timeparse import parse_instant
from dataexport.errors import validation_error
from dataexport.query import variables
from dataexport.warehouse.backend import ReadLimits

router = APIRouter(prefix="/v1", tags=["catalog"], responses=ERROR_RESPONSES)

CUSTOM_VARS_LOOKBACK = timedelta(days=30)
DYNAMIC_VARS_DEFAULT_RANGE = timedelta(days=7)
DYNAMIC_VARS_MAX_RANGE = timedelta(days=31)
LISTING_THREADS = 2  # a listing scans a month of one project's variables: a worker's share of the machine


def listing_limits(settings: Settings) -> ReadLimits:
    """What one listing of a project's data may take (the console's charts and pickers read with the same)."""
    spill = settings.data_dir / "work" / "duckdb-spill-api"
    return ReadLimits(threads=LISTING_THREADS, memory_limit=settings.duckdb_memory_limit, spill_dir=spill)


@router.get("/exportable-fields", response_model=Envelope[list[ExportableFieldOut]], summary="Exportable fields")
async def exportable_fields(
    scope: str = Query(..., max_length=255, description="sessions or views"),
    caller: Caller = Depends(get_caller),
):
    resolved = enum_filter(Scope, scope, "scope")
    return ok([f.as_api() for f in catalog.fields_for(resolved)])


@router.get("/custom-vars", response_model=Envelope[list[CustomVarOut]], summary="Custom variables of the project")
async def custom_vars(
    caller: Caller = Depends(get_caller),
):
    def work() -> dict:
        # Custom variables seen over the last 30 days of sessions: recent enough to be cheap, long enough to be
        # complete.
        now = caller.ctx.clock()
        window = (now - CUSTOM_VARS_LOOKBACK, now)
        return ok(
            variables.list_custom_vars(
                caller.ctx.pageviews, caller.project_id, *window, listing_limits(caller.ctx.settings)
            )
        )

    return await run_in_threadpool(work)


@router.get(
    "/dynamic-var-keys", response_model=Envelope[list[DynamicVarKeyOut]], summary="Dynamic variable keys in a range"
)
async def dynamic_var_keys(
    from_: str | None = Query(None, alias="from", max_length=64, description="ISO 8601 start (default: 7 days ago)"),
    to: str | None = Query(None, max_length=64, description="ISO 8601 end (default: now)"),
    caller: Caller = Depends(get_caller),
):
    now = caller.ctx.clock()
    # Absent means the default; given but empty (`?from=`) is a bad instant, refused like any other.
    end = parse_instant(to, "to") if to is not None else now
    start = parse_instant(from_, "from") if from_ is not None else end - DYNAMIC_VARS_DEFAULT_RANGE
    if start >= end:
        raise validation_error("from", "must be before to")
    if end - start > DYNAMIC_VARS_MAX_RANGE:
        raise validation_error("to", "must be at most 31 days after from")

    def work() -> dict:
        keys = variables.list_dynamic_var_keys(
            caller.ctx.pageviews, caller.project_id, start, end, listing_limits(caller.ctx.settings)
        )
        return ok(keys)

    return await run_in_threadpool(work)
