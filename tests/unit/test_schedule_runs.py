"""When runs become due, catch-up, what a job shows, and once ranges (dataexport.domain.schedule)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataexport.domain.enums import Frequency, JobState, RunState
from dataexport.domain.schedule import (
    ScheduleView,
    Window,
    due_windows,
    effective_lag,
    new_run_state,
    once_runnable_at,
    once_window,
    pending_window,
    runnable_at,
    schedule_view,
    validate_once_range,
)
from dataexport.errors import FieldError

HOURLY, DAILY, ONCE = Frequency.HOURLY, Frequency.DAILY, Frequency.ONCE
H = timedelta(hours=1)
MS = timedelta(milliseconds=1)
LAGS = {"hourly_lag": timedelta(minutes=45), "daily_lag": timedelta(hours=2), "session_timeout": timedelta(minutes=30)}
FROM, TO = "frequency.dateRange.from", "frequency.dateRange.to"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def hour(start: datetime) -> Window:
    return Window(start, start + H)


# ---------------------------------------------------------------- lags


def test_default_lags() -> None:
    assert runnable_at(HOURLY, hour(utc(2025, 6, 1, 10)), **LAGS) == utc(2025, 6, 1, 11, 45)
    assert runnable_at(DAILY, Window(utc(2025, 6, 1), utc(2025, 6, 2)), **LAGS) == utc(2025, 6, 2, 2)
    assert runnable_at(ONCE, Window(utc(2025, 6, 1), utc(2025, 6, 2)), **LAGS) == utc(2025, 6, 2, 0, 30)


@pytest.mark.parametrize("freq", [HOURLY, DAILY, ONCE])
def test_lag_is_never_shorter_than_the_session_timeout(freq: Frequency) -> None:
    short = {"hourly_lag": timedelta(minutes=5), "daily_lag": timedelta(0), "session_timeout": timedelta(minutes=30)}
    assert effective_lag(freq, **short) == timedelta(minutes=30)


def test_longer_lags_are_kept() -> None:
    long = {"hourly_lag": 3 * H, "daily_lag": 6 * H, "session_timeout": timedelta(minutes=30)}
    assert effective_lag(HOURLY, **long) == 3 * H
    assert effective_lag(DAILY, **long) == 6 * H


def test_new_run_state_turns_runnable_exactly_at_its_time() -> None:
    at = utc(2025, 6, 1, 11, 45)
    assert new_run_state(at, at - MS) is RunState.CREATED
    assert new_run_state(at, at) is RunState.RUNNABLE


# ---------------------------------------------------------------- due windows


@pytest.mark.parametrize(
    ("freq", "created", "due_at", "window"),
    [
        (HOURLY, utc(2025, 6, 1, 10, 20), utc(2025, 6, 1, 11, 45), hour(utc(2025, 6, 1, 10))),
        (DAILY, utc(2025, 6, 1, 10, 20), utc(2025, 6, 2, 2), Window(utc(2025, 6, 1), utc(2025, 6, 2))),
    ],
)
def test_first_window_is_not_due_one_ms_early_and_is_due_on_time(
    freq: Frequency, created: datetime, due_at: datetime, window: Window
) -> None:
    common = {"created_at": created, "last_window_start": None, "tz": "UTC", **LAGS}
    assert due_windows(freq, now=due_at - MS, **common) == []
    assert due_windows(freq, now=due_at, **common) == [window]


def test_catch_up_after_three_days_of_downtime_gives_each_missed_hour_once_oldest_first() -> None:
    # The scheduler last created the run of 10:00-11:00 on June 1st, then was down until June 4th 10:50.
    due = due_windows(
        HOURLY,
        created_at=utc(2025, 5, 20),
        last_window_start=utc(2025, 6, 1, 10),
        now=utc(2025, 6, 4, 10, 50),
        tz="UTC",
        **LAGS,
    )
    # Due: every hour ending by 10:05 on June 4th, i.e. 11:00 June 1st .. 09:00-10:00 June 4th.
    assert due == [hour(utc(2025, 6, 1, 11) + k * H) for k in range(71)]


def test_catch_up_of_daily_windows_across_a_dst_change() -> None:
    paris_days = [
        Window(utc(2025, 10, 23, 22), utc(2025, 10, 24, 22)),
        Window(utc(2025, 10, 24, 22), utc(2025, 10, 25, 22)),
        Window(utc(2025, 10, 25, 22), utc(2025, 10, 26, 23)),  # 25 hours
    ]
    common = {"created_at": utc(2025, 10, 24, 13), "last_window_start": None, "tz": "Europe/Paris", **LAGS}
    # The 25-hour day ends at 23:00 UTC and is due two hours later.
    assert due_windows(DAILY, now=utc(2025, 10, 27, 1), **common) == paris_days
    assert due_windows(DAILY, now=utc(2025, 10, 27, 1) - MS, **common) == paris_days[:2]


def test_limit_takes_the_oldest_and_the_rest_follows_from_the_cursor() -> None:
    common = {"created_at": utc(2025, 6, 1, 0, 5), "now": utc(2025, 6, 2, 0, 45), "tz": "UTC", **LAGS}
    everything = due_windows(HOURLY, last_window_start=None, **common)
    assert len(everything) == 24
    batches, cursor = [], None
    while batch := due_windows(HOURLY, last_window_start=cursor, limit=5, **common):
        assert len(batch) <= 5
        batches.extend(batch)
        cursor = batch[-1].start
    assert batches == everything


def test_limit_zero_returns_nothing() -> None:
    assert (
        due_windows(
            HOURLY, created_at=utc(2025, 6, 1), last_window_start=None, now=utc(2025, 7, 1), tz="UTC", limit=0, **LAGS
        )
        == []
    )


def test_nothing_is_due_before_the_first_window_closes() -> None:
    assert (
        due_windows(
            DAILY,
            created_at=utc(2025, 6, 1, 23, 59),
            last_window_start=None,
            now=utc(2025, 6, 2, 1, 59),
            tz="UTC",
            **LAGS,
        )
        == []
    )


@settings(max_examples=12, deadline=None, database=None)
@given(
    st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2026, 1, 1), timezones=st.just(UTC)),
    st.sampled_from(["UTC", "Europe/Paris", "Pacific/Chatham", "America/New_York"]),
    st.sampled_from([HOURLY, DAILY]),
    st.integers(min_value=7, max_value=240).map(lambda m: timedelta(minutes=m)),
    st.integers(min_value=0, max_value=2 * 24 * 60).map(lambda m: timedelta(minutes=m)),
)
def test_a_ticking_scheduler_schedules_every_window_once_and_on_time(
    created: datetime, tz: str, freq: Frequency, tick: timedelta, downtime: timedelta
) -> None:
    """Tick every `tick` for three days and a half, with one outage of `downtime` after the first day."""
    cursor, scheduled, now, previous_tick = None, [], created, None
    outage = (created + timedelta(days=1), created + timedelta(days=1) + downtime)
    while now < created + timedelta(days=3.5):
        if not outage[0] <= now < outage[1]:
            for window in due_windows(freq, created_at=created, last_window_start=cursor, now=now, tz=tz, **LAGS):
                start_time = runnable_at(freq, window, **LAGS)
                # Scheduled by the first tick that ran after it became due, not earlier, not later.
                assert start_time <= now
                assert previous_tick is None or previous_tick < start_time
                scheduled.append(window)
                cursor = window.start
            previous_tick = now
        now += tick
    assert created in scheduled[0]
    assert all(a.end == b.start for a, b in zip(scheduled, scheduled[1:], strict=False))
    # Everything due by the last tick was scheduled.
    assert (
        runnable_at(freq, pending_window(freq, created_at=created, last_window_start=cursor, tz=tz), **LAGS)
        > previous_tick
    )


# ---------------------------------------------------------------- pending window and job view


def test_pending_window_before_any_run_is_the_creation_window() -> None:
    assert pending_window(HOURLY, created_at=utc(2025, 6, 1, 10, 20), last_window_start=None, tz="UTC") == hour(
        utc(2025, 6, 1, 10)
    )


def test_pending_window_follows_the_cursor() -> None:
    assert pending_window(
        DAILY, created_at=utc(2025, 6, 1, 10), last_window_start=utc(2025, 6, 3, 22), tz="Europe/Paris"
    ) == Window(utc(2025, 6, 4, 22), utc(2025, 6, 5, 22))


def view(
    freq: Frequency,
    state: JobState,
    *,
    last: datetime | None = None,
    once_range: Window | None = None,
    created: datetime = utc(2025, 6, 1, 10, 20),
) -> ScheduleView:
    return schedule_view(
        freq, state=state, created_at=created, last_window_start=last, once_range=once_range, tz="Europe/Paris", **LAGS
    )


def test_active_daily_job_shows_the_pending_day_inclusive_and_its_start_time() -> None:
    assert view(DAILY, JobState.ACTIVE, last=utc(2025, 6, 1, 22)) == ScheduleView(
        next_from=utc(2025, 6, 2, 22),
        next_to=utc(2025, 6, 3, 21, 59, 59, 999_000),  # 23:59:59.999 in Paris
        next_run_time=utc(2025, 6, 4, 0),
    )


def test_active_hourly_job_before_its_first_run() -> None:
    assert view(HOURLY, JobState.ACTIVE) == ScheduleView(
        utc(2025, 6, 1, 10), utc(2025, 6, 1, 10, 59, 59, 999_000), utc(2025, 6, 1, 11, 45)
    )


def test_suspended_job_shows_its_next_window_but_no_run_time() -> None:
    assert view(HOURLY, JobState.SUSPENDED) == ScheduleView(
        utc(2025, 6, 1, 10), utc(2025, 6, 1, 10, 59, 59, 999_000), None
    )


@pytest.mark.parametrize("state", [JobState.DELETED, JobState.COMPLETED])
@pytest.mark.parametrize("freq", [HOURLY, DAILY, ONCE])
def test_finished_jobs_show_nothing_next(freq: Frequency, state: JobState) -> None:
    once_range = once_window(utc(2025, 5, 30), utc(2025, 5, 31, 23, 59, 59, 999_000))
    assert view(freq, state, once_range=once_range) == ScheduleView(None, None, None)


def test_queued_once_job_over_past_days_shows_its_range_and_starts_at_creation() -> None:
    once_range = once_window(utc(2025, 5, 30), utc(2025, 5, 31, 23, 59, 59, 999_000))
    assert view(ONCE, JobState.ACTIVE, once_range=once_range) == ScheduleView(
        utc(2025, 5, 30), utc(2025, 5, 31, 23, 59, 59, 999_000), utc(2025, 6, 1, 10, 20)
    )


def test_computing_once_job_shows_its_range_without_a_next_run() -> None:
    once_range = once_window(utc(2025, 5, 30), utc(2025, 5, 31))
    assert view(ONCE, JobState.COMPUTING, once_range=once_range) == ScheduleView(
        utc(2025, 5, 30), utc(2025, 5, 31), None
    )


def test_once_job_view_needs_its_range() -> None:
    with pytest.raises(ValueError, match="range"):
        view(ONCE, JobState.ACTIVE)


# ---------------------------------------------------------------- once runs


@pytest.mark.parametrize(
    ("to", "expected"),
    [
        (utc(2025, 5, 31, 23, 59, 59, 999_000), utc(2025, 6, 1, 10, 20)),  # past days: at creation
        (utc(2025, 6, 1, 9, 49, 59, 999_000), utc(2025, 6, 1, 10, 20)),  # ended 30 minutes before creation
        (utc(2025, 6, 1, 10, 0), utc(2025, 6, 1, 10, 30, 0, 1000)),  # ended 20 minutes ago: sessions may be open
        (utc(2025, 6, 2, 23, 59, 59, 999_000), utc(2025, 6, 3, 0, 30)),  # reaches into the future
    ],
)
def test_once_run_starts_at_creation_or_once_its_sessions_are_closed(to: datetime, expected: datetime) -> None:
    window = once_window(utc(2025, 5, 30), to)
    start_time = once_runnable_at(window, created_at=utc(2025, 6, 1, 10, 20), session_timeout=timedelta(minutes=30))
    assert start_time == expected
    assert new_run_state(start_time, utc(2025, 6, 1, 10, 20)) is (
        RunState.RUNNABLE if expected == utc(2025, 6, 1, 10, 20) else RunState.CREATED
    )


# ---------------------------------------------------------------- once range validation

NOW = utc(2026, 6, 10, 12)


def check(from_: datetime, to: datetime, retention_days: int = 30) -> list[FieldError]:
    return validate_once_range(from_, to, now=NOW, retention_days=retention_days)


def test_vendor_example_range_is_valid() -> None:
    assert check(utc(2026, 6, 1), utc(2026, 6, 2, 23, 59, 59, 999_000)) == []


def test_exactly_seven_days_is_valid_and_one_ms_more_is_not() -> None:
    assert check(utc(2026, 6, 1), utc(2026, 6, 8)) == []
    assert check(utc(2026, 6, 1), utc(2026, 6, 8) + MS) == [FieldError(TO, f"must be at most 7 days after {FROM}")]


def test_max_days_is_a_parameter() -> None:
    assert validate_once_range(utc(2026, 6, 1), utc(2026, 6, 2) + MS, now=NOW, retention_days=30, max_days=1) == [
        FieldError(TO, f"must be at most 1 days after {FROM}")
    ]


@pytest.mark.parametrize("to", [utc(2026, 6, 1), utc(2026, 6, 1) - MS, utc(2026, 5, 20)])
def test_to_must_be_after_from(to: datetime) -> None:
    assert check(utc(2026, 6, 1), to) == [FieldError(TO, f"must be after {FROM}")]


def test_one_ms_range_is_valid() -> None:
    assert check(utc(2026, 6, 1), utc(2026, 6, 1) + MS) == []


def test_from_exactly_at_the_retention_limit_is_valid_and_one_ms_older_is_not() -> None:
    limit = NOW - timedelta(days=30)
    assert check(limit, limit + H) == []
    assert check(limit - MS, limit + H) == [
        FieldError(FROM, "must not be older than the data retention period (30 days)")
    ]


def test_future_ranges_are_accepted() -> None:
    assert check(utc(2026, 6, 12), utc(2026, 6, 13)) == []


def test_every_problem_is_reported() -> None:
    assert check(utc(2025, 1, 10), utc(2025, 1, 1)) == [
        FieldError(TO, f"must be after {FROM}"),
        FieldError(FROM, "must not be older than the data retention period (30 days)"),
    ]
