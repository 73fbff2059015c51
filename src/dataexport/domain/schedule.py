"""Windows and schedule math of export jobs (contract.md section 4). Pure: `now` is always passed in.

Every datetime in and out is tz-aware; results are UTC. Windows are half-open [start, end). A zone is
given by its IANA name (the project setting) or as a ZoneInfo.

Recurring windows follow the project's time zone: a daily window is a calendar day there (23 or 25 hours
on DST change days), an hourly window a clock hour there. A clock hour is a run of instants sharing the
same wall-clock hour *and* UTC offset, so the repeated hour of a fall-back night gives two windows and a
mid-hour offset change (Lord Howe's 30-minute DST) splits a clock hour in two. Consecutive windows tile
time: each window starts where the previous one ends.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from dataexport.domain.enums import Frequency, JobState, RunState
from dataexport.errors import FieldError, validation_error

ONE_MS = timedelta(milliseconds=1)
_ONE_US = timedelta(microseconds=1)
_ONE_HOUR = timedelta(hours=1)

FROM_FIELD = "frequency.dateRange.from"
TO_FIELD = "frequency.dateRange.to"


@dataclass(frozen=True)
class Window:
    """Half-open [start, end) in UTC."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("window bounds must be tz-aware")
        if not self.start < self.end:
            raise ValueError(f"empty window {self.start} .. {self.end}")

    @property
    def last_ms(self) -> datetime:
        """The last millisecond inside the window: what clients write as an inclusive `to`."""
        return self.end - ONE_MS

    def __contains__(self, instant: datetime) -> bool:
        return self.start <= instant < self.end


@dataclass(frozen=True)
class ScheduleView:
    """What the job resource shows. `next_to` is inclusive (the window's last millisecond), like the
    `dateRange.to` clients send: a daily window shows `...T23:59:59.999` local, not the next midnight."""

    next_from: datetime | None
    next_to: datetime | None
    next_run_time: datetime | None


# ---------------------------------------------------------------- time zones

# IANA names only: letters, digits, `_`, `+`, `-`, joined by `/`; rules out paths before ZoneInfo sees them.
_ZONE_NAME = re.compile(r"[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+)*", re.ASCII)


def validate_time_zone(raw: Any, field: str) -> str:
    """A project time zone setting: an IANA name zoneinfo knows, else ValidationFailed naming `field`."""
    message = "must be an IANA time zone name such as Europe/Paris"
    if not isinstance(raw, str) or len(raw) > 64 or not _ZONE_NAME.fullmatch(raw):
        raise validation_error(field, message)
    try:
        ZoneInfo(raw)
    except (ValueError, KeyError, OSError):
        # KeyError covers ZoneInfoNotFoundError; OSError a name that is a directory of the tz database.
        raise validation_error(field, message) from None
    return raw


def _utc(instant: datetime) -> datetime:
    if instant.tzinfo is None:
        raise ValueError("schedule math needs tz-aware datetimes")
    return instant.astimezone(UTC)


def _offset(instant: datetime, zone: ZoneInfo) -> timedelta:
    offset = instant.astimezone(zone).utcoffset()
    assert offset is not None  # a ZoneInfo always knows its offset
    return offset


def _offset_change(before: datetime, after: datetime, zone: ZoneInfo) -> datetime:
    """The instant in (before, after] where the zone switches to the offset it has at `after`.

    Callers guarantee the offsets at `before` and `after` differ and that one transition lies between
    them (they are at most a day apart; zones change offset at most a few times a year).
    Bisection to the microsecond: exact whatever the transition's alignment, ~40 look-ups.
    """
    target = _offset(after, zone)
    low, high = 0, (after - before) // _ONE_US
    while high - low > 1:
        middle = (low + high) // 2
        if _offset(before + middle * _ONE_US, zone) == target:
            high = middle
        else:
            low = middle
    return before + high * _ONE_US


# ---------------------------------------------------------------- windows


