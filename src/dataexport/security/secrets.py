"""Client secrets (argon2, slow on purpose) and ingest keys (random 256-bit, so a fast hash is enough)."""

from __future__ import annotations

import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# Moderate cost: ~20 ms a verify on this class of machine; brute force is also rate limited at the token endpoint.
_hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
# Compared against when the client_id is unknown, so timing does not tell which client ids exist.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def new_client_id() -> str:
    return secrets.token_hex(12)


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return _hasher.hash(secret)


def verify_secret(secret_hash: str | None, secret: str) -> bool:
    try:
        return _hasher.verify(secret_hash or _DUMMY_HASH, secret) and secret_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def new_ingest_key() -> str:
    return "ik_" + secrets.token_urlsafe(32)


def hash_ingest_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
