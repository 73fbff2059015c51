"""What the request handlers share, built once by the app factory."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool
from starlette.concurrency import run_in_threadpool

from dataexport.clock import Clock, system_clock
from dataexport.config import Settings
from dataexport.security.secrets import VerifiedSecrets, verify_secret
from dataexport.security.throttle import FailureThrottle
from dataexport.security.tokens import RevokedClients, TokenVerifier

if TYPE_CHECKING:
    from dataexport.warehouse.backend import Warehouse

K = TypeVar("K")
V = TypeVar("V")


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


def failure_throttle(settings: Settings) -> FailureThrottle:
    """Failed-secret throttling with the deployment's `auth_*` rules (the token endpoint's, the console's sign-in)."""
    return FailureThrottle(
        free_failures=settings.auth_free_failures,
        max_delay=settings.auth_max_delay_seconds,
        global_per_minute=settings.auth_global_failures_per_minute,
    )


class TokenGuard:
    """What protects the token endpoint and the tokens, per API process (api/routers/oauth.py, api/deps.py):
    - `throttle`: failed secrets per (client_id, source address), and all together (security/throttle.py);
    - `secrets`: recently verified (client_id, secret) pairs, which skip argon2;
    - `revoked`: the revoked clients, whose tokens stop working;
    - `hash_turn()`: at most `hash_concurrency` argon2 checks at once, so a flood of guesses cannot take every
      thread (and core) from the other requests; the others wait their turn on the event loop, holding no thread.
    """

    def __init__(self, settings: Settings, jwt_key: str) -> None:
        self.throttle = failure_throttle(settings)
        self.secrets = VerifiedSecrets(jwt_key)
        self.revoked = RevokedClients()
        self.hash_concurrency = settings.auth_hash_concurrency
        # Diagnostics (and what the tests check): argon2 checks run, in flight now, most ever in flight at once.
        self.hashes_checked = 0
        self.hashes_in_flight = 0
        self.hashes_peak = 0
        self._gate: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    def revoke(self, client_pk: int) -> None:
        """A revocation made through this process: its tokens stop working here at once (others: the refresh)."""
        self.revoked.add(client_pk)
        self.secrets.forget_client(client_pk)

    @asynccontextmanager
    async def hash_turn(self):
        """Wait for one of the `hash_concurrency` turns (on the event loop: a waiting request holds no thread)."""
        async with self._semaphore():
            yield

    async def verify_secret(self, secret_hash: str | None, secret: str) -> bool:
        """argon2 in a thread (on the event loop its ~20 ms would stall every request); inside `hash_turn()`."""
        self.hashes_checked += 1
        self.hashes_in_flight += 1
        self.hashes_peak = max(self.hashes_peak, self.hashes_in_flight)
        try:
            return await run_in_threadpool(verify_secret, secret_hash, secret)
        finally:
            self.hashes_in_flight -= 1

    def _semaphore(self) -> asyncio.Semaphore:
        # An asyncio primitive belongs to one event loop; a context may serve apps on several loops (tests).
        loop = asyncio.get_running_loop()
        if self._gate is None or self._gate[0] is not loop:
            self._gate = (loop, asyncio.Semaphore(self.hash_concurrency))
        return self._gate[1]


@dataclass(frozen=True)
class ProjectInfo:
    """What requests read of their project; none of it changes through the API, so it may be cached."""

    id: int
    account_id: int
    timezone: str
    retention_days: int


class TtlCache(Generic[K, V]):
    """Values by key for a few seconds, so a hot request path does not read the same row each time.

    Plain dict operations (atomic under the GIL): read on the event loop, filled from thread-pool calls, cleared
    by whoever resets the metadata DB under a running app (tests). A value may be None (remembered as missing).
    Bounded: once `max_entries` are held, the expired ones are forgotten.
    """

    def __init__(self, ttl_seconds: float = 5.0, max_entries: int = 10_000) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._entries: dict[K, tuple[float, V]] = {}

    def lookup(self, key: K) -> tuple[bool, V | None]:
        """(True, value) while the key is remembered, else (False, None)."""
        entry = self._entries.get(key)
        if entry is None or entry[0] <= time.monotonic():
            return False, None
        return True, entry[1]

    def put(self, key: K, value: V) -> None:
        if len(self._entries) > self.max_entries:
            now = time.monotonic()
            self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
        self._entries[key] = (time.monotonic() + self.ttl, value)

    def clear(self) -> None:
        self._entries.clear()


class ProjectCache:
    """Projects by id for a few seconds, so an authenticated request does not read its project row each time."""

    def __init__(self, ttl_seconds: float = 5.0) -> None:
        self._cache: TtlCache[int, ProjectInfo] = TtlCache(ttl_seconds)

    def get(self, project_id: int) -> ProjectInfo | None:
        return self._cache.lookup(project_id)[1]

    def put(self, project: ProjectInfo) -> None:
        self._cache.put(project.id, project)

    def clear(self) -> None:
        self._cache.clear()


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
    storage: object | None = None
    warehouse: Warehouse | None = None  # the process's one warehouse (build_context opens it)
    db_request_slots: int = 1_000  # see db_request_slots(); the app turns it into its own semaphore
    projects: ProjectCache = field(default_factory=ProjectCache)  # see api.deps.get_caller
    tokens: TokenVerifier = field(init=False)  # verifies bearer tokens with jwt_key, remembering good ones
    token_guard: TokenGuard = field(init=False)  # failure throttle, verified secrets, revoked clients

    @property
    def pageviews(self) -> Warehouse:
        """The warehouse, which every served context has (build_context opens it)."""
        if self.warehouse is None:
            raise RuntimeError("this AppContext was built without a warehouse")
        return self.warehouse

    def __post_init__(self) -> None:
        self.tokens = TokenVerifier(self.jwt_key)
        self.token_guard = TokenGuard(self.settings, self.jwt_key)
