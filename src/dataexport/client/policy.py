"""Pure rules of the client: when to retry and how long to wait, when a token is due for renewal."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# Answers worth another try: the request was refused before any work (429) or a gateway failed.
RETRY_STATUSES = frozenset({429, 502, 503, 504})


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """`Retry-After` as seconds to wait: delta-seconds or an HTTP-date (RFC 9110, 10.2.3); None when absent or
    unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, floored by the server's `Retry-After`.

    Jitter spreads the retries of many clients refused at the same moment (10 concurrent requests per project),
    so they do not all come back in the same instant and get refused again."""

    attempts: int = 6
    base: float = 0.5
    cap: float = 30.0
    # Never wait longer than this for one Retry-After: a scheduler's job should fail rather than hang.
    max_retry_after: float = 120.0

    def delay(self, attempt: int, retry_after: float | None, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before try number `attempt + 1` (attempt counts from 1)."""
        backoff = rand() * min(self.cap, self.base * 2.0 ** (attempt - 1))
        if retry_after is None:
            return backoff
        # The server's wait, plus up to a tenth more, so refused clients do not return in lockstep.
        waited = min(retry_after, self.max_retry_after)
        return waited + rand() * max(0.1, waited / 10)

    def should_retry(self, attempt: int) -> bool:
        return attempt < self.attempts


def renewal_due(*, fetched_at: float, expires_in: float, now: float, margin: float) -> bool:
    """Whether a token fetched at `fetched_at` (seconds) should be replaced now: `margin` seconds before it
    expires, at most half its life, so a short-lived token is still used for a while."""
    lead = min(margin, expires_in / 2)
    return now >= fetched_at + expires_in - lead
