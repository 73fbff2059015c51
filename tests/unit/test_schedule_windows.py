"""Daily and hourly windows in a project's time zone (dataexport.domain.schedule).

Expected bounds are written out in UTC from the zones' published rules, not computed by the code under test.
"""

from __future__ import annotations

import io
import struct
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataexport.domain.enums import Frequency
from dataexport.domain.schedule import (
    Window,
    next_window,
    once_window,
    validate_time_zone,
    window_containing,
    windows_between,
)
from dataexport.errors import FieldError, ValidationFailed

HOURLY, DAILY = Frequency.HOURLY, Frequency.DAILY
H = timedelta(hours=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def run_of_windows(freq: Frequency, instant: datetime, tz: str, count: int) -> list[Window]:
    windows = [window_containing(freq, instant, tz)]
    while len(windows) < count:
        windows.append(next_window(freq, windows[-1], tz))
    return windows


# ---------------------------------------------------------------- UTC and fixed offsets


def test_utc_hourly_window_is_the_clock_hour() -> None:
    assert window_containing(HOURLY, utc(2025, 6, 1, 10, 37, 12, 5), "UTC") == Window(
        utc(2025, 6, 1, 10), utc(2025, 6, 1, 11)
    )


def test_utc_daily_window_is_the_calendar_day() -> None:
    assert window_containing(DAILY, utc(2025, 6, 1, 23, 59, 59, 999_999), "UTC") == Window(
        utc(2025, 6, 1), utc(2025, 6, 2)
    )


@pytest.mark.parametrize("freq", [HOURLY, DAILY])
def test_an_instant_on_a_boundary_belongs_to_the_window_that_starts_there(freq: Frequency) -> None:
    boundary = utc(2025, 6, 2)
    window = window_containing(freq, boundary, "UTC")
    assert window.start == boundary
    assert window_containing(freq, boundary - timedelta(microseconds=1), "UTC").end == boundary


def test_the_instant_may_be_given_in_any_offset() -> None:
    paris_noon = datetime(2025, 6, 1, 12, 30, tzinfo=ZoneInfo("Europe/Paris"))
    assert window_containing(HOURLY, paris_noon, "UTC") == Window(utc(2025, 6, 1, 10), utc(2025, 6, 1, 11))


def test_frequency_may_be_the_stored_plain_value() -> None:
    assert window_containing("daily", utc(2025, 6, 1, 5), "UTC") == Window(utc(2025, 6, 1), utc(2025, 6, 2))


def test_kolkata_clock_hours_start_at_half_past_in_utc() -> None:
    assert run_of_windows(HOURLY, utc(2025, 4, 5, 13, 45), "Asia/Kolkata", 2) == [
        Window(utc(2025, 4, 5, 13, 30), utc(2025, 4, 5, 14, 30)),
        Window(utc(2025, 4, 5, 14, 30), utc(2025, 4, 5, 15, 30)),
    ]


def test_kolkata_day_starts_at_1830_utc() -> None:
    assert window_containing(DAILY, utc(2025, 4, 5, 18, 29), "Asia/Kolkata") == Window(
        utc(2025, 4, 4, 18, 30), utc(2025, 4, 5, 18, 30)
    )


# ---------------------------------------------------------------- Europe/Paris DST


def test_paris_day_of_spring_forward_lasts_23_hours() -> None:
    # 2025-03-30: 02:00 CET -> 03:00 CEST at 01:00 UTC.
    window = window_containing(DAILY, utc(2025, 3, 30, 12), "Europe/Paris")
    assert window == Window(utc(2025, 3, 29, 23), utc(2025, 3, 30, 22))
    assert window.end - window.start == 23 * H


def test_paris_day_of_fall_back_lasts_25_hours() -> None:
    # 2025-10-26: 03:00 CEST -> 02:00 CET at 01:00 UTC.
    window = window_containing(DAILY, utc(2025, 10, 26, 12), "Europe/Paris")
    assert window == Window(utc(2025, 10, 25, 22), utc(2025, 10, 26, 23))
    assert window.end - window.start == 25 * H


def test_paris_spring_forward_hour_after_0100_is_0300() -> None:
    windows = run_of_windows(HOURLY, utc(2025, 3, 30, 0, 10), "Europe/Paris", 3)
    assert windows == [
        Window(utc(2025, 3, 30, 0), utc(2025, 3, 30, 1)),  # 01:00-02:00 CET
        Window(utc(2025, 3, 30, 1), utc(2025, 3, 30, 2)),  # 03:00-04:00 CEST
        Window(utc(2025, 3, 30, 2), utc(2025, 3, 30, 3)),
    ]
    paris = ZoneInfo("Europe/Paris")
    assert [w.start.astimezone(paris).hour for w in windows] == [1, 3, 4]


def test_paris_repeated_hour_of_fall_back_gives_two_windows() -> None:
    windows = run_of_windows(HOURLY, utc(2025, 10, 25, 23, 59), "Europe/Paris", 4)
    assert windows == [
        Window(utc(2025, 10, 25, 23), utc(2025, 10, 26, 0)),  # 01:00 CEST
        Window(utc(2025, 10, 26, 0), utc(2025, 10, 26, 1)),  # 02:00 CEST
        Window(utc(2025, 10, 26, 1), utc(2025, 10, 26, 2)),  # 02:00 CET, the repeated hour
        Window(utc(2025, 10, 26, 2), utc(2025, 10, 26, 3)),  # 03:00 CET
    ]
    paris = ZoneInfo("Europe/Paris")
    assert [w.start.astimezone(paris).hour for w in windows] == [1, 2, 2, 3]
    # Each of the two 02:00 hours is found from an instant inside it.
    assert window_containing(HOURLY, utc(2025, 10, 26, 0, 30), "Europe/Paris") == windows[1]
    assert window_containing(HOURLY, utc(2025, 10, 26, 1, 30), "Europe/Paris") == windows[2]


# ---------------------------------------------------------------- America/New_York DST


def test_new_york_spring_forward() -> None:
    # 2025-03-09: 02:00 EST -> 03:00 EDT at 07:00 UTC.
    assert run_of_windows(HOURLY, utc(2025, 3, 9, 6, 59), "America/New_York", 2) == [
        Window(utc(2025, 3, 9, 6), utc(2025, 3, 9, 7)),
        Window(utc(2025, 3, 9, 7), utc(2025, 3, 9, 8)),
    ]
    assert window_containing(DAILY, utc(2025, 3, 9, 12), "America/New_York") == Window(
        utc(2025, 3, 9, 5), utc(2025, 3, 10, 4)
    )


def test_new_york_fall_back() -> None:
    # 2025-11-02: 02:00 EDT -> 01:00 EST at 06:00 UTC; 01:00-02:00 happens twice.
    assert run_of_windows(HOURLY, utc(2025, 11, 2, 5, 1), "America/New_York", 3) == [
        Window(utc(2025, 11, 2, 5), utc(2025, 11, 2, 6)),
        Window(utc(2025, 11, 2, 6), utc(2025, 11, 2, 7)),
        Window(utc(2025, 11, 2, 7), utc(2025, 11, 2, 8)),
    ]
    assert window_containing(DAILY, utc(2025, 11, 2, 12), "America/New_York") == Window(
        utc(2025, 11, 2, 4), utc(2025, 11, 3, 5)
    )


# ---------------------------------------------------------------- offsets that are not whole hours


def test_chatham_clock_hours_start_at_quarter_past_in_utc() -> None:
    # +12:45 in southern winter.
    assert window_containing(HOURLY, utc(2025, 6, 1, 0, 14), "Pacific/Chatham") == Window(
        utc(2025, 5, 31, 23, 15), utc(2025, 6, 1, 0, 15)
    )


def test_chatham_fall_back_splits_two_clock_hours() -> None:
    # 2025-04-06 03:45 +13:45 -> 02:45 +12:45 at 14:00 UTC.
    assert run_of_windows(HOURLY, utc(2025, 4, 5, 12, 15), "Pacific/Chatham", 4) == [
        Window(utc(2025, 4, 5, 12, 15), utc(2025, 4, 5, 13, 15)),  # 02:00-03:00 +13:45
        Window(utc(2025, 4, 5, 13, 15), utc(2025, 4, 5, 14, 0)),  # 03:00-03:45 +13:45
        Window(utc(2025, 4, 5, 14, 0), utc(2025, 4, 5, 14, 15)),  # 02:45-03:00 +12:45
        Window(utc(2025, 4, 5, 14, 15), utc(2025, 4, 5, 15, 15)),  # 03:00-04:00 +12:45
    ]


def test_chatham_spring_forward_splits_two_clock_hours() -> None:
    # 2025-09-28 02:45 +12:45 -> 03:45 +13:45 at 14:00 UTC.
    assert run_of_windows(HOURLY, utc(2025, 9, 27, 13, 15), "Pacific/Chatham", 3) == [
        Window(utc(2025, 9, 27, 13, 15), utc(2025, 9, 27, 14, 0)),  # 02:00-02:45 +12:45
        Window(utc(2025, 9, 27, 14, 0), utc(2025, 9, 27, 14, 15)),  # 03:45-04:00 +13:45
        Window(utc(2025, 9, 27, 14, 15), utc(2025, 9, 27, 15, 15)),  # 04:00-05:00 +13:45
    ]


def test_lord_howe_half_hour_fall_back() -> None:
    # 2025-04-06 02:00 +11:00 -> 01:30 +10:30 at 15:00 UTC: the second 01:xx hour lasts 30 minutes.
    assert run_of_windows(HOURLY, utc(2025, 4, 5, 14, 20), "Australia/Lord_Howe", 3) == [
        Window(utc(2025, 4, 5, 14), utc(2025, 4, 5, 15)),
        Window(utc(2025, 4, 5, 15), utc(2025, 4, 5, 15, 30)),
        Window(utc(2025, 4, 5, 15, 30), utc(2025, 4, 5, 16, 30)),
    ]


# ---------------------------------------------------------------- midnight inside a DST change


def test_day_whose_midnight_does_not_exist_starts_at_the_jump() -> None:
    # Cairo 2023-04-28: 00:00 EET -> 01:00 EEST at 22:00 UTC the day before.
    window = window_containing(DAILY, utc(2023, 4, 28, 12), "Africa/Cairo")
    assert window == Window(utc(2023, 4, 27, 22), utc(2023, 4, 28, 21))
    assert window_containing(DAILY, utc(2023, 4, 27, 21, 59), "Africa/Cairo").end == window.start


def test_santiago_day_without_midnight() -> None:
    # Santiago 2024-09-08: 00:00 -04 -> 01:00 -03 at 04:00 UTC.
    assert window_containing(DAILY, utc(2024, 9, 8, 4), "America/Santiago") == Window(
        utc(2024, 9, 8, 4), utc(2024, 9, 9, 3)
    )


def test_havana_day_with_a_repeated_hour_after_midnight() -> None:
    # Havana 2024-11-03: 01:00 CDT -> 00:00 CST at 05:00 UTC; the day starts at the first midnight.
    window = window_containing(DAILY, utc(2024, 11, 3, 5, 30), "America/Havana")
    assert window == Window(utc(2024, 11, 3, 4), utc(2024, 11, 4, 5))


# ---------------------------------------------------------------- a whole year tiles time


@pytest.mark.parametrize(
    ("tz", "hourly_windows"),
    [
        ("UTC", 8760),
        ("Europe/Paris", 8760),  # 23 windows in March, 25 in October
        ("America/New_York", 8760),
        ("Asia/Kolkata", 8760),
        ("Pacific/Chatham", 8762),  # both change days split two clock hours; fall-back adds two windows
    ],
)
def test_hourly_windows_of_2025_tile_the_local_year(tz: str, hourly_windows: int) -> None:
    zone = ZoneInfo(tz)
    year_start = datetime(2025, 1, 1, tzinfo=zone).astimezone(UTC)
    year_end = datetime(2026, 1, 1, tzinfo=zone).astimezone(UTC)
    windows = list(windows_between(HOURLY, window_containing(HOURLY, year_start, tz), year_end, tz))
    assert len(windows) == hourly_windows
    assert windows[0].start == year_start and windows[-1].end == year_end
    assert all(a.end == b.start for a, b in zip(windows, windows[1:], strict=False))
    assert all(w.start.astimezone(zone).minute == 0 or w.end - w.start < H for w in windows)


def test_daily_windows_of_2025_in_paris() -> None:
    zone = ZoneInfo("Europe/Paris")
    first = window_containing(DAILY, utc(2025, 1, 1, 12), "Europe/Paris")
    windows = list(windows_between(DAILY, first, utc(2025, 12, 31, 23), "Europe/Paris"))
    assert len(windows) == 365
    assert sorted({w.end - w.start for w in windows}) == [23 * H, 24 * H, 25 * H]
    assert [w.start.astimezone(zone).date().toordinal() for w in windows] == list(
        range(datetime(2025, 1, 1).toordinal(), datetime(2026, 1, 1).toordinal())
    )


ZONES = [
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "Asia/Kolkata",
    "Pacific/Chatham",
    "Australia/Lord_Howe",
    "America/Santiago",
    "Africa/Cairo",
    "America/Havana",
    "Asia/Kathmandu",
    "Pacific/Kiritimati",
    "America/St_Johns",
    "Asia/Tehran",
    "Europe/Dublin",
    "America/Sao_Paulo",
]
INSTANTS = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC))