def _hour_window(instant: datetime, zone: ZoneInfo) -> Window:
    offset = _offset(instant, zone)
    wall = instant.replace(tzinfo=None) + offset
    hour_start = wall.replace(minute=0, second=0, microsecond=0)
    start = (hour_start - offset).replace(tzinfo=UTC)
    end = start + _ONE_HOUR
    # An offset change inside this clock hour ends the run of instants sharing (hour, offset).
    if _offset(start, zone) != offset:
        start = _offset_change(start, instant, zone)
    if _offset(end - _ONE_US, zone) != offset:
        end = _offset_change(instant, end - _ONE_US, zone)
    return Window(start, end)


def _day_start(day: date, zone: ZoneInfo) -> datetime:
    """The first instant of the local calendar day `day`."""
    midnight = datetime.combine(day, time(), tzinfo=zone)  # fold=0: the first midnight if it repeats
    start = midnight.astimezone(UTC)
    if start.astimezone(zone).replace(tzinfo=None) == midnight.replace(tzinfo=None):
        return start
    # Midnight falls in a DST gap. fold=0 read it with the old offset, past the jump unless the gap starts
    # exactly at midnight (Cairo, Santiago); fold=1 reads it with the new offset, before the jump. The day
    # begins at the jump, between the two.
    return _offset_change(midnight.replace(fold=1).astimezone(UTC), start, zone)


def _day_window(instant: datetime, zone: ZoneInfo) -> Window:
    day = instant.astimezone(zone).date()
    # When clocks fall back across midnight (St. John's did so at 00:01 until 2011), the instants of the
    # repeated hour show yesterday's date although the new day has begun: they belong to the next window.
    while instant >= _day_start(day + timedelta(days=1), zone):
        day += timedelta(days=1)
    return Window(_day_start(day, zone), _day_start(day + timedelta(days=1), zone))


def window_containing(freq: Frequency, instant: datetime, tz: str | ZoneInfo) -> Window:
    """The daily or hourly window of zone `tz` (an IANA name) that contains `instant`."""
    freq = Frequency(freq)  # also accepts the plain value read back from the database
    zone = tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
    instant = _utc(instant)
    if freq is Frequency.HOURLY:
        return _hour_window(instant, zone)
    if freq is Frequency.DAILY:
        return _day_window(instant, zone)
    raise ValueError("a once job has a single window: use once_window")


def next_window(freq: Frequency, window: Window, tz: str | ZoneInfo) -> Window:
    return window_containing(freq, window.end, tz)


def windows_between(
    freq: Frequency, first: Window, until_start_before: datetime, tz: str | ZoneInfo
) -> Iterator[Window]:
    """`first` and its successors, up to the last one starting before `until_start_before`."""
    window = first
    while window.start < until_start_before:
        yield window
        window = next_window(freq, window, tz)


def once_window(from_: datetime, to: datetime) -> Window:
    """A once job's range: clients write `[from, to]` to the millisecond, so the window is [from, to + 1 ms)."""
    return Window(_utc(from_), _utc(to) + ONE_MS)


# ---------------------------------------------------------------- when runs start


def effective_lag(
    freq: Frequency, *, hourly_lag: timedelta, daily_lag: timedelta, session_timeout: timedelta
) -> timedelta:
    """Wait after a window closes before extracting it. Never below the session timeout, so that every
    session that began inside the window is closed. A once range only waits for that timeout."""
    if freq is Frequency.HOURLY:
        return max(hourly_lag, session_timeout)
    if freq is Frequency.DAILY:
        return max(daily_lag, session_timeout)
    return session_timeout


def runnable_at(
    freq: Frequency, window: Window, *, hourly_lag: timedelta, daily_lag: timedelta, session_timeout: timedelta
) -> datetime:
    """When the run of `window` becomes RUNNABLE: window end + the effective lag."""
    lag = effective_lag(freq, hourly_lag=hourly_lag, daily_lag=daily_lag, session_timeout=session_timeout)
    return window.end + lag


def once_runnable_at(window: Window, *, created_at: datetime, session_timeout: timedelta) -> datetime:
    """When a once job's single run becomes RUNNABLE.

    A range already over (by the session timeout) at creation runs at once: clients poll for it right
    away. A range reaching into the future (or closing less than a session timeout ago) waits until its
    end + the session timeout, so the sessions it covers are complete.
    """
    return max(_utc(created_at), window.end + session_timeout)


