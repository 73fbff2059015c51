"""HTTP ingest against the attacks of issue 11, on SQLite and PostgreSQL: each attack fails, the legitimate client
succeeds, nothing is lost or stored twice.

- An Idempotency-Key sent again with other hits is a 422 (it used to be acknowledged as a duplicate and dropped).
- The ingest key is checked before the body is read; the body is read with a cap (413) and a deadline (408).
- Hits in the future or older than the project's retention are refused one by one; a batch over too many session
  days is refused whole (3,000 hits on 3,000 days once made 3,000 files).
- Bulk load (`load_files`, `dataexport load`) refuses the future and what the retention would delete, but takes any
  number of days.
"""

from __future__ import annotations

import json
import select
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from sqlalchemy import update

from dataexport.ingest.bulkload import load_files
from dataexport.ingest.hits_columnar import HitWindow
from dataexport.metadata.models import Project
from dataexport.warehouse.embedded import EmbeddedWarehouse
from processes import Service, answers, service_env, wait_until
from support import free_port

INGEST = "/ingest/v1/pageviews"
MB = 1024 * 1024


def hit(i: int, when: datetime, **extra) -> dict:
    """Hit `i` of a small batch (as test_api_ingest's): three visitors, one view a session."""
    base = {
        "user_id_unhashed": f"visitor-{i % 3}",
        "session_number": 1 + i // 3,
        "view_number": 1,
        "session_time": z(when),
        "view_time": z(when),
        "device_id": 1,
        "url": f"https://shop.example/p/{i}",
    }
    base.update(extra)
    return base


def stored_count(api, project_id: int) -> int:
    root = api.context.settings.resolved_warehouse_dir
    files = [str(f) for f in root.glob(f"pageviews/project_id={project_id}/*/*.parquet")]
    return duckdb.connect().execute("SELECT count(*) FROM read_parquet(?)", [files]).fetchone()[0] if files else 0


def z(instant: datetime) -> str:
    return instant.isoformat().replace("+00:00", "Z")


def at(i: int, when: datetime) -> dict:
    """Hit `i` (its own visitor and session) at `when`."""
    return hit(0, when, user_id_unhashed=f"visitor-{i}", session_number=1)


def partitions(api, project_id: int) -> list[Path]:
    root = api.context.settings.resolved_warehouse_dir
    return sorted(root.glob(f"pageviews/project_id={project_id}/session_day=*"))


def post(http, tenant, body, **headers):
    return http.post(INGEST, json=body, headers={"X-Ingest-Key": tenant.ingest_key, **headers})


# -- a client that sends what httpx will not: a declared length it never sends, a body slower than the deadline --


PIECE = 64 * 1024


def raw_post(
    port: int,
    headers: dict[str, str],
    body_bytes: int = 0,
    *,
    chunked: bool = False,
    stall_after: int | None = None,
    timeout: float = 60,
) -> tuple[int, int, dict]:
    """POST `body_bytes` of junk to the ingest route over a bare socket, as fast as the server takes them, reading
    the answer as soon as there is one. With `stall_after`, stop sending after that many bytes and wait.

    Returns (status, body bytes sent when the answer arrived, the answer's JSON).
    """
    lines = [f"POST {INGEST} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {body_bytes}")
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    # Small pieces: a blocking sendall of a large one could outlast the server's lingering close on a loaded
    # machine, and the reset that follows it drops the answer waiting unread in this socket.
    block = b"[" + b" " * (PIECE - 1)
    sent, answered_at, answer = 0, None, b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            sending = sent < body_bytes and (stall_after is None or sent < stall_after)
            readable, writable, _ = select.select([sock], [sock] if sending else [], [], 1)
            if readable:
                data = sock.recv(65536)
                if answered_at is None:
                    answered_at = sent
                if not data:
                    break
                answer += data
                if b"\r\n\r\n" in answer and _complete(answer):
                    break
            elif writable:
                size = min(PIECE, body_bytes - sent, PIECE if stall_after is None else stall_after - sent)
                piece = block[:size]
                if chunked:
                    piece = f"{size:x}\r\n".encode() + piece + b"\r\n"
                try:
                    sock.sendall(piece)
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += size
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    assert answer, f"no answer after {sent:,} bytes"
    head, _, payload = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, sent if answered_at is None else answered_at, json.loads(payload) if payload else {}


def _complete(answer: bytes) -> bool:
    head, _, payload = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(payload) >= int(line.split(b":", 1)[1])
    return False


# -- 1. idempotency keys --------------------------------------------------------------------------------------------