def assert_tiles(freq: Frequency, created: datetime, tz: str, span: timedelta) -> list[Window]:
    first = window_containing(freq, created, tz)
    assert created in first
    windows = list(windows_between(freq, first, created + span, tz))
    for previous, following in zip(windows, windows[1:], strict=False):
        assert previous.end == following.start  # no gap, no overlap
    for window in windows:
        # A window is found again from its last instant (from its first one is how next_window built it).
        assert window_containing(freq, window.end - timedelta(microseconds=1), tz) == window
    return windows


@settings(max_examples=5, deadline=None, database=None)
@given(INSTANTS, st.sampled_from(ZONES))
def test_hourly_windows_tile_a_year_from_any_creation_instant(created: datetime, tz: str) -> None:
    windows = assert_tiles(HOURLY, created, tz, timedelta(days=365))
    assert all(timedelta(0) < w.end - w.start <= H for w in windows)


@settings(max_examples=25, deadline=None, database=None)
@given(INSTANTS, st.sampled_from(ZONES))
def test_daily_windows_tile_a_year_from_any_creation_instant(created: datetime, tz: str) -> None:
    windows = assert_tiles(DAILY, created, tz, timedelta(days=365))
    assert all(22 * H <= w.end - w.start <= 26 * H for w in windows)
    zone = ZoneInfo(tz)
    assert all(w.start.astimezone(zone).date() < w.end.astimezone(zone).date() for w in windows)


