"""Scale-out with no shared filesystem: two API replicas, one scheduler and two workers, each a process with a
data dir of its own, that share only PostgreSQL (metadata and the DuckLake catalog) and one S3 server
(SeaweedFS: the lake's Parquet files and the export files).

Hits are ingested through both replicas, one of which is killed with SIGKILL mid-batch and restarted; once
export jobs over disjoint windows that together hold every hit are created through both replicas, and a worker
is killed with SIGKILL while it holds a run. Every run must end SUCCESS, and the parts, downloaded by their
presigned URLs, must hold exactly the acknowledged pageviews, each once. Nothing may be written to a warehouse
on a process's own disk.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import cycle
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from processes import (
    Ingester,
    NaturalKey,
    Service,
    answers,
    bearer_headers,
    busy_worker,
    cli_json,
    service_env,
    stamp,
    wait_until,
    worker_ids,
)
from support import create_pg_database, drop_pg_database, free_ports, postgres_available

pytestmark = [
    pytest.mark.acceptance,
    # conftest turns a missing PostgreSQL into a usage error when DATAEXPORT_TEST_REQUIRE_POSTGRES is set.
    pytest.mark.skipif(not postgres_available(), reason="PostgreSQL does not answer on 127.0.0.1:5432"),
]

JWT_SECRET = "no-shared-disk-jwt-secret-" + "n" * 32
# Small parts, so that every run publishes several objects.
PART_MAX_BYTES = 8 * 1024
SESSION_TIMEOUT_MINUTES = 1
USERS_PER_BATCH, VIEWS_PER_SESSION = 10, 5
# Batch B's sessions start B minutes after the first batch's (plus a second per user), hours ago: their
# windows are closed, so every once run is RUNNABLE as soon as its job exists.
BATCH_SPACING = timedelta(minutes=1)
HITS_AGE = timedelta(hours=4)
BATCHES_BEFORE_KILL = 6  # acknowledged through both replicas before one is killed
BATCHES_WHILE_DOWN = 4  # acknowledged by the survivor alone
BATCHES_AFTER_RESTART = 3  # acknowledged by the restarted replica
WINDOWS = 12  # once jobs, one per window
# Jobs created first, until each worker has finished a run (and opened the lake): the worker killed among the
# others' runs has then run one whatever happens after, and the runs it is killed in are quick, warm ones.
WARM_UP_JOBS = 4
RUNS_TIMEOUT = 60
FIELDS = [
    {"fieldName": "user_id_unhashed"},
    {"fieldName": "session_number"},
    {"fieldName": "view_number"},
    {"fieldName": "view_time"},
    {"fieldName": "url"},
]
NATURAL_KEY = ("user_id_unhashed", "session_number", "view_number")


@dataclass
class Cluster:
    apis: list[Service]
    scheduler: Service
    workers: list[Service]
    data_dirs: list[Path]  # every private data dir: each process's, and the CLI's
    project: dict
    client: dict
    pg_url: str
    bucket: str

    @property
    def services(self) -> list[Service]:
        return [*self.apis, self.scheduler, *self.workers]


def _cluster_env(pg_url: str, s3_env: dict[str, str], bucket: str) -> dict[str, str]:
    """What every process shares: the database, the lake, the S3 server and the JWT secret. No data dir."""
    return {
        "DATAEXPORT_DATABASE_URL": pg_url,
        "DATAEXPORT_WAREHOUSE": "ducklake",
        "DATAEXPORT_LAKE_CATALOG_URL": pg_url,
        "DATAEXPORT_LAKE_DATA_PATH": f"s3://{bucket}/lake/",
        **s3_env,
        "DATAEXPORT_JWT_SECRET": JWT_SECRET,
        "DATAEXPORT_LOG_JSON": "true",
        "DATAEXPORT_PART_MAX_BYTES": str(PART_MAX_BYTES),
        "DATAEXPORT_POLL_INTERVAL_SECONDS": "0.2",
        "DATAEXPORT_SESSION_TIMEOUT_MINUTES": str(SESSION_TIMEOUT_MINUTES),
        # A short lease, so a killed worker's run is taken again within seconds.
        "DATAEXPORT_LEASE_SECONDS": "3",
        "DATAEXPORT_MAX_ATTEMPTS": "5",
        "DATAEXPORT_RETRY_BACKOFF_SECONDS": "0.5",
    }


def _private(shared: dict[str, str], data_dir: Path) -> dict[str, str]:
    return service_env({**shared, "DATAEXPORT_DATA_DIR": str(data_dir)})


def _loops_started(cluster: Cluster) -> bool:
    started = [(w, "worker.started") for w in cluster.workers] + [(cluster.scheduler, "scheduler.started")]
    return all(any(e.get("event") == event for e in s.events(current_only=True)) for s, event in started)


def _new_cluster(tmp_path: Path, pg_url: str, s3_server, bucket: str) -> Cluster:
    """A project and its client made with the CLI, and the five services (not started), each with its own
    data dir under `tmp_path`."""
    shared = _cluster_env(pg_url, s3_server.env(bucket=bucket), bucket)
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    cli_dir = tmp_path / "data-cli"
    # The CLI migrates the fresh database once, before the services start.
    project = cli_json(_private(shared, cli_dir), "projects", "create", "--name", "No shared disk")
    client = cli_json(_private(shared, cli_dir), "clients", "create", "--project", str(project["project_id"]))

    def service(name: str, args: tuple[str, ...], port: int | None = None) -> Service:
        return Service(name, args, _private(shared, tmp_path / f"data-{name}"), log_dir, port)

    serve = ("serve", "--no-scheduler", "--no-worker", "--port")
    apis = [service(f"api-{n}", (*serve, str(port)), port) for n, port in zip("ab", free_ports(2), strict=True)]
    workers = [service(f"worker-{n}", ("worker",)) for n in (1, 2)]
    scheduler = service("scheduler", ("scheduler",))
    data_dirs = [cli_dir, *(Path(s.env["DATAEXPORT_DATA_DIR"]) for s in (*apis, scheduler, *workers))]
    return Cluster(apis, scheduler, workers, data_dirs, project, client, pg_url, bucket)


@pytest.fixture
def cluster(tmp_path, s3_server):
    pg_url = create_pg_database()
    bucket = f"no-shared-disk-{uuid.uuid4().hex[:8]}"
    s3_server.client().create_bucket(Bucket=bucket)
    services: list[Service] = []
    try:
        found = _new_cluster(tmp_path, pg_url, s3_server, bucket)
        services = found.services
        for each in services:
            each.start()
        wait_until(lambda: all(answers(a.url) for a in found.apis), services, "the API replicas did not start")
        wait_until(lambda: _loops_started(found), services, "the worker and scheduler loops did not start")
        yield found
    finally:
        for each in services:
            each.terminate()
        for each in services:
            each.stop()
        drop_pg_database(pg_url)


# ---------------------------------------------------------------- ingest, with one replica killed


def _wait_batches(ingester: Ingester, done: Callable[[], bool], services: list[Service], what: str) -> None:
    wait_until(lambda: done() or bool(ingester.errors), services, what, timeout=30, every=0.05)
    assert ingester.errors == [], ingester.errors


def _ingest_through_a_replica_kill(cluster: Cluster, started: datetime) -> tuple[Ingester, int]:
    """Ingest through both replicas; kill -9 the first while it is sent a batch, restart it, and go on until it
    has acknowledged batches again. Returns the ingester, stopped, and the batch that was in flight at the kill."""
    victim, survivor = cluster.apis
    ingester = Ingester(
        [a.url for a in cluster.apis],
        cluster.project["ingest_key"],
        started,
        prefix="noshare",
        users=USERS_PER_BATCH,
        views=VIEWS_PER_SESSION,
        spacing=BATCH_SPACING,
        keyed=True,
    )
    ingester.start()
    try:
        _wait_batches(
            ingester, lambda: ingester.batches >= BATCHES_BEFORE_KILL, cluster.services, "ingest did not start"
        )
        assert set(ingester.acked_by.values()) == {victim.url, survivor.url}, ingester.acked_by
        in_flight = ingester.wait_in_flight(victim.url, timeout=10)
        assert in_flight is not None, f"no batch was sent to {victim.name}"
        time.sleep(0.01)  # let the request leave: an ingest takes far longer, so it is not answered yet
        victim.kill9()
        up = [s for s in cluster.services if s is not victim]
        killed_at = ingester.batches
        _wait_batches(
            ingester,
            lambda: ingester.batches >= killed_at + BATCHES_WHILE_DOWN,
            up,
            f"ingest stalled with {victim.name} down",
        )
        victim.start()
        wait_until(lambda: answers(victim.url), cluster.services, f"{victim.name} did not come back")
        restarted_at = max(list(ingester.tried))  # a copy: the ingester's thread adds to it
        _wait_batches(
            ingester,
            lambda: (
                sum(b > restarted_at and url == victim.url for b, url in list(ingester.acked_by.items()))
                >= BATCHES_AFTER_RESTART
            ),
            cluster.services,
            f"{victim.name} acknowledged no batch after its restart",
        )
    finally:
        ingester.stopping.set()
        ingester.join(timeout=70)
    assert not ingester.is_alive(), "the ingest client did not finish its last batch"
    assert ingester.errors == [] and ingester.unacked == [], (ingester.errors, ingester.unacked)
    return ingester, in_flight


def _replay(ingester: Ingester, batch: int, api: Service) -> dict:
    """Send an acknowledged batch again, with its key, to `api`; the answer's payload."""
    answer = httpx.post(
        f"{api.url}/ingest/v1/pageviews",
        json=ingester.hits(batch),
        headers={"X-Ingest-Key": ingester.key, "Idempotency-Key": ingester.batch_key(batch)},
        timeout=30,
    )
    assert answer.status_code == 200, f"{api.name}: {answer.text}"
    return answer.json()["payload"]


