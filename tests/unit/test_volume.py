"""The pure half of the ingest volume (query/volume.py): which UTC instants bound a project's local hours and days,
and the folding of 15-minute buckets into them, across DST changes and half- and quarter-hour offsets."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataexport.catalog.sql import Sql
from dataexport.errors import ValidationFailed
from dataexport.query.volume import QUARTER, bucket_of, fold, ingest_volume, start_of, windows

PARIS = ZoneInfo("Europe/Paris")
MS = timedelta(milliseconds=1)
# Zones whose clocks do what whole-hour arithmetic gets wrong: half and quarter hours (Kolkata, Kathmandu, St John's,
# Chatham, the last two with DST), a half-hour DST shift (Lord Howe), DST changing at midnight (Santiago).
ZONES = [
    "UTC",
    "Europe/Paris",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "America/St_Johns",
    "Pacific/Chatham",
    "Australia/Lord_Howe",
    "America/Santiago",
    "America/New_York",
]


def lengths_in_hours(bounds: list[datetime]) -> list[float]:
    return [(b - a) / timedelta(hours=1) for a, b in zip(bounds, bounds[1:], strict=False)]


def test_the_spring_forward_day_has_23_hours_and_no_2_oclock():
    span = windows(datetime(2026, 3, 29, 15, tzinfo=UTC), PARIS, hours=6, days=3)
    assert span.days == [date(2026, 3, 27), date(2026, 3, 28), date(2026, 3, 29)]
    assert lengths_in_hours(span.day_bounds) == [24, 24, 23]
    span = windows(datetime(2026, 3, 29, 2, 30, tzinfo=UTC), PARIS, hours=4, days=1)  # 04:30 CEST
    labels = [b.astimezone(PARIS).strftime("%H:%M") for b in span.hour_bounds]
    assert labels == ["00:00", "01:00", "03:00", "04:00", "05:00"]
    assert lengths_in_hours(span.hour_bounds) == [1, 1, 1, 1]


def test_the_fall_back_day_has_25_hours_and_2_oclock_twice():
    span = windows(datetime(2026, 10, 25, 3, 30, tzinfo=UTC), PARIS, hours=4, days=2)  # 04:30 CET
    assert lengths_in_hours(span.day_bounds) == [24, 25]
    local = [b.astimezone(PARIS) for b in span.hour_bounds]
    assert [(t.strftime("%H:%M"), t.utcoffset()) for t in local[:2]] == [
        ("02:00", timedelta(hours=2)),
        ("02:00", timedelta(hours=1)),
    ]
    assert lengths_in_hours(span.hour_bounds) == [1, 1, 1, 1]


def test_a_half_hour_zone_starts_its_hours_and_days_on_the_half_hour():
    span = windows(datetime(2026, 6, 1, 12, 7, tzinfo=UTC), ZoneInfo("Asia/Kolkata"), hours=2, days=1)
    assert span.hour_bounds == [datetime(2026, 6, 1, h, m, tzinfo=UTC) for h, m in ((10, 30), (11, 30), (12, 30))]
    assert span.day_bounds == [datetime(2026, 5, 31, 18, 30, tzinfo=UTC), datetime(2026, 6, 1, 18, 30, tzinfo=UTC)]


def test_a_skipped_midnight_starts_the_day_at_the_shift():
    # Santiago moved its clocks from 00:00 to 01:00 on 2026-09-06: that day starts at 01:00, 04:00 UTC.
    span = windows(datetime(2026, 9, 6, 12, tzinfo=UTC), ZoneInfo("America/Santiago"), hours=1, days=2)
    assert span.day_bounds[1] == datetime(2026, 9, 6, 4, tzinfo=UTC)
    assert lengths_in_hours(span.day_bounds) == [24, 23]


def wall(instant: datetime, zone: ZoneInfo) -> tuple[date, int, int]:
    local = instant.astimezone(zone)
    return local.date(), local.hour, local.fold


@given(
    zone=st.sampled_from(ZONES).map(ZoneInfo),
    now=st.datetimes(datetime(2020, 1, 1), datetime(2035, 1, 1), timezones=st.just(UTC)),
    hours=st.integers(1, 60),
    days=st.integers(1, 40),
)
def test_bounds_are_where_the_local_clock_turns_an_hour_or_a_date(zone, now, hours, days):
    span = windows(now, zone, hours, days)
    assert len(span.hour_bounds) == hours + 1 and len(span.day_bounds) == days + 1 == len(span.days) + 1
    assert span.hour_bounds[-2] <= now < span.hour_bounds[-1]  # the current hour is the last one
    assert span.days[-1] == now.astimezone(zone).date()
    assert span.days == [span.days[-1] - timedelta(days=k) for k in range(days - 1, -1, -1)]
    for bound in span.hour_bounds + span.day_bounds:
        assert start_of(bucket_of(bound)) == bound  # on a UTC quarter hour
    for start, end in zip(span.hour_bounds, span.hour_bounds[1:], strict=False):
        assert timedelta(0) < end - start <= timedelta(hours=1)
        assert wall(start - MS, zone) != wall(start, zone) == wall(end - MS, zone) != wall(end, zone)
    for day, start in zip([*span.days, span.days[-1] + timedelta(days=1)], span.day_bounds, strict=True):
        assert (start - MS).astimezone(zone).date() == day - timedelta(days=1)
        assert start.astimezone(zone).date() == day


def test_fold_sums_the_buckets_of_each_interval_and_leaves_out_the_rest():
    start = datetime(2026, 6, 1, tzinfo=UTC)
    bounds = [start, start + timedelta(hours=1), start + timedelta(hours=2)]
    buckets = {
        bucket_of(start - QUARTER): 5,
        bucket_of(start): 1,
        bucket_of(start + timedelta(minutes=59)): 10,
        bucket_of(start + timedelta(minutes=75)): 2,
        bucket_of(bounds[-1]): 7,
    }
    assert fold(buckets, bounds) == [11, 2]
    assert fold({}, bounds) == [0, 0]
    with pytest.raises(ValueError, match="quarter"):
        fold(buckets, [start, start + timedelta(minutes=20)])


def test_buckets_are_numbered_by_floor_division():
    assert bucket_of(datetime(1970, 1, 1, 0, 15, tzinfo=UTC) - MS) == 0
    assert bucket_of(datetime(1970, 1, 1, tzinfo=UTC) - MS) == -1
    assert start_of(bucket_of(datetime(2026, 3, 12, 9, 7, 3, tzinfo=UTC))) == datetime(2026, 3, 12, 9, tzinfo=UTC)


class SharedRelation:
    """A warehouse whose relation holds every project's rows and binds values of its own, as the protocol allows:
    the backends' relations happen to hold one project only, so only this shows the query filters and binds."""

    def __init__(self, rows: list[tuple[int, datetime, datetime]]) -> None:
        self.conn = duckdb.connect()
        ts = pa.timestamp("ms", tz="UTC")
        self.conn.register(
            "every_project",
            pa.table(
                {
                    "project_id": pa.array([r[0] for r in rows], pa.int32()),
                    "session_time": pa.array([r[1] for r in rows], ts),
                    "view_time": pa.array([r[2] for r in rows], ts),
                }
            ),
        )
        self.days = [date(2026, 6, 1)]

    def relation(self, days: object) -> Sql:
        return Sql("(SELECT * FROM every_project WHERE ? = ?)", ["same", "same"])

    @contextmanager
    def read(self, project_id: int, start: datetime, end: datetime, limits: object):
        yield self


