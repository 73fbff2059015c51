"""Export jobs and their runs: the vendor's endpoints plus documented extensions (delete, suspend, resume)."""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Path, Query, Request
from sqlalchemy import Connection, Row
from sqlalchemy.orm import Session

from dataexport.api.deps import Caller, get_caller
from dataexport.api.envelope import EnvelopeResponse, ok
from dataexport.api.listing import enum_filter, page_params
from dataexport.api.presenters import job_out, run_out, successful_run_out
from dataexport.api.runs_view import run_detail
from dataexport.api.schemas import (
    ERROR_RESPONSES,
    Envelope,
    ErrorEnvelope,
    JobCreated,
    JobOut,
    RunDetailOut,
    RunOut,
    SuccessfulRunOut,
)
from dataexport.domain.enums import Format, Frequency, JobState, RunState, Scope
from dataexport.domain.jobspec import parse_job_spec
from dataexport.engine import lifecycle
from dataexport.errors import FieldError, NotFound, ValidationFailed
from dataexport.metadata.repositories import jobs as jobs_repo
from dataexport.metadata.repositories import runs as runs_repo
from dataexport.metadata.repositories.paging import Page

router = APIRouter(prefix="/v1/exports", tags=["exports"], responses=ERROR_RESPONSES)


_CREATE_SCHEMA = {
    "type": "object",
    "required": ["name", "format", "frequency", "fields", "deviceLabel"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 255},
        "format": {"type": "string", "enum": ["CSV", "JSONL"]},
        "scope": {"type": "string", "enum": ["sessions", "views"]},
        "frequency": {
            "type": "object",
            "required": ["value"],
            "properties": {
                "value": {"type": "string", "enum": ["once", "daily", "hourly"]},
                "dateRange": {
                    "type": "object",
                    "properties": {"from": {"type": "string"}, "to": {"type": "string"}},
                },
            },
        },
        "fields": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["fieldName"],
                "properties": {
                    "fieldName": {"type": "string"},
                    "aliasName": {"type": "string"},
                    "customVarPosition": {
                        "oneOf": [{"type": "integer", "minimum": 1, "maximum": 20}, {"type": "string"}]
                    },
                    "dynamicVarKey": {"type": "string"},
                },
            },
        },
        "deviceLabel": {"type": "string", "enum": ["all", "desktop", "mobile", "tablet"]},
        "segmentId": {"oneOf": [{"type": "integer"}, {"type": "string"}]},
    },
}


async def _json_body(request: Request):
    # Already read whole, capped and within its deadline by the edge guard (api/http_guards.py).
    raw = await request.body()
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):  # nesting is bounded before (api/http_guards.py)
        raise ValidationFailed(
            "The request body is not valid JSON.",
            [FieldError("body", "must be a valid JSON object")],
            error_code="INVALID_JSON",
        ) from None


@router.post(
    "",
    response_model=Envelope[JobCreated],
    summary="Create an export job",
    responses={code: {"model": ErrorEnvelope} for code in (408, 413)},
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": _CREATE_SCHEMA}}}},
)
async def create_export(request: Request, caller: Caller = Depends(get_caller)):
    # The body is parsed by our own validator, so every error names its JSON path (fields[2].aliasName).
    ctx = caller.ctx
    body = await _json_body(request)

    def work(session: Session) -> dict:
        now = ctx.clock()
        spec = parse_job_spec(body, now=now, retention_days=caller.project.retention_days)
        job = lifecycle.create_job(
            session, project=caller.project, actor_id=caller.actor_id, spec=spec, settings=ctx.settings, now=now
        )
        return ok({"jobId": job.id})

    return await caller.db.run(work)


@router.get("", response_model=Envelope[list[JobOut]], response_model_exclude_unset=True, summary="List export jobs")
async def list_exports(
    format: str | None = Query(None, max_length=32),
    frequency: str | None = Query(None, max_length=32),
    scope: str | None = Query(None, max_length=255),
    state: str | None = Query(None, max_length=32),
    page: Page = Depends(page_params),
    caller: Caller = Depends(get_caller),
):
    def work(conn: Connection) -> dict:
        jobs = jobs_repo.list_jobs(
            conn,
            caller.project_id,
            page,
            format=enum_filter(Format, format, "format"),
            frequency=enum_filter(Frequency, frequency, "frequency"),
            scope=enum_filter(Scope, scope, "scope"),
            state=enum_filter(JobState, state, "state"),
        )
        return ok([job_out(j, caller.project, caller.ctx.settings) for j in jobs])

    return EnvelopeResponse(await caller.db.read(work))


