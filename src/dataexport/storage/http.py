"""Serving local files over HTTP: single-range `Range: bytes=...` and signed-URL checks, framework-free.

The API route stays thin: `status, headers, body = signed_file_response(storage, key, expires, sig,
request.headers.get("range"), now)`, then a streaming response of `body` with those headers. A HEAD request
passes `with_body=False`: the same status and headers, and the file is not read.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import PurePosixPath
from typing import NamedTuple

from dataexport.errors import NotFound, ValidationFailed
from dataexport.storage.local import LocalStorage
from dataexport.storage.signing import Verdict

# A Range header longer than this is ignored as malformed (RFC 9110 lets a server answer 200 with everything):
# "bytes=<19 digits>-<19 digits>" with generous spacing fits well within it.
MAX_RANGE_HEADER = 200


class FileResponse(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes | Iterator[bytes]  # bytes when small enough to read at once (one read, no streaming)


# Answers up to this size are read whole while the request is checked: a streamed body costs the server a
# thread hop per block and one more to learn that the file ended.
READ_AT_ONCE = 1024 * 1024


class Unsatisfiable(Exception):
    pass


_HUGE = 10**19  # beyond any file; also keeps int() away from thousands of digits


def _bound(text: str) -> int:
    return int(text) if len(text) <= 19 else _HUGE


def _digits(text: str) -> bool:
    """ASCII digits only, or empty (int() and str.isdigit() also take other scripts' digits)."""
    return text.isascii() and (not text or text.isdigit())


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte range [first, last] asked by a single-range header, or None for the whole file.

    A malformed or multi-range header is ignored (RFC 9110 lets a server answer 200 with everything);
    a range starting past the end raises Unsatisfiable (416).
    """
    if not header or len(header) > MAX_RANGE_HEADER:
        return None
    # Plain string operations, each one pass over at most MAX_RANGE_HEADER characters: a backtracking regex
    # over runs of spaces took seconds of CPU (holding the GIL) on a 3 KB header.
    unit, equals, spec = header.partition("=")
    first_text, dash, last_text = spec.partition("-")
    if not equals or not dash or unit.strip().lower() != "bytes":
        return None
    first_text, last_text = first_text.strip(), last_text.strip()
    if not _digits(first_text) or not _digits(last_text):
        return None  # a multi-range ("0-1,5-6"), a sign, or anything else: ignored
    if not first_text and not last_text:
        return None
    if not first_text:  # suffix range: the last N bytes
        length = _bound(last_text)
        if length == 0 or size == 0:
            raise Unsatisfiable()
        return max(0, size - length), size - 1
    first = _bound(first_text)
    if last_text and _bound(last_text) < first:
        return None  # invalid: ignored
    if first >= size:
        raise Unsatisfiable()
    last = _bound(last_text) if last_text else size - 1
    return first, min(last, size - 1)


def file_response(storage: LocalStorage, key: str, range_header: str | None, *, with_body: bool = True) -> FileResponse:
    """200 with the whole file, 206 with one range, 416 when unsatisfiable, 404 when missing or invalid."""
    try:
        size = storage.size(key)
    except (NotFound, ValidationFailed):
        return _text(404, "Not found.")
    headers = {
        "Content-Type": "application/gzip" if key.endswith(".gz") else "application/octet-stream",
        "Accept-Ranges": "bytes",
        "Content-Disposition": f'attachment; filename="{PurePosixPath(key).name}"',
        "Cache-Control": "private, no-store",
    }
    try:
        wanted = parse_range(range_header, size)
    except Unsatisfiable:
        return FileResponse(416, {**headers, "Content-Range": f"bytes */{size}", "Content-Length": "0"}, b"")
    if wanted is None:
        return FileResponse(200, {**headers, "Content-Length": str(size)}, _body(storage, key, 0, size, with_body))
    first, last = wanted
    headers.update({"Content-Range": f"bytes {first}-{last}/{size}", "Content-Length": str(last - first + 1)})
    return FileResponse(206, headers, _body(storage, key, first, last + 1, with_body))


def _body(storage: LocalStorage, key: str, start: int, end: int, with_body: bool) -> bytes | Iterator[bytes]:
    if not with_body:
        return b""
    blocks = storage.open_range(key, start, end)
    return b"".join(blocks) if end - start <= READ_AT_ONCE else blocks


def signed_file_response(
    storage: LocalStorage,
    key: str,
    expires: str | int | None,
    sig: str | None,
    range_header: str | None,
    now: datetime | float,
    *,
    with_body: bool = True,
) -> FileResponse:
    """Check the URL's signature (403) and expiry (410) before serving `key` as file_response does."""
    if expires is None or sig is None:
        return _text(403, "Missing signature.")
    verdict = storage.verify(key, expires, sig, now)
    if verdict is Verdict.BAD_SIGNATURE:
        return _text(403, "Invalid signature.")
    if verdict is Verdict.EXPIRED:
        return _text(410, "This download link has expired.")
    return file_response(storage, key, range_header, with_body=with_body)


def _text(status: int, message: str) -> FileResponse:
    body = message.encode()
    headers = {"Content-Type": "text/plain; charset=utf-8", "Content-Length": str(len(body))}
    return FileResponse(status, headers, body)
