"""`POST /v1/oauth/token`: OAuth 2.0 client credentials (contract.md section 1), JSON or form body.

Protections (api.context.TokenGuard): failed secrets are throttled per (client_id, source address) and
globally (security/throttle.py) before argon2 runs; at most `auth_hash_concurrency` argon2 checks run at once;
a (client_id, secret) verified in the last minutes skips argon2; revoked clients get no token. Every answer,
errors included, carries `Cache-Control: no-store` and `Pragma: no-cache` (RFC 6749 section 5.1).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.orm import Session

from dataexport.api.context import AppContext, TokenGuard
from dataexport.api.deps import get_context, request_db
from dataexport.api.envelope import NO_STORE
from dataexport.domain.jobspec import parse_int_like
from dataexport.metadata.repositories import tenants
from dataexport.security.throttle import source_of
from dataexport.security.tokens import TokenClaims, issue_token

router = APIRouter(tags=["auth"])

KNOWN_SCOPES = {"data-export", "metrics"}
MAX_FIELD_LEN = 512


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    scope: str
    project_id: int
    endpoint: str


class OAuthError(BaseModel):
    error: str
    error_description: str


class _OAuthFailure(Exception):
    def __init__(self, status: int, error: str, description: str, retry_after: int | None = None):
        self.status, self.error, self.description = status, error, description
        self.retry_after = retry_after


def _fail(status: int, error: str, description: str) -> _OAuthFailure:
    return _OAuthFailure(status, error, description)


def _failure_headers(failure: _OAuthFailure) -> dict[str, str]:
    headers = dict(NO_STORE)
    if failure.status == 401:
        headers["WWW-Authenticate"] = "Basic"
    if failure.retry_after is not None:
        headers["Retry-After"] = str(failure.retry_after)
    return headers


async def _read_body(request: Request) -> dict:
    content_type = request.headers.get("content-type", "").lower()
    raw = await request.body()  # already read whole, capped and within its deadline (api/http_guards.py)
    if "json" in content_type or (not content_type and raw.lstrip().startswith(b"{")):
        try:
            body = json.loads(raw or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise _fail(400, "invalid_request", "The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise _fail(400, "invalid_request", "The request body must be a JSON object.")
        return body
    try:
        form = await request.form()
    except Exception:  # malformed multipart or urlencoded bodies
        raise _fail(400, "invalid_request", "The request body could not be read as a form.") from None
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _text(body: dict, name: str) -> str:
    value = body.get(name)
    if value is None or value == "":
        raise _fail(400, "invalid_request", f"The parameter {name} is required.")
    if not isinstance(value, str) or len(value) > MAX_FIELD_LEN:
        raise _fail(400, "invalid_request", f"The parameter {name} must be a string.")
    return value


@dataclass(frozen=True, slots=True)
class _Client:
    """What the token endpoint reads of a client, in one DB call."""

    pk: int
    secret_hash: str
    account_id: int
    project_id: int | None
    revoked: bool
    account_projects: tuple[int, ...]  # the account's projects, for an account-level client only


def _load_client(session: Session, client_id: str) -> _Client | None:
    client = tenants.client_by_client_id(session, client_id)
    if client is None:
        return None
    projects = (
        ()
        if client.project_id is not None
        else tuple(p.id for p in tenants.list_projects(session, account_id=client.account_id))
    )
    return _Client(
        pk=client.id,
        secret_hash=client.secret_hash,
        account_id=client.account_id,
        project_id=client.project_id,
        revoked=client.revoked_at is not None,
        account_projects=projects,
    )


def _grant(client: _Client, requested_project: int | None, scopes: frozenset[str]) -> TokenClaims:
    """The token's claims for an authenticated client, or 400 when it cannot reach the requested project."""
    if client.project_id is not None:
        if requested_project not in (None, client.project_id):
            raise _fail(400, "invalid_request", "This client cannot access the requested project.")
        project_id = client.project_id
    elif requested_project is None:
        if len(client.account_projects) != 1:
            raise _fail(400, "invalid_request", "project_id is required for an account-level client.")
        project_id = client.account_projects[0]
    elif requested_project in client.account_projects:
        project_id = requested_project
    else:
        raise _fail(400, "invalid_request", "This client cannot access the requested project.")
    return TokenClaims(client_pk=client.pk, account_id=client.account_id, project_id=project_id, scopes=scopes)


def _refuse_if_throttled(guard: TokenGuard, key: tuple[str, str], now: float) -> None:
    verdict = guard.throttle.check(key, now)
    if not verdict.allowed:
        raise _OAuthFailure(
            429,
            "too_many_requests",
            f"Too many failed attempts for this client from this address; retry in {verdict.retry_after} s.",
            verdict.retry_after,
        )