@router.get("/successful-runs", response_model=Envelope[list[SuccessfulRunOut]], summary="List successful runs")
async def list_successful_runs(
    page: Page = Depends(page_params),
    caller: Caller = Depends(get_caller),
):
    def work(conn: Connection) -> dict:
        return ok([successful_run_out(row) for row in runs_repo.successful_runs(conn, caller.project_id, page)])

    return EnvelopeResponse(await caller.db.read(work))


def _job(conn: Connection, caller: Caller, job_id: int) -> Row:
    job = jobs_repo.read_job(conn, caller.project_id, job_id)
    if job is None:
        # Another project's job id is answered exactly like an unknown id.
        raise NotFound(f"Export job {job_id} not found.")
    return job


@router.get("/{jobId}", response_model=Envelope[JobOut], response_model_exclude_unset=True, summary="Get an export job")
async def get_export(
    job_id: int = Path(..., alias="jobId", ge=1, le=2**53),
    caller: Caller = Depends(get_caller),
):
    def work(conn: Connection) -> dict:
        return ok(job_out(_job(conn, caller, job_id), caller.project, caller.ctx.settings))

    return EnvelopeResponse(await caller.db.read(work))


@router.get("/{jobId}/runs", response_model=Envelope[list[RunOut]], summary="List the runs of a job")
async def list_job_runs(
    job_id: int = Path(..., alias="jobId", ge=1, le=2**53),
    state: str | None = Query(None, max_length=32),
    page: Page = Depends(page_params),
    caller: Caller = Depends(get_caller),
):
    def work(conn: Connection) -> dict:
        job = _job(conn, caller, job_id)
        # Clients filter runs with job-state words too (state=completed); map them onto run states.
        run_state = None
        if state is not None:
            run_state = _RUN_STATE_ALIASES.get(state.upper()) or enum_filter(RunState, state, "state")
        return ok([run_out(r) for r in runs_repo.list_runs(conn, job.id, page, state=run_state)])

    return EnvelopeResponse(await caller.db.read(work))


_RUN_STATE_ALIASES = {"COMPLETED": RunState.SUCCESS, "FAILED": RunState.FAILURE}


@router.get("/{jobId}/runs/{runId}", response_model=Envelope[RunDetailOut], summary="Get a job run with its files")
async def get_job_run(
    request: Request,
    job_id: int = Path(..., alias="jobId", ge=1, le=2**53),
    run_id: int = Path(..., alias="runId", ge=1, le=2**53),
    caller: Caller = Depends(get_caller),
):
    def work(conn: Connection) -> dict:
        job = _job(conn, caller, job_id)
        run = runs_repo.get_run(conn, job.id, run_id)
        if run is None:
            raise NotFound(f"Job run {run_id} not found.")
        return ok(run_detail(caller.ctx, request, run, runs_repo.list_files(conn, run.id)))

    return EnvelopeResponse(await caller.db.read(work))


def _lifecycle_action(action, *, with_settings: bool = False):
    async def handler(
        job_id: int = Path(..., alias="jobId", ge=1, le=2**53),
        caller: Caller = Depends(get_caller),
    ):
        def work(session: Session) -> dict:
            extra = {"settings": caller.ctx.settings} if with_settings else {}
            job = action(session, caller.project_id, job_id, actor_id=caller.actor_id, now=caller.ctx.clock(), **extra)
            session.flush()
            return ok(job_out(job, caller.project, caller.ctx.settings))

        return await caller.db.run(work)

    return handler


_JOB_ANSWER = {"response_model": Envelope[JobOut], "response_model_exclude_unset": True}
router.add_api_route(
    "/{jobId}",
    _lifecycle_action(lifecycle.delete_job),
    methods=["DELETE"],
    **_JOB_ANSWER,
    summary="Delete an export job (extension: state DELETED, no more runs)",
)
router.add_api_route(
    "/{jobId}/suspend",
    _lifecycle_action(lifecycle.suspend_job),
    methods=["POST"],
    **_JOB_ANSWER,
    summary="Suspend a daily or hourly job (extension)",
)
router.add_api_route(
    "/{jobId}/resume",
    _lifecycle_action(lifecycle.resume_job, with_settings=True),
    methods=["POST"],
    **_JOB_ANSWER,
    summary="Resume a suspended daily or hourly job (extension)",
)
