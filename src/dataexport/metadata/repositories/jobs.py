"""Export jobs. Every read is scoped to a project."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from dataexport.domain.enums import Format, Frequency, JobState, Scope
from dataexport.metadata.models import ExportJob
from dataexport.metadata.repositories.paging import Page, paginate


def add_job(session: Session, job: ExportJob) -> ExportJob:
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, project_id: int, job_id: int, *, for_update: bool = False) -> ExportJob | None:
    stmt = select(ExportJob).where(ExportJob.id == job_id, ExportJob.project_id == project_id)
    if for_update:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).first()


def list_jobs(
    session: Session, project_id: int, page: Page, *, format: Format | None = None,
    frequency: Frequency | None = None, scope: Scope | None = None, state: JobState | None = None,
) -> list[ExportJob]:
    stmt = select(ExportJob).where(ExportJob.project_id == project_id)
    if state is None:
        # Deleted jobs are hidden from the default listing; `state=DELETED` still finds them.
        stmt = stmt.where(ExportJob.state != JobState.DELETED.value)
    else:
        stmt = stmt.where(ExportJob.state == state.value)
    if format is not None:
        stmt = stmt.where(ExportJob.format == format.value)
    if frequency is not None:
        stmt = stmt.where(ExportJob.frequency == frequency.value)
    if scope is not None:
        stmt = stmt.where(ExportJob.scope == scope.value)
    return list(session.scalars(paginate(stmt, page, ExportJob.id)))


def recurring_jobs_to_schedule(session: Session) -> list[ExportJob]:
    return list(
        session.scalars(
            select(ExportJob).where(
                ExportJob.state == JobState.ACTIVE.value,
                ExportJob.frequency != Frequency.ONCE.value,
            ).order_by(ExportJob.id)
        )
    )


def touch(job: ExportJob, *, actor_id: int, now: datetime) -> None:
    job.last_updator_id = actor_id
    job.updated_at = now
