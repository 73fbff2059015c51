"""The ingest volume (query/volume.py) on every warehouse backend of the contract suite, against a count in plain
Python of the same rows.

The rows are written once per backend (a module-scoped warehouse) for several projects, one per case: the cases
only read, and each sits next to other projects' rows that must never be counted.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from dataexport.query.volume import IngestVolume, ingest_volume
from dataexport.warehouse.backend import ReadLimits, Warehouse
from support import scratch_pg_database
from warehouse_backends import BACKENDS, MS, Lake, open_backend, pageview, read_limits

WRITTEN = datetime(2026, 11, 2, tzinfo=UTC)  # the appends' `now` (their ingested_at)


@dataclass(frozen=True)
class Case:
    project_id: int
    tz: str
    now: datetime
    hours: int = 48
    days: int = 30

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)


# On the Paris spring-forward day (23 hours, no 02:00), just after the Paris fall-back day (25 hours, 02:00
# twice), in a half-hour zone and a quarter-hour one, and windows shorter than the defaults.
SPRING = Case(11, "Europe/Paris", datetime(2026, 3, 29, 15, 20, tzinfo=UTC))
FALL = Case(12, "Europe/Paris", datetime(2026, 10, 26, 0, 40, tzinfo=UTC), hours=30, days=3)
KOLKATA = Case(13, "Asia/Kolkata", datetime(2026, 3, 12, 18, 29, 59, 999_000, tzinfo=UTC))
KATHMANDU = Case(14, "Asia/Kathmandu", datetime(2026, 6, 1, 0, 10, tzinfo=UTC), hours=72, days=2)
CASES = [SPRING, FALL, KOLKATA, KATHMANDU]
OTHER = 20  # a project with rows at the same instants as every case's project, never to be counted
EMPTY = 21  # a project without any row


def edges(case: Case) -> list[datetime]:
    """The instants where a count is easiest to get wrong: both sides of each local midnight and local hour of the
    windows (by wall clock, so DST shifts and odd offsets are met as they come), and of the windows' ends."""
    zone, out = case.zone, []
    for k in range(-2, 24 * (case.days + 2)):
        instant = case.now - timedelta(hours=k, minutes=case.now.minute)
        for minute in range(0, 60, 15):  # the wall clock's hour turns on one of these in every zone
            t = instant.replace(minute=minute, second=0, microsecond=0)
            if t.astimezone(zone).minute == 0:
                out += [t - MS, t]
    return out


def view_times(case: Case) -> list[datetime]:
    rng = random.Random(case.project_id)
    first = case.now - timedelta(days=case.days + 2)  # from before both windows ...
    spread = [first + timedelta(milliseconds=rng.randrange(int((case.days + 4) * 86_400_000))) for _ in range(600)]
    return sorted(spread + edges(case) + [case.now, case.now + MS])  # ... to after them


def rows_of(case: Case, times: list[datetime], prefix: str) -> list[dict]:
    """A pageview at each time, in sessions started up to two hours before it (so some sessions began on the UTC
    day before their view, which the read must look back for)."""
    rng = random.Random(prefix)
    rows = []
    for n, view_time in enumerate(times):
        started = view_time - timedelta(seconds=rng.randrange(7200))
        rows.append(pageview(f"{prefix}-{n}", 1, 1, started, view_time=view_time))
    return rows


