"""Metadata rows -> the vendor's JSON shapes."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Row

from dataexport.config import Settings
from dataexport.domain import schedule
from dataexport.domain.enums import FILTER_DEVICE_ID_BY_LABEL, DeviceLabel, Frequency, JobState
from dataexport.domain.timeparse import format_instant as iso
from dataexport.engine.lifecycle import lags
from dataexport.metadata.models import ExportJob, JobRun, Project


def inclusive_end(end: datetime | None) -> datetime | None:
    """Windows are half-open [start, end); the API shows ends inclusively at millisecond precision, as the
    vendor's own dateRange example does (..T23:59:59.999Z)."""
    return None if end is None else end - timedelta(milliseconds=1)


def job_out(job: ExportJob | Row, project: Project, settings: Settings) -> dict:
    view = schedule.schedule_view(
        Frequency(job.frequency),
        state=JobState(job.state),
        created_at=job.windows_from,
        last_window_start=job.last_window_start,
        once_range=schedule.once_window(job.range_from, job.range_to) if job.range_from else None,
        tz=project.timezone,
        **lags(settings),
    )
    return {
        "jobId": job.id,
        "name": job.name,
        "ownerId": job.owner_id,
        "lastUpdatorId": job.last_updator_id,
        "accountId": job.account_id,
        "nextFrom": iso(view.next_from),
        "nextTo": iso(view.next_to),  # already inclusive
        "projectIds": [job.project_id],
        "state": job.state,
        "createdAt": iso(job.created_at),
        "format": job.format,
        "scope": job.scope,
        "frequency": job.frequency,
        "fields": job.fields,
        "lastRunTime": iso(job.last_run_time),
        "nextRunTime": iso(view.next_run_time),
        "updatedAt": iso(job.updated_at),
        "filters": {"deviceId": FILTER_DEVICE_ID_BY_LABEL[DeviceLabel(job.device_label)]},
        "segmentId": job.segment_id,
    }


def run_out(run: JobRun | Row) -> dict:
    return {
        "jobRunId": run.id,
        "startDate": iso(run.started_at),
        "state": run.state,
        "endDate": iso(run.ended_at),
        "completionRate": round(run.completion_rate, 2),
    }


def successful_run_out(row: Row) -> dict:
    """A row of `runs.successful_runs`."""
    return {
        "jobId": row.job_id,
        "jobRunId": row.run_id,
        "name": row.name,
        "projectIds": [row.project_id],
        "from": iso(row.window_start),
        "to": iso(inclusive_end(row.window_end)),
        "completionTime": iso(row.ended_at),
        "format": row.format,
        "scope": row.scope,
        "frequency": row.frequency,
        "nbOfFiles": row.nb_files,
    }
