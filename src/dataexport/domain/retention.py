"""Which session days a project's retention keeps. Pure."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta


def expired_before(retention_days: int, now: datetime) -> date:
    """The first session day still kept: days strictly before it are deleted."""
    if retention_days < 0:
        raise ValueError("retention_days must not be negative")
    return now.astimezone(UTC).date() - timedelta(days=retention_days)
