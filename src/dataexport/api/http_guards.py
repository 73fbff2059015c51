"""The HTTP edge of the app: trusted hosts, security headers, and request bodies read whole before any work.

One plain ASGI middleware (`EdgeGuard`, installed inside ObservabilityMiddleware so its refusals are logged and
counted like any answer), in this order for each request:

1. `X-Content-Type-Options: nosniff` on every answer.
2. The Host header must name this server (`HostPolicy`): `endpoint` and `files[].url` are built from it when
   `public_base_url` is not set, and a browser tricked into sending another name (DNS rebinding) must not read
   the answers. 400 `INVALID_HOST` otherwise. The probes (`/healthz`, `/readyz`) answer any Host: orchestrators
   call them by the pod's address, and they answer nothing derived from it.
3. A request with a body (except under `/ingest/`, whose route checks its key first and then reads its own body
   with `read_body`) is read whole here, within a per-route cap and `body_timeout_seconds` (413 / 408), and only
   then handed to the app, its body replayed through `receive`. So a client that sends `Content-Length: 100` and
   then nothing holds no per-project request slot (taken by the route's caller dependency), and the route never
   waits on the network. On `/v1` routes other than the token one the bearer token is checked first (signature
   and expiry, cheap and remembered): an unauthenticated client cannot make the server read its body.
4. A JSON body nested deeper than MAX_JSON_DEPTH is refused (400) before any parser sees it: Python's parsers
   recurse, and 8,000 levels raised RecursionError (a 500 and two tracebacks) instead of a 400.

The token route answers in its own OAuth error shape (contract.md section 1); every other route in the envelope.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dataexport.api.body import read_body
from dataexport.api.context import AppContext
from dataexport.api.envelope import CLIENT_CLOSED_REQUEST, NO_STORE, error_body
from dataexport.config import Settings
from dataexport.domain.json_depth import MAX_JSON_DEPTH, json_too_deep
from dataexport.errors import AuthError, DataExportError, FieldError, RequestTimeout, ValidationFailed

TOKEN_PATH = "/v1/oauth/token"
INGEST_PREFIX = "/ingest/"
HOST_FREE_PATHS = frozenset({"/healthz", "/readyz"})

# Body caps, by route. Client credentials are a few hundred bytes (the token route refused more than 16 KB
# already, but only after reading all of it).
TOKEN_BODY_LIMIT = 16 * 1024
# A job spec or a segment filter (through the API or the console's forms): a few KB; the exports route's own
# limit is the same 1 MB.
API_BODY_LIMIT = 1024 * 1024
# Nothing else reads a body (clients send `{}` with their GETs); it is read and dropped.
OTHER_BODY_LIMIT = 64 * 1024
# Bodies above this size have their nesting measured in a thread, off the event loop.
_INLINE_SCAN_BYTES = 64 * 1024

NOSNIFF = (b"x-content-type-options", b"nosniff")

_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_WILDCARD_BINDS = ("", "0.0.0.0", "::")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-._")
_IPV6_CHARS = frozenset("0123456789abcdef:.")
MAX_HOST_LENGTH = 300  # a DNS name is at most 253 characters, then ":port"


def parse_host(value: str) -> tuple[str, int | None] | None:
    """`name`, `name:port`, `[v6]` or `[v6]:port` as (lower-case name without brackets, port), else None.

    One pass over at most MAX_HOST_LENGTH characters; a trailing dot (`localhost.`) is dropped.
    """
    if not value or len(value) > MAX_HOST_LENGTH or not value.isascii():
        return None
    value = value.lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest, allowed = value[1:end], value[end + 1 :], _IPV6_CHARS
    else:
        name, colon, port_text = value.partition(":")
        rest, allowed = colon + port_text, _NAME_CHARS
        name = name.removesuffix(".")
    if not name or not set(name) <= allowed:
        return None
    if not rest:
        return name, None
    port_text = rest[1:]
    if rest[0] != ":" or not 0 < len(port_text) <= 5 or not port_text.isdigit() or int(port_text) > 65535:
        return None
    return name, int(port_text)


@dataclass(frozen=True)
class HostPolicy:
    """The Host names this server answers for: loopback names, the bind address when it is one address, the
    host of public_base_url (any port), and allowed_hosts (`name`: any port; `name:port`: that port only)."""

    any_port: frozenset[str]
    exact: frozenset[tuple[str, int]]

    @classmethod
    def from_settings(cls, settings: Settings) -> HostPolicy:
        any_port, exact = set(_LOOPBACK_NAMES), set()
        if settings.host not in _WILDCARD_BINDS:
            any_port.add(settings.host.lower().strip("[]"))
        if settings.public_base_url:
            public = urlsplit(settings.public_base_url).hostname
            if public:
                any_port.add(public.removesuffix("."))
        for entry in settings.allowed_hosts:
            parsed = parse_host(entry.strip())
            if parsed is None:
                raise ValueError(f"allowed_hosts: {entry!r} is not a host name or host:port")
            name, port = parsed
            if port is None:
                any_port.add(name)
            else:
                exact.add((name, port))
        return cls(frozenset(any_port), frozenset(exact))

    def allows(self, host_header: str | None) -> bool:
        # No Host at all (HTTP/1.0): URLs then come from the address the server listens on, not from the client.
        if host_header is None:
            return True
        parsed = parse_host(host_header)
        return parsed is not None and (parsed[0] in self.any_port or parsed in self.exact)


def body_limit(path: str) -> int:
    if path == TOKEN_PATH:
        return TOKEN_BODY_LIMIT
    return API_BODY_LIMIT if path.startswith(("/v1/", "/console/")) else OTHER_BODY_LIMIT


class EdgeGuard:
    """See the module's docstring. Plain ASGI, like ObservabilityMiddleware: no task or stream per request."""

    def __init__(self, app: ASGIApp, *, ctx: AppContext) -> None:
        self.app = app
        self.ctx = ctx
        self.hosts = HostPolicy.from_settings(ctx.settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), NOSNIFF]
            await send(message)

        host = authorization = None
        has_body = False
        for name, value in scope["headers"]:
            if name == b"host":
                host = value.decode("latin-1")
            elif name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-length":
                has_body = has_body or value.strip() not in (b"", b"0")
            elif name == b"transfer-encoding":
                has_body = True
        path: str = scope["path"]
        if path not in HOST_FREE_PATHS and not self.hosts.allows(host):
            error = ValidationFailed(
                "This server does not answer for that Host.",
                [FieldError("Host", "is not a host name this server answers for")],
                error_code="INVALID_HOST",
            )
            await _refuse(scope, receive, send_secured, error)
            return
        if not has_body or path.startswith(INGEST_PREFIX):
            await self.app(scope, receive, send_secured)
            return
        try:
            if path.startswith("/v1/") and path != TOKEN_PATH:
                self._check_bearer(authorization)
            request = Request(scope, receive)
            body = await read_body(request, limit=body_limit(path), timeout=self.ctx.settings.body_timeout_seconds)
        except ClientDisconnect:  # nobody is left to answer; the log line says 499 (uvicorn sends nothing)
            await Response(status_code=CLIENT_CLOSED_REQUEST)(scope, receive, send_secured)
            return
        except DataExportError as error:  # 401, 413, 408: the rest of the body was not read
            # A stalled body (408) ends its connection now. Otherwise the client may still be sending: the served
            # protocol (api/uvicorn_protocol.py) drops the rest and closes once the answer is out.
            await _refuse(scope, receive, send_secured, error, close=isinstance(error, RequestTimeout))
            return
        too_deep = (
            await asyncio.to_thread(json_too_deep, body) if len(body) > _INLINE_SCAN_BYTES else json_too_deep(body)
        )
        if too_deep:
            error = ValidationFailed(
                "The request body is nested too deeply.",
                [FieldError("body", f"must nest arrays and objects at most {MAX_JSON_DEPTH} levels deep")],
                error_code="INVALID_JSON",
            )
            await _refuse(scope, receive, send_secured, error)
            return
        await self.app(scope, _replay(body, receive), send_secured)

    def _check_bearer(self, authorization: str | None) -> None:
        """The checks of api.deps that need no database: a token is there, signed by us, not expired."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError("Auth token is missing.", error_code="JWT_MISSING")
        self.ctx.tokens.verify(token, now=self.ctx.clock())


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the buffered body as one message, then what the connection sends (a disconnect)."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _refuse(scope: Scope, receive: Receive, send: Send, error: DataExportError, *, close: bool = False) -> None:
    content: dict[str, Any]
    headers = {"Connection": "close"} if close else {}
    if scope["path"] == TOKEN_PATH:  # the OAuth shape of that route's other errors (RFC 6749 section 5.2)
        content = {"error": "invalid_request", "error_description": error.message}
        headers.update(NO_STORE)
    else:
        content = error_body(error.error_code, error.message, [e.as_dict() for e in error.errors])
    response = JSONResponse(content, status_code=error.status, headers=headers)
    await response(scope, receive, send)


def install_http_guards(app: FastAPI, ctx: AppContext) -> None:
    """Install EdgeGuard; call it before install_observability, so that it runs inside that middleware."""
    app.add_middleware(EdgeGuard, ctx=ctx)
