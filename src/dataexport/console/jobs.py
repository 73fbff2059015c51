"""Console pages of export jobs: the list with the API's filters, creation with the field picker, a job with its
runs (live progress, durations), lifecycle actions, and a run with its files and manifest.

Every read and change goes through what the API's routes use (api/routers/exports.py): the same repositories and
presenters, `parse_job_spec` and `engine.lifecycle`. Only the way in (a form) and out (HTML) differ.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from sqlalchemy import Row
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from dataexport import catalog
from dataexport.api.listing import enum_filter, page_params
from dataexport.api.presenters import job_out, run_out
from dataexport.api.routers.catalog import (
    CUSTOM_VARS_LOOKBACK,
    DYNAMIC_VARS_DEFAULT_RANGE,
    listing_limits,
)
from dataexport.api.runs_view import run_detail
from dataexport.console import charts, jobform, web
from dataexport.console.projects import PROJECT_ID
from dataexport.domain.enums import DeviceLabel, Format, Frequency, JobState, Order, RunState, Scope
from dataexport.domain.jobspec import parse_job_spec
from dataexport.engine import lifecycle
from dataexport.errors import NotFound, ValidationFailed
from dataexport.metadata.models import Project
from dataexport.metadata.repositories import jobs as jobs_repo
from dataexport.metadata.repositories import runs as runs_repo
from dataexport.metadata.repositories import segments as segments_repo
from dataexport.metadata.repositories.paging import Page
from dataexport.query import variables

router = APIRouter(prefix=web.PREFIX, route_class=web.ConsoleRoute, include_in_schema=False)

JOB_ID = Path(..., ge=1, le=2**53)
RUN_ID = Path(..., ge=1, le=2**53)
FINAL_RUN_STATES = frozenset({RunState.SUCCESS.value, RunState.FAILURE.value})
DURATION_CHART_RUNS = 30
CHOICES = {
    "format": [f.value for f in Format],
    "frequency": [f.value for f in Frequency],
    "scope": [s.value for s in Scope],
    "state": [s.value for s in JobState],
    "deviceLabel": [d.value for d in DeviceLabel],
}


def _filter(raw: str | None) -> str | None:
    return raw or None  # the form sends an empty value for "any"


@router.get("/projects/{project_id}/jobs")
async def jobs_page(
    request: Request,
    project_id: int = PROJECT_ID,
    format: str | None = Query(None, max_length=32),
    frequency: str | None = Query(None, max_length=32),
    scope: str | None = Query(None, max_length=255),
    state: str | None = Query(None, max_length=32),
    page: Page = Depends(page_params),
) -> Response:
    filters = {
        "format": _filter(format),
        "frequency": _filter(frequency),
        "scope": _filter(scope),
        "state": _filter(state),
    }
    settings = web.context_of(request).settings

    def work(session: Session, signed: web.Signed) -> tuple[Project, list[dict[str, Any]]]:
        project = web.member_project(session, signed, project_id)
        rows = jobs_repo.list_jobs(
            session.connection(),
            project.id,
            page,
            format=enum_filter(Format, filters["format"], "format"),
            frequency=enum_filter(Frequency, filters["frequency"], "frequency"),
            scope=enum_filter(Scope, filters["scope"], "scope"),
            state=enum_filter(JobState, filters["state"], "state"),
        )
        return project, [job_out(row, project, settings) for row in rows]

    signed, (project, jobs) = await web.in_session(request, work)
    query = {k: v for k, v in filters.items() if v}
    return web.render(
        request,
        "jobs.html",
        signed,
        project=project,
        jobs=jobs,
        filters=filters,
        choices=CHOICES,
        page=page,
        query=query,
        has_next=len(jobs) == page.limit,
    )


def _picker_data(request: Request, project: Project) -> dict[str, Any]:
    """What the field picker offers: the catalog of both scopes (as GET /v1/exportable-fields answers it), and the
    custom var positions and dynamic var keys of the project's data (as GET /v1/custom-vars and
    /v1/dynamic-var-keys answer them)."""
    ctx = web.context_of(request)
    now = ctx.clock()
    limits = listing_limits(ctx.settings)
    custom = variables.list_custom_vars(ctx.pageviews, project.id, now - CUSTOM_VARS_LOOKBACK, now, limits)
    dynamic = variables.list_dynamic_var_keys(ctx.pageviews, project.id, now - DYNAMIC_VARS_DEFAULT_RANGE, now, limits)
    return {
        "fields": {scope.value: [f.as_api() for f in catalog.fields_for(scope)] for scope in Scope},
        # Which inputs a chosen field's row has beside its alias (customVarPosition, dynamicVarKey).
        "kinds": {f.name: list(f.parameters) for scope in Scope for f in catalog.fields_for(scope)},
        "customVars": custom,
        "dynamicVarKeys": dynamic,
    }


async def _job_form_page(
    request: Request, project_id: int, form: jobform.FormState | None, status: int = 200
) -> Response:
    now = web.context_of(request).clock()

    def work(session: Session, signed: web.Signed) -> tuple[Project, list[Any]]:
        project = web.member_project(session, signed, project_id)
        return project, segments_repo.list_segments(session, project.id)

    signed, (project, segments) = await web.in_session(request, work, change=True)
    picker = await run_in_threadpool(_picker_data, request, project)
    state = form or jobform.new_form(now, request.query_params.get("scope", "sessions"))
    return web.render(
        request,
        "job_new.html",
        signed,
        status,
        project=project,
        form=state,
        segments=segments,
        picker=picker,
        choices=CHOICES,
        input_id=jobform.input_id,
    )


@router.get("/projects/{project_id}/jobs/new")
async def new_job_page(request: Request, project_id: int = PROJECT_ID) -> Response:
    return await _job_form_page(request, project_id, None)


@router.post("/projects/{project_id}/jobs")
async def create_job(request: Request, project_id: int = PROJECT_ID) -> Response:
    posted = await web.posted_form(request)
    items = [(k, v) for k, v in posted.multi_items() if isinstance(v, str) and k != "csrf"]
    body = jobform.body_from_form(items)
    ctx = web.context_of(request)
    now = ctx.clock()

    def work(session: Session, signed: web.Signed) -> int:
        project = web.member_project(session, signed, project_id)
        spec = parse_job_spec(body, now=now, retention_days=project.retention_days)
        job = lifecycle.create_job(
            session, project=project, actor_id=signed.operator_id, spec=spec, settings=ctx.settings, now=now
        )
        return job.id

    try:
        _, job_id = await web.in_session(request, work, change=True)
    except ValidationFailed as exc:
        return await _job_form_page(request, project_id, jobform.posted_form(body, items, exc.errors), status=400)
    return web.see_other(f"{web.PREFIX}/projects/{project_id}/jobs/{job_id}")


def _job_row(session: Session, project: Project, job_id: int) -> Row:
    job = jobs_repo.read_job(session.connection(), project.id, job_id)
    if job is None:
        raise NotFound(f"Export job {job_id} not found.")
    return job


def _duration(run: Row) -> float | None:
    if run.started_at is None or run.ended_at is None:
        return None
    return max((run.ended_at - run.started_at).total_seconds(), 0.0)


def _runs_view(session: Session, job: Row, page: Page) -> dict[str, Any]:
    runs = runs_repo.list_runs(session.connection(), job.id, page)
    shown = [{**run_out(r), "duration": _duration(r), "error": r.error, "rows": r.rows} for r in runs]
    recent = runs_repo.list_runs(session.connection(), job.id, Page(1, DURATION_CHART_RUNS, Order.DESC))
    timed = [(f"#{r.id}", d) for r in reversed(recent) if (d := _duration(r)) is not None]
    return {
        "runs": shown,
        "live": any(r["state"] not in FINAL_RUN_STATES for r in shown),
        "durations": charts.bar_chart("Run durations", timed, text=charts.seconds_text) if timed else None,
        "has_next": len(runs) == page.limit,
    }


@router.get("/projects/{project_id}/jobs/{job_id}")
async def job_page(
    request: Request, project_id: int = PROJECT_ID, job_id: int = JOB_ID, page: Page = Depends(page_params)
) -> Response:
    settings = web.context_of(request).settings

    def work(session: Session, signed: web.Signed) -> dict[str, Any]:
        project = web.member_project(session, signed, project_id)
        job = _job_row(session, project, job_id)
        segment = segments_repo.get_segment(session, project.id, job.segment_id) if job.segment_id else None
        return {
            "device_label": job.device_label,
            "project": project,
            "job": job_out(job, project, settings),
            "segment": segment,
            **_runs_view(session, job, page),
        }

    signed, view = await web.in_session(request, work)
    return web.render(request, "job.html", signed, page=page, **view)


@router.get("/projects/{project_id}/jobs/{job_id}/runs")
async def job_runs_fragment(
    request: Request, project_id: int = PROJECT_ID, job_id: int = JOB_ID, page: Page = Depends(page_params)
) -> Response:
    """The runs table alone: what the job page polls while a run is not over."""

    def work(session: Session, signed: web.Signed) -> dict[str, Any]:
        project = web.member_project(session, signed, project_id)
        return {
            "project": project,
            "job": {"jobId": job_id},
            **_runs_view(session, _job_row(session, project, job_id), page),
        }

    signed, view = await web.in_session(request, work)
    return web.render(request, "_runs.html", signed, page=page, **view)


_LIFECYCLE: dict[str, Callable[..., object]] = {
    "suspend": lifecycle.suspend_job,
    "resume": lifecycle.resume_job,
    "delete": lifecycle.delete_job,
}


def _lifecycle(action: str):
    change = _LIFECYCLE[action]

    async def handler(request: Request, project_id: int = PROJECT_ID, job_id: int = JOB_ID) -> Response:
        await web.posted_form(request)
        ctx = web.context_of(request)
        now = ctx.clock()

        def work(session: Session, signed: web.Signed) -> None:
            project = web.member_project(session, signed, project_id)
            extra = {"settings": ctx.settings} if action == "resume" else {}
            change(session, project.id, job_id, actor_id=signed.operator_id, now=now, **extra)

        await web.in_session(request, work, change=True)
        if action == "delete":
            return web.see_other(f"{web.PREFIX}/projects/{project_id}/jobs")
        return web.see_other(f"{web.PREFIX}/projects/{project_id}/jobs/{job_id}")

    return handler


for _action in ("suspend", "resume", "delete"):
    router.add_api_route(f"/projects/{{project_id}}/jobs/{{job_id}}/{_action}", _lifecycle(_action), methods=["POST"])


@router.get("/projects/{project_id}/jobs/{job_id}/runs/{run_id}")
async def run_page(
    request: Request, project_id: int = PROJECT_ID, job_id: int = JOB_ID, run_id: int = RUN_ID
) -> Response:
    ctx = web.context_of(request)

    def work(session: Session, signed: web.Signed) -> dict[str, Any]:
        project = web.member_project(session, signed, project_id)
        job = _job_row(session, project, job_id)
        run = runs_repo.get_run(session.connection(), job.id, run_id)
        if run is None:
            raise NotFound(f"Job run {run_id} not found.")
        files = runs_repo.list_files(session.connection(), run.id)
        detail = run_detail(ctx, request, run, files)
        # The manifest's own content, from the rows recorded with it: each part's rows, size and sha256.
        parts = [{"partId": f.part_id, "rows": f.rows, "fileSize": f.size, "sha256": f.sha256} for f in files]
        return {
            "project": project,
            "job": job_out(job, project, ctx.settings),
            "run": detail,
            "parts": parts,
            "duration": _duration(run),
            "live": run.state not in FINAL_RUN_STATES,
            "now": ctx.clock(),
        }

    signed, view = await web.in_session(request, work)
    return web.render(request, "run.html", signed, **view)
