"""Request dependencies: the app context, the authenticated caller, and the request's database access.

The hot path costs one thread hop per request, and about 1.1 ms of server CPU for `GET /v1/exports/{jobId}`
(bench/load.py). Every dependency here is `async def` (FastAPI runs a sync dependency in the thread pool)
and there are few of them (FastAPI's dependency solving is a fair share of a request): the token is checked
on the event loop (verified once, then remembered until it expires), the project comes from a short-lived
in-process cache (a DB read only when it is missing), revocation is a set lookup (the set re-read at most once
a second per process), the per-project slot is taken on the loop and given back when the request ends, and the
handler runs its whole unit of work (queries, shaping, commit) in ONE call on the DB threads through `Db.read`
(Core reads) or `Db.run` (an ORM transaction).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from dataexport.api.context import AppContext, ProjectInfo
from dataexport.api.observability import at_request_end
from dataexport.errors import AuthError, Forbidden, TooManyRequests
from dataexport.metadata.repositories import tenants
from dataexport.security.tokens import TokenClaims

DATA_EXPORT_SCOPE = "data-export"
METRICS_SCOPE = "metrics"
# Revocations older than a token's lifetime plus this have no token left (allows for clocks of hosts that differ).
REVOCATION_MARGIN = timedelta(minutes=10)

_bearer = HTTPBearer(auto_error=False, description="Access token from POST /v1/oauth/token")

T = TypeVar("T")


async def get_context(request: Request) -> AppContext:
    return request.app.state.context


class Db:
    """The request's database, used in ONE thread-pool call per request:
    - `await db.run(fn, *args)` runs `fn(session, *args)` in one ORM transaction, committed when fn returns
      (rolled back when it raises): for writes;
    - `await db.read(fn, *args)` runs `fn(connection, *args)` on a Core connection: for the read paths, which
      use the repositories' prebuilt Core statements and skip the ORM's session and object loading.
    """

    __slots__ = ("_engine", "_executor", "_sessions", "_slots")

    def __init__(self, engine: Engine, sessions: sessionmaker[Session], slots, executor: Executor) -> None:
        self._engine = engine
        self._sessions = sessions
        self._slots = slots
        self._executor = executor

    async def run(self, fn: Callable[..., T], /, *args) -> T:
        return await self._in_thread(self._in_session, fn, args)

    async def read(self, fn: Callable[..., T], /, *args) -> T:
        return await self._in_thread(self._on_connection, fn, args)

    async def _in_thread(self, work: Callable[..., T], fn: Callable[..., T], args: tuple) -> T:
        async with self._slots:
            # A plain executor rather than anyio's to_thread: the same thread hop for a third of the CPU.
            # The context is copied so log lines written in the thread keep the request id.
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, contextvars.copy_context().run, work, fn, args)

    def _in_session(self, fn: Callable[..., T], args: tuple) -> T:
        with self._sessions() as session, session.begin():
            return fn(session, *args)

    def _on_connection(self, fn: Callable[..., T], args: tuple) -> T:
        with self._engine.connect() as conn:  # returned to the pool rolled back: reads only
            return fn(conn, *args)


def request_db(request: Request) -> Db:
    """The request's DB access: the app's engine and sessions, behind its DB gate and threads."""
    ctx, state = request.app.state.context, request.app.state
    return Db(ctx.engine, ctx.sessions, state.db_slots, state.db_executor)


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated caller of a request, with what its handler works with: the request's database and
    the app context (one dependency rather than three: FastAPI's dependency solving is a fair share of the
    cost of a request)."""

    claims: TokenClaims
    project: ProjectInfo
    db: Db
    ctx: AppContext

    @property
    def project_id(self) -> int:
        return self.project.id

    @property
    def actor_id(self) -> int:
        return self.claims.client_pk


def _claims(credentials: HTTPAuthorizationCredentials | None, ctx: AppContext) -> TokenClaims:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise AuthError("Auth token is missing.", error_code="JWT_MISSING")
    return ctx.tokens.verify(credentials.credentials, now=ctx.clock())


def _read_project(session: Session, ctx: AppContext, project_id: int) -> ProjectInfo | None:
    row = tenants.get_project(session, project_id)
    if row is None:
        return None
    project = ProjectInfo(
        id=row.id, account_id=row.account_id, timezone=row.timezone, retention_days=row.retention_days
    )
    ctx.projects.put(project)
    return project


async def _project(request: Request, ctx: AppContext, project_id: int) -> ProjectInfo | None:
    project = ctx.projects.get(project_id)
    if project is not None:
        return project
    return await request_db(request).run(_read_project, ctx, project_id)


async def _refresh_revoked(request: Request, ctx: AppContext) -> None:
    """Re-read the recently revoked clients (at most once a second per process, by the request that finds the
    set due; the others meanwhile go on with the current set). Only revocations younger than a token's
    lifetime (plus a margin for clock skew between hosts) matter: older ones have no unexpired token left."""
    revoked = ctx.token_guard.revoked
    started = revoked.start_refresh()
    try:
        since = ctx.clock() - timedelta(seconds=ctx.settings.token_ttl_seconds) - REVOCATION_MARGIN
        pks = await request_db(request).read(tenants.revoked_client_pks, since)
    except BaseException:
        revoked.abort_refresh()
        raise
    ctx.token_guard.secrets.forget_clients(revoked.finish_refresh(pks, started))


def caller_with_scopes(scopes: set[str] | frozenset[str]):
    """A dependency giving the token's caller, if its token was granted at least one of `scopes` (else 403),
    holding one of its project's concurrent-request slots until the request is over."""
    allowed = frozenset(scopes)
    names = " or ".join(sorted(allowed))

    async def caller(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Caller:
        ctx: AppContext = request.app.state.context
        claims = _claims(credentials, ctx)
        revoked = ctx.token_guard.revoked
        if revoked.refresh_due():
            await _refresh_revoked(request, ctx)
        if claims.client_pk in revoked.pks:
            raise AuthError("Auth token was revoked.", error_code="JWT_REVOKED")
        if allowed.isdisjoint(claims.scopes):
            raise Forbidden(f"This token was not granted the {names} scope.", error_code="INSUFFICIENT_SCOPE")
        project = await _project(request, ctx, claims.project_id)
        if project is None or project.account_id != claims.account_id:
            raise AuthError("Auth token is invalid.", error_code="JWT_INVALID")
        if not ctx.concurrency.try_acquire(project.id):
            raise TooManyRequests()
        at_request_end(request.scope, partial(ctx.concurrency.release, project.id))
        return Caller(claims=claims, project=project, db=request_db(request), ctx=ctx)

    return caller


# The export endpoints take the data-export scope; `GET /v1/segments`, a Metrics API endpoint at the vendor's,
# also takes the metrics scope.
get_caller = caller_with_scopes({DATA_EXPORT_SCOPE})
get_metrics_caller = caller_with_scopes({DATA_EXPORT_SCOPE, METRICS_SCOPE})
