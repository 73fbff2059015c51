"""Downloading one part from its signed URL: streamed to disk, resumed with `Range`, checked before it is kept.

The bytes go to `<destination>.partial`; only a part that passed its check is renamed to `destination`. The
partial file outlives the process, so a download killed half-way resumes where it stopped on the next call.
"""

from __future__ import annotations

import hashlib
import os
import time
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx

from dataexport.client.errors import DownloadFailed, FileExpired
from dataexport.client.models import RunFile
from dataexport.client.policy import RETRY_STATUSES, RetryPolicy, parse_retry_after

Progress = Callable[[int], None]

CHUNK = 1 << 20
# Whole downloads of a part whose bytes did not pass the check, before giving up on it.
VERIFY_ATTEMPTS = 3


class GzipCheck:
    """Decompresses a gzip stream as it arrives and says whether it ended whole: every member's CRC-32 and
    length matched (zlib checks them) and nothing but another member follows."""

    def __init__(self) -> None:
        self._inflater = zlib.decompressobj(wbits=31)
        self.broken: str | None = None

    def update(self, data: bytes) -> None:
        while data and self.broken is None:
            try:
                self._inflater.decompress(data)
            except zlib.error as error:
                self.broken = str(error)
                return
            if not self._inflater.eof:
                return
            data = self._inflater.unused_data
            if data:
                self._inflater = zlib.decompressobj(wbits=31)

    def whole(self) -> bool:
        return self.broken is None and self._inflater.eof


class _Check:
    """The running SHA-256 of the bytes, or a gzip check when no digest is known."""

    def __init__(self, sha256: str | None) -> None:
        self.expected = sha256.lower() if sha256 else None
        self.reset()

    def reset(self) -> None:
        self.digest = hashlib.sha256()
        self.gzip = None if self.expected else GzipCheck()

    def update(self, data: bytes) -> None:
        if self.gzip is None:
            self.digest.update(data)
        else:
            self.gzip.update(data)

    def failure(self) -> str | None:
        if self.gzip is not None:
            return None if self.gzip.whole() else f"not a whole gzip stream ({self.gzip.broken or 'truncated'})"
        got = self.digest.hexdigest()
        return None if got == self.expected else f"SHA-256 {got} is not the manifest's {self.expected}"


def _expired(file: RunFile, now: datetime) -> bool:
    return file.expirationDate is not None and now >= file.expirationDate


def _prefix_into(check: _Check, partial: Path) -> None:
    with partial.open("rb") as f:
        while chunk := f.read(CHUNK):
            check.update(chunk)


def download_part(
    http: httpx.Client,
    file: RunFile,
    destination: Path,
    *,
    sha256: str | None,
    on_bytes: Progress | None = None,
    retry: RetryPolicy | None = None,
    sleep: Callable[[float], None] | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Path:
    """`destination`, holding the part's checked bytes. See the module's docstring."""
    policy = retry or RetryPolicy()
    pause = sleep or time.sleep
    partial = destination.with_name(destination.name + ".partial")
    destination.parent.mkdir(parents=True, exist_ok=True)
    for verification in range(1, VERIFY_ATTEMPTS + 1):
        check = _Check(sha256)
        _fetch(http, file, partial, check, on_bytes, policy, pause, now)
        size = partial.stat().st_size
        problem = check.failure()
        if problem is None and file.fileSize is not None and size != file.fileSize:
            problem = f"{size} bytes, not the {file.fileSize} the run lists"
        if problem is None:
            os.replace(partial, destination)
            return destination
        partial.unlink()
        if verification == VERIFY_ATTEMPTS:
            raise DownloadFailed(f"part {file.partId}: {problem}, {VERIFY_ATTEMPTS} downloads in a row")
        if on_bytes is not None:
            on_bytes(-size)  # the bytes of the bad copy are fetched again
    raise AssertionError("unreachable")


def _fetch(
    http: httpx.Client,
    file: RunFile,
    partial: Path,
    check: _Check,
    on_bytes: Progress | None,
    policy: RetryPolicy,
    pause: Callable[[float], None],
    now: Callable[[], datetime],
) -> None:
    """Fill `partial` with the whole part, resuming it (feeding what it already holds to `check`)."""
    have = partial.stat().st_size if partial.exists() else 0
    if file.fileSize is not None and have > file.fileSize:
        partial.unlink()
        have = 0
    if have:
        _prefix_into(check, partial)
        if on_bytes is not None:
            on_bytes(have)
    attempt = 0
    while True:
        attempt += 1
        if _expired(file, now()):
            raise FileExpired(f"part {file.partId} expired at {file.expirationDate}", file.expirationDate)
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            with http.stream("GET", file.url, headers=headers) as response:
                status = response.status_code
                if status == 416 and file.fileSize is not None and have == file.fileSize:
                    return  # the partial file already holds every byte
                if status in (403, 410) and (status == 410 or _expired(file, now())):
                    raise FileExpired(
                        f"part {file.partId} expired at {file.expirationDate}: the server deleted it",
                        file.expirationDate,
                    )
                if status in RETRY_STATUSES and policy.should_retry(attempt):
                    wait = parse_retry_after(response.headers.get("retry-after"), now())
                    pause(policy.delay(attempt, wait))
                    continue
                if status == 200 and have:
                    # The server sent the whole part instead of the range: start again from byte 0.
                    if on_bytes is not None:
                        on_bytes(-have)
                    check.reset()
                    have = 0
                elif status == 206 and not _range_starts_at(response, have):
                    raise DownloadFailed(f"part {file.partId}: the server answered another range than bytes={have}-")
                elif status not in (200, 206):
                    raise DownloadFailed(f"part {file.partId}: HTTP {status} from its download URL")
                with partial.open("ab" if have else "wb") as out:
                    for chunk in response.iter_raw():  # as it arrives: a broken download keeps what came
                        check.update(chunk)
                        out.write(chunk)
                        have += len(chunk)
                        if on_bytes is not None:
                            on_bytes(len(chunk))
            return
        except httpx.TransportError as error:
            # What arrived before the break is on disk: the next request asks for the rest.
            if not policy.should_retry(attempt):
                raise DownloadFailed(
                    f"part {file.partId}: the download broke off {attempt} times ({error!r})"
                ) from None
            pause(policy.delay(attempt, None))


def _range_starts_at(response: httpx.Response, offset: int) -> bool:
    # Content-Range: bytes 100-199/200
    value = response.headers.get("content-range", "")
    unit, _, rest = value.partition(" ")
    start = rest.partition("-")[0]
    return unit == "bytes" and start.isdigit() and int(start) == offset
