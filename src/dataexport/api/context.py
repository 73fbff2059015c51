"""What the request handlers share, built once by the app factory."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from dataexport.config import Settings

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


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
