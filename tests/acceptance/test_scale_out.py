"""Scale-out: two API replicas, one scheduler and two workers, as separate processes on one PostgreSQL
database and one S3 server (SeaweedFS, which checks signatures), sharing a Parquet warehouse and a JWT secret.

A client drives both replicas with one token; every run must succeed exactly once (attempts == 1, unique
file rows, one `export.run.finished` in all worker logs), both workers must have taken runs, and every
part must download through its presigned URL with no Authorization header and add up to the run's rows.
"""

from __future__ import annotations

import gzip
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import cycle
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from processes import Service, answers, cli_json, count_part_records, service_env, stamp, wait_until
from support import create_pg_database, drop_pg_database, free_port, postgres_available

pytestmark = [
    pytest.mark.acceptance,
    # conftest turns a missing PostgreSQL into a usage error when DATAEXPORT_TEST_REQUIRE_POSTGRES is set.
    pytest.mark.skipif(not postgres_available(), reason="PostgreSQL does not answer on 127.0.0.1:5432"),
]

JWT_SECRET = "scale-out-jwt-secret-" + "s" * 32
# Small parts so that every run publishes several objects; a session timeout of one minute so that one
# job can be created with a run the scheduler process (and only it) has to promote.
PART_MAX_BYTES = 48 * 1024
SESSION_TIMEOUT_MINUTES = 1
DEMO_DAYS = 4
DEMO_SESSIONS_PER_DAY = 1200
RUNS_TIMEOUT = 60
FIELDS = {
    "views": [
        {"fieldName": "session_id"},
        {"fieldName": "view_number"},
        {"fieldName": "url"},
        {"fieldName": "title", "aliasName": "Page title"},
        {"fieldName": "view_time"},
        {"fieldName": "country_code"},
        {"fieldName": "custom_var", "customVarPosition": 2},
    ],
    "sessions": [
        {"fieldName": "session_id"},
        {"fieldName": "user_id"},
        {"fieldName": "session_number_of_views"},
        {"fieldName": "browser_name"},
        {"fieldName": "referer_url"},
        {"fieldName": "session_duration_msec"},
    ],
}


def _env(base: dict[str, str]) -> dict[str, str]:
    return service_env(base)


def _start(name: str, env: dict[str, str], log_dir: Path, *args: str, port: int | None = None) -> Service:
    return Service(name, args, env, log_dir, port).start()


def _stop(services: list[Service]) -> dict[str, int | None]:
    """SIGTERM to all at once (workers hand back or finish their run), then their exit codes."""
    for service in services:
        service.terminate()
    return {service.name: service.stop() for service in services}


def _once_job(fmt: str, scope: str, device: str, start: datetime, end: datetime) -> dict:
    return {
        "name": f"scale-out {fmt} {scope} {device}",
        "format": fmt,
        "scope": scope,
        "deviceLabel": device,
        "frequency": {"value": "once", "dateRange": {"from": stamp(start), "to": stamp(end)}},
        "fields": FIELDS[scope],
    }


@pytest.fixture
def pg_url():
    url = create_pg_database()
    yield url
    drop_pg_database(url)


