"""The HTTP edge against hostile clients, over a real server (the `api` fixture's uvicorn in a thread), on SQLite
and PostgreSQL: hostile headers and slow bodies that must not stall other tenants, body caps and deadlines read
before any work, hostile JSON answered 400 without a traceback, trusted hosts, security headers, HEAD on
downloads, client disconnects, and who may read /metrics.

The uvicorn options of `dataexport serve` (header deadline and size cap, connection limit, proxy headers) are
tested on the real command in tests/acceptance/test_http_hardening_serve.py.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataexport.api.http_guards import API_BODY_LIMIT, TOKEN_BODY_LIMIT
from dataexport.domain.json_depth import MAX_JSON_DEPTH
from examples import create, example_daily

PART_KEY = "exports/1/1/1/part-00000.csv.gz"
FAST = 2.0  # seconds: every call of the other tenant answers within this while an attack runs
HOSTILE_RANGE_3KB = "bytes=" + " " * 1500 + "-" + " " * 1500 + "x"
HOSTILE_RANGE_200KB = "bytes=" + " " * 100_000 + "-" + " " * 100_000 + "x"


# --- helpers: raw HTTP/1.1 over a socket, for what httpx will not send (a body that never ends) -----------


def open_request(api, head: str, body: bytes = b"") -> socket.socket:
    """A connection that sent `head` (request line and headers, without the blank line) and `body`."""
    sock = socket.create_connection(("127.0.0.1", api.server.port), timeout=30)
    sock.sendall(head.encode("latin-1") + b"\r\n\r\n" + body)
    return sock


def read_answer(sock: socket.socket, timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the one answer on `sock` (read until its Content-Length)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def slow_post(api, path: str, headers: str = "") -> socket.socket:
    """A POST that announces 100 bytes of JSON and sends one."""
    return open_request(
        api,
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100{headers}",
        b"{",
    )


def publish_part(api, size: int = 3 * 1024 * 1024) -> str:
    """A file in local storage and its signed URL (the path and query), as a run's files[].url gives it."""
    source = api.data_dir / "part.bin"
    source.write_bytes(bytes(range(256)) * (size // 256))
    api.context.storage.publish(source, PART_KEY)
    url = api.context.storage.download_url(
        PART_KEY, expires_at=datetime.now(UTC) + timedelta(hours=1), base_url="http://x"
    )
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def timed_calls(http: httpx.Client, tenant, count: int) -> list[float]:
    """`count` calls of `tenant`, each one's seconds; each must succeed."""
    elapsed = []
    for i in range(count):
        started = time.monotonic()
        answer = http.get("/v1/exports" if i % 2 else "/v1/exportable-fields?scope=views", headers=tenant.headers)
        elapsed.append(time.monotonic() - started)
        assert answer.status_code == 200, answer.text
    return elapsed


def assert_no_traceback(capfd) -> None:
    # The server thread writes its log line just after each answer: let it finish first (a write racing with
    # the capture reading the same file object can crash the interpreter).
    time.sleep(0.3)
    out, err = capfd.readouterr()
    logged = out + err
    assert "Traceback" not in logged and "api.unhandled_error" not in logged, logged[-3000:]


# --- 1. hostile headers and slow bodies do not stall anyone ----------------------------------------------


def test_hostile_range_headers_stall_nobody(api, http, tenant, other_tenant):
    signed = publish_part(api)
    stop = threading.Event()
    attack_answers: list[tuple[int, float]] = []

    def attack() -> None:
        with httpx.Client(base_url=api.url, timeout=60) as attacker:
            while not stop.is_set():
                for header in (HOSTILE_RANGE_3KB, HOSTILE_RANGE_200KB):
                    started = time.monotonic()
                    answer = attacker.get(signed, headers={"Range": header})
                    attack_answers.append((answer.status_code, time.monotonic() - started))

    with ThreadPoolExecutor(2) as pool:
        attackers = [pool.submit(attack) for _ in range(2)]
        time.sleep(0.2)
        try:
            elapsed = timed_calls(http, other_tenant, 20)
        finally:
            stop.set()
        for attacker in attackers:
            attacker.result()
    assert max(elapsed) < FAST, elapsed
    # A malformed range is ignored: the whole file, at once (the regex took 15 s on the 3 KB header).
    assert attack_answers and all(status == 200 for status, _ in attack_answers)
    assert max(seconds for _, seconds in attack_answers) < FAST, attack_answers


def test_slow_bodies_hold_no_project_slot_and_time_out(api, http, tenant, other_tenant, monkeypatch, capfd):
    timeout = 1.5
    monkeypatch.setattr(
        api.context, "settings", api.context.settings.model_copy(update={"body_timeout_seconds": timeout})
    )
    limit = api.context.settings.max_concurrent_requests_per_project
    token = f"\r\nAuthorization: Bearer {tenant.token}"
    started = time.monotonic()
    stalled = [slow_post(api, "/v1/exports", token) for _ in range(limit + 2)]  # more than the project's slots
    try:
        # While they stall, the attacker's own project and the other tenant are answered at once.
        own = timed_calls(http, tenant, 10)
        other = timed_calls(http, other_tenant, 20)
        assert max(own + other) < FAST, (own, other)
        answers = [read_answer(sock) for sock in stalled]
    finally:
        for sock in stalled:
            sock.close()
    waited = time.monotonic() - started
    assert all(status == 408 for status, _, _ in answers), answers
    status, headers, body = answers[0]
    assert json.loads(body) == {
        "success": False,
        "errorCode": "REQUEST_TIMEOUT",
        "errorMessage": "The request body was not received in time.",
        "errors": [{"field": "body", "message": f"must be sent completely within {timeout:g} seconds"}],
    }
    assert headers["connection"] == "close" and headers["x-content-type-options"] == "nosniff"
    assert timeout <= waited < timeout + 10
    # Nothing was held: the project's every slot is free, and its calls work.
    assert timed_calls(http, tenant, limit)
    assert_no_traceback(capfd)


def test_an_unauthenticated_body_is_refused_before_it_is_read(api, http, tenant):
    for auth, code in (
        ("", "JWT_MISSING"),
        ("\r\nAuthorization: Bearer not.a.token", "JWT_INVALID"),
        (f"\r\nAuthorization: Basic {tenant.token}", "JWT_MISSING"),
    ):
        sock = open_request(
            api,
            "POST /v1/exports HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {256 * 1024 * 1024}{auth}",
            b'{"name": ',
        )
        try:
            status, _, body = read_answer(sock, timeout=5)  # answered without waiting for the 256 MB
        finally:
            sock.close()
        assert status == 401 and json.loads(body)["errorCode"] == code, body


def test_bodies_over_their_route_cap_are_refused(http, tenant):
    token_body = {
        "client_id": "x",
        "client_secret": "s" * TOKEN_BODY_LIMIT,
        "grant_type": "client_credentials",
        "scope": "data-export",
    }
    answer = http.post("/v1/oauth/token", json=token_body)
    assert answer.status_code == 413
    assert answer.json() == {"error": "invalid_request", "error_description": "The request body is too large."}
    # Declared or not (chunked), a body past 1 MB on the API routes is refused, naming the body and the cap.
    big = json.dumps({**example_daily(), "name": "n" * API_BODY_LIMIT}).encode()
    for content in (big, iter([big[:1000], big[1000:]])):
        answer = http.post(
            "/v1/exports", content=content, headers={**tenant.headers, "Content-Type": "application/json"}
        )
        assert answer.status_code == 413, answer.text
        assert answer.json()["errorCode"] == "PAYLOAD_TOO_LARGE"
        assert answer.json()["errors"] == [{"field": "body", "message": f"must be at most {API_BODY_LIMIT:,} bytes"}]
    # Under the caps, the same routes work.
    assert http.post("/v1/exports", json=example_daily(), headers=tenant.headers).status_code == 200
    small = http.post("/v1/oauth/token", json={**token_body, "client_secret": "wrong"})
    assert small.status_code == 401


# --- 2. hostile JSON: 400, never 500, no traceback -------------------------------------------------------


def nested(depth: int, kind: str) -> bytes:
    if kind == "arrays":
        return b"[" * depth + b"]" * depth
    if kind == "objects":
        return b'{"a":' * depth + b"1" + b"}" * depth
    return b'{"fields":' + b"[{" * (depth // 2) + b"}]" * (depth // 2) + b"}"  # mixed, under a known key


HOSTILE_JSON = {
    "huge integer": b'{"name": ' + b"9" * 50_000 + b"}",
    "huge exponent": b'{"name": 1e999999, "format": -1e999999}',
    "NaN and infinities": b'{"name": NaN, "format": Infinity, "scope": -Infinity, "client_id": NaN}',
    "duplicate keys": b'{"name": "a", "name": {"x": 1}, "client_id": "a", "client_id": [1], "fields": 1, "fields": {}}',
    "invalid UTF-8": b'{"name": "\xff\xfe\xc0\xaf", "client_id": "\xed\xa0\x80"}',
    "lone surrogate": b'{"name": "\\ud800", "client_id": "\\udfff", "grant_type": "client_credentials"}',
    "byte order mark": b'\xef\xbb\xbf{"name": "x"}',
    "not JSON": b"{'name': 'x',}",
    "a bare number": b"1" * 10_000,
}


def json_routes(api, http, tenant) -> dict[str, tuple[str, dict[str, str]]]:
    job = create(http, tenant, example_daily())
    return {
        "token": ("/v1/oauth/token", {}),
        "create export": ("/v1/exports", tenant.headers),
        "suspend": (f"/v1/exports/{job}/suspend", tenant.headers),
        "ingest": ("/ingest/v1/pageviews", {"X-Ingest-Key": tenant.ingest_key}),
    }


def post_json(http, path: str, headers: dict[str, str], body: bytes) -> httpx.Response:
    return http.post(path, content=body, headers={**headers, "Content-Type": "application/json"})


def assert_refused(answer: httpx.Response, path: str) -> None:
    assert 400 <= answer.status_code < 500, (path, answer.status_code, answer.text[:500])
    if path == "/v1/oauth/token":
        assert answer.json()["error"] == "invalid_request", answer.text  # the route's OAuth shape
    else:
        assert answer.json()["success"] is False and answer.json()["errorCode"], answer.text


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 1_000, 8_000, 50_000, 100_000])
@pytest.mark.parametrize("kind", ["arrays", "objects", "mixed"])
def test_deeply_nested_json_is_refused_on_every_route(api, http, tenant, depth, kind, capfd):
    for path, headers in json_routes(api, http, tenant).values():
        body = nested(depth, kind)
        if path == "/v1/oauth/token" and len(body) > TOKEN_BODY_LIMIT:
            body = body[: TOKEN_BODY_LIMIT // 2] + body[-TOKEN_BODY_LIMIT // 2 :]  # still nested past the limit
        answer = post_json(http, path, headers, body)
        assert_refused(answer, path)
        if not path.startswith("/ingest/"):  # ingest reads its own body (its parser bounds the nesting)
            message = answer.json().get("errorMessage") or answer.json()["error_description"]
            assert message == "The request body is nested too deeply.", answer.text
    assert_no_traceback(capfd)


@pytest.mark.parametrize("name", sorted(HOSTILE_JSON))
def test_hostile_json_is_refused_on_every_route(api, http, tenant, name, capfd):
    routes = json_routes(api, http, tenant)
    del routes["suspend"]  # it reads no JSON: its body is ignored (only its nesting is refused, above)
    for path, headers in routes.values():
        assert_refused(post_json(http, path, headers, HOSTILE_JSON[name]), path)
    assert_no_traceback(capfd)


def test_a_valid_spec_with_text_that_cannot_be_stored_is_a_400(http, tenant, capfd):
    # A lone surrogate is valid JSON ("\ud800") and a valid Python str, but no UTF-8: no database takes it.
    for field in ("name", "aliasName"):
        body = example_daily()
        if field == "name":
            body["name"] = "Nightly \ud800"
        else:
            body["fields"][0]["aliasName"] = "\udfff"
        answer = post_json(http, "/v1/exports", tenant.headers, json.dumps(body).encode())
        assert answer.status_code == 400, answer.text
    assert_no_traceback(capfd)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    depth=st.integers(1_000, 100_000),
    opener=st.sampled_from([b"[", b'{"a":', b'[{"b":', b'{"c":[']),
    route=st.sampled_from(["token", "create export", "suspend", "ingest"]),
)
def test_any_deep_nesting_on_any_route_is_a_4xx(api, http, tenant, depth, opener, route):
    path, headers = json_routes(api, http, tenant)[route]
    body = opener * (min(depth, TOKEN_BODY_LIMIT // len(opener) - 1) if route == "token" else depth)
    assert_refused(post_json(http, path, headers, body), path)


# --- 3. trusted hosts ------------------------------------------------------------------------------------


def test_a_foreign_host_is_refused_and_urls_come_from_the_request_or_public_base_url(api, http, tenant, monkeypatch):
    signed = publish_part(api, size=1024)
    credentials = {
        "client_id": tenant.client_id,
        "client_secret": tenant.client_secret,
        "grant_type": "client_credentials",
        "scope": "data-export",
    }
    for host in ("evil.example", "127.0.0.1.evil.example", f"evil.example:{api.server.port}", "a b", "[::2]"):
        answer = http.post("/v1/oauth/token", json=credentials, headers={"Host": host})
        assert answer.status_code == 400 and answer.json()["error"] == "invalid_request", answer.text
        for path in ("/v1/exports", signed, "/metrics", "/docs", "/nowhere"):
            answer = http.get(path, headers={**tenant.headers, "Host": host})
            assert answer.status_code == 400, (path, answer.text)
            assert answer.json() == {
                "success": False,
                "errorCode": "INVALID_HOST",
                "errorMessage": "This server does not answer for that Host.",
                "errors": [{"field": "Host", "message": "is not a host name this server answers for"}],
            }
        assert http.get(signed, headers={"Host": host, "Range": "bytes=0-9"}).status_code == 400
        assert http.get("/healthz", headers={"Host": host}).status_code == 200  # probes answer any Host
    # Loopback names, any port: URLs are built from the (validated) Host.
    for host in ("localhost", f"localhost:{api.server.port}", "[::1]:8000", "127.0.0.1"):
        answer = http.post("/v1/oauth/token", json=credentials, headers={"Host": host})
        assert answer.status_code == 200 and answer.json()["endpoint"] == f"http://{host}", answer.text
        assert http.get(signed, headers={"Host": host}).status_code == 200
    # With public_base_url set, it is the endpoint whatever the Host.
    monkeypatch.setattr(
        api.context,
        "settings",
        api.context.settings.model_copy(update={"public_base_url": "https://exports.example.com"}),
    )
    answer = http.post("/v1/oauth/token", json=credentials, headers={"Host": "localhost:1"})
    assert answer.json()["endpoint"] == "https://exports.example.com"


# --- 4. headers of every answer, HEAD on downloads, disconnects -----------------------------------------


def test_every_answer_says_nosniff(api, http, tenant):
    signed = publish_part(api, size=1024)
    answers = [
        http.get("/healthz"),
        http.get("/v1/exports", headers=tenant.headers),
        http.get("/v1/exports"),
        http.get("/v1/exports/999999", headers=tenant.headers),
        http.get("/nowhere"),
        http.get("/docs"),
        http.get("/openapi.json"),
        http.get("/metrics"),
        http.get(signed),
        http.get(signed[:-2] + "00"),
        http.post("/v1/oauth/token", json={}),
        http.get("/healthz", headers={"Host": "evil.example"}),
        http.get("/v1/exports", headers={"Host": "evil.example"}),
        http.post("/v1/exports", content=b"[" * 100, headers=tenant.headers),
    ]
    for answer in answers:
        assert answer.headers.get("x-content-type-options") == "nosniff", (answer.request.url, answer.headers)
    download = http.get(signed)
    assert download.headers["cache-control"] == "private, no-store"
    assert "traceback" not in download.text.lower()


def test_head_on_a_download_answers_what_get_would_without_the_bytes(api, http):
    signed = publish_part(api, size=2 * 1024 * 1024)  # streamed by GET (over READ_AT_ONCE)
    for extra in ({}, {"Range": "bytes=100-199"}, {"Range": "bytes=-10"}, {"Range": "bytes=99999999-"}):
        got, head = http.get(signed, headers=extra), http.head(signed, headers=extra)
        assert head.status_code == got.status_code and head.content == b""
        for name in (
            "content-length",
            "content-range",
            "content-type",
            "content-disposition",
            "cache-control",
            "accept-ranges",
            "x-content-type-options",
        ):
            assert head.headers.get(name) == got.headers.get(name), name
    assert http.head(signed).headers["content-length"] == str(2 * 1024 * 1024)
    # The signature and expiry are checked as for GET.
    forged = signed[:-1] + ("0" if signed[-1] != "0" else "1")
    assert http.head(forged).status_code == 403 and http.head(forged).content == b""
    assert http.head(signed.split("?")[0]).status_code == 403
    api.clock.set(datetime.now(UTC) + timedelta(days=2))
    assert http.head(signed).status_code == 410 and http.get(signed).status_code == 410


def test_clients_that_hang_up_leave_no_traceback(api, http, tenant, capfd):
    signed = publish_part(api, size=8 * 1024 * 1024)
    for _ in range(3):  # mid-download: read a little of a streamed part, then close
        sock = open_request(api, f"GET {signed} HTTP/1.1\r\nHost: 127.0.0.1")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        sock.close()
    # Mid-request: half a body, then close, on each route that reads one (ingest reads its own, after its key).
    for path, headers in (
        ("/v1/oauth/token", ""),
        ("/v1/exports", f"\r\nAuthorization: Bearer {tenant.token}"),
        ("/ingest/v1/pageviews", f"\r\nX-Ingest-Key: {tenant.ingest_key}"),
    ):
        sock = slow_post(api, path, headers)
        time.sleep(0.3)
        sock.close()
    time.sleep(1)
    assert http.get("/v1/exports", headers=tenant.headers).status_code == 200
    assert api.context.concurrency.try_acquire(tenant.project_id)  # the slots came back
    api.context.concurrency.release(tenant.project_id)
    assert_no_traceback(capfd)


# --- 5. /metrics ----------------------------------------------------------------------------------------


def test_metrics_answer_loopback_or_the_metrics_token_only(api, http, monkeypatch):
    assert http.get("/metrics").status_code == 200  # the test client is on loopback
    # The test server trusts X-Forwarded-For from loopback (uvicorn's default; `serve` trusts only
    # trusted_proxies): the client is then the forwarded address, as behind a proxy.
    remote = {"X-Forwarded-For": "203.0.113.9"}
    answer = http.get("/metrics", headers=remote)
    assert answer.status_code == 403 and answer.json()["errorCode"] == "METRICS_FORBIDDEN"
    assert "dataexport_" not in answer.text
    assert http.get("/metrics", headers={"X-Forwarded-For": "127.0.0.5"}).status_code == 200

    monkeypatch.setattr(
        api.context, "settings", api.context.settings.model_copy(update={"metrics_token": "scrape-me-" + "m" * 20})
    )
    for headers in ({}, remote, {"Authorization": "Bearer wrong"}, {"Authorization": "scrape-me-" + "m" * 20}):
        answer = http.get("/metrics", headers=headers)
        assert answer.status_code == 401 and answer.json()["errorCode"] == "METRICS_TOKEN_INVALID", headers
    answer = http.get("/metrics", headers={**remote, "Authorization": "Bearer scrape-me-" + "m" * 20})
    assert answer.status_code == 200 and "dataexport_http_requests_total" in answer.text