def test_a_key_sent_again_with_other_hits_is_refused_and_stores_nothing(api, http, tenant):
    now = datetime.now(UTC) - timedelta(hours=1)
    first = [hit(i, now) for i in range(3)]
    assert post(http, tenant, first, **{"Idempotency-Key": "order-1"}).json()["payload"]["stored"] == 3

    changed = [hit(i, now, url=f"https://shop.example/changed/{i}") for i in range(3)]  # same pageviews, other data
    for body in (changed, [hit(i, now) for i in range(4)], first[:2]):
        answer = post(http, tenant, body, **{"Idempotency-Key": "order-1"})
        assert answer.status_code == 422, answer.text
        error = answer.json()
        assert error["success"] is False and error["errorCode"] == "IDEMPOTENCY_KEY_REUSED"
        assert [e["field"] for e in error["errors"]] == ["Idempotency-Key"]
    assert stored_count(api, tenant.project_id) == 3

    # The legitimate retry: the same hits, in any of the accepted shapes, is a duplicate and stores nothing.
    for retry in (
        {"json": first},
        {"json": {"hits": first}},
        {
            "content": "\n".join(json.dumps(h) for h in first).encode(),
            "headers": {"Content-Type": "application/x-ndjson"},
        },
    ):
        headers = {"X-Ingest-Key": tenant.ingest_key, "Idempotency-Key": "order-1", **retry.pop("headers", {})}
        again = http.post(INGEST, headers=headers, **retry)
        assert again.status_code == 200 and again.json()["payload"]["duplicate"] is True, again.text
    # A new key for the changed hits is a new batch.
    assert post(http, tenant, changed, **{"Idempotency-Key": "order-2"}).json()["payload"]["duplicate"] is False
    assert stored_count(api, tenant.project_id) == 6


def test_a_reused_key_is_recognised_after_a_restart_and_by_another_process(api, http, tenant):
    now = datetime.now(UTC) - timedelta(hours=1)
    assert post(http, tenant, [hit(0, now)], **{"Idempotency-Key": "k"}).status_code == 200
    # A restarted server (or another API process) has only the batch log on disk to go by.
    api.context.warehouse.close()
    api.context.warehouse = EmbeddedWarehouse(api.context.settings.resolved_warehouse_dir)
    assert post(http, tenant, [hit(1, now)], **{"Idempotency-Key": "k"}).status_code == 422
    assert post(http, tenant, [hit(0, now)], **{"Idempotency-Key": "k"}).json()["payload"]["duplicate"] is True
    assert stored_count(api, tenant.project_id) == 1


def test_without_a_key_a_resend_is_identified_by_its_pageviews(api, http, tenant):
    now = datetime.now(UTC) - timedelta(hours=1)
    hits = [hit(i, now) for i in range(3)]
    assert post(http, tenant, hits).json()["payload"]["duplicate"] is False
    # Same pageviews (visitor, session, view), other fields: the same batch as far as the store knows.
    changed = [hit(i, now, title="edited") for i in range(3)]
    assert post(http, tenant, changed).json()["payload"]["duplicate"] is True
    # One pageview more: another batch; the repeated ones are stored again until compaction keeps one of each.
    assert post(http, tenant, [*hits, hit(3, now)]).json()["payload"]["duplicate"] is False
    assert stored_count(api, tenant.project_id) == 3 + 4


# -- 2. the key before the body, and a bounded body -----------------------------------------------------------------


def test_the_ingest_key_is_checked_before_a_byte_of_the_body_is_read(api, tenant):
    port = api.server.port
    declared = 64 * MB  # declared, never sent: an answer proves the server did not wait for the body
    assert raw_post(port, {}, declared, stall_after=0)[0] == 401
    status, _, error = raw_post(port, {"X-Ingest-Key": "ik_forged"}, declared, stall_after=0)
    assert status == 401 and error["errorCode"] == "INGEST_KEY_INVALID"
    # A good key over the cap: refused on its Content-Length, before reading.
    status, _, error = raw_post(port, {"X-Ingest-Key": tenant.ingest_key}, declared, stall_after=0)
    assert status == 413 and error["errorCode"] == "PAYLOAD_TOO_LARGE" and error["errors"][0]["field"] == "body"


def test_a_chunked_body_is_cut_off_at_the_cap(api, tenant):
    status, sent, error = raw_post(api.server.port, {"X-Ingest-Key": tenant.ingest_key}, 128 * MB, chunked=True)
    assert status == 413 and error["errorCode"] == "PAYLOAD_TOO_LARGE"
    assert sent < 64 * MB, f"the server read {sent:,} bytes before refusing"
    assert stored_count(api, tenant.project_id) == 0