@pytest.fixture
def cluster(tmp_path, pg_url, s3_server):
    """Seeded data, then 2 APIs + 1 scheduler + 2 workers; yields (apis, workers, scheduler, client, pg_url)."""
    from dataexport.demo.generate import generate
    from dataexport.warehouse.embedded import EmbeddedWarehouse

    data_dir, log_dir = tmp_path / "data", tmp_path / "logs"
    log_dir.mkdir()
    env = _env(
        {
            "DATAEXPORT_DATA_DIR": str(data_dir),
            "DATAEXPORT_DATABASE_URL": pg_url,
            "DATAEXPORT_JWT_SECRET": JWT_SECRET,
            "DATAEXPORT_LOG_JSON": "true",
            **s3_server.env(bucket="scale-out"),
            "DATAEXPORT_PART_MAX_BYTES": str(PART_MAX_BYTES),
            "DATAEXPORT_POLL_INTERVAL_SECONDS": "0.2",
            "DATAEXPORT_SESSION_TIMEOUT_MINUTES": str(SESSION_TIMEOUT_MINUTES),
        }
    )
    # The CLI migrates the fresh database once, before the replicas start.
    project = cli_json(env, "projects", "create", "--name", "Scale out")
    client = cli_json(env, "clients", "create", "--project", str(project["project_id"]))
    with EmbeddedWarehouse(data_dir / "warehouse") as store:
        summary = generate(
            store, project["project_id"], days=DEMO_DAYS, sessions_per_day=DEMO_SESSIONS_PER_DAY, now=datetime.now(UTC)
        )
    assert summary.pageviews > 3000

    services = [
        _start(
            "api-a", env, log_dir, "serve", "--no-scheduler", "--no-worker", "--port", str(pa := free_port()), port=pa
        ),
        _start(
            "api-b", env, log_dir, "serve", "--no-scheduler", "--no-worker", "--port", str(pb := free_port()), port=pb
        ),
        _start("scheduler", env, log_dir, "scheduler"),
        _start("worker-1", env, log_dir, "worker"),
        _start("worker-2", env, log_dir, "worker"),
    ]
    apis, scheduler, workers = services[:2], services[2], services[3:]
    try:
        wait_until(lambda: all(answers(a.url) for a in apis), services, "the API replicas did not start")
        # Jobs are created only when both workers poll, so neither gets a head start on the queue.
        wait_until(
            lambda: (
                all(any(e.get("event") == "worker.started" for e in w.events()) for w in workers)
                and any(e.get("event") == "scheduler.started" for e in scheduler.events())
            ),
            services,
            "the worker and scheduler loops did not start",
        )
        yield apis, workers, scheduler, client, pg_url
    finally:
        _stop(services)