def test_only_the_projects_rows_are_counted_whatever_the_relation_holds():
    t = datetime(2026, 6, 1, 10, 5, tzinfo=UTC)
    warehouse = SharedRelation([(1, t, t), (1, t, t + MS), (2, t, t + timedelta(minutes=1)), (2, t, t)])
    volume = ingest_volume(warehouse, 1, now=t, tz="UTC", limits=None, hours=1, days=1)  # type: ignore[arg-type]
    assert volume.hourly == [(datetime(2026, 6, 1, 10, tzinfo=ZoneInfo("UTC")), 2)]
    assert volume.daily == [(date(2026, 6, 1), 2)] and volume.last_view_at == t + MS


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"hours": 0}, "hours"),
        ({"hours": 24 * 31 + 1}, "hours"),
        ({"hours": True}, "hours"),
        ({"days": 401}, "days"),
        ({"days": 2.0}, "days"),
        ({"tz": "Mars/Olympus_Mons"}, "timezone"),
        ({"tz": "../etc"}, "timezone"),
        ({"now": datetime(2026, 6, 1)}, "now"),
    ],
)
def test_bad_arguments_name_themselves(arguments, field):
    given_ = {"now": datetime(2026, 6, 1, tzinfo=UTC), "tz": "UTC", "limits": None, **arguments}
    with pytest.raises(ValidationFailed) as failed:
        ingest_volume(None, 1, **given_)  # type: ignore[arg-type]  # rejected before the warehouse is touched
    assert failed.value.errors[0].field == field
