"""Job lifecycle: create (with the once job's run), delete, suspend, resume. Takes a session; commits nothing."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from dataexport.config import Settings
from dataexport.domain import schedule
from dataexport.domain.enums import Frequency, JobState
from dataexport.domain.jobspec import JobSpec
from dataexport.errors import Conflict, NotFound, TooManyActiveJobs, validation_error
from dataexport.metadata.models import ExportJob, JobRun, Project
from dataexport.metadata.repositories import jobs as jobs_repo
from dataexport.metadata.repositories import runs as runs_repo
from dataexport.metadata.repositories import segments as segments_repo


def _check_room_for_one_more(session: Session, project_id: int, settings: Settings) -> None:
    """Refuse a job that would take the project past its quota of active jobs.

    Call under `jobs_repo.lock_project_jobs` (held until the transaction ends), so that two requests at the
    limit cannot both pass.
    """
    limit = settings.max_active_jobs_per_project
    if jobs_repo.count_active_jobs(session, project_id) >= limit:
        raise TooManyActiveJobs(
            f"This project already has {limit} active export jobs, the most it may have "
            f"(max_active_jobs_per_project). Delete jobs, or suspend daily or hourly ones, to make room."
        )


def lags(settings: Settings) -> dict[str, timedelta]:
    return {
        "hourly_lag": timedelta(minutes=settings.hourly_lag_minutes),
        "daily_lag": timedelta(minutes=settings.daily_lag_minutes),
        "session_timeout": timedelta(minutes=settings.session_timeout_minutes),
    }


def create_job(
    session: Session, *, project: Project, actor_id: int, spec: JobSpec, settings: Settings, now: datetime
) -> ExportJob:
    if spec.segment_id is not None and segments_repo.get_segment(session, project.id, spec.segment_id) is None:
        raise validation_error("segmentId", "is not a segment of this project")
    jobs_repo.lock_project_jobs(session, project.id)
    _check_room_for_one_more(session, project.id, settings)
    job = jobs_repo.add_job(
        session,
        ExportJob(
            project_id=project.id,
            account_id=project.account_id,
            owner_id=actor_id,
            last_updator_id=actor_id,
            name=spec.name,
            format=spec.format.value,
            scope=spec.scope.value,
            frequency=spec.frequency.value,
            device_label=spec.device_label.value,
            segment_id=spec.segment_id,
            fields=[f.to_json() for f in spec.fields],
            state=JobState.ACTIVE.value,
            range_from=spec.range_from,
            range_to=spec.range_to,
            windows_from=now,
            created_at=now,
            updated_at=now,
        ),
    )
    if spec.frequency is Frequency.ONCE:
        # A once job has exactly one run, created with the job so clients polling runs see it at once.
        window = schedule.once_window(spec.range_from, spec.range_to)
        due = schedule.once_runnable_at(
            window, created_at=now, session_timeout=timedelta(minutes=settings.session_timeout_minutes)
        )
        runs_repo.add_run(
            session,
            JobRun(
                job_id=job.id,
                project_id=project.id,
                window_start=window.start,
                window_end=window.end,
                state=schedule.new_run_state(due, now).value,
                runnable_at=due,
                created_at=now,
                completion_rate=0.0,
                attempts=0,
            ),
        )
        job.last_window_start = window.start
    return job


def _recurring(job: ExportJob, action: str) -> None:
    if job.frequency == Frequency.ONCE.value:
        raise Conflict(f"Only daily and hourly jobs can be {action}.", error_code="INVALID_JOB_STATE")


def delete_job(session: Session, project_id: int, job_id: int, *, actor_id: int, now: datetime) -> ExportJob:
    job = _existing(session, project_id, job_id)
    job.state = JobState.DELETED.value
    jobs_repo.touch(job, actor_id=actor_id, now=now)
    return job


def suspend_job(session: Session, project_id: int, job_id: int, *, actor_id: int, now: datetime) -> ExportJob:
    job = _existing(session, project_id, job_id)
    _recurring(job, "suspended")
    if job.state != JobState.SUSPENDED.value:
        job.state = JobState.SUSPENDED.value
        jobs_repo.touch(job, actor_id=actor_id, now=now)
    return job


def resume_job(
    session: Session, project_id: int, job_id: int, *, actor_id: int, now: datetime, settings: Settings
) -> ExportJob:
    # The quota lock before the job's (the order create_job takes them in too): the job is read, and the
    # project's active jobs counted, with every earlier create or resume committed.
    jobs_repo.lock_project_jobs(session, project_id)
    job = _existing(session, project_id, job_id)
    _recurring(job, "resumed")
    if job.state != JobState.ACTIVE.value:
        _check_room_for_one_more(session, project_id, settings)
        job.state = JobState.ACTIVE.value
        # Windows missed while suspended are skipped: extraction restarts with the window containing now.
        job.windows_from = now
        job.last_window_start = None
        jobs_repo.touch(job, actor_id=actor_id, now=now)
    return job


def _existing(session: Session, project_id: int, job_id: int) -> ExportJob:
    job = jobs_repo.get_job(session, project_id, job_id, for_update=True)
    if job is None or job.state == JobState.DELETED.value:
        raise NotFound(f"Export job {job_id} not found.")
    return job
