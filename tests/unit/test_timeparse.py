"""ISO 8601 parsing and formatting of instants (dataexport.domain.timeparse)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataexport.domain.timeparse import INSTANT_MESSAGE, format_instant, parse_instant
from dataexport.errors import FieldError, ValidationFailed

FIELD = "frequency.dateRange.from"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-06-01", utc(2026, 6, 1)),
        ("2023-02-14T00:00:00.000Z", utc(2023, 2, 14)),
        ("2023-02-15T23:59:59.999Z", utc(2023, 2, 15, 23, 59, 59, 999_000)),
        ("2023-02-10T00:00:00", utc(2023, 2, 10)),
        ("2023-02-14T00:00:00+02:00", utc(2023, 2, 13, 22)),
        ("2023-02-14T00:00:00-05:30", utc(2023, 2, 14, 5, 30)),
        ("2023-02-14T00:00:00+0545", utc(2023, 2, 13, 18, 15)),
        ("2023-02-14T00:00:00+01", utc(2023, 2, 13, 23)),
        ("2023-02-14T00:00:00-00:00", utc(2023, 2, 14)),
        ("2023-02-14 00:00:00Z", utc(2023, 2, 14)),
        ("2023-02-14t10:11:12z", utc(2023, 2, 14, 10, 11, 12)),
        ("2023-02-14T10:11Z", utc(2023, 2, 14, 10, 11)),
        ("2023-02-14T10:11", utc(2023, 2, 14, 10, 11)),
        ("2023-02-14T10:11:12.5Z", utc(2023, 2, 14, 10, 11, 12, 500_000)),
        ("2023-02-14T10:11:12,25Z", utc(2023, 2, 14, 10, 11, 12, 250_000)),
        ("2024-02-29T12:00:00Z", utc(2024, 2, 29, 12)),
        ("1970-01-01T00:00:00Z", utc(1970, 1, 1)),
        ("9998-12-31T23:59:59.999Z", utc(9998, 12, 31, 23, 59, 59, 999_000)),
        # The offset can move the instant to another day, month and year.
        ("2023-12-31T23:30:00-01:00", utc(2024, 1, 1, 0, 30)),
    ],
)
def test_accepts_what_clients_send(raw: str, expected: datetime) -> None:
    parsed = parse_instant(raw, FIELD)
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    ("fraction", "microsecond"),
    [
        ("1", 100_000),
        ("12", 120_000),
        ("123", 123_000),
        ("1239", 123_000),
        ("123999", 123_000),
        ("999999", 999_000),
        ("123456789", 123_000),
        ("000999", 0),
    ],
)
def test_fraction_is_truncated_to_the_millisecond(fraction: str, microsecond: int) -> None:
    assert parse_instant(f"2023-02-14T10:11:12.{fraction}Z", FIELD).microsecond == microsecond


@pytest.mark.parametrize(
    "raw",
    [
        "",
        " ",
        "2023-13-01",
        "2023-00-10",
        "2023-02-30",
        "2023-02-29",
        "2023-04-31",
        "2023-02-00",
        "2023-02-14T24:00:00Z",
        "2023-02-14T23:60:00Z",
        "2023-02-14T23:59:60Z",
        "2023-02-14T10:11:12.1234567890Z",  # more than 9 fraction digits
        "2023-02-14T10:11:12.Z",
        "2023-02-14T10Z",
        "2023-02-14T",
        "2023-02-14T10:11:12+24:00",
        "2023-02-14T10:11:12+02:60",
        "2023-02-14T10:11:12+2:00",
        "2023-02-14T10:11:12 +02:00",
        "2023-02-14T10:11:12UTC",
        "2023-02-14T10:11:12[Europe/Paris]",
        "0000-01-01",
        "0001-01-01",
        "1969-12-31T23:59:59.999Z",
        "9999-01-01",
        "99999-01-01",
        "+002023-02-14",
        "-2023-02-14",
        "20230214",
        "20230214T101112Z",
        "2023-W07-2",
        "2023-045",
        "2023-2-14",
        "23-02-14",
        "2023/02/14",
        "14/02/2023",
        "2023-02-14\n",
        " 2023-02-14",
        "2023-02-14 ",
        "NaN",
        "nan",
        "inf",
        "null",
        "today",
        "now",
        "1676332800",
        "1676332800000",
        "２０２３-０２-１４",  # full-width digits: \d would match them, the grammar does not
        "1970-01-01T00:00:00+01:00",  # 1969 in UTC
        "2023-02-14T00:00:00\x00",
    ],
)
def test_rejects_anything_else_with_a_field_error(raw: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_instant(raw, FIELD)
    assert caught.value.errors == [FieldError(FIELD, INSTANT_MESSAGE)]
    assert caught.value.status == 400


@pytest.mark.parametrize(
    "raw",
    [None, 1676332800, 1676332800.0, float("nan"), True, [], {}, b"2023-02-14", datetime(2023, 2, 14, tzinfo=UTC)],
)
def test_rejects_non_strings(raw: object) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_instant(raw, "frequency.dateRange.to")
    assert caught.value.errors == [FieldError("frequency.dateRange.to", INSTANT_MESSAGE)]


# Strings shaped like instants but with random digits: impossible months, days, hours, offsets, years.
_INSTANT_SHAPED = st.from_regex(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.,][0-9]{1,10})?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?)?",
    fullmatch=True,
)


@settings(max_examples=600, deadline=None, database=None)
@given(st.one_of(st.text(), _INSTANT_SHAPED))
def test_arbitrary_text_gives_a_utc_datetime_or_validation_failed(raw: str) -> None:
    try:
        parsed = parse_instant(raw, FIELD)
    except ValidationFailed as exc:
        assert exc.errors == [FieldError(FIELD, INSTANT_MESSAGE)]
    else:
        assert parsed.tzinfo is UTC and parsed.microsecond % 1000 == 0


_OFFSETS = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(lambda m: timedelta(minutes=m))


@settings(max_examples=200, deadline=None, database=None)
@given(
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(9997, 12, 31)),
    _OFFSETS,
    st.sampled_from(["T", " "]),
)
def test_any_valid_instant_written_with_any_offset_round_trips(
    local: datetime, offset: timedelta, separator: str
) -> None:
    aware = local.replace(tzinfo=timezone(offset))
    written = aware.isoformat(sep=separator, timespec="microseconds")
    expected = aware.astimezone(UTC)
    expected = expected.replace(microsecond=expected.microsecond // 1000 * 1000)
    assert parse_instant(written, FIELD) == expected


@settings(max_examples=200, deadline=None, database=None)
@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9998, 12, 31), timezones=st.just(UTC)))
def test_format_then_parse_is_identity_to_the_millisecond(instant: datetime) -> None:
    truncated = instant.replace(microsecond=instant.microsecond // 1000 * 1000)
    assert parse_instant(format_instant(instant), FIELD) == truncated


@pytest.mark.parametrize(
    ("instant", "expected"),
    [
        (utc(2021, 5, 2, 16, 22, 43, 439_000), "2021-05-02T16:22:43.439Z"),
        (utc(2021, 5, 2, 16, 22, 43, 439_999), "2021-05-02T16:22:43.439Z"),
        (utc(2021, 5, 2), "2021-05-02T00:00:00.000Z"),
        (datetime(2021, 5, 2, 18, 0, tzinfo=timezone(timedelta(hours=2))), "2021-05-02T16:00:00.000Z"),
        (datetime(2021, 5, 2, 16, 0, 0, 7_000), "2021-05-02T16:00:00.007Z"),  # naive means UTC
        (utc(5, 1, 2, 3, 4, 5), "0005-01-02T03:04:05.000Z"),
    ],
)
def test_format_instant(instant: datetime, expected: str) -> None:
    assert format_instant(instant) == expected


def test_format_instant_of_none_is_none() -> None:
    assert format_instant(None) is None
