"""An HTTP proxy in front of a real server that misbehaves on purpose, as networks and APIs do: canned error
answers (429, the vendor's JWT_EXPIRED), corrupted or cut-off downloads, slow streams, and answers reduced to
the vendor's documented keys (no extension of dataexport). It records every request it relays."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from examples import VENDOR_FIELD_KEYS, VENDOR_JOB_KEYS, VENDOR_RUN_KEYS

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host", "content-length"}

# The keys the vendor's reference shows, per answer: what a client may rely on when it talks to the vendor.
VENDOR_KEYS = {"job": VENDOR_JOB_KEYS, "run": VENDOR_RUN_KEYS | {"files"}, "field": VENDOR_FIELD_KEYS}


@dataclass
class Rule:
    """Applies to the next `times` requests whose path contains `path` (and whose method is `method`)."""

    path: str
    action: str  # "answer", "corrupt", "cut", "slow"
    times: int = 1
    method: str | None = None
    status: int = 500
    body: dict | None = None
    headers: dict[str, str] = field(default_factory=dict)
    after_bytes: int = 0  # cut: bytes sent before the connection drops
    bytes_per_second: int = 0  # slow


@dataclass
class Seen:
    method: str
    path: str
    range: str | None
    status: int


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.rules: list[Rule] = []
        self.seen: list[Seen] = []
        self.vendor_shapes = False
        self._lock = threading.Lock()
        self.http = httpx.Client(timeout=120)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                proxy._relay(self)

            do_POST = do_DELETE = do_PUT = do_HEAD = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.http.close()

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.seen.clear()
        self.vendor_shapes = False

    def requests(self, predicate: Callable[[Seen], bool] = lambda s: True) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if predicate(s)]

    def _take(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.times > 0 and rule.path in path and (rule.method is None or rule.method == method):
                    rule.times -= 1
                    return rule
        return None

    def _relay(self, handler: BaseHTTPRequestHandler) -> None:
        method, path = handler.command, handler.path
        length = int(handler.headers.get("content-length") or 0)
        body = handler.rfile.read(length) if length else b""
        rule = self._take(method, path)
        rng = handler.headers.get("range")
        if rule is not None and rule.action == "answer":
            self._record(method, path, rng, rule.status)
            self._send(
                handler,
                rule.status,
                {"content-type": "application/json", **rule.headers},
                json.dumps(rule.body).encode(),
            )
            return
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in HOP_BY_HOP}
        with self.http.stream(method, self.upstream + path, headers=headers, content=body) as answer:
            self._record(method, path, rng, answer.status_code)
            out_headers = {
                k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP | {"content-encoding"}
            }
            data = answer.read()
            if rule is None:
                data = self._vendor_shape(data) if self._reshaping(answer) else data
            elif rule.action == "corrupt" and data:
                middle = len(data) // 2
                data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
            elif rule.action == "cut":
                self._send_head(handler, answer.status_code, out_headers, len(data))
                handler.wfile.write(data[: rule.after_bytes])
                handler.wfile.flush()
                handler.close_connection = True
                handler.connection.shutdown(2)
                return
            elif rule.action == "slow":
                self._send_head(handler, answer.status_code, out_headers, len(data))
                step = max(1, rule.bytes_per_second // 10)
                for start in range(0, len(data), step):
                    handler.wfile.write(data[start : start + step])
                    handler.wfile.flush()
                    time.sleep(0.1)
                return
            self._send(handler, answer.status_code, out_headers, data)

    def _record(self, method: str, path: str, rng: str | None, status: int) -> None:
        with self._lock:
            self.seen.append(Seen(method, path, rng, status))

    def _reshaping(self, answer: httpx.Response) -> bool:
        return self.vendor_shapes and answer.headers.get("content-type", "").startswith("application/json")

    def _vendor_shape(self, data: bytes) -> bytes:
        """The answer without the keys the vendor does not document."""
        try:
            doc = json.loads(data)
        except ValueError:
            return data
        payload = doc.get("payload") if isinstance(doc, dict) else None
        items = payload if isinstance(payload, list) else [payload]
        for item in items:
            if not isinstance(item, dict):
                continue
            if "files" in item:
                kind = "run"
            elif "fields" in item and "jobId" in item:
                kind = "job"
            elif "parameters" in item:
                kind = "field"
            else:
                continue
            for key in set(item) - VENDOR_KEYS[kind]:
                del item[key]
        return json.dumps(doc).encode()

    @staticmethod
    def _send_head(handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str], length: int) -> None:
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(length))
        handler.end_headers()

    def _send(self, handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str], data: bytes) -> None:
        self._send_head(handler, status, headers, len(data))
        if handler.command != "HEAD":
            handler.wfile.write(data)