def test_a_body_slower_than_the_deadline_gets_408_and_the_next_client_is_served(api, http, tenant, monkeypatch):
    monkeypatch.setattr(api.context.settings, "body_timeout_seconds", 1.0)
    started = time.monotonic()
    status, _, error = raw_post(api.server.port, {"X-Ingest-Key": tenant.ingest_key}, 1000, stall_after=10, timeout=30)
    assert status == 408 and error["errorCode"] == "REQUEST_TIMEOUT"
    assert time.monotonic() - started < 20  # the deadline is 1 s; without one the socket's 30 s would run out
    answer = post(http, tenant, [hit(0, datetime.now(UTC) - timedelta(minutes=5))])
    assert answer.status_code == 200 and answer.json()["payload"]["stored"] == 1


@pytest.fixture
def served(tmp_path, database_url):
    """A real `dataexport serve` process (one API process) on the backend's database, and a project's ingest key."""
    from dataexport import admin
    from dataexport.metadata.db import make_engine, make_sessionmaker, migrate, transaction

    engine = make_engine(database_url)
    migrate(engine)
    with transaction(make_sessionmaker(engine)) as session:
        key = admin.create_project(session, name="Attacked", now=datetime.now(UTC)).ingest_key
    engine.dispose()
    port = free_port()
    env = service_env(
        {
            "DATAEXPORT_DATA_DIR": str(tmp_path),
            "DATAEXPORT_DATABASE_URL": database_url,
            "DATAEXPORT_JWT_SECRET": "hardening-jwt-secret-" + "x" * 32,
            "DATAEXPORT_LOG_JSON": "true",
        }
    )
    service = Service(
        "serve",
        ("serve", "--port", str(port), "--processes", "1", "--no-scheduler", "--no-worker"),
        env,
        tmp_path,
        port=port,
    ).start()
    wait_until(lambda: answers(service.url), [service], "serve answers")
    yield service, key
    service.stop()


def _memory_kb(pid: int) -> dict[str, int]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {name: int(fields[name].split()[0]) for name in ("VmRSS", "VmHWM")}


def test_a_256_mb_body_without_a_good_key_leaves_the_servers_memory_flat(served):
    service, key = served
    before = _memory_kb(service.proc.pid)
    for headers in ({}, {"X-Ingest-Key": "ik_forged"}):
        status, sent_before_answer, _ = raw_post(service.port, headers, 256 * MB)
        assert status == 401
        assert sent_before_answer < 32 * MB, "the server waited for the body before answering"
    after = _memory_kb(service.proc.pid)
    print(
        f"\nserve RSS before {before['VmRSS'] / 1024:.0f} MB, after {after['VmRSS'] / 1024:.0f} MB, "
        f"peak before {before['VmHWM'] / 1024:.0f} MB, after {after['VmHWM'] / 1024:.0f} MB"
    )
    assert after["VmHWM"] - before["VmRSS"] < 48 * 1024, "the server buffered the body"
    # And it still serves the legitimate client.
    import httpx

    good = httpx.post(
        f"{service.url}{INGEST}",
        json=[hit(0, datetime.now(UTC) - timedelta(minutes=1))],
        headers={"X-Ingest-Key": key},
        timeout=30,
    )
    assert good.status_code == 200 and good.json()["payload"]["stored"] == 1


# -- 3. times and session days --------------------------------------------------------------------------------------


def test_hits_in_the_future_or_past_the_retention_are_refused_one_by_one(api, http, tenant):
    now = datetime.now(UTC)
    view_tomorrow = hit(0, now, user_id_unhashed="visitor-2", session_number=1, view_time=z(now + timedelta(days=1)))
    hits = [
        at(0, now - timedelta(hours=2)),  # good
        at(1, now + timedelta(hours=1)),  # the future: both times
        view_tomorrow,  # the future: view_time only
        at(3, datetime(9999, 12, 31, tzinfo=UTC)),
        at(4, now - timedelta(days=400)),  # past the 395 days kept
        at(5, datetime(1970, 1, 1, tzinfo=UTC)),
        at(6, now + timedelta(seconds=60)),  # clock skew: allowed
        at(7, now - timedelta(days=394)),  # still kept
    ]
    answer = post(http, tenant, hits)
    assert answer.status_code == 200, answer.text
    payload = answer.json()["payload"]
    assert (payload["stored"], payload["rejected"]) == (3, 5)
    assert [(e["index"], e["field"]) for e in payload["errors"]] == [
        (1, "session_time"),
        (1, "view_time"),
        (2, "view_time"),
        (3, "session_time"),
        (3, "view_time"),
        (4, "session_time"),
        (5, "session_time"),
    ]
    messages = {e["index"]: e["message"] for e in payload["errors"]}
    assert "clock skew" in messages[1] and "keeps 395 days" in messages[4]
    assert stored_count(api, tenant.project_id) == 3