async def _authenticate(request: Request, ctx: AppContext, client_id: str, secret: str) -> _Client:
    """The client whose secret this is, or 401 / 429. Throttled failures never reach argon2."""
    guard = ctx.token_guard
    key = (client_id, source_of(request.client.host if request.client else None))
    remembered = guard.secrets.get(client_id, secret, ctx.clock().timestamp())
    if remembered is None:
        # Refused before any work: the DB read and argon2 are what an attacker would make us spend.
        _refuse_if_throttled(guard, key, ctx.clock().timestamp())
    client = await request_db(request).run(_load_client, client_id)
    # A remembered pair only counts for the very row it was verified against (same pk and stored hash).
    verified = remembered is not None and client is not None and remembered == (client.pk, client.secret_hash)
    if not verified:
        async with guard.hash_turn():
            # Again once our turn comes: attempts of one key that were waiting together see the failures of
            # those that went first, so parallel guesses get no more than sequential ones.
            _refuse_if_throttled(guard, key, ctx.clock().timestamp())
            # The slow hash runs even for unknown clients, so timing does not reveal which client ids exist.
            good = await guard.verify_secret(client.secret_hash if client else None, secret)
        if not good or client is None:
            guard.throttle.failed(key, ctx.clock().timestamp())
            raise _fail(401, "invalid_client", "Client authentication failed.")
    assert client is not None
    if client.revoked:
        guard.throttle.failed(key, ctx.clock().timestamp())
        guard.secrets.forget_client(client.pk)
        raise _fail(401, "invalid_client", "These client credentials were revoked.")
    guard.throttle.succeeded(key)
    guard.secrets.put(client_id, secret, client.pk, client.secret_hash, ctx.clock().timestamp())
    # The DB just showed this client live: a pk the revoked set holds from before is stale (tests reuse pks).
    guard.revoked.discard(client.pk)
    return client


@router.post(
    "/v1/oauth/token",
    response_model=TokenResponse,
    responses={400: {"model": OAuthError}, 401: {"model": OAuthError}, 429: {"model": OAuthError}},
    summary="Get an access token (client credentials)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                media: {
                    "schema": {
                        "type": "object",
                        "required": ["client_id", "client_secret", "grant_type", "scope"],
                        "properties": {
                            "client_id": {"type": "string"},
                            "client_secret": {"type": "string"},
                            "grant_type": {"type": "string", "enum": ["client_credentials"]},
                            "scope": {"type": "string", "example": "data-export"},
                            "project_id": {"type": "integer"},
                            "projectId": {"type": "integer"},
                        },
                    }
                }
                for media in ("application/json", "application/x-www-form-urlencoded")
            },
        }
    },
)
async def token(request: Request, ctx: AppContext = Depends(get_context)):
    try:
        body = await _read_body(request)
        grant_type = _text(body, "grant_type")
        client_id = _text(body, "client_id")
        secret = _text(body, "client_secret")
        scopes = _text(body, "scope").split()
        if grant_type != "client_credentials":
            raise _fail(400, "unsupported_grant_type", "Only grant_type client_credentials is supported.")
        unknown = [s for s in scopes if s not in KNOWN_SCOPES]
        if unknown or not scopes:
            raise _fail(400, "invalid_scope", "Unknown scope: " + " ".join(unknown)[:100])
        raw_project = body.get("project_id", body.get("projectId"))
        requested_project = None
        if raw_project not in (None, ""):
            requested_project = parse_int_like(raw_project)
            if requested_project is None or requested_project <= 0:
                raise _fail(400, "invalid_request", "The parameter project_id must be an integer.")
        client = await _authenticate(request, ctx, client_id, secret)
        claims = _grant(client, requested_project, frozenset(scopes))
    except _OAuthFailure as failure:
        return JSONResponse(
            {"error": failure.error, "error_description": failure.description},
            status_code=failure.status,
            headers=_failure_headers(failure),
        )
    ttl = ctx.settings.token_ttl_seconds
    access_token = issue_token(ctx.jwt_key, claims, now=ctx.clock(), ttl=timedelta(seconds=ttl))
    endpoint = ctx.settings.public_base_url or str(request.base_url)
    answer = TokenResponse(
        access_token=access_token,
        expires_in=ttl,
        scope=" ".join(scopes),
        project_id=claims.project_id,
        endpoint=endpoint.rstrip("/"),
    )
    return JSONResponse(answer.model_dump(), headers=NO_STORE)