def _replay_on_the_other_replica(ingester: Ingester, apis: list[Service]) -> list[int]:
    """A batch acknowledged by each replica, sent again to the other: each is a duplicate, stored once (as the
    exports show). Returns the batches replayed."""
    replayed = []
    for api, other in (apis, apis[::-1]):
        batch = min(b for b, url in ingester.acked_by.items() if url == api.url)
        payload = _replay(ingester, batch, other)
        assert payload["duplicate"] is True and payload["stored"] == len(ingester.hits(batch)), (batch, payload)
        replayed.append(batch)
    return replayed


# ---------------------------------------------------------------- exports over disjoint windows


def _windows(started: datetime, batches: int) -> list[tuple[datetime, datetime]]:
    """WINDOWS disjoint, adjacent [from, to) ranges that hold batches 0..batches-1 between them. Bounds fall half
    a spacing between two batches' sessions, never on a hit, so whether a bound is inclusive cannot matter."""
    assert batches >= WINDOWS, f"only {batches} batches for {WINDOWS} windows"
    firsts = [round(i * batches / WINDOWS) for i in range(WINDOWS)] + [batches]
    bounds = [started + (first - 0.5) * BATCH_SPACING for first in firsts]
    return list(zip(bounds, bounds[1:], strict=False))


def _once_job(index: int, start: datetime, end: datetime) -> dict:
    fmt = ("CSV", "JSONL")[index % 2]
    return {
        "name": f"no shared disk {index} {fmt}",
        "format": fmt,
        "scope": "views",
        "deviceLabel": "all",
        "frequency": {"value": "once", "dateRange": {"from": stamp(start), "to": stamp(end)}},
        "fields": FIELDS,
    }


