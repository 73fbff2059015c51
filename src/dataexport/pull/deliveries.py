"""What a destination records of each run it holds, and which runs are still to deliver (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from dataexport.client.models import SuccessfulRun


@dataclass(frozen=True)
class Delivery:
    """One run being loaded whole. A destination records it, with the rows it loaded, in the same transaction (or
    atomic rename) as the rows."""

    project_id: int
    job_id: int
    run_id: int
    window_from: datetime
    window_to: datetime
    parts: int
    delivered_at: datetime


def runs_to_deliver(
    runs: Iterable[SuccessfulRun], *, job_id: int, delivered: set[int], since: datetime | None
) -> list[SuccessfulRun]:
    """The job's successful runs not delivered yet, whose window starts at or after `since`, in window order."""
    todo = [
        r for r in runs if r.jobId == job_id and r.jobRunId not in delivered and (since is None or r.from_ >= since)
    ]
    return sorted(todo, key=lambda r: (r.from_, r.jobRunId))
