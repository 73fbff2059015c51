"""Retry decisions: pure, tested without I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from dataexport.errors import DataExportError


@dataclass(frozen=True)
class RetryDecision:
    retry: bool
    next_attempt_at: datetime | None


def is_retryable(exc: BaseException) -> bool:
    """Our own errors say whether they are; I/O and unknown failures are retried (they may be transient)."""
    if isinstance(exc, DataExportError):
        return exc.retryable
    return True


def decide(
    exc: BaseException, *, attempts: int, max_attempts: int, base_backoff: timedelta, now: datetime
) -> RetryDecision:
    """After attempt number `attempts` failed: retry with exponential backoff, or give up."""
    if not is_retryable(exc) or attempts >= max_attempts:
        return RetryDecision(False, None)
    return RetryDecision(True, now + base_backoff * (2 ** (attempts - 1)))
