"""The Storage interface every backend implements (local directory, S3-compatible object store)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

# S3 refuses presigned URLs valid for more than 7 days.
MAX_URL_TTL_SECONDS = 7 * 24 * 3600


@runtime_checkable
class Storage(Protocol):
    def publish(self, local_path: Path, key: str) -> int:
        """Atomically make the file visible at `key` (readers never see a partial file); returns its size."""

    def delete(self, key: str) -> None:
        """Remove `key`; no error when it does not exist."""

    def delete_prefix(self, prefix: str) -> int:
        """Remove every key starting with `prefix` (string prefix, as S3); returns how many."""

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int:
        """Stored size in bytes; NotFound when missing."""

    def download_url(self, key: str, *, expires_at: datetime, base_url: str) -> str:
        """Absolute URL that downloads `key` without an Authorization header until `expires_at`."""
