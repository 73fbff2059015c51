"""Realistic demo traffic for a shop, generated column by column with numpy and written as Arrow.

The last `days` UTC days up to `now`: daily and weekly rhythm, returning users, sessions of several
pageviews, realistic device shares, geography, browsers, a site map with query strings and utm
parameters, custom and dynamic variables, carts, transactions, errors, rage clicks, app events and a
few excludable (bot) sessions. Deterministic for (seed, now): each day draws from its own seeded
stream, and each day is stored as one batch keyed by (seed, now, day), so a rerun stores nothing twice.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np

from dataexport.demo import data as D
from dataexport.demo.views import build_views
from dataexport.ingest.hits import session_id_of, user_id_of
from dataexport.warehouse.backend import Warehouse

MS_PER_DAY = 86_400_000


@dataclass(frozen=True)
class DemoSummary:
    pageviews: int
    sessions: int
    users: int
    first_day: date
    last_day: date
    files: int  # written by this call: 0 when the same (seed, now) had been generated before


@dataclass
class Sessions:
    """One entry per session (numpy arrays), plus the per-user attributes they index into."""

    start_ms: np.ndarray
    user: np.ndarray  # index into the user arrays
    session_number: np.ndarray
    session_id: np.ndarray
    views: np.ndarray
    source: np.ndarray  # index into D.TRAFFIC_SOURCES
    converts: np.ndarray
    excludable: np.ndarray
    users: dict[str, np.ndarray]


def generate(
    warehouse: Warehouse,
    project_id: int,
    *,
    days: int = 7,
    sessions_per_day: int = 2000,
    seed: int = 42,
    now: datetime,
    workers: int = 1,
) -> DemoSummary:
    """`workers` > 1 builds and stores days in that many processes (each day is independent and seeded)."""
    if days < 1 or sessions_per_day < 1:
        raise ValueError("days and sessions_per_day must be positive")
    now = now.astimezone(UTC)
    sessions = draw_sessions(np.random.default_rng([seed, 1]), days, sessions_per_day, now)
    first = now.date() - timedelta(days=days - 1)
    jobs = [(warehouse.spec, project_id, seed, now, d, first + timedelta(days=d), sessions) for d in range(days)]
    if workers > 1 and days > 1:
        # spawn, not fork: the parent may hold DuckDB or Arrow threads, which fork does not copy safely.
        with ProcessPoolExecutor(min(workers, days), mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(_store_day, jobs))
    else:
        results = [_store_day(job, warehouse) for job in jobs]
    pageviews = sum(r[0] for r in results)
    files = sum(r[1] for r in results)
    return DemoSummary(
        pageviews=pageviews,
        sessions=len(sessions.start_ms),
        users=len(np.unique(sessions.user)),
        first_day=first,
        last_day=now.date(),
        files=files,
    )


def _store_day(job: tuple, warehouse: Warehouse | None = None) -> tuple[int, int]:
    """Build one day's pageviews and store them as one batch; returns (pageviews, partitions written)."""
    spec, project_id, seed, now, d, day, sessions = job
    chosen = np.nonzero(sessions.start_ms // MS_PER_DAY == _days_since_epoch(day))[0]
    if len(chosen) == 0:
        return 0, 0
    table = build_views(np.random.default_rng([seed, 2, d]), sessions, chosen, int(now.timestamp() * 1000))
    key = f"demo:{seed}:{now.isoformat()}:{day}"
    if warehouse is not None:
        stored = warehouse.append(project_id, table, batch_key=key, now=now)
    else:  # a worker process: its own warehouse, on the parent's spec
        own = spec.open()
        try:
            stored = own.append(project_id, table, batch_key=key, now=now)
        finally:
            own.close()
    return table.num_rows, stored.partitions


def _days_since_epoch(day: date) -> int:
    return day.toordinal() - date(1970, 1, 1).toordinal()


def _weights(values: list[float]) -> np.ndarray:
    w = np.asarray(values, dtype=float)
    return w / w.sum()


def draw_sessions(rng: np.random.Generator, days: int, per_day: int, now: datetime) -> Sessions:
    first = now.date() - timedelta(days=days - 1)
    starts = []
    hourly = _weights(D.HOURLY)
    for d in range(days):
        day = first + timedelta(days=d)
        n = int(per_day * D.WEEKDAY[day.weekday()] * rng.normal(1.0, 0.04))
        hour = rng.choice(24, size=max(n, 1), p=hourly)
        ms = _days_since_epoch(day) * MS_PER_DAY + hour * 3_600_000 + rng.integers(0, 3_600_000, size=len(hour))
        starts.append(ms)
    start_ms = np.concatenate(starts)
    start_ms = np.sort(start_ms[start_ms < int(now.timestamp() * 1000)])
    n = len(start_ms)

    # Returning users: a skewed draw from a pool makes some users come back many times.
    pool = max(1, int(n * 0.6))
    user = np.minimum((pool * rng.random(n) ** 1.6).astype(np.int64), pool - 1)
    order = np.lexsort((start_ms, user))
    rank = np.empty(n, dtype=np.int64)
    boundaries = np.r_[True, user[order][1:] != user[order][:-1]]
    group_start = np.maximum.accumulate(np.where(boundaries, np.arange(n), 0))
    rank[order] = np.arange(n) - group_start
    earlier = rng.choice([0, 0, 0, 1, 2, 5], size=pool)  # sessions some users had before the window
    session_number = np.minimum(rank + 1 + earlier[user], 65535)

    users = _draw_users(rng, pool)
    uid_strings = users["user_id_unhashed"]
    session_id = np.array(
        [session_id_of(uid_strings[u], int(s)) for u, s in zip(user, session_number, strict=True)], dtype=np.uint64
    )
    views = np.minimum(rng.geometric(0.3, size=n), 50)
    converts = (rng.random(n) < 0.05) & (views >= 4)
    source = rng.choice(len(D.TRAFFIC_SOURCES), size=n, p=_weights([s[1] for s in D.TRAFFIC_SOURCES]))
    excludable = rng.random(n) < 0.02
    views = np.where(excludable, np.minimum(views * 4, 50), views)  # bots crawl many pages
    return Sessions(
        start_ms, user, session_number.astype(np.uint16), session_id, views, source, converts, excludable, users
    )


def _draw_users(rng: np.random.Generator, pool: int) -> dict[str, np.ndarray]:
    hexes = rng.integers(0, 2**62, size=pool)
    uid = np.array([f"{h:016x}" for h in hexes], dtype=object)
    devices = np.array(list(D.DEVICE_SHARES))
    device = devices[rng.choice(len(devices), size=pool, p=_weights(list(D.DEVICE_SHARES.values())))]
    geo = rng.choice(len(D.GEOGRAPHY), size=pool, p=_weights([g[3] for g in D.GEOGRAPHY]))
    users: dict[str, np.ndarray] = {
        "user_id_unhashed": uid,
        "user_id": np.array([user_id_of(u) for u in uid], dtype=np.uint64),
        "device_id": device.astype(np.int8),
        "country_code": np.array([g[0] for g in D.GEOGRAPHY], dtype=object)[geo],
        "city": np.array([g[1] for g in D.GEOGRAPHY], dtype=object)[geo],
        "language": np.array([g[2] for g in D.GEOGRAPHY], dtype=object)[geo],
        "ab_variant": np.array(D.AB_VARIANTS, dtype=object)[rng.integers(0, len(D.AB_VARIANTS), size=pool)],
    }
    text_columns = (
        "browser_name",
        "browser_version",
        "platform_name",
        "platform_version",
        "os_version",
        "app_version",
        "model",
        "manufacturer",
    )
    for name in text_columns:
        users[name] = np.full(pool, None, dtype=object)
    users["density"] = np.full(pool, np.nan, dtype=np.float32)
    users["screen_height"] = np.zeros(pool, dtype=np.uint16)
    users["screen_width"] = np.zeros(pool, dtype=np.uint16)
    for dev in devices:
        idx = np.nonzero(device == dev)[0]
        if dev in D.BROWSERS:
            profiles = D.BROWSERS[dev]
            pick = rng.choice(len(profiles), size=len(idx), p=_weights([p[4] for p in profiles]))
            screens = D.SCREENS[dev]
            screen = rng.integers(0, len(screens), size=len(idx))
            for j, i in enumerate(idx):
                browser, versions, platform, platform_versions, _ = profiles[pick[j]]
                users["browser_name"][i] = browser
                users["browser_version"][i] = versions[hexes[i] % len(versions)]
                users["platform_name"][i] = platform
                users["platform_version"][i] = platform_versions[hexes[i] % len(platform_versions)]
                users["screen_height"][i], users["screen_width"][i] = screens[screen[j]]
        else:
            profiles = D.APP_DEVICES[dev]
            pick = rng.choice(len(profiles), size=len(idx), p=_weights([p[6] for p in profiles]))
            for j, i in enumerate(idx):
                maker, model, os_name, os_versions, density, (h, w), _ = profiles[pick[j]]
                users["manufacturer"][i], users["model"][i] = maker, model
                users["platform_name"][i] = os_name
                users["os_version"][i] = os_versions[hexes[i] % len(os_versions)]
                users["app_version"][i] = D.APP_VERSIONS[hexes[i] % len(D.APP_VERSIONS)]
                users["density"][i] = density
                users["screen_height"][i], users["screen_width"][i] = h, w
    return users
