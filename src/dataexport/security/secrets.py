"""Client secrets (argon2, slow on purpose) and ingest keys (random 256-bit, so a fast hash is enough)."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# Moderate cost: ~20 ms a verify on this class of machine; failed attempts are also throttled at the token endpoint
# (security/throttle.py), and a recently verified secret skips the hash (VerifiedSecrets).
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


class VerifiedSecrets:
    """(client_id, secret) pairs verified recently, so a client asking many tokens pays argon2 once.

    Keyed by an HMAC (with the server's JWT key) of the pair: the memory holds no secret, and only the exact
    pair that verified hits it. An entry also holds the client's pk and stored hash, which the caller compares
    with the client row it reads anyway: a hit for a client whose row changed (another secret, another pk)
    counts as a miss. Entries live `ttl` seconds; `forget_client` drops a revoked client's. Bounded: expired
    entries are dropped when it is full, then everything. Plain dict operations, used on the event loop.
    """

    def __init__(self, key: str, *, ttl: float = 300.0, max_entries: int = 10_000) -> None:
        self._key = key.encode()
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[bytes, tuple[float, int, str]] = {}  # digest -> (expires, client pk, secret hash)

    def _digest(self, client_id: str, secret: str) -> bytes:
        # Length-prefixed, so ("ab", "c") and ("a", "bc") are different pairs.
        message = f"{len(client_id)}:{client_id}:{secret}".encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def get(self, client_id: str, secret: str, now: float) -> tuple[int, str] | None:
        """(client pk, secret hash) if this exact pair verified less than `ttl` seconds ago."""
        digest = self._digest(client_id, secret)
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry[0] <= now:
            self._entries.pop(digest, None)
            return None
        return entry[1], entry[2]

    def put(self, client_id: str, secret: str, client_pk: int, secret_hash: str, now: float) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries = {d: e for d, e in self._entries.items() if e[0] > now}
            if len(self._entries) >= self.max_entries:
                self._entries = {}
        self._entries[self._digest(client_id, secret)] = (now + self.ttl, client_pk, secret_hash)

    def forget_client(self, client_pk: int) -> None:
        self.forget_clients({client_pk})

    def forget_clients(self, client_pks: set[int] | frozenset[int]) -> None:
        if client_pks:
            self._entries = {d: e for d, e in self._entries.items() if e[1] not in client_pks}

    def __len__(self) -> int:
        return len(self._entries)


def new_ingest_key() -> str:
    return "ik_" + secrets.token_urlsafe(32)


def new_tag_id() -> str:
    """A tracking tag's id: public, so random only to be unguessable as a project's id is not (64 bits)."""
    return secrets.token_hex(8)


def hash_token(token: str) -> str:
    """A random 256-bit token's hash (ingest keys, console sessions): guessing is hopeless, so a fast hash is enough."""
    return hashlib.sha256(token.encode()).hexdigest()


def hash_ingest_key(key: str) -> str:
    return hash_token(key)
