"""Export jobs. Every read is scoped to a project.

The API's reads (`read_job`, `list_jobs`) are Core queries on a Connection returning Rows, whose attributes
are the model's: statements built once with bound parameters, and no ORM loading, on the hottest path of the
API (a fifth of the cost of a Session query). Writes load ORM objects with `get_job`.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache

from sqlalchemy import Connection, Row, Select, bindparam, func, select, update
from sqlalchemy.orm import Session

from dataexport.domain.enums import Format, Frequency, JobState, Scope
from dataexport.metadata.models import ExportJob, Project
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


_jobs = ExportJob.__table__
_JOB = select(_jobs).where(_jobs.c.id == bindparam("job_id"), _jobs.c.project_id == bindparam("project_id"))


def read_job(conn: Connection, project_id: int, job_id: int) -> Row | None:
    return conn.execute(_JOB, {"job_id": job_id, "project_id": project_id}).first()


def list_jobs(
    conn: Connection,
    project_id: int,
    page: Page,
    *,
    format: Format | None = None,
    frequency: Frequency | None = None,
    scope: Scope | None = None,
    state: JobState | None = None,
) -> list[Row]:
    filters = {"format": format, "frequency": frequency, "scope": scope, "state": state}
    given = {name: value.value for name, value in filters.items() if value is not None}
    stmt = paginate(_list_statement(frozenset(given)), page, _jobs.c.id)
    return list(conn.execute(stmt, {"project_id": project_id, "deleted": JobState.DELETED.value, **given}))


@cache
def _list_statement(filtered: frozenset[str]) -> Select:
    stmt = select(_jobs).where(_jobs.c.project_id == bindparam("project_id"))
    if "state" not in filtered:
        # Deleted jobs are hidden from the default listing; `state=DELETED` still finds them.
        stmt = stmt.where(_jobs.c.state != bindparam("deleted"))
    for name in sorted(filtered):
        stmt = stmt.where(_jobs.c[name] == bindparam(name))
    return stmt


# The states that count against a project's quota: jobs that will still run (a once job until it completed).
QUOTA_STATES = (JobState.ACTIVE.value, JobState.COMPUTING.value)


def lock_project_jobs(session: Session, project_id: int) -> None:
    """Serialise the changes that add to a project's active jobs, until the transaction ends.

    A count then an insert is only safe when no other transaction can do the same in between. PostgreSQL
    locks the project row (other projects are not held up); SQLite takes its database write lock at the
    first write of a transaction, so a no-op write is made first (the count after it sees every commit).
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(Project.id).where(Project.id == project_id).with_for_update())
    else:
        session.execute(update(Project).where(Project.id == project_id).values(id=Project.id))


def count_active_jobs(session: Session, project_id: int) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(ExportJob)
            .where(ExportJob.project_id == project_id, ExportJob.state.in_(QUOTA_STATES))
        )
        or 0
    )


def recurring_jobs_to_schedule(session: Session) -> list[ExportJob]:
    return list(
        session.scalars(
            select(ExportJob)
            .where(
                ExportJob.state == JobState.ACTIVE.value,
                ExportJob.frequency != Frequency.ONCE.value,
            )
            .order_by(ExportJob.id)
        )
    )


def touch(job: ExportJob, *, actor_id: int, now: datetime) -> None:
    job.last_updator_id = actor_id
    job.updated_at = now
