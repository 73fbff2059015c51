"""HMAC-signed, expiring download URLs for local storage (pure: time is passed in)."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from enum import StrEnum


class Verdict(StrEnum):
    OK = "ok"
    EXPIRED = "expired"
    BAD_SIGNATURE = "bad_signature"


def _as_bytes(secret: bytes | str) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def sign(secret: bytes | str, key: str, expires: int) -> str:
    """Hex HMAC-SHA256 over `key + "\\n" + expires` (unix seconds)."""
    message = f"{key}\n{int(expires)}".encode()
    return hmac.new(_as_bytes(secret), message, hashlib.sha256).hexdigest()


def verify(secret: bytes | str, key: str, expires: int | str, sig: str, now: datetime | float) -> Verdict:
    """OK while `now` is before `expires`. The signature is checked first (constant time), so a forged URL
    learns nothing about expiry. `expires` may be the raw query-string text."""
    try:
        expires_int = int(expires)
    except (TypeError, ValueError):
        return Verdict.BAD_SIGNATURE
    if not isinstance(sig, str) or not sig.isascii():
        return Verdict.BAD_SIGNATURE
    if not hmac.compare_digest(sign(secret, key, expires_int), sig.lower()):
        return Verdict.BAD_SIGNATURE
    now_ts = now.timestamp() if isinstance(now, datetime) else float(now)
    return Verdict.OK if now_ts < expires_int else Verdict.EXPIRED
