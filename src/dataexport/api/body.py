"""Reading a request body with a size cap and a deadline, before any work is done for it.

A body is counted as it arrives: a Content-Length above the cap is refused before a byte is read, and a body
that keeps coming past it is refused as soon as it does. A body that does not finish in time (a client that
sends `Content-Length: 100` and then nothing) gets 408 instead of holding its request slot.
"""

from __future__ import annotations

import asyncio

from fastapi import Request

from dataexport.errors import FieldError, PayloadTooLarge, RequestTimeout


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge("The request body is too large.", [FieldError("body", f"must be at most {limit:,} bytes")])


def declared_length(request: Request) -> int | None:
    """The Content-Length header as a number, or None when absent or not a plain number."""
    raw = request.headers.get("content-length")
    if raw is None or not (0 < len(raw) <= 19) or not raw.isdigit():
        return None
    return int(raw)


async def read_body(request: Request, *, limit: int, timeout: float) -> bytes:
    """The whole body of `request`, at most `limit` bytes, received within `timeout` seconds.

    Raises PayloadTooLarge (413) or RequestTimeout (408). The body is cached on the request, so FastAPI and
    later readers (`request.body()`, `request.json()`) get it without reading again.
    """
    cached = getattr(request, "_body", None)
    if cached is not None:
        if len(cached) > limit:
            raise _too_large(limit)
        return cached
    length = declared_length(request)
    if length is not None and length > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    received = 0

    async def receive_all() -> None:
        nonlocal received
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise _too_large(limit)
            chunks.append(chunk)

    try:
        await asyncio.wait_for(receive_all(), timeout)
    except TimeoutError:
        raise RequestTimeout(
            "The request body was not received in time.",
            [FieldError("body", f"must be sent completely within {timeout:g} seconds")],
        ) from None
    body = b"".join(chunks)
    request._body = body  # Starlette's own cache of the body (Request.body() reads it)
    return body