def _create_jobs(
    apis: list[Service], headers: dict, windows: list[tuple[datetime, datetime]], first: int = 0
) -> dict[int, dict]:
    """One once job per window (numbered from `first`), through the replicas in turn; job id -> its body."""
    jobs = {}
    for index, (start, end) in enumerate(windows, start=first):
        api = apis[index % len(apis)]
        body = _once_job(index, start, end)
        answer = httpx.post(f"{api.url}/v1/exports", json=body, headers=headers, timeout=30)
        assert answer.status_code == 200, f"{api.name}: {answer.text}"
        jobs[answer.json()["payload"]["jobId"]] = body
    return jobs


def _kill_a_busy_worker(engine, workers: list[Service], tries: int = 5) -> tuple[Service, list[int]]:
    """kill -9 a worker that holds a run's lease, and restart it; the runs whose lease it held when it died.

    Runs are short: the worker seen holding one may have finished it before the signal lands. Such a kill proves
    nothing (it held no run), so it is tried again, up to `tries` times."""
    for _ in range(tries):
        victim = busy_worker(engine, workers, wait=20)
        assert victim is not None, "no worker took a run"
        victim_id = next(wid for wid, w in worker_ids(workers).items() if w is victim)
        victim.kill9()
        with engine.connect() as conn:
            held = [
                r for (r,) in conn.execute(text("SELECT id FROM job_runs WHERE lease_owner = :w"), {"w": victim_id})
            ]
        victim.start()
        if held:
            break
    return victim, held


