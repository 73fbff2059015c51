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


def partition_files_by_day(root: Path, project_id: int, start: datetime, end: datetime) -> list[tuple[date, list[str]]]:
    """The session days of [start, end) that have files, each with its Parquet files, in a stable order."""
    out: list[tuple[date, list[str]]] = []
    for day in days_covering(start, end):
        d = partition_dir(root, project_id, day)
        files = sorted(str(p) for p in d.glob("*.parquet")) if d.is_dir() else []
        if files:
            out.append((day, files))
    return out


def partition_files(root: Path, project_id: int, start: datetime, end: datetime) -> list[str]:
    """Existing Parquet files of the sessions that started in [start, end), in a stable order."""
    return [f for _day, files in partition_files_by_day(root, project_id, start, end) for f in files]