def expected(case: Case, times: list[datetime]) -> IngestVolume:
    """The same volume counted without the module: each view's local hour and date straight from zoneinfo."""
    zone = case.zone

    def hour_of(t: datetime) -> datetime:  # the local hour's start, as a UTC instant (fold kept: DST's second pass)
        return t.astimezone(zone).replace(minute=0, second=0, microsecond=0).astimezone(UTC)

    hours: list[datetime] = []
    minute = case.now
    while len(hours) < case.hours:
        if not hours or hour_of(minute) != hours[-1]:
            hours.append(hour_of(minute))
        minute -= timedelta(minutes=1)
    hours.reverse()
    today = case.now.astimezone(zone).date()
    days = [today - timedelta(days=k) for k in range(case.days - 1, -1, -1)]
    by_hour = Counter(hour_of(t) for t in times)
    by_day = Counter(t.astimezone(zone).date() for t in times)
    in_days = [t for t in times if days[0] <= t.astimezone(zone).date() <= today]
    return IngestVolume(
        hourly=[(h.astimezone(zone), by_hour[h]) for h in hours],
        daily=[(d, by_day[d]) for d in days],
        last_view_at=max(in_days) if in_days else None,
    )


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", params=BACKENDS)
def warehouse(request, tmp_path_factory) -> Iterator[Warehouse]:
    """A warehouse of each backend holding every case's rows and the other project's, nothing of EMPTY's. The
    DuckLake variants get a catalog database (and a bucket) of their own, asked for only by them, so that the
    embedded one runs without PostgreSQL or S3; as the contract suite's fixtures do, which under importlib imports
    cannot be imported from its module."""
    kind = request.param
    with ExitStack() as stack:
        lake = None
        if kind != "embedded":
            catalog = stack.enter_context(scratch_pg_database())
            lake = Lake(catalog)
            if kind == "ducklake-s3":
                s3 = request.getfixturevalue("s3_server")
                bucket = f"volume-{uuid.uuid4().hex[:8]}"
                s3.client().create_bucket(Bucket=bucket)
                lake = Lake(catalog, s3, bucket)
        opened = open_backend(kind, tmp_path_factory.mktemp("volume"), lake)
        stack.callback(opened.close)
        for case in CASES:
            times = view_times(case)
            opened.append(case.project_id, rows_of(case, times, f"p{case.project_id}"), now=WRITTEN)
            opened.append(OTHER, rows_of(case, times[::3], f"other{case.project_id}"), now=WRITTEN)
        yield opened


@pytest.fixture
def limits(tmp_path) -> ReadLimits:
    return read_limits(tmp_path)


def volume_of(warehouse: Warehouse, case: Case, limits: ReadLimits, project_id: int | None = None) -> IngestVolume:
    project = case.project_id if project_id is None else project_id
    return ingest_volume(warehouse, project, now=case.now, tz=case.tz, limits=limits, hours=case.hours, days=case.days)


def utc_hours(volume: IngestVolume) -> list[tuple[datetime, int]]:
    # Aware datetimes of one zone compare by wall clock, fold ignored: in UTC the two 02:00s of a fall-back differ.
    return [(h.astimezone(UTC), n) for h, n in volume.hourly]


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.tz}-{c.now:%m-%d}")
def test_counts_per_local_hour_and_day_match_a_count_of_the_rows(warehouse, limits, case):
    got, want = volume_of(warehouse, case, limits), expected(case, view_times(case))
    assert len(got.hourly) == case.hours and len(got.daily) == case.days
    assert got.daily == want.daily
    assert utc_hours(got) == utc_hours(want)
    assert [str(h.tzinfo) for h, _ in got.hourly] == [case.tz] * case.hours  # starts given in the project's zone
    assert got.last_view_at == want.last_view_at
    assert got.last_view_at is not None and got.last_view_at.utcoffset() == timedelta(0)
    assert 0 < sum(n for _, n in got.daily) < len(view_times(case))  # rows outside the window were written too


def test_the_spring_forward_day_counts_its_23_hours(warehouse, limits):
    got = volume_of(warehouse, SPRING, limits)
    day = dict(got.daily)[date(2026, 3, 29)]
    times = [t for t in view_times(SPRING) if t.astimezone(SPRING.zone).date() == date(2026, 3, 29)]
    assert day == len(times) > 0
    starts = [h.astimezone(SPRING.zone) for h, _ in got.hourly if h.date() == date(2026, 3, 29)]
    assert [h.hour for h in starts] == [0, 1, *range(3, 18)]  # no 02:00 that night; now is 17:20 CEST
    # A view a millisecond before the shift (01:59:59.999 CET) and one at it (03:00 CEST) are in adjacent hours.
    hourly = dict(utc_hours(got))
    assert hourly[datetime(2026, 3, 29, 0, tzinfo=UTC)] > 0 and hourly[datetime(2026, 3, 29, 1, tzinfo=UTC)] > 0


