"""The attack round of issue 11, replayed against the real `dataexport serve` (its uvicorn options included):
hostile Range headers, slow bodies, slow and bloated headers, and a flood of connections, while another
tenant's calls keep answering fast; then what a trusted proxy may tell the server, with `--processes 2`.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from dataexport.api.uvicorn_protocol import MAX_HEADER_BYTES
from processes import Service, service_env, wait_until
from support import free_port

pytestmark = pytest.mark.acceptance

JWT_SECRET = "acceptance-http-edge-" + "k" * 32
PART_KEY = "exports/1/1/1/part-00000.csv.gz"
HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 5.0  # long enough for the other tenants' calls to run while the slow bodies are still pending
MAX_CONNECTIONS = 40
FAST = 2.0  # seconds: every call of the other tenant answers within this while the attack runs
SLOW_BODIES = 10


@dataclass
class Tenant:
    project_id: int
    credentials: dict[str, str]  # the body of a token request
    headers: dict[str, str]


@dataclass
class Served:
    service: Service
    tenants: list[Tenant]
    signed_path: str  # a signed download URL of the first tenant's part: path and query

    @property
    def port(self) -> int:
        return self.service.port

    @property
    def url(self) -> str:
        return self.service.url


def _make_tenants(data_dir: Path, count: int) -> list[dict]:
    """Projects and clients created in this process (what `dataexport projects create` and `clients create`
    do, without two interpreter start-ups each)."""
    from dataexport import admin
    from dataexport.metadata.db import make_engine, make_sessionmaker, migrate, transaction

    engine = make_engine(f"sqlite:///{data_dir / 'metadata.db'}")
    try:
        migrate(engine)
        made = []
        with transaction(make_sessionmaker(engine)) as session:
            for i in range(count):
                now = datetime.now(UTC)
                project = admin.create_project(session, name=f"Shop {i}", now=now)
                client = admin.create_client(session, now=now, project_id=project.project.id)
                made.append(
                    {
                        "project_id": project.project.id,
                        "client_id": client.client.client_id,
                        "client_secret": client.secret,
                    }
                )
        return made
    finally:
        engine.dispose()


def _publish_part(data_dir: Path) -> str:
    from dataexport.config import Settings
    from dataexport.storage import build_storage

    storage = build_storage(Settings(data_dir=data_dir, jwt_secret=JWT_SECRET))  # the server's own storage
    source = data_dir / "part.bin"
    source.write_bytes(bytes(range(256)) * 4096)
    storage.publish(source, PART_KEY)
    parts = urlsplit(
        storage.download_url(PART_KEY, expires_at=datetime.now(UTC) + timedelta(hours=2), base_url="http://x")
    )
    return f"{parts.path}?{parts.query}"


def _serve(data_dir: Path, env: dict[str, str], processes: int = 1) -> Served:
    data_dir.mkdir(parents=True, exist_ok=True)
    made = _make_tenants(data_dir, 2)
    signed = _publish_part(data_dir)
    port = free_port()
    service = Service(
        "api",
        ("serve", "--no-scheduler", "--no-worker", "--port", str(port), "--processes", str(processes)),
        service_env(
            {
                "DATAEXPORT_DATA_DIR": str(data_dir),
                "DATAEXPORT_JWT_SECRET": JWT_SECRET,
                "DATAEXPORT_LOG_JSON": "true",
                **env,
            }
        ),
        data_dir,
        port=port,
    ).start()
    try:
        wait_until(lambda: _answers(service.url), [service], "serve started")
        tenants = []
        for tenant in made:
            credentials = {
                "client_id": tenant["client_id"],
                "client_secret": tenant["client_secret"],
                "grant_type": "client_credentials",
                "scope": "data-export",
            }
            answer = httpx.post(f"{service.url}/v1/oauth/token", timeout=30, data=credentials)
            assert answer.status_code == 200, answer.text
            token = answer.json()["access_token"]
            tenants.append(Tenant(tenant["project_id"], credentials, {"Authorization": f"Bearer {token}"}))
    except BaseException:
        service.stop()
        raise
    return Served(service, tenants, signed)


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _stop_without_tracebacks(served: Served) -> None:
    served.service.stop()
    log = "\n".join(p.read_text(errors="replace") for p in sorted(served.service.log_dir.glob("api.*.log")))
    assert "Traceback" not in log and "api.unhandled_error" not in log, log[-3000:]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One API process with short deadlines and a small connection limit, nothing else configured."""
    served = _serve(
        tmp_path_factory.mktemp("edge"),
        {
            "DATAEXPORT_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
            "DATAEXPORT_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
            "DATAEXPORT_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        },
    )
    yield served
    _stop_without_tracebacks(served)


# --- raw HTTP/1.1 over a socket: what a well-behaved client never sends ----------------------------------


def connect(served: Served, data: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", served.port), timeout=30)
    if data:
        sock.sendall(data)
    return sock


def read_until_closed(sock: socket.socket, timeout: float = 30) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def status_of(answer: bytes) -> int | None:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None


def envelope_of(answer: bytes) -> dict:
    return json.loads(answer.partition(b"\r\n\r\n")[2])


def request_head(path: str, *headers: str, method: str = "GET") -> bytes:
    return "\r\n".join([f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *headers, "", ""]).encode("latin-1")


def timed_calls(served: Served, tenant: Tenant, count: int) -> list[float]:
    elapsed = []
    with httpx.Client(base_url=served.url, timeout=30, headers=tenant.headers) as client:
        for i in range(count):
            started = time.monotonic()
            answer = client.get("/v1/exports" if i % 2 else "/v1/exportable-fields?scope=views")
            elapsed.append(time.monotonic() - started)
            assert answer.status_code == 200, answer.text
    return elapsed


# --- the attack round ------------------------------------------------------------------------------------


def test_the_attack_round_stalls_no_other_tenant(served):
    attacker, other = served.tenants
    token_header = f"Authorization: {attacker.headers['Authorization']}"
    stop = threading.Event()
    range_answers: list[tuple[int, float]] = []

    def hostile_ranges() -> None:
        hostile = "bytes=" + " " * 1500 + "-" + " " * 1500 + "x"  # 3 KB: 15.4 s of CPU with the old regex
        with httpx.Client(base_url=served.url, timeout=60) as client:
            while not stop.is_set():
                started = time.monotonic()
                answer = client.get(served.signed_path, headers={"Range": hostile})
                range_answers.append((answer.status_code, time.monotonic() - started))

    def slow_body() -> tuple[int | None, float, float]:
        started = time.monotonic()
        sock = connect(
            served,
            request_head(
                "/v1/exports", token_header, "Content-Type: application/json", "Content-Length: 100", method="POST"
            )
            + b"{",
        )
        answer = read_until_closed(sock)
        sock.close()
        return status_of(answer), time.monotonic() - started, time.monotonic()

    def slow_headers() -> tuple[int | None, float]:
        started = time.monotonic()
        sock = connect(served, b"GET /v1/exports HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        answer = read_until_closed(sock)
        sock.close()
        return status_of(answer), time.monotonic() - started

    with ThreadPoolExecutor(4 + SLOW_BODIES) as pool:
        ranges = [pool.submit(hostile_ranges) for _ in range(2)]
        bodies = [pool.submit(slow_body) for _ in range(SLOW_BODIES)]
        headers = [pool.submit(slow_headers) for _ in range(2)]
        big_range = connect(served, request_head(served.signed_path, "Range: bytes=" + " " * 200_000 + "-x"))
        time.sleep(0.3)  # every attack is on
        try:
            other_calls = timed_calls(served, other, 20)
            own_calls = timed_calls(served, attacker, 10)  # its own slow bodies hold none of its slots
            calls_done = time.monotonic()
        finally:
            stop.set()
        body_answers = [b.result() for b in bodies]
        header_answers = [h.result() for h in headers]
        for r in ranges:
            r.result()
    big_answer = read_until_closed(big_range)
    big_range.close()

    print(
        f"\nduring the attack: other tenant's slowest call {max(other_calls):.3f} s, attacker's own "
        f"{max(own_calls):.3f} s; 3 KB Range answered in at most {max(s for _, s in range_answers):.3f} s "
        f"({len(range_answers)} sent); slow bodies answered after {min(b[1] for b in body_answers):.2f}-"
        f"{max(b[1] for b in body_answers):.2f} s; slow headers after {max(s for _, s in header_answers):.2f} s"
    )
    assert max(other_calls) < FAST and max(own_calls) < FAST, (other_calls, own_calls)
    assert calls_done < min(answered for _, _, answered in body_answers)  # all of them while the bodies stalled
    assert range_answers and all(status == 200 for status, _ in range_answers)  # ignored: the whole file
    assert max(seconds for _, seconds in range_answers) < FAST
    assert status_of(big_answer) == 431 and envelope_of(big_answer)["errorCode"] == "HEADERS_TOO_LARGE"
    for status, seconds, _ in body_answers:
        assert status == 408 and BODY_TIMEOUT <= seconds < BODY_TIMEOUT + 10, body_answers
    for status, seconds in header_answers:
        assert status == 408 and HEADER_TIMEOUT <= seconds < HEADER_TIMEOUT + 10, header_answers
    # Once refused, the slow bodies leave the attacker's project every one of its 10 request slots.
    with ThreadPoolExecutor(10) as pool:
        statuses = list(
            pool.map(
                lambda _: httpx.get(f"{served.url}/v1/exports", headers=attacker.headers, timeout=30).status_code,
                range(10),
            )
        )
    assert statuses == [200] * 10


# --- the uvicorn options ---------------------------------------------------------------------------------


def test_request_headers_over_the_cap_are_refused(served):
    filler = "X-Filler: " + "a" * (MAX_HEADER_BYTES - 1024)
    fits = connect(served, request_head("/healthz", filler, "Connection: close"))
    assert status_of(read_until_closed(fits)) == 200
    for too_big in (
        request_head("/healthz", "X-Filler: " + "a" * MAX_HEADER_BYTES),
        request_head("/healthz", *[f"X-Many-{i}: {'b' * 40}" for i in range(400)]),
        request_head("/healthz?" + "q" * MAX_HEADER_BYTES),
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Never-Ends: " + b"c" * 2 * MAX_HEADER_BYTES,
    ):
        sock = connect(served, too_big)
        started = time.monotonic()
        answer = read_until_closed(sock)  # at once for the header that never ends, not at the header deadline
        sock.close()
        assert status_of(answer) == 431 and time.monotonic() - started < HEADER_TIMEOUT, answer[:300]
        assert envelope_of(answer) == {
            "success": False,
            "errorCode": "HEADERS_TOO_LARGE",
            "errorMessage": "The request headers are too large.",
            "errors": [{"field": "headers", "message": f"must be at most {MAX_HEADER_BYTES:,} bytes in all"}],
        }
        assert b"x-content-type-options: nosniff" in answer


def test_a_connection_must_send_its_headers_in_time(served):
    # Headers that stop coming, or that trickle in a byte at a time: 408 at the deadline, whatever was sent.
    for trickle in (False, True):
        # Taken before connecting: the server arms its deadline when it accepts, which may precede connect()'s return.
        started = time.monotonic()
        sock = connect(served, b"GET /healthz HTTP/1.1\r\n")
        if trickle:
            for byte in b"Host: 127.0.0.1\r\nX-Slow: " + b"s" * 40:
                if select.select([sock], [], [], 0.2)[0]:  # answered: stop sending
                    break
                sock.send(bytes([byte]))
        answer = read_until_closed(sock)
        sock.close()
        assert status_of(answer) == 408, answer
        assert HEADER_TIMEOUT <= time.monotonic() - started < HEADER_TIMEOUT + 5
        assert envelope_of(answer)["errors"] == [
            {"field": "headers", "message": f"must be sent completely within {HEADER_TIMEOUT:g} seconds"}
        ]
    # A connection that sends nothing is closed at the deadline, without an answer.
    started = time.monotonic()
    silent = connect(served)
    assert read_until_closed(silent) == b"" and time.monotonic() - started < HEADER_TIMEOUT + 5
    silent.close()
    # A malformed request line gets the envelope too.
    answer = read_until_closed(connect(served, b"NOT HTTP AT ALL\r\n\r\n"))
    assert status_of(answer) == 400 and envelope_of(answer)["errorCode"] == "BAD_REQUEST"


def test_connections_beyond_the_limit_are_answered_503(served):
    idle = [connect(served) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.2)  # accepted by the server (well within the header deadline)
        assert httpx.get(f"{served.url}/healthz", timeout=10).status_code == 503
    finally:
        for sock in idle:
            sock.close()
    wait_until(lambda: _answers(served.url), [served.service], "answers again once the connections closed", timeout=10)


def test_forwarded_headers_from_an_untrusted_client_are_ignored(served):
    forged = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example", "X-Forwarded-For": "203.0.113.9"}
    with httpx.Client(base_url=served.url, timeout=30, headers=forged) as client:
        # uvicorn's default trusts any loopback client: here nobody is trusted (trusted_proxies is empty).
        assert client.get("/metrics").status_code == 200  # still the loopback client it really is
        answer = client.get("/v1/exports", headers={**served.tenants[0].headers, "Host": "evil.example"})
        assert answer.status_code == 400 and answer.json()["errorCode"] == "INVALID_HOST"
        assert client.head(served.signed_path).status_code == 200


@pytest.fixture(scope="module")
def behind_proxy(tmp_path_factory):
    """Two API processes (each gets the uvicorn options through spawn), behind a proxy on loopback."""
    served = _serve(
        tmp_path_factory.mktemp("proxied"),
        {
            "DATAEXPORT_TRUSTED_PROXIES": '["127.0.0.1"]',
            "DATAEXPORT_ALLOWED_HOSTS": '["api.example", "alt.example:9443"]',
            "DATAEXPORT_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        },
        processes=2,
    )
    yield served
    _stop_without_tracebacks(served)


def test_a_trusted_proxy_names_the_scheme_and_client_and_the_allowed_hosts_answer(behind_proxy):
    served = behind_proxy
    tenant = served.tenants[0]
    with httpx.Client(base_url=served.url, timeout=30) as client:
        run = client.get("/v1/exports", headers={**tenant.headers, "Host": "api.example"})
        assert run.status_code == 200
        assert client.get("/v1/exports", headers={**tenant.headers, "Host": "alt.example:9443"}).status_code == 200
        for refused in ("alt.example", "alt.example:443", "evil.example"):
            answer = client.get("/v1/exports", headers={**tenant.headers, "Host": refused})
            assert answer.status_code == 400 and answer.json()["errorCode"] == "INVALID_HOST", refused
        # From the trusted proxy, X-Forwarded-For is the client (so /metrics is not loopback any more).
        assert client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 403
        assert client.get("/metrics").status_code == 200
    # X-Forwarded-Proto names the scheme of the URLs handed out; X-Forwarded-Host is never honoured.
    for _ in range(4):  # new connections: spread over both processes
        with httpx.Client(base_url=served.url, timeout=30) as client:
            answer = client.post(
                "/v1/oauth/token",
                data=tenant.credentials,
                headers={"Host": "api.example:8443", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"},
            )
            assert answer.status_code == 200 and answer.json()["endpoint"] == "https://api.example:8443", answer.text
    # The header deadline holds in each spawned process.
    for _ in range(2):
        sock = connect(served, b"GET /healthz HTTP/1.1\r\n")
        assert status_of(read_until_closed(sock)) == 408
        sock.close()