@settings(max_examples=300, deadline=None, database=None)
@given(INSTANTS, st.sampled_from(ZONES), st.sampled_from([HOURLY, DAILY]))
def test_first_window_contains_the_creation_instant(created: datetime, tz: str, freq: Frequency) -> None:
    window = window_containing(freq, created, tz)
    assert window.start <= created < window.end
    assert window.start.tzinfo is UTC and window.end.tzinfo is UTC


# ---------------------------------------------------------------- once windows and misuse


def test_vendor_once_example_covers_exactly_two_days() -> None:
    window = once_window(utc(2023, 2, 14), utc(2023, 2, 15, 23, 59, 59, 999_000))
    assert window == Window(utc(2023, 2, 14), utc(2023, 2, 16))
    assert window.last_ms == utc(2023, 2, 15, 23, 59, 59, 999_000)


def test_once_has_no_recurring_windows() -> None:
    with pytest.raises(ValueError, match="once"):
        window_containing(Frequency.ONCE, utc(2025, 1, 1), "UTC")


def test_naive_instants_are_refused() -> None:
    with pytest.raises(ValueError, match="tz-aware"):
        window_containing(HOURLY, datetime(2025, 1, 1), "UTC")
    with pytest.raises(ValueError, match="tz-aware"):
        Window(datetime(2025, 1, 1), utc(2025, 1, 2))


