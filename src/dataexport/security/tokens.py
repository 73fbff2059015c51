"""Access tokens: HS256 JWTs bound to one project, one client and the granted scopes."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt

from dataexport.errors import AuthError, TokenExpired

ISSUER = "dataexport"
ALGORITHM = "HS256"


@dataclass(frozen=True)
class TokenClaims:
    client_pk: int
    account_id: int
    project_id: int
    scopes: frozenset[str]


def issue_token(key: str, claims: TokenClaims, *, now: datetime, ttl: timedelta) -> str:
    payload = {
        "iss": ISSUER,
        "sub": str(claims.client_pk),
        "aid": claims.account_id,
        "pid": claims.project_id,
        "scope": " ".join(sorted(claims.scopes)),
        "iat": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
        "jti": secrets.token_hex(8),
    }
    return jwt.encode(payload, key, algorithm=ALGORITHM)


def decode_token(key: str, token: str, *, now: datetime) -> TokenClaims:
    return _decode(key, token, now=now)[0]


def _decode(key: str, token: str, *, now: datetime) -> tuple[TokenClaims, int]:
    """The claims and expiry (epoch seconds) of a token signed with `key`, or AuthError / TokenExpired."""
    try:
        # The algorithm list is fixed: `alg: none` and key-confusion tokens are refused here.
        payload = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "pid", "aid", "scope"], "verify_exp": False, "verify_iat": False},
        )
    except jwt.PyJWTError:
        raise AuthError("Auth token is invalid.", error_code="JWT_INVALID") from None
    # Expiry is checked against the injected clock, so tests need no sleeping.
    exp = payload.get("exp")
    if not isinstance(exp, int) or exp <= now.timestamp():
        raise TokenExpired()
    try:
        claims = TokenClaims(
            client_pk=int(payload["sub"]),
            account_id=int(payload["aid"]),
            project_id=int(payload["pid"]),
            scopes=frozenset(str(payload["scope"]).split()),
        )
    except (TypeError, ValueError):
        raise AuthError("Auth token is invalid.", error_code="JWT_INVALID") from None
    return claims, exp


class TokenVerifier:
    """`decode_token` with a memory of tokens already verified, so a client's repeated calls skip the JWT work.

    Safe because the key is the whole token text: only the byte-identical token that was verified with this
    verifier's key hits the memory, and its expiry is checked against `now` on every call. Only good tokens
    are remembered; the memory is bounded (forgetting expired entries, then everything, when full).
    """

    def __init__(self, key: str, max_entries: int = 10_000) -> None:
        self.key = key
        self.max_entries = max_entries
        self._verified: dict[str, tuple[TokenClaims, int]] = {}
        self._lock = threading.Lock()

    def verify(self, token: str, *, now: datetime) -> TokenClaims:
        entry = self._verified.get(token)
        if entry is None:
            entry = _decode(self.key, token, now=now)
            with self._lock:
                if len(self._verified) >= self.max_entries:
                    moment = now.timestamp()
                    self._verified = {t: e for t, e in self._verified.items() if e[1] > moment}
                    if len(self._verified) >= self.max_entries:
                        self._verified = {}
                self._verified[token] = entry
        elif entry[1] <= now.timestamp():
            raise TokenExpired()
        return entry[0]


class RevokedClients:
    """The pks of revoked clients, so their unexpired tokens stop working: checked on every request (a set
    lookup), re-read from the DB at most every `refresh_seconds` by the request that finds it due (one small
    indexed query a second and API process, not one per request).

    The reader gives the pks revoked within the last token lifetime (older revocations have no live token).
    A revocation made through this process is added at once (`add`) and survives a refresh that began before
    it. `discard` is for a client the DB just showed live (a token was granted to it): a pk is never reused in
    production, but tests that empty the DB reuse them. Used on the event loop; no locking needed.
    """

    def __init__(self, refresh_seconds: float = 1.0, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.refresh_seconds = refresh_seconds
        self._monotonic = monotonic
        self.pks: frozenset[int] = frozenset()
        self._next_refresh = 0.0  # due at once: a fresh process knows nothing yet
        self._refreshing = False
        self._local: dict[int, float] = {}  # pk -> when it was revoked through this process (monotonic)

    def __contains__(self, client_pk: int) -> bool:
        return client_pk in self.pks

    def refresh_due(self) -> bool:
        return not self._refreshing and self._monotonic() >= self._next_refresh

    def start_refresh(self) -> float:
        """Mark a refresh in flight (others keep using the current set meanwhile); returns its start time."""
        self._refreshing = True
        return self._monotonic()

    def finish_refresh(self, revoked: Iterable[int], started: float) -> frozenset[int]:
        """Replace the set by what the DB said; returns the pks that are new to this process."""
        self._local = {pk: at for pk, at in self._local.items() if at >= started}
        fresh = frozenset(revoked) | frozenset(self._local)
        added = fresh - self.pks
        self.pks = fresh
        self._next_refresh = started + self.refresh_seconds
        self._refreshing = False
        return added

    def abort_refresh(self) -> None:
        """The read failed: the next request tries again."""
        self._refreshing = False

    def add(self, client_pk: int) -> None:
        self._local[client_pk] = self._monotonic()
        self.pks = self.pks | {client_pk}

    def discard(self, client_pk: int) -> None:
        if client_pk in self.pks:
            self._local.pop(client_pk, None)
            self.pks = self.pks - {client_pk}