def new_run_state(runnable_at_: datetime, now: datetime) -> RunState:
    """State of a run when it is created (or re-examined): RUNNABLE once its time has come, else CREATED."""
    return RunState.RUNNABLE if now >= runnable_at_ else RunState.CREATED


def pending_window(
    freq: Frequency, *, created_at: datetime, last_window_start: datetime | None, tz: str | ZoneInfo
) -> Window:
    """The first window of a recurring job that has no run yet.

    The job's first window contains its creation time. `last_window_start` is the scheduler's cursor (the
    start of the newest window with a run). If the project's time zone changed since, the cursor's window
    is re-read in the new zone and the next one follows it: no window is ever scheduled twice.
    """
    if last_window_start is None:
        return window_containing(freq, created_at, tz)
    return next_window(freq, window_containing(freq, last_window_start, tz), tz)


def due_windows(
    freq: Frequency,
    *,
    created_at: datetime,
    last_window_start: datetime | None,
    now: datetime,
    tz: str | ZoneInfo,
    hourly_lag: timedelta,
    daily_lag: timedelta,
    session_timeout: timedelta,
    limit: int | None = None,
) -> list[Window]:
    """Every unscheduled window whose run is due by `now`, oldest first (at most `limit`).

    After downtime this is the catch-up: each missed window appears exactly once, in order; with the
    unique (job, window start) key a repeated call after the cursor moved returns only newer windows.
    """
    due: list[Window] = []
    window = pending_window(freq, created_at=created_at, last_window_start=last_window_start, tz=tz)
    lags = {"hourly_lag": hourly_lag, "daily_lag": daily_lag, "session_timeout": session_timeout}
    while (limit is None or len(due) < limit) and runnable_at(freq, window, **lags) <= now:
        due.append(window)
        window = next_window(freq, window, tz)
    return due


def schedule_view(
    freq: Frequency,
    *,
    state: JobState,
    created_at: datetime,
    last_window_start: datetime | None,
    once_range: Window | None,
    tz: str | ZoneInfo,
    hourly_lag: timedelta,
    daily_lag: timedelta,
    session_timeout: timedelta,
) -> ScheduleView:
    """nextFrom / nextTo / nextRunTime of a job.

    - COMPLETED or DELETED: nothing is left to extract, all None.
    - SUSPENDED: the window that will be extracted on resumption, no run time (nothing will start).
    - COMPUTING (a once job whose run is running): its range, no run time (the run has started).
    - ACTIVE: the pending window (a once job: its range) and when its run will start.
    """
    if state in (JobState.COMPLETED, JobState.DELETED):
        return ScheduleView(None, None, None)
    if freq is Frequency.ONCE:
        if once_range is None:
            raise ValueError("a once job needs its range")
        window = once_range
        start_time: datetime | None = once_runnable_at(window, created_at=created_at, session_timeout=session_timeout)
    else:
        window = pending_window(freq, created_at=created_at, last_window_start=last_window_start, tz=tz)
        start_time = runnable_at(
            freq, window, hourly_lag=hourly_lag, daily_lag=daily_lag, session_timeout=session_timeout
        )
    if state is not JobState.ACTIVE:
        start_time = None
    return ScheduleView(window.start, window.last_ms, start_time)


# ---------------------------------------------------------------- once ranges


def validate_once_range(
    from_: datetime, to: datetime, *, now: datetime, retention_days: int, max_days: int = 7
) -> list[FieldError]:
    """Problems of a once job's `[from, to]` (both already parsed); empty when it is acceptable.

    `to` after `from`; `to - from` at most `max_days` (exactly 7 days passes, 7 days + 1 ms does not);
    `from` not older than the project's retention (`now - retention_days`).
    """
    errors: list[FieldError] = []
    if not from_ < to:
        errors.append(FieldError(TO_FIELD, f"must be after {FROM_FIELD}"))
    elif to - from_ > timedelta(days=max_days):
        errors.append(FieldError(TO_FIELD, f"must be at most {max_days} days after {FROM_FIELD}"))
    if from_ < now - timedelta(days=retention_days):
        errors.append(
            FieldError(FROM_FIELD, f"must not be older than the data retention period ({retention_days} days)")
        )
    return errors