def test_empty_window_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        Window(utc(2025, 1, 1), utc(2025, 1, 1))


@pytest.mark.parametrize("name", ["UTC", "Europe/Paris", "America/Argentina/Buenos_Aires", "Etc/GMT+5"])
def test_valid_time_zone_names(name: str) -> None:
    assert validate_time_zone(name, "timeZone") == name


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "Mars/Olympus_Mons",
        "Europe",
        "../../etc/passwd",
        "/usr/share/zoneinfo/UTC",
        "Europe/Paris ",
        "Europe//Paris",
        "a" * 65,
        None,
        5,
        ["UTC"],
    ],
)
def test_invalid_time_zone_names(raw: object) -> None:
    with pytest.raises(ValidationFailed) as caught:
        validate_time_zone(raw, "timeZone")
    assert [e.field for e in caught.value.errors] == ["timeZone"]
    assert isinstance(caught.value.errors[0], FieldError)


# ---------------------------------------------------------------- odd days of the tz database


def test_st_johns_fell_back_across_midnight() -> None:
    # 2010-11-07 00:01 NDT (-2:30) -> 2010-11-06 23:01 NST (-3:30) at 02:31 UTC: the instants of the repeated
    # hour show November 6th on the wall but come after November 7th's midnight, so belong to the 7th.
    assert window_containing(DAILY, utc(2010, 11, 7, 2, 45), "America/St_Johns") == Window(
        utc(2010, 11, 7, 2, 30), utc(2010, 11, 8, 3, 30)
    )
    assert window_containing(DAILY, utc(2010, 11, 7, 2, 29), "America/St_Johns") == Window(
        utc(2010, 11, 6, 2, 30), utc(2010, 11, 7, 2, 30)
    )


