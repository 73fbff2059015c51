"""Job runs and their files. Every read the API does is scoped to a project.

The API's reads are Core queries on a Connection returning Rows (see `jobs` for why).
"""

from __future__ import annotations

from sqlalchemy import Connection, Row, bindparam, func, select
from sqlalchemy.orm import Session

from dataexport.domain.enums import RunState
from dataexport.metadata.models import ExportJob, JobRun, RunFile
from dataexport.metadata.repositories.paging import Page, paginate


def add_run(session: Session, run: JobRun) -> JobRun:
    session.add(run)
    session.flush()
    return run


_runs = JobRun.__table__
_files = RunFile.__table__
_jobs = ExportJob.__table__
_RUNS = select(_runs).where(_runs.c.job_id == bindparam("job_id"))
_RUNS_IN_STATE = _RUNS.where(_runs.c.state == bindparam("state"))
_RUN = select(_runs).where(_runs.c.id == bindparam("run_id"), _runs.c.job_id == bindparam("job_id"))
_FILES = (
    select(_files).where(_files.c.run_id == bindparam("run_id"), _files.c.deleted.is_(False)).order_by(_files.c.part_id)
)
_NB_FILES = (
    select(func.count(_files.c.id))
    .where(_files.c.run_id == _runs.c.id, _files.c.deleted.is_(False))
    .correlate(_runs)
    .scalar_subquery()
)
_SUCCESSFUL = (
    select(
        _runs.c.job_id,
        _runs.c.id.label("run_id"),
        _jobs.c.name,
        _jobs.c.project_id,
        _runs.c.window_start,
        _runs.c.window_end,
        _runs.c.ended_at,
        _jobs.c.format,
        _jobs.c.scope,
        _jobs.c.frequency,
        _NB_FILES.label("nb_files"),
    )
    .join(_jobs, _jobs.c.id == _runs.c.job_id)
    .where(_runs.c.project_id == bindparam("project_id"), _runs.c.state == RunState.SUCCESS.value)
)


def list_runs(conn: Connection, job_id: int, page: Page, *, state: RunState | None = None) -> list[Row]:
    stmt = _RUNS if state is None else _RUNS_IN_STATE
    params = {"job_id": job_id} if state is None else {"job_id": job_id, "state": state.value}
    return list(conn.execute(paginate(stmt, page, _runs.c.id), params))


def get_run(conn: Connection, job_id: int, run_id: int) -> Row | None:
    return conn.execute(_RUN, {"run_id": run_id, "job_id": job_id}).first()


def list_files(conn: Connection, run_id: int) -> list[Row]:
    return list(conn.execute(_FILES, {"run_id": run_id}))


def successful_runs(conn: Connection, project_id: int, page: Page) -> list[Row]:
    """The project's successful runs with their job's name, format... and number of files, ordered by job id
    then run id."""
    stmt = paginate(_SUCCESSFUL, page, _runs.c.job_id, _runs.c.id)
    return list(conn.execute(stmt, {"project_id": project_id}))
