"""ISO 8601 instants as clients send them, and as the API returns them.

The grammar is explicit (one regular expression) rather than `datetime.fromisoformat`, whose accepted
forms change between Python versions (3.11 took basic formats, week dates, ...): what the API accepts
must not depend on the interpreter.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from dataexport.errors import validation_error

INSTANT_MESSAGE = "must be an ISO 8601 date or date-time"

# Earliest and latest accepted instants. Analytics data cannot predate 1970, and stopping well short of
# datetime.max leaves room for window arithmetic (to + 1 ms, + lags, + days) without OverflowError.
MIN_YEAR = 1970
MAX_YEAR = 9998

# Extended format only: YYYY-MM-DD, optionally T (or a space, as RFC 3339 allows) and hh:mm[:ss[.f]],
# optionally Z or a numeric offset (+hh:mm, +hhmm, +hh). Up to 9 fraction digits are read because Java's
# Instant.toString() emits nanoseconds; precision beyond the millisecond is dropped.
_INSTANT = re.compile(
    r"""
    (?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})
    (?:
        [Tt\x20]
        (?P<hour>[0-9]{2}):(?P<minute>[0-9]{2})
        (?::(?P<second>[0-9]{2})(?:[.,](?P<fraction>[0-9]{1,9}))?)?
        (?P<offset>[Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)?
    )?
    """,
    re.VERBOSE | re.ASCII,
)


def parse_instant(raw: Any, field: str) -> datetime:
    """Read an ISO 8601 date or date-time; return it as tz-aware UTC truncated to the millisecond.

    A date alone is 00:00 UTC that day; a date-time without offset is UTC. Anything else (wrong type,
    impossible date, out-of-range year, garbage) raises ValidationFailed naming `field`, never another error.
    """
    if not isinstance(raw, str):
        raise validation_error(field, INSTANT_MESSAGE)
    match = _INSTANT.fullmatch(raw)
    if match is None:
        raise validation_error(field, INSTANT_MESSAGE)
    try:
        instant = _build(match)
    except (ValueError, OverflowError):
        # Impossible calendar values (2023-02-30, 25:00, +24:00 offsets) and conversions past datetime's range.
        raise validation_error(field, INSTANT_MESSAGE) from None
    if not MIN_YEAR <= instant.year <= MAX_YEAR:
        raise validation_error(field, INSTANT_MESSAGE)
    return instant


def _build(match: re.Match[str]) -> datetime:
    parts = match.groupdict()
    fraction = (parts["fraction"] or "").ljust(6, "0")[:6]
    local = datetime(
        int(parts["year"]),
        int(parts["month"]),
        int(parts["day"]),
        int(parts["hour"] or 0),
        int(parts["minute"] or 0),
        int(parts["second"] or 0),
        int(fraction) // 1000 * 1000,
        tzinfo=_offset(parts["offset"]),
    )
    return local.astimezone(UTC)


def _offset(raw: str | None) -> timezone:
    if raw is None or raw in ("Z", "z"):
        return UTC
    sign = -1 if raw[0] == "-" else 1
    digits = raw[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    if minutes >= 60:
        raise ValueError("offset minutes out of range")
    # timezone() itself rejects offsets of 24 hours or more with ValueError.
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def format_instant(dt: datetime | None) -> str | None:
    """The API's timestamp format: UTC, milliseconds, `Z` (`2021-05-02T16:22:43.439Z`).

    A naive datetime is read as UTC, the same rule parse_instant applies to offset-less input.
    """
    if dt is None:
        return None
    utc = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    # Explicit padding: strftime's %Y does not zero-pad years below 1000 on every platform.
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}"
        f".{utc.microsecond // 1000:03d}Z"
    )