def _wait_all_success(engine, cluster: Cluster, jobs: int) -> dict[int, tuple[str, int]]:
    """Run id -> (state, attempts) once every run is SUCCESS; fails at once on a FAILURE."""
    runs: dict[int, tuple[str, int]] = {}

    def done() -> bool:
        with engine.connect() as conn:
            runs.update(
                {r.id: (r.state, r.attempts) for r in conn.execute(text("SELECT id, state, attempts FROM job_runs"))}
            )
        failed = [run for run, (state, _) in runs.items() if state == "FAILURE"]
        assert not failed, f"runs {failed} failed\n" + "\n".join(s.tail() for s in cluster.workers)
        return len(runs) == jobs and {state for state, _ in runs.values()} == {"SUCCESS"}

    wait_until(done, cluster.services, "the runs did not all succeed", timeout=RUNS_TIMEOUT, every=0.3)
    return runs


# ---------------------------------------------------------------- reading the parts back


def _part_keys(fmt: str, content: str) -> list[NaturalKey]:
    """The natural key of every record of one decompressed part."""
    if fmt == "CSV":
        records = list(csv.DictReader(io.StringIO(content, newline="")))
    else:
        records = [json.loads(line) for line in content.splitlines()]
    return [(r["user_id_unhashed"], int(r["session_number"]), int(r["view_number"])) for r in records]


def _exported(apis: list[Service], headers: dict, jobs: dict[int, dict]) -> tuple[Counter, int]:
    """Every exported pageview's natural key, with its count over all parts of all runs; and how many parts."""
    keys: Counter = Counter()
    parts = 0
    replicas = cycle(apis)
    with httpx.Client(timeout=30) as anonymous:  # no default headers: the presigned URL alone must grant access
        for job_id, body in jobs.items():
            runs = httpx.get(f"{next(replicas).url}/v1/exports/{job_id}/runs", headers=headers, timeout=30)
            assert runs.status_code == 200, runs.text
            [run] = runs.json()["payload"]
            detail = httpx.get(f"{next(replicas).url}/v1/exports/{job_id}/runs/{run['jobRunId']}", headers=headers)
            assert detail.status_code == 200, detail.text
            files = detail.json()["payload"]["files"]
            assert files, f"job {job_id}: a SUCCESS run without files"
            in_run: list[NaturalKey] = []
            for part in files:
                download = anonymous.get(part["url"])
                assert download.status_code == 200, f"job {job_id} part {part['partId']}: {download.text[:300]}"
                in_run += _part_keys(body["format"], gzip.decompress(download.content).decode("utf-8"))
            assert len(in_run) == detail.json()["payload"]["rows"] > 0, (job_id, len(in_run))
            keys.update(in_run)
            parts += len(files)
    return keys, parts


def _finished_by(workers: list[Service]) -> dict[str, list[int]]:
    """Worker name -> the runs it finished, over all its incarnations."""
    return {w.name: [e["run_id"] for e in w.events() if e.get("event") == "export.run.finished"] for w in workers}


def _local_warehouses(data_dirs: list[Path]) -> list[Path]:
    """Pageview stores in the private data dirs (an embedded warehouse, a lake's default directory): there must
    be none, the lake is on S3."""
    return [p for d in data_dirs for p in (d / "warehouse" / "pageviews", d / "lake") if p.exists()]


