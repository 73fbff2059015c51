"""Access tokens: HS256 JWTs bound to one project, one client and the granted scopes."""

from __future__ import annotations

import secrets
import threading
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
