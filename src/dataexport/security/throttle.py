"""Failed-secret throttling of the token endpoint: pure logic, time given by the caller (seconds).

Only FAILURES count, per key (client_id, source address), so a legitimate client asking a token from many
processes is never slowed down, and an attacker guessing a victim's secret from one address cannot lock the
victim out: the victim's requests come from another key. After `free_failures` failures a key must wait
before each further attempt, 1 s, 2 s, 4 s ... up to `max_delay`, and an attempt inside its wait is refused
before its secret is checked (no slow hash is spent on it). Over `global_per_minute` failures a minute (all
keys together), keys that already failed are refused outright while keys without a failure still proceed.

Memory is bounded: a key is forgotten `forget_after` seconds after its last failure, a success forgets it at
once, and the table never holds more than `max_keys` keys (the least recently failed go first).

Not thread-safe on purpose: the token endpoint calls it on its event loop only (one per API process).
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass

# Attackers own whole IPv6 networks; a /64 is what one subscriber gets, so it counts as one address.
IPV6_PREFIX = 64


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after: int = 0  # whole seconds (the Retry-After header), at least 1 when refused


ALLOWED = Verdict(True)


def source_of(host: str | None) -> str:
    """The address part of a throttle key: an IPv4 address as is, an IPv6 address as its /64 network."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))
    return str(address)


@dataclass(slots=True)
class _Failures:
    count: int
    last: float  # when the last failure happened


class FailureThrottle:
    def __init__(
        self,
        *,
        free_failures: int,
        max_delay: float,
        global_per_minute: int,
        max_keys: int = 100_000,
        forget_after: float | None = None,
    ) -> None:
        self.free_failures = free_failures
        self.max_delay = max_delay
        self.global_per_minute = global_per_minute
        self.max_keys = max_keys
        # Long enough that waiting for a key to be forgotten is slower than serving the longest wait.
        self.forget_after = forget_after if forget_after is not None else max(900.0, 2 * max_delay)
        self._keys: dict[tuple[str, str], _Failures] = {}  # in order of last failure, oldest first
        self._window = 0  # current minute (epoch minutes) of the global count
        self._this_minute = 0
        self._last_minute = 0

    def __len__(self) -> int:
        return len(self._keys)

    def delay(self, failures: int) -> float:
        """How long after its last failure a key with `failures` failures must wait before its next attempt."""
        if failures < self.free_failures:
            return 0.0
        # min() before the power would overflow: exponents stay small once past the cap.
        exponent = failures - self.free_failures
        return self.max_delay if exponent >= 64 else min(float(2**exponent), self.max_delay)

    def check(self, key: tuple[str, str], now: float) -> Verdict:
        """May this key have its secret checked now? Records nothing: only outcomes count."""
        entry = self._keys.get(key)
        if entry is None:
            return ALLOWED
        if now - entry.last >= self.forget_after:
            del self._keys[key]
            return ALLOWED
        wait = entry.last + self.delay(entry.count) - now
        if self.global_rate(now) > self.global_per_minute:
            # Under a flood every key that already failed waits for the flood to ebb, at least to the minute's end.
            wait = max(wait, 60.0 - now % 60.0)
        return ALLOWED if wait <= 0 else Verdict(False, max(1, math.ceil(wait)))

    def failed(self, key: tuple[str, str], now: float) -> None:
        entry = self._keys.pop(key, None)  # popped and put back: the dict stays in order of last failure
        if entry is None or now - entry.last >= self.forget_after:
            entry = _Failures(0, now)
        entry.count += 1
        entry.last = now
        self._keys[key] = entry
        self._count_global(now)
        if len(self._keys) > self.max_keys:
            self._shrink(now)

    def succeeded(self, key: tuple[str, str]) -> None:
        self._keys.pop(key, None)

    def global_rate(self, now: float) -> float:
        """Failures in the last minute, estimated from two fixed minutes (the last one weighed by how much of it
        the sliding minute still covers): O(1) memory whatever the rate."""
        self._roll(now)
        covered = 1.0 - (now % 60.0) / 60.0
        return self._this_minute + self._last_minute * covered

    def _count_global(self, now: float) -> None:
        self._roll(now)
        self._this_minute += 1

    def _roll(self, now: float) -> None:
        minute = int(now // 60)
        if minute == self._window:
            return
        self._last_minute = self._this_minute if minute == self._window + 1 else 0
        self._this_minute = 0
        self._window = minute

    def _shrink(self, now: float) -> None:
        """Forget keys past `forget_after`, then the least recently failed, down to 90% of the cap (so the scan
        is paid once per tenth of the table, not on every failure)."""
        target = self.max_keys * 9 // 10
        self._keys = {k: e for k, e in self._keys.items() if now - e.last < self.forget_after}
        excess = len(self._keys) - target
        if excess > 0:
            for key in list(self._keys)[:excess]:
                del self._keys[key]


@dataclass(slots=True)
class _Bucket:
    tokens: float
    last: float


class RequestRate:
    """A token bucket per key: `per_minute` requests a minute on average, `burst` at once. Pure, time given.

    For endpoints anyone may call (the tag's collection): every request counts, not only failures. At most
    `max_keys` keys are held (the least recently seen go first, and a forgotten key starts with a full bucket), so
    under a flood of addresses it errs towards letting requests through rather than growing.
    """

    def __init__(self, *, per_minute: int, burst: int, max_keys: int = 100_000) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: dict[object, _Bucket] = {}  # in order of last request, oldest first

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: object, now: float) -> Verdict:
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(self.burst, now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.last) * self.rate)
            bucket.last = now
        self._buckets[key] = bucket
        if len(self._buckets) > self.max_keys:
            for old in list(self._buckets)[: len(self._buckets) - self.max_keys * 9 // 10]:
                del self._buckets[old]
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return ALLOWED
        return Verdict(False, max(1, math.ceil((1.0 - bucket.tokens) / self.rate)))
