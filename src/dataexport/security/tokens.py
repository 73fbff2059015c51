"""Access tokens: HS256 JWTs bound to one project, one client and the granted scopes."""

from __future__ import annotations

import secrets
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
        return TokenClaims(
            client_pk=int(payload["sub"]),
            account_id=int(payload["aid"]),
            project_id=int(payload["pid"]),
            scopes=frozenset(str(payload["scope"]).split()),
        )
    except (TypeError, ValueError):
        raise AuthError("Auth token is invalid.", error_code="JWT_INVALID") from None
