"""`POST /v1/oauth/token`: OAuth 2.0 client credentials (contract.md section 1), JSON or form body."""

from __future__ import annotations

import json
from datetime import timedelta

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from dataexport.api.context import AppContext
from dataexport.api.deps import get_context
from dataexport.domain.jobspec import parse_int_like
from dataexport.metadata.db import transaction
from dataexport.metadata.repositories import tenants
from dataexport.security.secrets import verify_secret
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
    def __init__(self, status: int, error: str, description: str):
        self.status, self.error, self.description = status, error, description


def _fail(status: int, error: str, description: str) -> _OAuthFailure:
    return _OAuthFailure(status, error, description)


async def _read_body(request: Request) -> dict:
    content_type = request.headers.get("content-type", "").lower()
    raw = await request.body()
    if len(raw) > 16_384:
        raise _fail(400, "invalid_request", "The request body is too large.")
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
        if not ctx.token_limiter.allow(client_id, ctx.clock()):
            raise _fail(429, "too_many_requests", "Too many token requests for this client; retry in a minute.")
        # argon2 (~20 ms of CPU) and a DB connection checkout must not run on the event loop: a blocked loop
        # stalls every request, and with the pool exhausted it froze the server for the pool timeout (30 s).
        claims = await run_in_threadpool(_authenticate, ctx, client_id, secret, requested_project,
                                         frozenset(scopes))
    except _OAuthFailure as failure:
        return JSONResponse(
            {"error": failure.error, "error_description": failure.description},
            status_code=failure.status,
            headers={401: {"WWW-Authenticate": "Basic"}, 429: {"Retry-After": "60"}}.get(failure.status),
        )
    ttl = ctx.settings.token_ttl_seconds
    access_token = issue_token(ctx.jwt_key, claims, now=ctx.clock(), ttl=timedelta(seconds=ttl))
    endpoint = ctx.settings.public_base_url or str(request.base_url)
    return TokenResponse(
        access_token=access_token,
        expires_in=ttl,
        scope=" ".join(scopes),
        project_id=claims.project_id,
        endpoint=endpoint.rstrip("/"),
    )


def _authenticate(
    ctx: AppContext, client_id: str, secret: str, requested_project: int | None, scopes: frozenset[str]
) -> TokenClaims:
    with transaction(ctx.sessions) as session:
        client = tenants.client_by_client_id(session, client_id)
        # verify_secret runs the slow hash even for unknown clients, so timing does not reveal client ids.
        if not verify_secret(client.secret_hash if client else None, secret) or client is None:
            raise _fail(401, "invalid_client", "Client authentication failed.")
        if client.project_id is not None:
            if requested_project not in (None, client.project_id):
                raise _fail(400, "invalid_request", "This client cannot access the requested project.")
            project_id = client.project_id
        else:
            projects = tenants.list_projects(session, account_id=client.account_id)
            if requested_project is None:
                if len(projects) != 1:
                    raise _fail(400, "invalid_request", "project_id is required for an account-level client.")
                project_id = projects[0].id
            elif requested_project in {p.id for p in projects}:
                project_id = requested_project
            else:
                raise _fail(400, "invalid_request", "This client cannot access the requested project.")
        return TokenClaims(
            client_pk=client.id, account_id=client.account_id, project_id=project_id, scopes=scopes
        )
