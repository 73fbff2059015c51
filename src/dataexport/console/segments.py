"""Console pages of segments: the list, and creation with a JSON filter editor checked by the CLI's own rules
(`admin.segment_filter_from_text`, then `admin.create_segment`)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from dataexport import admin
from dataexport.console import web
from dataexport.console.projects import PROJECT_ID
from dataexport.domain.segment_filter import OPS
from dataexport.errors import ValidationFailed
from dataexport.metadata.models import Project, Segment
from dataexport.metadata.repositories import segments as segments_repo

router = APIRouter(prefix=web.PREFIX, route_class=web.ConsoleRoute, include_in_schema=False)

EXAMPLE_FILTER = {"all": [{"field": "country_code", "op": "eq", "value": "FR"}, {"customVar": 1, "op": "exists"}]}


async def _segments_page(
    request: Request,
    project_id: int,
    *,
    status: int = 200,
    name: str = "",
    filter_text: str | None = None,
    errors: dict[str, list[str]] | None = None,
) -> Response:
    def work(session: Session, signed: web.Signed) -> tuple[Project, list[Segment]]:
        project = web.member_project(session, signed, project_id)
        return project, segments_repo.list_segments(session, project.id)

    signed, (project, segments) = await web.in_session(request, work)
    return web.render(
        request,
        "segments.html",
        signed,
        status,
        project=project,
        segments=[{"segment": s, "filter": json.dumps(s.filter, indent=2)} for s in segments],
        name=name,
        filter_text=json.dumps(EXAMPLE_FILTER, indent=2) if filter_text is None else filter_text,
        errors=errors or {},
        ops=OPS,
    )


@router.get("/projects/{project_id}/segments")
async def segments_page(request: Request, project_id: int = PROJECT_ID) -> Response:
    return await _segments_page(request, project_id)


@router.post("/projects/{project_id}/segments")
async def create_segment(request: Request, project_id: int = PROJECT_ID) -> Response:
    form = await web.posted_form(request)
    name = str(form.get("name") or "")
    text = str(form.get("filter") or "")
    now = web.context_of(request).clock()

    def work(session: Session, signed: web.Signed) -> int:
        project = web.member_project(session, signed, project_id)
        parsed: Any = admin.segment_filter_from_text(text)
        return admin.create_segment(session, project_id=project.id, name=name, filter=parsed, now=now).id

    try:
        await web.in_session(request, work, change=True)
    except ValidationFailed as exc:
        errors: dict[str, list[str]] = {}
        for error in exc.errors:
            # The filter's own paths (filter.all[1].value) all belong to the editor.
            key = "name" if error.field == "name" else "filter"
            errors.setdefault(key, []).append(f"{error.field}: {error.message}" if key == "filter" else error.message)
        return await _segments_page(request, project_id, status=400, name=name, filter_text=text, errors=errors)
    return web.see_other(f"{web.PREFIX}/projects/{project_id}/segments")
