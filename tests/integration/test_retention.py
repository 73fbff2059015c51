"""Retention sweep on real partitions."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from dataexport.domain.retention import expired_before
from dataexport.ingest.hits import validate_hits
from dataexport.warehouse.embedded.layout import partition_dir
from dataexport.warehouse.embedded.retention import sweep
from dataexport.warehouse.embedded.store import PageviewStore

NOW = datetime(2026, 3, 20, 9, 30, tzinfo=UTC)


def rows_on(day: date) -> list[dict]:
    t = f"{day.isoformat()}T12:00:00Z"
    return validate_hits(
        [
            {
                "user_id_unhashed": f"u-{day}",
                "session_number": 1,
                "session_time": t,
                "view_number": 1,
                "view_time": t,
                "device_id": 2,
                "url": "https://x/",
            }
        ]
    ).rows


@pytest.fixture
def warehouse(tmp_path):
    with PageviewStore(tmp_path) as store:
        for project in (1, 2):
            for back in range(0, 12):
                store.append(project, rows_on(NOW.date() - timedelta(days=back)))
    return tmp_path


def days_left(root, project):
    return [d for back in range(12) if partition_dir(root, project, d := NOW.date() - timedelta(days=back)).is_dir()]


def test_deletes_only_partitions_older_than_the_retention_period(warehouse):
    assert sweep(warehouse, 1, 7, NOW) == 4  # days 8..11 back
    assert min(days_left(warehouse, 1)) == date(2026, 3, 13)
    assert len(days_left(warehouse, 1)) == 8
    assert len(days_left(warehouse, 2)) == 12  # another project is untouched
    assert sweep(warehouse, 1, 7, NOW) == 0  # nothing left to do


def test_zero_retention_keeps_today_only(warehouse):
    assert sweep(warehouse, 2, 0, NOW) == 11
    assert days_left(warehouse, 2) == [NOW.date()]


def test_unknown_project_and_bad_period(tmp_path):
    assert sweep(tmp_path, 9, 30, NOW) == 0
    with pytest.raises(ValueError):
        expired_before(-1, NOW)


def test_cutoff_uses_the_utc_day_of_now():
    late_evening_elsewhere = datetime(2026, 3, 20, 23, 30, tzinfo=UTC).astimezone(timezone(timedelta(hours=-5)))
    assert expired_before(7, late_evening_elsewhere) == date(2026, 3, 13)
