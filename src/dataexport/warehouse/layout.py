"""Where pageview files live. Hive-style keys so the same layout works on an object store."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from dataexport.warehouse.schema import PARTITION_ROOT


def partition_dir(root: Path, project_id: int, session_day: date) -> Path:
    return root / PARTITION_ROOT / f"project_id={int(project_id)}" / f"session_day={session_day.isoformat()}"


def days_covering(start: datetime, end: datetime) -> list[date]:
    """UTC days touched by [start, end) (both timezone-aware)."""
    first = start.astimezone(UTC).date()
    last = (end - timedelta(microseconds=1)).astimezone(UTC).date()
    days = []
    d = first
    while d <= last:
        days.append(d)
        d += timedelta(days=1)
    return days


def partition_files(root: Path, project_id: int, start: datetime, end: datetime) -> list[str]:
    """Existing Parquet files of the sessions that started in [start, end), in a stable order."""
    files: list[str] = []
    for day in days_covering(start, end):
        d = partition_dir(root, project_id, day)
        if d.is_dir():
            files.extend(sorted(str(p) for p in d.glob("*.parquet")))
    return files
