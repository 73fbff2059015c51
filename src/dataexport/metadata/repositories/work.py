"""The queries of the scheduler and the workers: window cursor, claims with leases, files to expire.

Claims are compare-and-set updates, correct on every backend; on PostgreSQL candidates are also picked
with `FOR UPDATE SKIP LOCKED`, so concurrent workers do not even contend for the same row.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dataexport.domain.enums import Frequency, JobState, RunState
from dataexport.metadata.models import ExportJob, JobRun, RunFile

EXECUTABLE_JOB_STATES = (JobState.ACTIVE.value, JobState.COMPUTING.value)


def insert_run_once(session: Session, run: JobRun) -> bool:
    """Insert a window's run; False when another scheduler already did (unique job + window start)."""
    try:
        with session.begin_nested():
            session.add(run)
            session.flush()
    except IntegrityError:
        return False
    return True


def promote_due_runs(session: Session, now: datetime) -> int:
    result = session.execute(
        update(JobRun)
        .where(JobRun.state == RunState.CREATED.value, JobRun.runnable_at <= now)
        .values(state=RunState.RUNNABLE.value)
    )
    return result.rowcount or 0


def claim_candidates(session: Session, now: datetime, limit: int = 5) -> list[int]:
    claimable = or_(
        and_(JobRun.state == RunState.RUNNABLE.value, JobRun.runnable_at <= now),
        and_(JobRun.state == RunState.RUNNING.value, JobRun.lease_expires_at < now),
    )
    stmt = (
        select(JobRun.id)
        .join(ExportJob, ExportJob.id == JobRun.job_id)
        .where(claimable, ExportJob.state.in_(EXECUTABLE_JOB_STATES))
        .order_by(JobRun.runnable_at, JobRun.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=JobRun)
    )
    return list(session.scalars(stmt))


def try_claim(session: Session, run_id: int, *, worker_id: str, now: datetime, lease: timedelta) -> bool:
    """Take the run if it is still claimable: RUNNABLE, or RUNNING with a lease that ran out."""
    result = session.execute(
        update(JobRun)
        .where(
            JobRun.id == run_id,
            or_(
                and_(JobRun.state == RunState.RUNNABLE.value, JobRun.runnable_at <= now),
                and_(JobRun.state == RunState.RUNNING.value, JobRun.lease_expires_at < now),
            ),
        )
        .values(
            state=RunState.RUNNING.value, lease_owner=worker_id, lease_expires_at=now + lease,
            attempts=JobRun.attempts + 1, started_at=now, completion_rate=0.0,
        )
    )
    return (result.rowcount or 0) == 1


def renew_lease(
    session: Session, run_id: int, *, worker_id: str, now: datetime, lease: timedelta, completion_rate: float
) -> bool:
    """Extend our lease; False when it was lost (another worker took the run after it expired)."""
    result = session.execute(
        update(JobRun)
        .where(JobRun.id == run_id, JobRun.lease_owner == worker_id, JobRun.state == RunState.RUNNING.value)
        .values(lease_expires_at=now + lease, completion_rate=completion_rate)
    )
    return (result.rowcount or 0) == 1


def lock_own_run(session: Session, run_id: int, worker_id: str) -> JobRun | None:
    """The run, locked, if we still hold it; the final commit of a run happens only through this."""
    return session.scalars(
        select(JobRun)
        .where(JobRun.id == run_id, JobRun.lease_owner == worker_id, JobRun.state == RunState.RUNNING.value)
        .with_for_update()
    ).first()


def set_job_state_for_once(session: Session, job_id: int, state: JobState) -> None:
    session.execute(
        update(ExportJob)
        .where(ExportJob.id == job_id, ExportJob.frequency == Frequency.ONCE.value,
               ExportJob.state != JobState.DELETED.value)
        .values(state=state.value)
    )


def expired_files(session: Session, now: datetime, limit: int = 500) -> list[RunFile]:
    return list(
        session.scalars(
            select(RunFile).where(RunFile.expiration_date <= now, RunFile.deleted.is_(False)).limit(limit)
        )
    )
