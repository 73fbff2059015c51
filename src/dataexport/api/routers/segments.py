"""`GET /v1/segments` in the shape of the vendor's Metrics API: a token with the metrics or data-export scope."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from sqlalchemy.orm import Session

from dataexport.api.deps import Caller, get_metrics_caller
from dataexport.api.envelope import ok
from dataexport.api.schemas import ERROR_RESPONSES, Envelope, SegmentOut
from dataexport.domain.timeparse import format_instant as iso
from dataexport.errors import validation_error
from dataexport.metadata.repositories import segments as segments_repo

router = APIRouter(prefix="/v1", tags=["segments"], responses=ERROR_RESPONSES)


def _ids(raw: str | None) -> list[int] | None:
    if raw is None:
        return None
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    # isascii: str.isdigit() is also true for "²" or "٣", which int() refuses or reads as another number.
    if not parts or len(parts) > 100 or not all(p.isascii() and p.isdigit() and len(p) <= 15 for p in parts):
        raise validation_error("ids", "must be a comma-separated list of up to 100 segment ids")
    return [int(p) for p in parts]


@router.get("/segments", response_model=Envelope[list[SegmentOut]], summary="Segments of the project")
async def list_segments(
    ids: str | None = Query(None, max_length=2000, description="Comma-separated segment ids"),
    caller: Caller = Depends(get_metrics_caller),
):
    wanted = _ids(ids)

    def work(session: Session) -> dict:
        segments = segments_repo.list_segments(session, caller.project_id, wanted)
        return ok(
            [
                {
                    "id": s.id,
                    "name": s.name,
                    "source": s.source,
                    "createdAt": iso(s.created_at),
                    "updatedAt": iso(s.updated_at),
                }
                for s in segments
            ]
        )

    return await caller.db.run(work)