def test_apia_skipped_a_whole_day() -> None:
    # Samoa jumped from 2011-12-29 24:00 (-10) to 2011-12-31 00:00 (+14): there was no December 30th.
    assert run_of_windows(DAILY, utc(2011, 12, 29, 12), "Pacific/Apia", 2) == [
        Window(utc(2011, 12, 29, 10), utc(2011, 12, 30, 10)),
        Window(utc(2011, 12, 30, 10), utc(2011, 12, 31, 10)),
    ]


def tzif_zone(initial_offset: timedelta, transitions: list[tuple[datetime, timedelta]]) -> ZoneInfo:
    """A zone built from TZif v1 bytes in memory, for rules the real database does not contain."""
    offsets = [initial_offset] + [offset for _, offset in transitions]
    header = b"TZif" + b"\x00" * 16 + struct.pack(">6l", 0, 0, 0, len(transitions), len(offsets), 4)
    times = b"".join(struct.pack(">l", int(at.timestamp())) for at, _ in transitions)
    indices = bytes(range(1, len(offsets)))
    types = b"".join(struct.pack(">lBB", int(o.total_seconds()), 0, 0) for o in offsets)
    return ZoneInfo.from_file(io.BytesIO(header + times + indices + types + b"XXX\x00"), key="Synthetic/Gap")


def test_a_day_whose_midnight_lies_inside_a_gap_starts_at_the_jump() -> None:
    # Clocks jump from 23:00 to 01:00 at 23:00 UTC on March 1st: March 2nd begins at that jump.
    zone = tzif_zone(timedelta(0), [(utc(2025, 3, 1, 23), 2 * H)])
    # The zone really has no midnight on March 2nd: read with the old offset it lands at 02:00.
    assert datetime(2025, 3, 2, tzinfo=zone).astimezone(UTC).astimezone(zone).hour == 2
    assert run_of_windows(DAILY, utc(2025, 3, 1, 12), zone, 2) == [
        Window(utc(2025, 3, 1), utc(2025, 3, 1, 23)),
        Window(utc(2025, 3, 1, 23), utc(2025, 3, 2, 22)),
    ]
    assert window_containing(DAILY, utc(2025, 3, 1, 23), zone).start == utc(2025, 3, 1, 23)