def _lake_objects(s3_server, bucket: str) -> int:
    listed = s3_server.client().list_objects_v2(Bucket=bucket, Prefix="lake/")
    return listed["KeyCount"]


# ---------------------------------------------------------------- the test


def test_scale_out_with_no_shared_filesystem(cluster, s3_server):
    from dataexport.metadata.db import make_engine

    began = time.monotonic()
    headers = bearer_headers(cluster.apis[1].url, cluster.client)
    fields = httpx.get(f"{cluster.apis[0].url}/v1/exportable-fields?scope=views", headers=headers, timeout=30)
    assert fields.status_code == 200, fields.text
    assert set(NATURAL_KEY) <= {f["name"] for f in fields.json()["payload"]}

    first_session = (datetime.now(UTC) - HITS_AGE).replace(second=0, microsecond=0)
    ingester, in_flight = _ingest_through_a_replica_kill(cluster, first_session)
    ingest_seconds = time.monotonic() - began
    victim_api, survivor_api = cluster.apis
    # The batch under way when its replica died was resent, with its key, to the other one.
    assert ingester.tried[in_flight][0] == victim_api.url, ingester.tried[in_flight]
    assert ingester.acked_by[in_flight] == survivor_api.url, (in_flight, ingester.acked_by)
    replayed = _replay_on_the_other_replica(ingester, cluster.apis)
    acked = Counter(ingester.acked)
    assert set(acked.values()) == {1}, "the client acknowledged a natural key twice"

    engine = make_engine(cluster.pg_url)
    try:
        windows = _windows(first_session, ingester.batches)
        runs_began = time.monotonic()
        jobs = _create_jobs(cluster.apis, headers, windows[:WARM_UP_JOBS])
        wait_until(
            lambda: all(_finished_by(cluster.workers).values()),
            cluster.services,
            "the two workers did not each finish a run",
            timeout=RUNS_TIMEOUT,
        )
        jobs |= _create_jobs(cluster.apis, headers, windows[WARM_UP_JOBS:], first=WARM_UP_JOBS)
        killed_worker, held = _kill_a_busy_worker(engine, cluster.workers)
        assert held, f"{killed_worker.name} held no run when it died"
        runs = _wait_all_success(engine, cluster, len(jobs))
        runs_seconds = time.monotonic() - runs_began
    finally:
        engine.dispose()
    # The runs the killed worker held were taken over after their lease ran out: a second attempt at least.
    assert all(runs[run][1] >= 2 for run in held), {run: runs[run] for run in held}

    exported, parts = _exported(cluster.apis, headers, jobs)
    missing, extra = acked - exported, exported - acked
    assert exported == acked, (
        f"{sum(missing.values())} acknowledged pageviews missing (e.g. {list(missing)[:3]}), "
        f"{sum(extra.values())} exported beyond them (e.g. {list(extra.items())[:3]})"
    )

    finished_by = _finished_by(cluster.workers)
    assert all(finished_by.values()), f"a worker finished no run: {finished_by}"
    assert Counter(run for ids in finished_by.values() for run in ids) == Counter(list(runs)), finished_by
    assert _local_warehouses(cluster.data_dirs) == []
    lake_objects = _lake_objects(s3_server, cluster.bucket)
    assert lake_objects > 0, "the lake wrote nothing to S3"
    print(
        f"\nno shared disk: {ingester.batches} batches / {len(ingester.acked)} hits acknowledged in "
        f"{ingest_seconds:.1f}s, {ingester.resends} resends, {len(ingester.duplicate_batches)} answered as "
        f"duplicates, batch {in_flight} in flight at the API kill, batches {replayed} replayed on the other "
        f"replica; {len(jobs)} runs in {runs_seconds:.1f}s, "
        f"attempts per run={dict(Counter(a for _, a in runs.values()))}, held by the killed worker={held}, "
        f"parts={parts}, lake objects on S3={lake_objects}, "
        f"runs per worker={ {k: len(v) for k, v in finished_by.items()} }, "
        f"total {time.monotonic() - began:.1f}s"
    )
