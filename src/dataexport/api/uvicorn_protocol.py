"""uvicorn's httptools protocol with what it lacks against slow or bloated clients: a header deadline and cap.

uvicorn closes idle keep-alive connections, but nothing bounds a connection that sends its request headers
slowly (or never), and httptools buffers request headers of any size (200 KB were accepted). Here:

- a connection must send a request's complete headers within `header_timeout` seconds of connecting, or of
  the previous answer (then 408 and close, or just close when nothing of a request came);
- the request line and headers may total `max_header_bytes` (then 431 and close), counted as bytes arrive,
  so a header that never ends is refused as soon as it is too long;
- an answer that leaves before its request's body ended (413, 401 before the body was read) ends the
  connection too: the rest of the body is not parsed as a next request, nor may it keep the connection.

Each such close is a lingering one: the answer, then end of sending, then what the client still sends is read
and dropped for up to LINGER_SECONDS before the socket is closed. Closing a socket with unread input sends a
TCP reset, and a client still sending its body would lose the answer it had not read yet.

Answers written here (and uvicorn's own 400 for a malformed request) carry the API's error envelope. Pass it
to uvicorn as `http=functools.partial(GuardedHttpToolsProtocol, header_timeout=..., max_header_bytes=...)`
(serving.uvicorn_options does): a partial of a module-level class pickles, for the processes of `--processes`.
"""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

# Request line and headers of a real client: a JWT (~300 bytes), a signed URL, a few standard headers.
MAX_HEADER_BYTES = 16 * 1024
LINGER_SECONDS = 2.0


class _HeadersTooLarge(Exception):
    """Raised in a parser callback: httptools stops parsing and uvicorn calls send_400_response."""


def error_answer(status: int, code: str, message: str, field: str | None = None, detail: str | None = None) -> bytes:
    """A whole HTTP/1.1 answer in the error envelope, closing the connection."""
    envelope: dict[str, Any] = {"success": False, "errorCode": code, "errorMessage": message}
    if field:
        envelope["errors"] = [{"field": field, "message": detail}]
    body = json.dumps(envelope).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\nx-content-type-options: nosniff\r\n\r\n"
    )
    return head.encode("latin-1") + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        header_timeout: float,
        max_header_bytes: int = MAX_HEADER_BYTES,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.header_timeout = header_timeout
        self.max_header_bytes = max_header_bytes
        self._header_timer: asyncio.TimerHandle | None = None
        self._awaiting_headers = True  # between requests, or inside a request's headers
        self._unparsed = 0  # bytes received while awaiting headers (httptools buffers partial lines)
        self._header_size = 0  # bytes of the current request's URL and headers, as parsed
        self._too_large = False
        self._discarding = False  # answered and half-closed: input is dropped until the socket closes

    # The deadline: armed when the connection opens and after each answer, disarmed by complete headers.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing() or self._discarding:
            return
        if self.cycle is not None and self.cycle.response_complete and self.cycle.more_body:  # body unfinished
            self._answer_and_close(None)
        elif self.timeout_keep_alive_task is not None:
            # uvicorn armed its keep-alive timer: no pipelined request was started, the next one is to come.
            self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_timeout_expired)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout_expired(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self._discarding:
            return
        if not (self._awaiting_headers and self._unparsed):  # nothing of a request came: nobody to tell
            self.transport.close()
            return
        seconds = f"{self.header_timeout:g}"
        self._answer_and_close(
            error_answer(
                408,
                "REQUEST_TIMEOUT",
                "The request headers were not received in time.",
                "headers",
                f"must be sent completely within {seconds} seconds",
            )
        )

    def _answer_and_close(self, answer: bytes | None) -> None:
        """Send `answer`, stop sending, drop the input for LINGER_SECONDS, then close (see the docstring)."""
        self._disarm_header_timer()
        self._discarding = True
        if answer:
            self.transport.write(answer)
        self.flow.resume_reading()  # paused reading would leave the input unread: a reset at close
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self._close)

    def _close(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    # The cap: bytes counted as they arrive, and as the parser hands out the URL and each header.
    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        if self._awaiting_headers:
            self._unparsed += len(data)
        super().data_received(data)
        if (
            self._awaiting_headers
            and self._unparsed > self.max_header_bytes
            and not self._discarding
            and not self.transport.is_closing()
        ):
            self._refuse_too_large()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_size = 0

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._unparsed = 0
        self._disarm_header_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._awaiting_headers = True

    def _count(self, size: int) -> None:
        self._header_size += size
        if self._header_size > self.max_header_bytes:
            self._too_large = True
            raise _HeadersTooLarge()

    def send_400_response(self, msg: str) -> None:
        if self._too_large:
            self._refuse_too_large()
            return
        self._answer_and_close(error_answer(400, "BAD_REQUEST", "Invalid HTTP request."))

    def _refuse_too_large(self) -> None:
        self.logger.warning("Request headers too large.")
        self._answer_and_close(
            error_answer(
                431,
                "HEADERS_TOO_LARGE",
                "The request headers are too large.",
                "headers",
                f"must be at most {self.max_header_bytes:,} bytes in all",
            )
        )
