"""Sign-in and sign-out of the console.

- A session is a random 256-bit token in an HttpOnly, SameSite=Lax cookie (Secure when the console is reached over
  HTTPS); the database keeps its SHA-256 only. A new token is issued at every sign-in and any session the browser
  held before is closed, so a token planted in a victim's browser (session fixation) never becomes signed in.
- The sign-in form itself carries a token derived from a short-lived cookie, so another site cannot sign a visitor
  in to an account of its choosing (login CSRF).
- Failed attempts are throttled per (e-mail, source address) and in total, with the token endpoint's rules
  (security/throttle.py): a guesser from one address slows down, the account's owner elsewhere does not. argon2
  runs in a thread and at most `auth_hash_concurrency` at once (api.context.TokenGuard).
"""

from __future__ import annotations

import hmac
import secrets
from datetime import timedelta
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from dataexport.api.deps import request_db
from dataexport.console import web
from dataexport.console.accounts import MAX_EMAIL_LENGTH, MAX_PASSWORD_LENGTH, normalize_email
from dataexport.metadata.repositories import operators
from dataexport.security.secrets import hash_token
from dataexport.security.throttle import FailureThrottle, source_of

router = APIRouter(prefix=web.PREFIX, route_class=web.ConsoleRoute, include_in_schema=False)

SESSION_LIFETIME = timedelta(hours=12)  # a working day; then the operator signs in again
SIGN_IN_COOKIE = "dataexport_console_signin"
SIGN_IN_FORM_LIFETIME = timedelta(hours=1)


def _secure(request: Request) -> bool:
    base = request.app.state.context.settings.public_base_url or ""
    return request.url.scheme == "https" or base.startswith("https://")


def _set_cookie(
    response: Response,
    request: Request,
    name: str,
    value: str,
    lifetime: timedelta,
    *,
    samesite: Literal["lax", "strict"],
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=int(lifetime.total_seconds()),
        path=web.PREFIX,
        httponly=True,
        samesite=samesite,
        secure=_secure(request),
    )


def _safe_next(raw: str | None) -> str:
    """Only a path of this console: never another site (an open redirect after sign-in)."""
    if raw and raw.startswith(web.PREFIX) and not raw.startswith("//") and "\\" not in raw and "\n" not in raw:
        return raw
    return web.PREFIX + "/projects"


def _sign_in_page(request: Request, *, status: int = 200, error: str | None = None, email: str = "") -> Response:
    nonce = request.cookies.get(SIGN_IN_COOKIE)
    if not nonce or len(nonce) > 128:
        nonce = secrets.token_urlsafe(32)
    ctx = web.context_of(request)
    response = web.render(
        request,
        "login.html",
        None,
        status,
        form_token=web.derived_token(ctx, "console-signin", nonce),
        next=_safe_next(request.query_params.get("next")),
        error=error,
        email=email,
    )
    _set_cookie(response, request, SIGN_IN_COOKIE, nonce, SIGN_IN_FORM_LIFETIME, samesite="strict")
    return response


@router.get("")
async def console_home() -> Response:
    return web.see_other(web.PREFIX + "/projects")


@router.get("/login")
async def sign_in_form(request: Request) -> Response:
    return _sign_in_page(request)


@router.post("/login")
async def sign_in(request: Request) -> Response:
    ctx = web.context_of(request)
    form = await request.form(max_files=0, max_fields=10)
    nonce = request.cookies.get(SIGN_IN_COOKIE)
    given = form.get("csrf")
    if (
        not nonce
        or not isinstance(given, str)
        or not hmac.compare_digest(given, web.derived_token(ctx, "console-signin", nonce))
        or not web.same_origin(request)
    ):
        raise web.CsrfRejected()
    email = normalize_email(str(form.get("email") or ""))[:MAX_EMAIL_LENGTH]
    password = str(form.get("password") or "")[: MAX_PASSWORD_LENGTH + 1]
    throttle: FailureThrottle = request.app.state.console_sign_in_throttle
    key = (email, source_of(request.client.host if request.client else None))
    guard = ctx.token_guard
    # Refused before any work (the DB read and argon2 are what a guesser would make us spend), and again once our
    # turn at the hash comes: attempts that waited together see the failures of those that went first.
    if (refused := _throttled(request, throttle, key, email)) is not None:
        return refused
    async with guard.hash_turn():
        if (refused := _throttled(request, throttle, key, email)) is not None:
            return refused
        operator = await request_db(request).run(_operator_by_email, email)
        # The slow hash runs for unknown addresses too, so timing does not tell which accounts exist.
        good = await guard.verify_secret(operator[1] if operator else None, password)
    if not good or operator is None or not email:
        throttle.failed(key, ctx.clock().timestamp())
        return _sign_in_page(request, status=401, error="Wrong e-mail or password.", email=email)
    throttle.succeeded(key)
    token = secrets.token_urlsafe(32)
    previous = web.session_tokens(request)
    now = ctx.clock()

    def open_session(session: Session) -> None:
        for token_before in previous:  # whatever session this browser held ends: one browser, one session
            operators.close_session(session, hash_token(token_before))
        operators.open_session(
            session,
            token_hash=hash_token(token),
            operator_id=operator[0],
            now=now,
            expires_at=now + SESSION_LIFETIME,
        )

    await request_db(request).run(open_session)
    response = web.see_other(_safe_next(str(form.get("next") or "")))
    # Lax, not Strict: a link to a console page from a mail or a chat opens it signed in; forms have their tokens.
    _set_cookie(response, request, web.SESSION_COOKIE, token, SESSION_LIFETIME, samesite="lax")
    response.delete_cookie(SIGN_IN_COOKIE, path=web.PREFIX)
    return response


def _throttled(request: Request, throttle: FailureThrottle, key: tuple[str, str], email: str) -> Response | None:
    verdict = throttle.check(key, web.context_of(request).clock().timestamp())
    if verdict.allowed:
        return None
    error = f"Too many failed sign-ins for this account from this address; retry in {verdict.retry_after} s."
    refused = _sign_in_page(request, status=429, error=error, email=email)
    refused.headers["Retry-After"] = str(verdict.retry_after)
    return refused


def _operator_by_email(session: Session, email: str) -> tuple[int, str] | None:
    operator = operators.operator_by_email(session, email) if email else None
    return (operator.id, operator.password_hash) if operator else None


@router.post("/logout")
async def sign_out(request: Request) -> Response:
    await web.posted_form(request)
    await request_db(request).run(operators.close_session, hash_token(request.state.session_token))
    response = web.see_other(web.PREFIX + "/login")
    response.delete_cookie(web.SESSION_COOKIE, path=web.PREFIX)
    return response