def test_two_apis_two_workers_one_scheduler_on_postgres_and_s3(cluster):
    started = time.monotonic()
    apis, workers, scheduler, client, pg_url = cluster
    replicas = cycle(apis)

    token = httpx.post(
        f"{apis[0].url}/v1/oauth/token",
        data={
            "client_id": client["client_id"],
            "client_secret": client["client_secret"],
            "grant_type": "client_credentials",
            "scope": "data-export",
        },
    )
    assert token.status_code == 200, token.text
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}

    now = datetime.now(UTC)
    first_day = (now - timedelta(days=DEMO_DAYS - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    # Over by more than the session timeout: these runs are RUNNABLE as soon as the job exists.
    closed_end = (now - timedelta(minutes=SESSION_TIMEOUT_MINUTES, seconds=30)).replace(microsecond=0)
    bodies = [
        _once_job(fmt, scope, device, first_day, closed_end)
        for scope in ("views", "sessions")
        for device in ("all", "desktop")
        for fmt in ("CSV", "JSONL")
    ]
    jobs: dict[int, dict] = {}
    for body in bodies:
        api = next(replicas)
        answer = httpx.post(f"{api.url}/v1/exports", json=body, headers=headers)
        assert answer.status_code == 200, f"{api.name}: {answer.text}"
        jobs[answer.json()["payload"]["jobId"]] = body

    # A range that closed less than a session timeout ago: its run waits, and only the scheduler promotes it.
    late_body = _once_job("JSONL", "views", "all", now - timedelta(hours=24), datetime.now(UTC) - timedelta(seconds=50))
    answer = httpx.post(f"{apis[1].url}/v1/exports", json=late_body, headers=headers)
    assert answer.status_code == 200, answer.text
    late_job = answer.json()["payload"]["jobId"]
    jobs[late_job] = late_body
    late_state = httpx.get(f"{apis[0].url}/v1/exports/{late_job}/runs?limit=1&order=DESC", headers=headers)
    assert late_state.json()["payload"][0]["state"] == "CREATED", late_state.text

    finished: dict[int, dict] = {}  # job id -> the run's detail, with files
    deadline = time.monotonic() + RUNS_TIMEOUT
    while len(finished) < len(jobs):
        for job_id in set(jobs) - set(finished):
            api = next(replicas)
            listed = httpx.get(f"{api.url}/v1/exports/{job_id}/runs?limit=1&order=DESC", headers=headers)
            assert listed.status_code == 200, f"{api.name}: {listed.text}"
            run = listed.json()["payload"][0]
            assert run["state"] != "FAILURE", f"job {job_id} failed: {run}"
            if run["state"] == "SUCCESS":
                detail = httpx.get(f"{next(replicas).url}/v1/exports/{job_id}/runs/{run['jobRunId']}", headers=headers)
                assert detail.status_code == 200, detail.text
                finished[job_id] = detail.json()["payload"]
        if len(finished) < len(jobs):
            if time.monotonic() > deadline:
                logs = "\n".join(s.tail() for s in (*workers, scheduler))
                raise AssertionError(f"runs not done in {RUNS_TIMEOUT}s: {set(jobs) - set(finished)}\n{logs}")
            time.sleep(0.3)
    runs_seconds = time.monotonic() - started

    run_ids = {detail["jobRunId"] for detail in finished.values()}
    assert len(run_ids) == len(jobs)

    # The database: each run executed once, and each part recorded once.
    from dataexport.metadata.db import make_engine

    engine = make_engine(pg_url)
    try:
        with engine.connect() as conn:
            runs = {
                row.id: row for row in conn.execute(text("SELECT id, state, attempts, rows, lease_owner FROM job_runs"))
            }
            files = conn.execute(text("SELECT run_id, part_id, key FROM run_files")).all()
    finally:
        engine.dispose()
    assert set(runs) == run_ids
    assert {(r.state, r.attempts, r.lease_owner) for r in runs.values()} == {("SUCCESS", 1, None)}
    assert len({(f.run_id, f.part_id) for f in files}) == len(files)
    assert len({f.key for f in files}) == len(files)

    # The logs: who ran what (lease_owner is cleared on success). One finish per run over all workers.
    finished_by = {
        w.name: [e["run_id"] for e in w.events() if e.get("event") == "export.run.finished"] for w in workers
    }
    every_finish = Counter(run_id for ids in finished_by.values() for run_id in ids)
    assert set(every_finish) == run_ids and set(every_finish.values()) == {1}, finished_by
    assert all(finished_by.values()), f"a worker took no run: {finished_by}"

    # The files: presigned URLs, fetched with no Authorization header, add up to the run's rows.
    parts_per_run = Counter(f.run_id for f in files)
    rows_by_job: dict[int, int] = {}
    with httpx.Client(timeout=30) as anonymous:  # no default headers: the URL alone must grant access
        for job_id, detail in finished.items():
            fmt = jobs[job_id]["format"]
            assert len(detail["files"]) == parts_per_run[detail["jobRunId"]] >= 2, detail
            assert sorted(f["partId"] for f in detail["files"]) == list(range(len(detail["files"])))
            counted = 0
            for part in detail["files"]:
                download = anonymous.get(part["url"])
                assert download.status_code == 200, download.text
                assert len(download.content) == part["fileSize"]
                counted += count_part_records(fmt, gzip.decompress(download.content).decode("utf-8"))
            assert counted == detail["rows"] == runs[detail["jobRunId"]].rows > 0, (job_id, counted, detail)
            rows_by_job[job_id] = counted

    # The same selection in CSV and in JSONL holds the same rows, whichever worker ran each.
    by_selection: dict[tuple, set[int]] = {}
    for job_id, body in jobs.items():
        if job_id != late_job:
            by_selection.setdefault((body["scope"], body["deviceLabel"]), set()).add(rows_by_job[job_id])
    assert all(len(counts) == 1 for counts in by_selection.values()), by_selection
    # Desktop is a strict part of all devices.
    for scope in ("views", "sessions"):
        assert 0 < min(by_selection[(scope, "desktop")]) < min(by_selection[(scope, "all")]), by_selection

    # The late run became RUNNABLE through the scheduler process: the only one that promotes runs.
    promoted = [e for e in scheduler.events() if e.get("event") == "scheduler.tick" and e.get("runs_promoted")]
    assert sum(e["runs_promoted"] for e in promoted) == 1, scheduler.tail()

    # A worker told to stop (SIGTERM) ends its loop cleanly.
    exit_codes = _stop(workers)
    for worker in workers:
        assert exit_codes[worker.name] == 0, worker.tail()
        assert any(e.get("event") == "worker.stopped" for e in worker.events()), worker.tail()

    print(
        f"\nscale-out: {len(jobs)} runs in {runs_seconds:.1f}s, parts={sum(parts_per_run.values())}, "
        f"rows={sum(rows_by_job.values())}, per worker={ {k: len(v) for k, v in finished_by.items()} }"
    )