def test_the_retention_bound_is_the_projects_own(api, http, tenant):
    with api.context.engine.begin() as conn:
        conn.execute(update(Project).where(Project.id == tenant.project_id).values(retention_days=30))
    api.context.projects.clear()
    now = datetime.now(UTC)
    answer = post(http, tenant, [at(0, now - timedelta(days=29)), at(1, now - timedelta(days=31))])
    payload = answer.json()["payload"]
    assert (payload["stored"], payload["rejected"]) == (1, 1)
    assert payload["errors"][0]["field"] == "session_time" and "keeps 30 days" in payload["errors"][0]["message"]


def test_a_batch_of_only_out_of_range_hits_is_a_400_naming_each(api, http, tenant):
    answer = post(http, tenant, [at(0, datetime(9999, 1, 1, tzinfo=UTC)), at(1, datetime(1971, 1, 1, tzinfo=UTC))])
    assert answer.status_code == 400 and answer.json()["errorCode"] == "INVALID_HITS"
    assert [e["field"] for e in answer.json()["errors"]] == [
        "hits[0].session_time",
        "hits[0].view_time",
        "hits[1].session_time",
    ]
    assert partitions(api, tenant.project_id) == []


def test_the_3000_days_attack_makes_no_partition(api, http, tenant):
    # 3,000 hits on 3,000 consecutive session days up to today: those past the retention are refused one by one,
    # and the 395 left are still too many days for one batch, so nothing reaches the store.
    now = datetime.now(UTC) - timedelta(minutes=1)
    answer = post(http, tenant, [at(d, now - timedelta(days=d)) for d in range(3000)])
    assert answer.status_code == 400, answer.text
    assert [e["field"] for e in answer.json()["errors"]] == ["hits"]
    # Spread from 1970 to 9999 instead, only the hits that fall in the window could be stored.
    first, last = datetime(1970, 1, 2, tzinfo=UTC), datetime(9999, 1, 1, tzinfo=UTC)
    spread = [at(i, first + (last - first) / 2999 * i) for i in range(3000)]
    kept = [h for h in spread if now - timedelta(days=394) < datetime.fromisoformat(h["session_time"]) < now]
    answer = post(http, tenant, spread)
    assert answer.status_code == (200 if kept else 400)
    assert len(partitions(api, tenant.project_id)) == len(kept) <= 1


def test_a_batch_over_too_many_session_days_is_refused_whole(api, http, tenant):
    limit = api.context.settings.ingest_max_partitions_per_batch
    now = datetime.now(UTC) - timedelta(hours=1)
    spread = [at(d, now - timedelta(days=d)) for d in range(limit + 1)]  # every day within the retention
    answer = post(http, tenant, spread)
    assert answer.status_code == 400, answer.text
    error = answer.json()
    assert error["success"] is False and [e["field"] for e in error["errors"]] == ["hits"]
    assert f"at most {limit} session days" in error["errors"][0]["message"]
    assert partitions(api, tenant.project_id) == []
    # The legitimate client: the same hits over `limit` days per request are all stored, once.
    for part in (spread[:limit], spread[limit:]):
        assert post(http, tenant, part).json()["payload"]["stored"] == len(part)
    assert len(partitions(api, tenant.project_id)) == limit + 1
    assert stored_count(api, tenant.project_id) == limit + 1


# -- bulk load: history, but neither the future nor what retention deletes ------------------------------------------


def test_bulk_load_takes_history_over_many_days_but_not_the_future_or_past_retention(tmp_path):
    now = datetime.now(UTC)
    records = [at(d, now - timedelta(days=d, hours=1)) for d in range(100)]  # 100 session days of history
    records += [
        at(100, now + timedelta(days=1)),
        at(101, now - timedelta(days=200)),
        at(102, datetime(9999, 1, 1, tzinfo=UTC)),
    ]
    path = tmp_path / "history.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    window = HitWindow.at(now, max_future_seconds=300, retention_days=150)
    with EmbeddedWarehouse(tmp_path / "wh") as store:
        summary = load_files(store, 1, [path], window=window)
    assert (summary.rows_stored, summary.rows_rejected) == (100, 3)
    assert [(s.index, s.field) for s in summary.samples] == [
        (101, "session_time"),
        (101, "view_time"),
        (102, "session_time"),
        (103, "session_time"),
        (103, "view_time"),
    ]  # 1-based line numbers of the file
    assert len(list((tmp_path / "wh" / "pageviews" / "project_id=1").iterdir())) == 100
    # Without a window the future is still refused (the default skew); the past is not bounded.
    with EmbeddedWarehouse(tmp_path / "wh2") as store:
        summary = load_files(store, 1, [path])
    assert (summary.rows_stored, summary.rows_rejected) == (101, 2)