def test_the_fall_back_day_counts_its_25_hours(warehouse, limits):
    got = volume_of(warehouse, FALL, limits)
    assert [d for d, _ in got.daily] == [date(2026, 10, 24), date(2026, 10, 25), date(2026, 10, 26)]
    twos = [h for h, _ in got.hourly if h.date() == date(2026, 10, 25) and h.hour == 2]
    assert [h.utcoffset() for h in twos] == [timedelta(hours=2), timedelta(hours=1)]  # 02:00 CEST, then 02:00 CET
    assert sum(1 for h, _ in got.hourly if h.date() == date(2026, 10, 25)) == 25


def test_a_half_hour_zone_splits_days_at_its_local_midnight(warehouse, limits):
    got = volume_of(warehouse, KOLKATA, limits)
    assert got.daily[-1][0] == date(2026, 3, 12)  # now is 23:59:59.999 in Kolkata
    assert all(h.minute == 0 for h, _ in got.hourly) and got.hourly[0][0].utcoffset() == timedelta(hours=5, minutes=30)
    # The view a millisecond after now is on the next local day, past both windows: the last view is the one at now.
    assert got.last_view_at == KOLKATA.now
    assert dict(utc_hours(got))[datetime(2026, 3, 12, 17, 30, tzinfo=UTC)] > 0


def test_another_project_is_never_counted(warehouse, limits):
    for case in CASES:
        theirs = volume_of(warehouse, case, limits, OTHER)
        ours = volume_of(warehouse, case, limits)
        assert sum(n for _, n in theirs.daily) < sum(n for _, n in ours.daily)  # a third of the rows each
        assert ours.daily == expected(case, view_times(case)).daily


def test_an_empty_project_has_every_hour_and_day_at_zero(warehouse, limits):
    got = volume_of(warehouse, SPRING, limits, EMPTY)
    assert got == IngestVolume(
        hourly=[(h, 0) for h, _ in volume_of(warehouse, SPRING, limits).hourly],
        daily=[(d, 0) for d, _ in volume_of(warehouse, SPRING, limits).daily],
        last_view_at=None,
    )


def test_a_window_without_rows_is_all_zeros(warehouse, limits):
    later = Case(SPRING.project_id, "UTC", datetime(2027, 6, 1, tzinfo=UTC), hours=5, days=3)
    got = volume_of(warehouse, later, limits)
    assert [n for _, n in got.hourly] == [0] * 5 and [n for _, n in got.daily] == [0] * 3
    assert got.last_view_at is None


def test_an_hourly_window_longer_than_the_daily_one(warehouse, limits):
    case = Case(KATHMANDU.project_id, KATHMANDU.tz, KATHMANDU.now, hours=48, days=1)  # early in the local day
    got, want = volume_of(warehouse, case, limits), expected(case, view_times(KATHMANDU))
    assert utc_hours(got) == utc_hours(want) and got.daily == want.daily
    assert sum(n for _, n in got.hourly) > sum(n for _, n in got.daily) > 0
    assert got.last_view_at == want.last_view_at


def test_the_last_view_is_of_the_daily_window_only(warehouse, limits):
    # SPRING's views end on 31 March: on 2 April its hours still reach them, its one day does not.
    case = Case(SPRING.project_id, "UTC", datetime(2026, 4, 2, 3, tzinfo=UTC), hours=48, days=1)
    got = volume_of(warehouse, case, limits)
    assert sum(n for _, n in got.hourly) > 0 and got.daily == [(date(2026, 4, 2), 0)]
    assert got.last_view_at is None
