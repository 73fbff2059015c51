"""Job runs and their files. Every read the API does is scoped to a project."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dataexport.domain.enums import RunState
from dataexport.metadata.models import ExportJob, JobRun, RunFile
from dataexport.metadata.repositories.paging import Page, paginate


def add_run(session: Session, run: JobRun) -> JobRun:
    session.add(run)
    session.flush()
    return run


def list_runs(session: Session, job_id: int, page: Page, *, state: RunState | None = None) -> list[JobRun]:
    stmt = select(JobRun).where(JobRun.job_id == job_id)
    if state is not None:
        stmt = stmt.where(JobRun.state == state.value)
    return list(session.scalars(paginate(stmt, page, JobRun.id)))


def get_run(session: Session, job_id: int, run_id: int) -> JobRun | None:
    return session.scalars(select(JobRun).where(JobRun.id == run_id, JobRun.job_id == job_id)).first()


def list_files(session: Session, run_id: int) -> list[RunFile]:
    return list(
        session.scalars(
            select(RunFile).where(RunFile.run_id == run_id, RunFile.deleted.is_(False)).order_by(RunFile.part_id)
        )
    )


def successful_runs(session: Session, project_id: int, page: Page) -> list[tuple[JobRun, ExportJob, int]]:
    """(run, job, number of files) of the project's successful runs, ordered by job id then run id."""
    nb_files = (
        select(func.count(RunFile.id))
        .where(RunFile.run_id == JobRun.id, RunFile.deleted.is_(False))
        .correlate(JobRun)
        .scalar_subquery()
    )
    stmt = (
        select(JobRun, ExportJob, nb_files)
        .join(ExportJob, ExportJob.id == JobRun.job_id)
        .where(JobRun.project_id == project_id, JobRun.state == RunState.SUCCESS.value)
    )
    return [tuple(row) for row in session.execute(paginate(stmt, page, JobRun.job_id, JobRun.id))]
