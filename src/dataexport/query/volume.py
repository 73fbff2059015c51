"""A project's ingest volume: its pageviews per local hour and per local day, and its last pageview, for the
console's overview charts.

One scan of the warehouse: SQL counts the window's pageviews per 15-minute UTC bucket, and Python folds the
buckets into the project's local hours and days with zoneinfo. Every UTC offset in use is a whole number of
quarter hours (Asia/Kolkata and Asia/Kathmandu included), and so is every DST shift, so no bucket straddles a local
hour or day: the folding is exact, days of 23 or 25 hours and repeated or skipped hours included, without the SQL
having to know anything of time zones.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from dataexport.domain.schedule import validate_time_zone
from dataexport.errors import validation_error
from dataexport.query.variables import SESSION_LOOKBACK
from dataexport.warehouse.backend import ReadLimits, Warehouse

QUARTER = timedelta(minutes=15)
_QUARTER_MS = QUARTER // timedelta(milliseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_HOURS = 24 * 31
MAX_DAYS = 400

# Buckets by UTC quarter hour, numbered from the window's first one: offsets from it are never negative, so SQL's
# integer division (which truncates) floors as bucket_of does. The session_time bounds only prune partitions and
# rows; view_time decides what is counted.
_COUNTS = f"""
SELECT (epoch_ms(view_time) - ?) // {_QUARTER_MS} AS bucket, count(*) AS views, epoch_ms(max(view_time)) AS last_ms
FROM {{source}}
WHERE project_id = ? AND session_time >= ? AND session_time < ? AND view_time >= ? AND view_time < ?
GROUP BY bucket
"""


@dataclass(frozen=True)
class IngestVolume:
    # (start of the local hour, aware in the project's time zone, pageviews): one per hour, oldest first
    hourly: list[tuple[datetime, int]]
    # (local date in the project's time zone, pageviews): one per day, oldest first
    daily: list[tuple[date, int]]
    # the newest view_time (UTC) within the daily window; None when it holds no pageview
    last_view_at: datetime | None


@dataclass(frozen=True)
class Windows:
    """The local hours and days to count, as UTC bounds: interval i is [bounds[i], bounds[i + 1])."""

    hour_bounds: list[datetime]  # hours + 1 instants
    day_bounds: list[datetime]  # days + 1 instants, the local midnights
    days: list[date]  # the local dates, oldest first

    @property
    def start(self) -> datetime:
        return min(self.hour_bounds[0], self.day_bounds[0])

    @property
    def end(self) -> datetime:
        return max(self.hour_bounds[-1], self.day_bounds[-1])


def bucket_of(instant: datetime) -> int:
    """The UTC quarter hour holding `instant` (an aware datetime), numbered as the SQL numbers it."""
    return (instant - _EPOCH) // QUARTER


def start_of(bucket: int) -> datetime:
    return _EPOCH + bucket * QUARTER


def windows(now: datetime, zone: ZoneInfo, hours: int, days: int) -> Windows:
    """The `hours` local hours ending with the one holding `now`, and the `days` local dates ending with today."""
    today = now.astimezone(zone).date()
    dates = [today - timedelta(days=k) for k in range(days - 1, -1, -1)]
    return Windows(
        hour_bounds=_hour_bounds(now, zone, hours),
        day_bounds=[_first_instant_of(d, zone) for d in [*dates, today + timedelta(days=1)]],
        days=dates,
    )


def _hour_bounds(now: datetime, zone: ZoneInfo, hours: int) -> list[datetime]:
    # A local hour is a run of quarter hours whose wall clock shows the same date and hour, in the same pass of the
    # clock (fold tells the two passes of an hour repeated when DST ends apart). Walking the quarters finds each
    # hour's real start and length, where arithmetic on wall times would stumble on skipped or repeated hours.
    def label(bucket: int) -> tuple[date, int, int]:
        local = start_of(bucket).astimezone(zone)
        return local.date(), local.hour, local.fold

    current = bucket_of(now)
    this_hour = label(current)
    end = current + 1
    while label(end) == this_hour:
        end += 1
    starts: list[int] = []
    bucket, here = current, this_hour
    while True:
        before = label(bucket - 1)
        if before != here:  # `bucket` starts an hour
            starts.append(bucket)
            if len(starts) == hours:
                break
        bucket, here = bucket - 1, before
    return [start_of(b) for b in reversed(starts)] + [start_of(end)]


def _first_instant_of(day: date, zone: ZoneInfo) -> datetime:
    # fold=0 takes a repeated midnight's first pass, and a skipped midnight (DST starting at 00:00) at the offset
    # before the shift, which is the instant of the shift: in both cases the first instant of the local date.
    return datetime.combine(day, time(0), zone).astimezone(UTC)


def fold(buckets: Mapping[int, int], bounds: Sequence[datetime]) -> list[int]:
    """The sums of `buckets` (count by quarter-hour bucket) within each [bounds[i], bounds[i + 1]); buckets outside
    every interval are left out. Bounds are ascending and on quarter hours, as local hours and midnights are."""
    edges = [bucket_of(b) for b in bounds]
    if any(start_of(e) != b for e, b in zip(edges, bounds, strict=True)):
        raise ValueError("bounds must fall on UTC quarter hours")
    counts = [0] * (len(edges) - 1)
    for bucket, n in buckets.items():
        at = bisect_right(edges, bucket) - 1
        if 0 <= at < len(counts):
            counts[at] += n
    return counts


def ingest_volume(
    warehouse: Warehouse,
    project_id: int,
    *,
    now: datetime,
    tz: str,
    limits: ReadLimits,
    hours: int = 48,
    days: int = 30,
) -> IngestVolume:
    """Pageviews (by view_time) of the project per local hour of the `hours` hours ending with the current one,
    and per local date of the `days` dates ending with today, zeros included, oldest first; and the newest
    view_time within those days. Local means in time zone `tz`."""
    _check_count("hours", hours, MAX_HOURS)
    _check_count("days", days, MAX_DAYS)
    zone = ZoneInfo(validate_time_zone(tz, "timezone"))
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise validation_error("now", "must be a timezone-aware datetime")
    span = windows(now, zone, hours, days)
    counts: dict[int, int] = {}
    last_ms: dict[int, int] = {}
    sessions_from = span.start - SESSION_LOOKBACK
    with warehouse.read(project_id, sessions_from, span.end, limits) as source:
        if source.days:
            relation = source.relation(source.days)
            sql = _COUNTS.replace("{source}", relation.text)
            first = bucket_of(span.start)
            origin_ms = (start_of(first) - _EPOCH) // timedelta(milliseconds=1)
            params = [origin_ms, *relation.params, project_id, sessions_from, span.end, span.start, span.end]
            for offset, views, last in source.conn.execute(sql, params).fetchall():
                counts[first + offset] = views
                last_ms[first + offset] = last
    first_day, after_days = bucket_of(span.day_bounds[0]), bucket_of(span.day_bounds[-1])
    in_days = [last_ms[b] for b in last_ms if first_day <= b < after_days]
    return IngestVolume(
        hourly=list(
            zip([b.astimezone(zone) for b in span.hour_bounds[:-1]], fold(counts, span.hour_bounds), strict=True)
        ),
        daily=list(zip(span.days, fold(counts, span.day_bounds), strict=True)),
        last_view_at=_EPOCH + timedelta(milliseconds=max(in_days)) if in_days else None,
    )


def _check_count(field: str, value: object, most: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= most:
        raise validation_error(field, f"must be an integer from 1 to {most}")
