from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from dataexport.metadata.models import Segment


def create_segment(session: Session, *, project_id: int, name: str, filter: dict, now: datetime) -> Segment:
    segment = Segment(project_id=project_id, name=name, filter=filter, created_at=now, updated_at=now)
    session.add(segment)
    session.flush()
    return segment


def get_segment(session: Session, project_id: int, segment_id: int) -> Segment | None:
    """Scoped to the project: another project's segment id is simply not found."""
    return session.scalars(select(Segment).where(Segment.id == segment_id, Segment.project_id == project_id)).first()


def list_segments(session: Session, project_id: int, ids: Sequence[int] | None = None) -> list[Segment]:
    stmt = select(Segment).where(Segment.project_id == project_id).order_by(Segment.id)
    if ids is not None:
        stmt = stmt.where(Segment.id.in_(list(ids)))
    return list(session.scalars(stmt))
