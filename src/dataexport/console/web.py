"""What every console page shares: the signed-in operator, the one database call of a request, project access,
CSRF checks of posted forms, rendering, security headers, and errors as HTML pages."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, select_autoescape
from pydantic import ByteSize
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from dataexport.api.context import AppContext
from dataexport.api.deps import request_db
from dataexport.console import charts
from dataexport.console.accounts import Role
from dataexport.domain.timeparse import format_instant
from dataexport.errors import DataExportError, Forbidden, NotFound, TooManyRequests
from dataexport.metadata.models import Project
from dataexport.metadata.repositories import operators
from dataexport.security.secrets import hash_token

T = TypeVar("T")

PREFIX = "/console"
SESSION_COOKIE = "dataexport_console"
# Pages can show a secret once, and download links carry signatures: neither may be cached or framed. Every
# script and style is a file of /console/static (no inline code), which the policy enforces.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    # Same-origin only: S3's presigned links never learn the page, and our own forms keep a real Origin header
    # (under no-referrer a browser sends `Origin: null` even to its own site).
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}

templates = Environment(
    loader=PackageLoader("dataexport.console", "templates"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
templates.filters["instant"] = lambda value: format_instant(value) or "—"


templates.filters["size"] = lambda value: "—" if value is None else ByteSize(value).human_readable()
templates.filters["seconds"] = charts.seconds_text


@dataclass(frozen=True, slots=True)
class Signed:
    """The operator signed in on this request."""

    operator_id: int
    email: str
    role: Role
    csrf: str  # the token every form of this session carries

    @property
    def can_change(self) -> bool:
        return self.role is Role.ADMIN


class SignInRequired(Exception):
    """No valid session: pages send the browser to the sign-in form, and back afterwards."""


class CsrfRejected(Exception):
    pass


def context_of(request: Request) -> AppContext:
    return request.app.state.context


def derived_token(ctx: AppContext, purpose: str, value: str) -> str:
    """An HMAC of a cookie's value with the server's key: a form token only the holder of that cookie can show."""
    return hmac.new(ctx.jwt_key.encode(), f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()


def csrf_for(ctx: AppContext, session_token: str) -> str:
    return derived_token(ctx, "console-csrf", session_token)


def same_origin(request: Request) -> bool:
    """False when the browser says the form came from another site (Origin, else Referer). Absent both, or with an
    opaque origin ("null": sandboxed frames, some privacy settings), the CSRF token alone decides."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source or source == "null":
        return True
    netloc = urlsplit(source).netloc.lower()
    ours = {(request.headers.get("host") or "").lower()}
    public = context_of(request).settings.public_base_url
    if public:  # behind a proxy the browser's origin is the public one, not the Host the proxy sends
        ours.add(urlsplit(public).netloc.lower())
    return netloc in ours


MAX_SESSION_COOKIES = 4


def session_tokens(request: Request) -> list[str]:
    """Every value the browser sent under the session cookie's name. A cookie set by someone else under the same name
    with another path or domain arrives beside ours (and a dict of cookies would keep only one): each is tried."""
    found: list[str] = []
    for header in request.headers.getlist("cookie"):
        for piece in header.split(";"):
            name, sep, value = piece.strip().partition("=")
            value = value.strip().strip('"')
            if sep and name == SESSION_COOKIE and 0 < len(value) <= 128 and value not in found:
                found.append(value)
    return found[:MAX_SESSION_COOKIES]


async def posted_form(request: Request) -> FormData:
    """The form of a POST once its CSRF token and origin are checked (before any database work). The session the
    token belongs to is the one the request then runs as."""
    form = await request.form(max_files=0, max_fields=2000)
    given = form.get("csrf")
    ctx = context_of(request)
    if isinstance(given, str) and same_origin(request):
        for token in session_tokens(request):
            if hmac.compare_digest(given, csrf_for(ctx, token)):
                request.state.session_token = token
                return form
    raise CsrfRejected()


async def in_session(
    request: Request, work: Callable[[Session, Signed], T], *, change: bool = False
) -> tuple[Signed, T]:
    """Run `work(session, signed)` in ONE transaction once the session is found (else SignInRequired); a change
    asked by a viewer is refused (403) before `work` runs."""
    ctx = context_of(request)
    checked = getattr(request.state, "session_token", None)
    tokens = [checked] if checked else session_tokens(request)
    if not tokens:
        raise SignInRequired()

    def unit(session: Session) -> tuple[Signed, T]:
        for token in tokens:
            operator = operators.session_operator(session, hash_token(token), ctx.clock())
            if operator is not None:
                break
        else:
            raise SignInRequired()
        signed = Signed(operator.id, operator.email, Role(operator.role), csrf_for(ctx, token))
        request.state.signed = signed  # an error page keeps the operator's header (and sign-out form)
        if change and not signed.can_change:
            raise Forbidden("A viewer account cannot change anything.", error_code="READ_ONLY_ACCOUNT")
        return signed, work(session, signed)

    return await request_db(request).run(unit)


def member_project(session: Session, signed: Signed, project_id: int) -> Project:
    """The project if the operator belongs to it; another account's project is answered like one that does not
    exist."""
    project = operators.member_project(session, signed.operator_id, project_id)
    if project is None:
        raise NotFound(f"Project {project_id} not found.")
    return project


def render(
    request: Request, template: str, signed: Signed | None, status_code: int = 200, **values: Any
) -> HTMLResponse:
    body = templates.get_template(template).render(request=request, signed=signed, prefix=PREFIX, **values)
    return HTMLResponse(body, status_code=status_code, headers=SECURITY_HEADERS)


def see_other(url: str) -> RedirectResponse:
    """After a POST, the browser GETs the result (a reload does not post again)."""
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)


def _error_page(request: Request, status: int, title: str, message: str) -> HTMLResponse:
    signed = getattr(request.state, "signed", None)
    return render(request, "error.html", signed, status, title=title, message=message)


def _sign_in_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET":
        target = PREFIX
    return RedirectResponse(f"{PREFIX}/login?next={quote(target, safe='')}", status_code=303, headers=SECURITY_HEADERS)


class ConsoleRoute(APIRoute):
    """Console routes answer HTML in every case: no session -> the sign-in page, a bad form token -> 403, a domain
    error -> its status with its message, bad path or query parameters -> 400."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def console_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired:
                return _sign_in_redirect(request)
            except CsrfRejected:
                message = "This form has expired or did not come from this console. Reload the page and try again."
                return _error_page(request, 403, "Form refused", message)
            except RequestValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {}
                where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
                message = f"Invalid value for {where}: {first.get('msg', 'is invalid')}."
                return _error_page(request, 400, "Bad request", message)
            except DataExportError as exc:
                title = {403: "Not allowed", 404: "Not found", 429: "Too many attempts"}.get(exc.status, "Error")
                response = _error_page(request, exc.status, title, exc.message)
                if isinstance(exc, TooManyRequests):
                    response.headers["Retry-After"] = str(exc.retry_after)
                return response

        return console_handler
