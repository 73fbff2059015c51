"""Console pages of projects: the list, a project's overview (ingest volume), and its credentials."""

from __future__ import annotations

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from dataexport import admin
from dataexport.api.routers.catalog import listing_limits
from dataexport.console import charts, web
from dataexport.errors import NotFound
from dataexport.metadata.models import OAuthClient, Project
from dataexport.metadata.repositories import operators, tenants
from dataexport.query.volume import IngestVolume, ingest_volume

router = APIRouter(prefix=web.PREFIX, route_class=web.ConsoleRoute, include_in_schema=False)

PROJECT_ID = Path(..., ge=1, le=2**53)


@router.get("/projects")
async def projects_page(request: Request) -> Response:
    def work(session: Session, signed: web.Signed) -> list[Project]:
        return operators.member_projects(session, signed.operator_id)

    signed, projects = await web.in_session(request, work)
    return web.render(request, "projects.html", signed, projects=projects)


def _volume_charts(volume: IngestVolume) -> tuple[charts.BarChart, charts.BarChart]:
    hourly = charts.bar_chart(
        "Pageviews per hour, last 48 hours", [(hour.strftime("%d %H:00"), n) for hour, n in volume.hourly]
    )
    daily = charts.bar_chart("Pageviews per day, last 30 days", [(day.strftime("%b %d"), n) for day, n in volume.daily])
    return hourly, daily


@router.get("/projects/{project_id}")
async def project_page(request: Request, project_id: int = PROJECT_ID) -> Response:
    signed, project = await web.in_session(request, lambda s, who: web.member_project(s, who, project_id))
    ctx = web.context_of(request)
    volume = await run_in_threadpool(
        ingest_volume,
        ctx.pageviews,
        project.id,
        now=ctx.clock(),
        tz=project.timezone,
        limits=listing_limits(ctx.settings),
    )
    hourly, daily = _volume_charts(volume)
    return web.render(
        request,
        "project.html",
        signed,
        project=project,
        volume=volume,
        hourly=hourly,
        daily=daily,
        tag_url=f"{(ctx.settings.public_base_url or str(request.base_url)).rstrip('/')}/tag/{project.tag_id}.js",
    )


def _credentials(session: Session, project: Project) -> list[OAuthClient]:
    return admin.list_clients(session, project_id=project.id)


async def _credentials_page(
    request: Request, project_id: int, *, shown_once: dict[str, str] | None = None, status: int = 200
) -> Response:
    def work(session: Session, signed: web.Signed) -> tuple[Project, list[OAuthClient]]:
        project = web.member_project(session, signed, project_id)
        return project, _credentials(session, project)

    signed, (project, clients) = await web.in_session(request, work)
    return web.render(
        request,
        "credentials.html",
        signed,
        status,
        project=project,
        clients=clients,
        shown_once=shown_once,
        max_clients=admin.MAX_CLIENTS,
    )


@router.get("/projects/{project_id}/credentials")
async def credentials_page(request: Request, project_id: int = PROJECT_ID) -> Response:
    return await _credentials_page(request, project_id)


@router.post("/projects/{project_id}/credentials")
async def create_credentials(request: Request, project_id: int = PROJECT_ID) -> Response:
    form = await web.posted_form(request)
    name = str(form.get("name") or "").strip()[:255]
    now = web.context_of(request).clock()

    def work(session: Session, signed: web.Signed) -> dict[str, str]:
        project = web.member_project(session, signed, project_id)
        new = admin.create_client(session, now=now, project_id=project.id, name=name)
        return {"client_id": new.client.client_id, "client_secret": new.secret, "name": name}

    _, created = await web.in_session(request, work, change=True)
    # Shown on this answer only (no-store): the database keeps the secret's argon2 hash.
    return await _credentials_page(request, project_id, shown_once=created, status=201)


@router.post("/projects/{project_id}/credentials/{client_id}/revoke")
async def revoke_credentials(
    request: Request, project_id: int = PROJECT_ID, client_id: str = Path(..., max_length=64)
) -> Response:
    await web.posted_form(request)
    ctx = web.context_of(request)
    now = ctx.clock()

    def work(session: Session, signed: web.Signed) -> int:
        project = web.member_project(session, signed, project_id)
        client = tenants.client_by_client_id(session, client_id)
        if client is None or client.project_id != project.id:
            raise NotFound(f"Client {client_id} not found.")
        return admin.revoke_client(session, client_id, now=now).id

    _, pk = await web.in_session(request, work, change=True)
    ctx.token_guard.revoke(pk)  # at once in this process; the others within a second (api.deps)
    return web.see_other(f"{web.PREFIX}/projects/{project_id}/credentials")


@router.post("/projects/{project_id}/ingest-key")
async def rotate_ingest_key(request: Request, project_id: int = PROJECT_ID) -> Response:
    await web.posted_form(request)

    def work(session: Session, signed: web.Signed) -> str:
        project = web.member_project(session, signed, project_id)
        return admin.rotate_ingest_key(session, project.id)

    _, key = await web.in_session(request, work, change=True)
    return await _credentials_page(request, project_id, shown_once={"ingest_key": key})
