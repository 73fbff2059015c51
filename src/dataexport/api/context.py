"""What the request handlers share, built once by the app factory."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from dataexport.clock import Clock, system_clock
from dataexport.config import Settings
from dataexport.security.tokens import TokenVerifier


class ProjectConcurrency:
    """In-flight request counter per project (vendor limit: 10 at once, all credentials together).

    Per API process: with N replicas behind a balancer the effective ceiling is N times the limit.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._in_flight: dict[int, int] = defaultdict(int)

    def try_acquire(self, project_id: int) -> bool:
        with self._lock:
            if self._in_flight[project_id] >= self.limit:
                return False
            self._in_flight[project_id] += 1
            return True

    def release(self, project_id: int) -> None:
        with self._lock:
            self._in_flight[project_id] -= 1
            if self._in_flight[project_id] <= 0:
                del self._in_flight[project_id]


class TokenRateLimiter:
    """At most `per_minute` token requests per client_id and minute, so a secret cannot be brute-forced fast.

    Fixed one-minute windows, per API process; memory is bounded by forgetting windows that are over.
    """

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._lock = threading.Lock()
        self._window = 0
        self._counts: dict[str, int] = defaultdict(int)

    def allow(self, client_id: str, now: datetime) -> bool:
        window = int(now.timestamp() // 60)
        with self._lock:
            if window != self._window:
                self._window, self._counts = window, defaultdict(int)
            self._counts[client_id] += 1
            return self._counts[client_id] <= self.per_minute


@dataclass(frozen=True)
class ProjectInfo:
    """What requests read of their project; none of it changes through the API, so it may be cached."""

    id: int
    account_id: int
    timezone: str
    retention_days: int


class ProjectCache:
    """Projects by id for a few seconds, so an authenticated request does not read its project row each time.

    Plain dict operations (atomic under the GIL): read on the event loop, filled from thread-pool calls,
    cleared by whoever resets the metadata DB under a running app (tests).
    """

    def __init__(self, ttl_seconds: float = 5.0) -> None:
        self.ttl = ttl_seconds
        self._entries: dict[int, tuple[float, ProjectInfo]] = {}

    def get(self, project_id: int) -> ProjectInfo | None:
        entry = self._entries.get(project_id)
        if entry is None or entry[0] <= time.monotonic():
            return None
        return entry[1]

    def put(self, project: ProjectInfo) -> None:
        if len(self._entries) > 10_000:  # bounded: forget expired entries once there are many
            now = time.monotonic()
            self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
        self._entries[project.id] = (time.monotonic() + self.ttl, project)

    def clear(self) -> None:
        self._entries.clear()


# Pooled connections left to what runs outside the request gate: the in-process worker and scheduler, token
# checks and job creation (which take a connection inside one thread-pool call, so they never wait on a hop).
RESERVED_CONNECTIONS = 4


def db_request_slots(engine: Engine) -> int:
    """How many requests may hold a pooled connection at once: fewer than the pool can ever hand out."""
    pool = engine.pool
    if isinstance(pool, QueuePool) and pool._max_overflow >= 0:  # noqa: SLF001 - no public accessor
        return max(1, pool.size() + pool._max_overflow - RESERVED_CONNECTIONS)  # noqa: SLF001
    return 1_000  # other pools (NullPool, StaticPool, unbounded overflow) never make a request wait


@dataclass
class AppContext:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    jwt_key: str
    clock: Clock = system_clock
    concurrency: ProjectConcurrency = field(default_factory=lambda: ProjectConcurrency(10))
    token_limiter: TokenRateLimiter = field(default_factory=lambda: TokenRateLimiter(30))
    storage: object | None = None
    warehouse: object | None = None  # PageviewStore: the write side of the warehouse
    db_request_slots: int = 1_000  # see db_request_slots(); the app turns it into its own semaphore
    projects: ProjectCache = field(default_factory=ProjectCache)  # see api.deps.get_caller
    tokens: TokenVerifier = field(init=False)  # verifies bearer tokens with jwt_key, remembering good ones

    def __post_init__(self) -> None:
        self.tokens = TokenVerifier(self.jwt_key)
