"""Request dependencies: the app context, a DB session per request, and the authenticated caller."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from dataexport.api.context import AppContext
from dataexport.errors import AuthError, Forbidden, TooManyRequests
from dataexport.metadata.models import Project
from dataexport.metadata.repositories import tenants
from dataexport.security.tokens import TokenClaims, decode_token

DATA_EXPORT_SCOPE = "data-export"

_bearer = HTTPBearer(auto_error=False, description="Access token from POST /v1/oauth/token")


def get_context(request: Request) -> AppContext:
    return request.app.state.context


async def _db_slot(request: Request) -> AsyncIterator[None]:
    """Bounds the requests holding a pooled DB connection to fewer than the pool has.

    A request's session keeps its connection across several thread-pool hops (caller, handler, exits). With
    more such requests than connections, every pool thread can end up waiting for a connection held by a
    request that waits for a thread: the server froze for the pool timeout (30 s) at 100 clients.
    """
    async with request.app.state.db_slots:
        yield


def get_session(
    ctx: AppContext = Depends(get_context), _slot: None = Depends(_db_slot, scope="function")
) -> Iterator[Session]:
    """One transaction per request, committed when the handler returns without error."""
    with ctx.sessions() as session, session.begin():
        yield session


@dataclass(frozen=True)
class Caller:
    claims: TokenClaims
    project: Project

    @property
    def project_id(self) -> int:
        return self.project.id

    @property
    def actor_id(self) -> int:
        return self.claims.client_pk


def _claims(credentials: HTTPAuthorizationCredentials | None, ctx: AppContext) -> TokenClaims:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise AuthError("Auth token is missing.", error_code="JWT_MISSING")
    return decode_token(ctx.jwt_key, credentials.credentials, now=ctx.clock())


def get_caller(
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
    ctx: AppContext = Depends(get_context),
    session: Session = Depends(get_session, scope="function"),
) -> Iterator[Caller]:
    claims = _claims(credentials, ctx)
    if DATA_EXPORT_SCOPE not in claims.scopes:
        raise Forbidden("This token was not granted the data-export scope.", error_code="INSUFFICIENT_SCOPE")
    project = tenants.get_project(session, claims.project_id)
    if project is None or project.account_id != claims.account_id:
        raise AuthError("Auth token is invalid.", error_code="JWT_INVALID")
    if not ctx.concurrency.try_acquire(project.id):
        raise TooManyRequests()
    try:
        yield Caller(claims=claims, project=project)
    finally:
        ctx.concurrency.release(project.id)
