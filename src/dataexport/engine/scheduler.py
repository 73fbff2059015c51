"""The scheduler: turns due windows of recurring jobs into runs, promotes runs whose time has come,
and deletes expired files. Safe to run in several processes at once (unique job + window start)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy.orm import Session, sessionmaker

from dataexport.config import Settings
from dataexport.domain import schedule
from dataexport.domain.enums import Frequency, RunState
from dataexport.engine.lifecycle import lags
from dataexport.metadata.db import transaction
from dataexport.metadata.models import ExportJob, JobRun
from dataexport.metadata.repositories import jobs as jobs_repo
from dataexport.metadata.repositories import tenants, work

log = structlog.get_logger()

# Bounded catch-up per job and tick, so one long-paused hourly job cannot hold a tick for long.
MAX_WINDOWS_PER_TICK = 500


@dataclass
class TickResult:
    runs_created: int = 0
    runs_promoted: int = 0
    files_expired: int = 0


def schedule_job(session: Session, job: ExportJob, *, tz: str, settings: Settings, now: datetime) -> int:
    windows = schedule.due_windows(
        Frequency(job.frequency),
        created_at=job.windows_from,
        last_window_start=job.last_window_start,
        now=now,
        tz=tz,
        limit=MAX_WINDOWS_PER_TICK,
        **lags(settings),
    )
    created = 0
    for window in windows:
        run = JobRun(
            job_id=job.id,
            project_id=job.project_id,
            window_start=window.start,
            window_end=window.end,
            state=RunState.RUNNABLE.value,
            runnable_at=now,
            created_at=now,
            completion_rate=0.0,
            attempts=0,
        )
        created += work.insert_run_once(session, run)
        job.last_window_start = window.start
    return created


def tick(sessions: sessionmaker[Session], settings: Settings, storage, now: datetime) -> TickResult:
    result = TickResult()
    with transaction(sessions) as session:
        for job in jobs_repo.recurring_jobs_to_schedule(session):
            project = tenants.get_project(session, job.project_id)
            result.runs_created += schedule_job(session, job, tz=project.timezone, settings=settings, now=now)
        result.runs_promoted = work.promote_due_runs(session, now)
    result.files_expired = expire_files(sessions, storage, now)
    if result.runs_created or result.runs_promoted or result.files_expired:
        log.info(
            "scheduler.tick",
            runs_created=result.runs_created,
            runs_promoted=result.runs_promoted,
            files_expired=result.files_expired,
        )
    return result


def expire_files(sessions: sessionmaker[Session], storage, now: datetime) -> int:
    """Files past their expirationDate are deleted from storage; their rows stay, marked deleted."""
    with transaction(sessions) as session:
        files = work.expired_files(session, now)
        for f in files:
            storage.delete(f.key)
            f.deleted = True
            if f.part_id == 0:  # the run's manifest goes with its files
                run = session.get(JobRun, f.run_id)
                if run is not None and run.manifest_key:
                    storage.delete(run.manifest_key)
        return len(files)
