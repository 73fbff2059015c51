"""Fault injection with real processes: `dataexport serve`, `scheduler` and `worker` subprocesses.

1. A busy period on SQLite + local storage: HTTP ingest batches and export jobs while the API, the scheduler
   and workers are killed with SIGKILL at seeded random moments and restarted. Every acknowledged pageview
   is stored exactly once, every run ends SUCCESS with whole files (or FAILURE with an errorMessage), and
   no run is executed twice.
2. A private PostgreSQL cluster restarted (`pg_ctl restart -m fast`) under the running service: the API
   answers again within seconds, the scheduler and workers carry on, every run ends SUCCESS.
3. Disk full while a part is written (a small tmpfs, or RLIMIT_FSIZE where mounting is not possible):
   the attempt fails cleanly and is retried, no partial file is ever listed, and the run succeeds once
   space is back.
4. The answer of a run's SUCCESS commit lost with its connection (a TCP proxy forwards the COMMIT to a
   private PostgreSQL and cuts the connection before the answer): the committed run keeps its files.

Each test prints what it injected and what it measured (run with `-s` to see it).
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import hashlib
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import httpx
import psycopg
import pytest
from sqlalchemy import text

from processes import (
    Ingester,
    Service,
    answers,
    bearer_headers,
    busy_worker,
    count_part_records,
    service_env,
    stamp,
    wait_until,
)
from support import free_port

pytestmark = [pytest.mark.slow, pytest.mark.acceptance]

JWT_SECRET = "faults-jwt-secret-" + "f" * 32
# The chaos schedule is reproducible: set DATAEXPORT_TEST_FAULT_SEED to replay another one.
SEED = int(os.environ.get("DATAEXPORT_TEST_FAULT_SEED", "20240611"))
FIELDS = {
    "views": [
        {"fieldName": "session_id"},
        {"fieldName": "view_number"},
        {"fieldName": "url"},
        {"fieldName": "title"},
        {"fieldName": "view_time"},
        {"fieldName": "country_code"},
        {"fieldName": "browser_name"},
        {"fieldName": "referer_url"},
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
TERMINAL = {"SUCCESS", "FAILURE"}


# ---------------------------------------------------------------- processes


def _env(base: dict[str, str]) -> dict[str, str]:
    return service_env({"DATAEXPORT_JWT_SECRET": JWT_SECRET, "DATAEXPORT_LOG_JSON": "true", **base})


def _new_tenant(database_url: str, name: str) -> tuple[dict, dict]:
    """Migrate the fresh database and create a project and its client, in this process (what
    `dataexport projects create` and `clients create` do, without two interpreter start-ups)."""
    from dataexport import admin
    from dataexport.metadata.db import make_engine, make_sessionmaker, migrate, transaction

    engine = make_engine(database_url)
    try:
        migrate(engine)
        with transaction(make_sessionmaker(engine)) as session:
            now = datetime.now(UTC)
            project = admin.create_project(session, name=name, now=now)
            client = admin.create_client(session, now=now, project_id=project.project.id)
            return (
                {"project_id": project.project.id, "ingest_key": project.ingest_key},
                {"client_id": client.client.client_id, "client_secret": client.secret},
            )
    finally:
        engine.dispose()


def _loop_started(service: Service) -> bool:
    wanted = {"worker": "worker.started", "scheduler": "scheduler.started"}[service.args[0]]
    return any(e.get("event") == wanted for e in service.events(current_only=True))


def _start_all(services: list[Service]) -> None:
    for service in services:
        service.start()
    wait_until(lambda: all(answers(s.url) for s in services if s.port), services, "the API did not start")
    wait_until(
        lambda: all(_loop_started(s) for s in services if not s.port),
        services,
        "the worker and scheduler loops did not start",
    )


def _stop_all(services: list[Service]) -> None:
    for service in services:
        service.terminate()
    for service in services:
        service.stop()


# ---------------------------------------------------------------- the client side


def _closed_days(days: int) -> tuple[datetime, datetime]:
    """Whole days ending yesterday at midnight, and the instant to seed them with (`now` of the demo):
    their once run is due at once at any time of day (a window waits a session timeout after it closes),
    and they hold whole days of traffic, whatever the hour the test runs at."""
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    return end - timedelta(days=days), end


def _once_job(name: str, fmt: str, scope: str, start: datetime, end: datetime) -> dict:
    return {
        "name": name,
        "format": fmt,
        "scope": scope,
        "deviceLabel": "all",
        "frequency": {"value": "once", "dateRange": {"from": stamp(start), "to": stamp(end)}},
        "fields": FIELDS[scope],
    }


def _create_job(url: str, headers: dict, body: dict, deadline: float = 30) -> int:
    """POST a job, retrying while the API is down. A retry after a lost answer may create the job twice:
    harmless here, since the checks read every run of the database."""
    give_up = time.monotonic() + deadline
    while True:
        try:
            answer = httpx.post(f"{url}/v1/exports", json=body, headers=headers, timeout=10)
            if answer.status_code == 200:
                return answer.json()["payload"]["jobId"]
            assert answer.status_code >= 500, answer.text  # a 4xx is a bug of the test or of the API
        except httpx.TransportError:
            pass
        assert time.monotonic() < give_up, f"could not create a job in {deadline}s"
        time.sleep(0.2)


def _check_success(http: httpx.Client, url: str, headers: dict, job_id: int, detail: dict) -> dict:
    """A SUCCESS run's listed files are whole: each downloads, gunzips to the end, has the manifest's size,
    sha256 and rows; together they are the run's rows. Returns the manifest."""
    assert detail["manifestUrl"], detail
    answer = http.get(detail["manifestUrl"])
    assert answer.status_code == 200, f"run {detail['jobRunId']}: its manifest is gone ({answer.status_code})"
    manifest = answer.json()
    assert manifest["jobId"] == job_id and manifest["jobRunId"] == detail["jobRunId"]
    files = sorted(detail["files"], key=lambda f: f["partId"])
    assert [f["partId"] for f in files] == [p["partId"] for p in manifest["parts"]] == list(range(len(files)))
    for listed, part in zip(files, manifest["parts"], strict=True):
        download = http.get(listed["url"])
        assert download.status_code == 200, download.text
        blob = download.content
        assert len(blob) == listed["fileSize"] == part["fileSize"]
        assert hashlib.sha256(blob).hexdigest() == part["sha256"]
        assert f"/a{manifest['attempt']}/" in part["key"]  # every part from the one attempt that won
        assert count_part_records(manifest["format"], gzip.decompress(blob).decode("utf-8")) == part["rows"]
    assert sum(p["rows"] for p in manifest["parts"]) == manifest["totalRows"] == detail["rows"]
    return manifest


@dataclass
class RunsReport:
    states: Counter = field(default_factory=Counter)
    attempts: Counter = field(default_factory=Counter)
    parts: int = 0
    rows: int = 0
    failures: list[str] = field(default_factory=list)


def _check_runs(engine, url: str, headers: dict, workers: list[Service]) -> RunsReport:
    """Every run of the database is terminal and checked through the API; one finish per SUCCESS run."""
    with engine.connect() as conn:
        runs = conn.execute(text("SELECT id, job_id, state, attempts, error FROM job_runs")).all()
        keys = conn.execute(text("SELECT run_id, key FROM run_files")).all()
    report = RunsReport()
    finished = Counter(e["run_id"] for w in workers for e in w.events() if e.get("event") == "export.run.finished")
    with httpx.Client(timeout=30) as http:
        for run in runs:
            answer = http.get(f"{url}/v1/exports/{run.job_id}/runs/{run.id}", headers=headers)
            assert answer.status_code == 200, answer.text
            detail = answer.json()["payload"]
            assert detail["state"] == run.state in TERMINAL, detail
            report.states[run.state] += 1
            report.attempts[run.attempts] += 1
            if run.state == "FAILURE":
                assert detail["errorMessage"] and detail["files"] == [], detail
                assert finished[run.id] == 0, f"run {run.id} failed but a worker logged it finished"
                report.failures.append(f"run {run.id}: {detail['errorMessage']}")
                continue
            manifest = _check_success(http, url, headers, run.job_id, detail)
            # The attempt that won is the run's last: its prefix holds every file row of the run.
            assert manifest["attempt"] == run.attempts
            assert all(f"/a{run.attempts}/" in k.key for k in keys if k.run_id == run.id)
            assert finished[run.id] == 1, f"run {run.id} finished {finished[run.id]} times"
            report.parts += len(detail["files"])
            report.rows += detail["rows"]
    assert set(finished) <= {r.id for r in runs}
    return report


def _orphan_attempts(files_dir: Path, engine) -> int:
    """Attempt directories in storage that no run lists: the leftovers of attempts killed before cleanup."""
    with engine.connect() as conn:
        listed = {k.rsplit("/", 1)[0] for (k,) in conn.execute(text("SELECT key FROM run_files"))}
    on_disk = {p.relative_to(files_dir).as_posix() for p in files_dir.glob("exports/*/*/*/a*") if p.is_dir()}
    return len(on_disk - listed)


def _make_engine(url: str):
    from dataexport.metadata.db import make_engine

    return make_engine(url)


def _seed_demo(warehouse: Path, project_id: int, days: int, sessions_per_day: int, now: datetime) -> int:
    from dataexport.demo.generate import generate
    from dataexport.warehouse.embedded import EmbeddedWarehouse

    with EmbeddedWarehouse(warehouse) as store:
        return generate(store, project_id, days=days, sessions_per_day=sessions_per_day, seed=SEED, now=now).pageviews


# ---------------------------------------------------------------- 1. a busy period under SIGKILL

BUSY_DEMO_DAYS = 3
BUSY_SESSIONS_PER_DAY = 700
BUSY_KILLS_PER_TARGET = 2
RUNS_TIMEOUT = 120


@pytest.fixture
def busy_cluster(tmp_path):
    data_dir, log_dir = tmp_path / "data", tmp_path / "logs"
    log_dir.mkdir()
    env = _env(
        {
            "DATAEXPORT_DATA_DIR": str(data_dir),
            "DATAEXPORT_PART_MAX_BYTES": str(32 * 1024),
            "DATAEXPORT_POLL_INTERVAL_SECONDS": "0.2",
            "DATAEXPORT_SESSION_TIMEOUT_MINUTES": "1",
            # A short lease, so a killed worker's run is taken again within seconds; enough attempts that
            # a run whose workers are killed a couple of times still ends SUCCESS.
            "DATAEXPORT_LEASE_SECONDS": "3",
            "DATAEXPORT_MAX_ATTEMPTS": "5",
            "DATAEXPORT_RETRY_BACKOFF_SECONDS": "0.5",
        }
    )
    project, client = _new_tenant(f"sqlite:///{data_dir / 'metadata.db'}", "Faults")
    now = datetime.now(UTC)
    demo_rows = _seed_demo(data_dir / "warehouse", project["project_id"], BUSY_DEMO_DAYS, BUSY_SESSIONS_PER_DAY, now)
    port = free_port()
    services = [
        Service("api", ("serve", "--no-scheduler", "--no-worker", "--port", str(port)), env, log_dir, port=port),
        Service("scheduler", ("scheduler",), env, log_dir),
        Service("worker-1", ("worker",), env, log_dir),
        Service("worker-2", ("worker",), env, log_dir),
    ]
    _start_all(services)
    engine = _make_engine(f"sqlite:///{data_dir / 'metadata.db'}")
    try:
        yield services, project, client, data_dir, engine, demo_rows
    finally:
        _stop_all(services)
        engine.dispose()


def test_busy_period_with_processes_killed_at_random(busy_cluster):
    started = time.monotonic()
    services, project, client, data_dir, engine, demo_rows = busy_cluster
    api, scheduler, workers = services[0], services[1], services[2:]
    rng = random.Random(SEED)
    headers = bearer_headers(api.url, client)
    now = datetime.now(UTC)
    first_day = (now - timedelta(days=BUSY_DEMO_DAYS - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    variants = [(fmt, scope) for scope in ("views", "sessions") for fmt in ("CSV", "JSONL")]

    ingester = Ingester(api.url, project["ingest_key"], now - timedelta(hours=2))
    ingester.start()
    jobs_created = 0

    def create_jobs(count: int) -> None:
        nonlocal jobs_created
        for _ in range(count):
            fmt, scope = variants[jobs_created % len(variants)]
            # Most ranges closed more than the session timeout (1 minute) ago: RUNNABLE at once. Every
            # third closed less than that ago, so its run waits (CREATED) a few seconds for the scheduler.
            late = jobs_created % 3 == 2
            end = datetime.now(UTC) - (timedelta(seconds=rng.uniform(48, 56)) if late else timedelta(minutes=2))
            _create_job(api.url, headers, _once_job(f"busy {jobs_created}", fmt, scope, first_day, end))
            jobs_created += 1

    create_jobs(4)
    plan = ["api", "scheduler", "worker"] * BUSY_KILLS_PER_TARGET
    rng.shuffle(plan)
    injected: list[str] = []
    mid_run_worker_kills = 0
    for target in plan:
        create_jobs(rng.randint(1, 2))
        if target == "worker":  # aim at a worker inside a run: the interesting moment to die
            victim = busy_worker(engine, workers, wait=5.0)
            if victim is not None:
                mid_run_worker_kills += 1
                time.sleep(rng.uniform(0.0, 0.4))  # somewhere inside the run: extracting, publishing, recording
            else:
                victim = rng.choice(workers)
        else:
            time.sleep(rng.uniform(0.3, 1.5))
            victim = api if target == "api" else scheduler
        victim.kill9()
        injected.append(f"{time.monotonic() - started:5.1f}s kill -9 {victim.name}")
        time.sleep(rng.uniform(0.2, 1.0))
        victim.start()
        if victim is api:
            wait_until(lambda: answers(api.url), services, "the API did not come back")

    ingester.stopping.set()
    ingester.join(timeout=90)
    assert not ingester.is_alive(), "the ingest client did not finish its last batch"
    assert ingester.errors == [] and ingester.unacked == [], (ingester.errors, ingester.unacked)

    def all_terminal() -> bool:
        with engine.connect() as conn:
            states = [s for (s,) in conn.execute(text("SELECT state FROM job_runs"))]
        return len(states) >= jobs_created and set(states) <= TERMINAL

    wait_until(all_terminal, services, "runs did not end", timeout=RUNS_TIMEOUT, every=0.5)
    report = _check_runs(engine, api.url, headers, workers)
    # Fewer workers are killed than a run has attempts (5), so no run may end FAILURE here.
    assert report.states["FAILURE"] == 0 and report.states["SUCCESS"] >= jobs_created, report
    orphans = _orphan_attempts(data_dir / "files", engine)
    # Work dirs of attempts killed mid-extraction: nothing removes them (see the report to the lead).
    leftover_work = len(list((data_dir / "work").glob("run-*"))) if (data_dir / "work").is_dir() else 0
    _stop_all(services)

    # The warehouse, read directly: every acknowledged pageview once, no natural key stored twice.
    partitions = data_dir / "warehouse" / "pageviews" / f"project_id={project['project_id']}"
    files = [str(p) for p in partitions.glob("*/*.parquet")]
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE stored AS SELECT user_id_unhashed AS u, session_number AS s, view_number AS v "
        "FROM read_parquet(?)",
        [files],
    )
    twice = con.execute("SELECT u, s, v, count(*) FROM stored GROUP BY ALL HAVING count(*) > 1 LIMIT 5").fetchall()
    total = con.execute("SELECT count(*) FROM stored").fetchone()[0]
    acked = ingester.acked
    con.execute("CREATE TABLE acked (u VARCHAR, s INTEGER, v INTEGER)")
    con.executemany("INSERT INTO acked VALUES (?, ?, ?)", acked)
    lost = con.execute("SELECT count(*) FROM acked ANTI JOIN stored USING (u, s, v)").fetchone()[0]
    # Every batch sent was resent until acknowledged, so no other ingested hit may be there.
    unacked_stored = con.execute(
        "SELECT count(*) FROM stored ANTI JOIN acked USING (u, s, v) WHERE u LIKE 'fault-%'"
    ).fetchone()[0]
    con.close()
    assert len(set(acked)) == len(acked) > 0
    assert twice == [], f"natural keys stored more than once: {twice}"
    assert lost == 0, f"{lost} acknowledged pageviews are missing"
    assert unacked_stored == 0 and total == demo_rows + len(acked)

    kills = {s.name: s.kills for s in services}
    assert kills["api"] == kills["scheduler"] == BUSY_KILLS_PER_TARGET
    assert kills["worker-1"] + kills["worker-2"] == BUSY_KILLS_PER_TARGET
    print(
        f"\nbusy period (seed {SEED}) in {time.monotonic() - started:.1f}s:\n  "
        + "\n  ".join(injected)
        + f"\n  kills={kills}, worker kills while holding a run={mid_run_worker_kills}"
        f"\n  ingest: {ingester.batches} batches / {len(acked)} hits acknowledged, {ingester.resends} resends,"
        f" {ingester.duplicates} answered as already stored, lost=0, stored twice=0"
        f"\n  runs: {dict(report.states)}, attempts per run={dict(sorted(report.attempts.items()))},"
        f" parts={report.parts}, rows={report.rows}, orphan attempt dirs in storage={orphans},"
        f" leftover work dirs={leftover_work}" + "".join(f"\n  {f}" for f in report.failures)
    )


# ---------------------------------------------------------------- 2. PostgreSQL restarted under the service


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster of this test alone: restarting it disturbs nobody else."""

    bin_dir: Path
    base: Path
    port: int

    @property
    def data(self) -> Path:
        return self.base / "data"

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.base / "postgres.log"),
                "-w",
                "-t",
                "60",
                *args,
            ],
            check=True,
            capture_output=True,
            timeout=90,
        )

    def url(self, database: str, port: int | None = None) -> str:
        return f"postgresql://postgres@127.0.0.1:{port or self.port}/{database}"

    def new_database(self) -> str:
        name = f"faults_{os.urandom(4).hex()}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # a name of our own making, not user text
        return name


def _initdb_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@pytest.fixture(scope="module")
def private_postgres():
    bin_dir = _initdb_bin()
    if bin_dir is None or shutil.which("runuser") is None:
        pytest.skip("no initdb under /usr/lib/postgresql/*/bin (or no runuser): cannot start a private cluster")
    if os.geteuid() != 0:
        pytest.skip("a private PostgreSQL cluster is started as the postgres user, which needs root")
    # Not under pytest's tmp_path: its parents are private to root, and the server runs as postgres.
    base = Path(tempfile.mkdtemp(prefix="dataexport-faults-pg-"))
    shutil.chown(base, "postgres", "postgres")
    (base / "sock").mkdir()
    shutil.chown(base / "sock", "postgres", "postgres")
    cluster = PrivatePostgres(bin_dir, base, free_port())
    try:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(bin_dir / "initdb"),
                "-D",
                str(cluster.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        options = (
            f"-p {cluster.port} -k {base / 'sock'} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        )
        cluster.pg_ctl("-o", options, "start")
        yield cluster
    finally:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            cluster.pg_ctl("-m", "immediate", "stop")
        shutil.rmtree(base, ignore_errors=True)


PG_DEMO_DAYS = 3
PG_SESSIONS_PER_DAY = 700
PG_RESTARTS = 2
API_BACK_WITHIN = 10.0


def test_postgres_restarted_while_jobs_run(private_postgres, tmp_path):
    started = time.monotonic()
    data_dir, log_dir = tmp_path / "data", tmp_path / "logs"
    log_dir.mkdir()
    database_url = private_postgres.url(private_postgres.new_database())
    env = _env(
        {
            "DATAEXPORT_DATA_DIR": str(data_dir),
            "DATAEXPORT_DATABASE_URL": database_url,
            "DATAEXPORT_PART_MAX_BYTES": str(16 * 1024),
            "DATAEXPORT_POLL_INTERVAL_SECONDS": "0.2",
            "DATAEXPORT_LEASE_SECONDS": "3",
            "DATAEXPORT_RETRY_BACKOFF_SECONDS": "0.5",
            "DATAEXPORT_SESSION_TIMEOUT_MINUTES": "1",
        }
    )
    project, client = _new_tenant(database_url, "Postgres restarts")
    now = datetime.now(UTC)
    _seed_demo(data_dir / "warehouse", project["project_id"], PG_DEMO_DAYS, PG_SESSIONS_PER_DAY, now)
    port = free_port()
    services = [
        Service("api", ("serve", "--no-scheduler", "--no-worker", "--port", str(port)), env, log_dir, port=port),
        Service("scheduler", ("scheduler",), env, log_dir),
        Service("worker-1", ("worker",), env, log_dir),
        Service("worker-2", ("worker",), env, log_dir),
    ]
    engine = _make_engine(database_url)
    try:
        _start_all(services)
        api, workers = services[0], services[2:]
        headers = bearer_headers(api.url, client)
        first_day = (now - timedelta(days=PG_DEMO_DAYS - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
        variants = [(fmt, scope) for scope in ("views", "sessions") for fmt in ("CSV", "JSONL")]
        back_after: list[float] = []
        jobs = in_flight = 0
        for restart in range(PG_RESTARTS):
            for fmt, scope in variants:
                # One job a round closed just now: the scheduler must promote its run after the restart.
                late = (fmt, scope) == variants[-1]
                end = datetime.now(UTC) - (timedelta(seconds=52) if late else timedelta(minutes=2))
                _create_job(api.url, headers, _once_job(f"pg {restart} {fmt} {scope}", fmt, scope, first_day, end))
                jobs += 1
            in_flight += busy_worker(engine, workers, wait=15) is not None
            private_postgres.pg_ctl("-m", "fast", "restart")
            restarted = time.monotonic()
            wait_until(
                lambda: answers(api.url, "/v1/exports", headers),
                services,
                "the API did not answer after the PostgreSQL restart",
                timeout=API_BACK_WITHIN,
                every=0.1,
            )
            back_after.append(time.monotonic() - restarted)

        def all_terminal() -> bool:
            with engine.connect() as conn:
                states = [s for (s,) in conn.execute(text("SELECT state FROM job_runs"))]
            return len(states) == jobs and set(states) <= TERMINAL

        wait_until(all_terminal, services, "runs did not end after the restarts", timeout=RUNS_TIMEOUT, every=0.5)
        assert in_flight >= 1, "no restart happened while a run was running"
        report = _check_runs(engine, api.url, headers, workers)
        assert report.states == Counter({"SUCCESS": jobs}), report
        # Nobody restarted a service: each still runs its first incarnation.
        assert all(s.alive() and s.starts == 1 for s in services), [s.tail() for s in services if not s.alive()]
        hiccups = Counter(
            e["event"]
            for s in services
            for e in s.events()
            if e.get("event")
            in {
                "worker.loop_error",
                "scheduler.tick_failed",
                "export.run.heartbeat_failed",
                "export.run.retry",
                "export.run.lease_lost",
            }
        )
    finally:
        _stop_all(services)
        engine.dispose()
    print(
        f"\npostgres restarts: {PG_RESTARTS} x `pg_ctl restart -m fast` in {time.monotonic() - started:.1f}s; "
        f"{in_flight} with a run in flight; API answered again after "
        f"{', '.join(f'{s:.2f}s' for s in back_after)}; runs={dict(report.states)}, "
        f"attempts per run={dict(sorted(report.attempts.items()))}, parts={report.parts}, rows={report.rows}; "
        f"logged hiccups={dict(hiccups)}"
    )


class AnswerLostProxy(threading.Thread):
    """A TCP proxy in front of PostgreSQL that loses one COMMIT's answer: once a client connection has sent
    `trigger` (the SQL of a transaction), its next COMMIT is passed to the server, and the connection is cut
    after the server had time to commit, before the answer reaches the client. The client sees a broken
    connection for a transaction that did commit: the ambiguous outcome of any network failure."""

    def __init__(self, target_port: int, trigger: bytes) -> None:
        super().__init__(daemon=True, name="answer-lost-proxy")
        self.target_port, self.trigger = target_port, trigger
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.fired = threading.Event()  # the COMMIT went through; its answer is being held back
        self.cut = threading.Event()  # the connection is cut: the client has seen the failure
        self.claims_after_cut = 0  # worker claim queries since: the worker is back in its loop
        self.stopping = threading.Event()

    def run(self) -> None:
        self.listener.settimeout(0.2)
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            server = socket.create_connection(("127.0.0.1", self.target_port))
            held = threading.Event()  # set: this connection's answers are no longer passed on
            threading.Thread(target=self._pump, args=(client, server, True, held), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False, held), daemon=True).start()

    def _pump(self, source: socket.socket, dest: socket.socket, from_client: bool, held: threading.Event) -> None:
        armed = cutting = False
        try:
            while data := source.recv(65536):
                if not from_client and held.is_set():
                    continue  # the COMMIT's answer: swallowed
                if from_client and self.cut.is_set() and b"SKIP LOCKED" in data:
                    self.claims_after_cut += 1
                if from_client and not self.fired.is_set():
                    armed = armed or self.trigger in data
                    if armed and b"COMMIT" in data:
                        held.set()
                        dest.sendall(data)
                        self.fired.set()
                        time.sleep(0.5)  # the server commits; its answer is never passed on
                        cutting = True
                        break
                dest.sendall(data)
        except OSError:
            pass
        for sock in (source, dest):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if cutting:
            self.cut.set()

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)
        self.listener.close()


def test_success_commit_whose_answer_is_lost_keeps_its_files(private_postgres, tmp_path):
    """The worker's connection breaks while the run's SUCCESS commit is answered. The run did commit: its
    listed files must still be there (the attempt must not be discarded as if it had failed)."""
    data_dir, log_dir = tmp_path / "data", tmp_path / "logs"
    log_dir.mkdir()
    database = private_postgres.new_database()
    proxy = AnswerLostProxy(private_postgres.port, trigger=b"INSERT INTO run_files")
    proxy.start()
    env = _env(
        {
            "DATAEXPORT_DATA_DIR": str(data_dir),
            "DATAEXPORT_DATABASE_URL": private_postgres.url(database),
            "DATAEXPORT_POLL_INTERVAL_SECONDS": "0.2",
            "DATAEXPORT_LEASE_SECONDS": "3",
            "DATAEXPORT_RETRY_BACKOFF_SECONDS": "0.5",
        }
    )
    project, client = _new_tenant(env["DATAEXPORT_DATABASE_URL"], "Answer lost")
    start, end = _closed_days(1)
    _seed_demo(data_dir / "warehouse", project["project_id"], 1, 300, end - timedelta(microseconds=1))
    port = free_port()
    api = Service("api", ("serve", "--no-scheduler", "--no-worker", "--port", str(port)), env, log_dir, port=port)
    worker = Service(
        "worker", ("worker",), {**env, "DATAEXPORT_DATABASE_URL": private_postgres.url(database, proxy.port)}, log_dir
    )
    services = [api, worker]
    engine = _make_engine(env["DATAEXPORT_DATABASE_URL"])
    try:
        _start_all(services)
        headers = bearer_headers(api.url, client)
        job_id = _create_job(api.url, headers, _once_job("answer lost", "CSV", "views", start, end))

        def ended() -> bool:
            with engine.connect() as conn:
                return conn.execute(text("SELECT state FROM job_runs")).scalar() in TERMINAL

        wait_until(ended, services, "the run did not end", timeout=60)
        assert proxy.fired.is_set(), "the proxy never cut a SUCCESS commit"
        # Whatever the worker does about the broken commit, it has done it once it claims again.
        wait_until(
            lambda: proxy.claims_after_cut > 0, services, "the worker did not return to its loop", timeout=30, every=0.1
        )
        with engine.connect() as conn:
            run_id, state = conn.execute(text("SELECT id, state FROM job_runs")).one()
        assert state == "SUCCESS"
        detail = httpx.get(f"{api.url}/v1/exports/{job_id}/runs/{run_id}", headers=headers).json()["payload"]
        with httpx.Client(timeout=30) as http:
            manifest = _check_success(http, api.url, headers, job_id, detail)
        assert manifest["attempt"] == 1
    finally:
        _stop_all(services)
        proxy.stop()
        engine.dispose()
    print(
        f"\nanswer lost: SUCCESS commit of run {run_id} cut before its answer; {len(detail['files'])} part(s) "
        f"listed and whole"
    )


# ---------------------------------------------------------------- 3. disk full while a part is written

DISK_DEMO_DAYS = 2
DISK_SESSIONS_PER_DAY = 2500
TMPFS_SIZE = 2 * 1024 * 1024
TMPFS_LEFT_FREE = 96 * 1024  # less than one compressed part: the first part cannot be written whole
FSIZE_LIMIT = 256 * 1024  # above the metadata DB and its WAL, below one compressed part
DISK_PART_MAX_BYTES = 4 * 1024 * 1024
DISK_BACKOFF_SECONDS = 3


def _mount_tmpfs(where: Path, size: int) -> str | None:
    """Mount a tmpfs of `size` bytes; the reason it could not be mounted, or None."""
    where.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    return None if done.returncode == 0 else (done.stderr.strip() or f"mount exited {done.returncode}")


def _limit_file_size() -> None:
    """In the worker child: writes past FSIZE_LIMIT fail with EFBIG. SIGXFSZ would kill the process
    instead, so it is ignored (an ignored disposition survives exec)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE_LIMIT, FSIZE_LIMIT))


@pytest.fixture(params=["tmpfs", "rlimit"])
def disk_fault(request, tmp_path):
    """Yields (kind, data_dir, files_dir, mount or None). The tmpfs variant holds the worker's data dir (its
    work dir) and the local storage; the rlimit variant limits the size of any file the worker writes."""
    data_dir = tmp_path / "data"
    if request.param == "rlimit":
        yield "rlimit", data_dir, data_dir / "files", None
        return
    mount = tmp_path / "small"
    reason = _mount_tmpfs(mount, TMPFS_SIZE)
    if reason is not None:
        pytest.skip(f"cannot mount a tmpfs ({reason}); the rlimit variant covers disk full")
    try:
        yield "tmpfs", mount, mount / "files", mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)


def _files_under(root: Path, ignore: Path | None = None) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p != ignore)


def test_disk_full_while_writing_a_part(disk_fault, tmp_path):
    kind, data_dir, files_dir, mount = disk_fault
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    env = _env(
        {
            "DATAEXPORT_DATA_DIR": str(data_dir),
            "DATAEXPORT_FILES_DIR": str(files_dir),
            "DATAEXPORT_DATABASE_URL": f"sqlite:///{tmp_path / 'metadata.db'}",
            "DATAEXPORT_WAREHOUSE_DIR": str(tmp_path / "warehouse"),
            "DATAEXPORT_PART_MAX_BYTES": str(DISK_PART_MAX_BYTES),
            "DATAEXPORT_POLL_INTERVAL_SECONDS": "0.2",
            "DATAEXPORT_RETRY_BACKOFF_SECONDS": str(DISK_BACKOFF_SECONDS),
            "DATAEXPORT_MAX_ATTEMPTS": "5",
        }
    )
    project, client = _new_tenant(env["DATAEXPORT_DATABASE_URL"], "Disk full")
    first_day, end = _closed_days(DISK_DEMO_DAYS)  # whole days: parts of the same size at any hour
    _seed_demo(
        tmp_path / "warehouse",
        project["project_id"],
        DISK_DEMO_DAYS,
        DISK_SESSIONS_PER_DAY,
        end - timedelta(microseconds=1),
    )
    port = free_port()
    api = Service("api", ("serve", "--no-scheduler", "--no-worker", "--port", str(port)), env, log_dir, port=port)
    worker = Service("worker", ("worker",), env, log_dir, preexec=_limit_file_size if kind == "rlimit" else None)
    services = [api, worker]
    engine = _make_engine(env["DATAEXPORT_DATABASE_URL"])
    ballast = None
    try:
        _start_all(services)
        if mount is not None:  # fill the tmpfs, leaving less room than one compressed part
            ballast = mount / "ballast"
            free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
            ballast.write_bytes(b"\0" * (free - TMPFS_LEFT_FREE))
        headers = bearer_headers(api.url, client)
        job_id = _create_job(api.url, headers, _once_job("disk full", "JSONL", "views", first_day, end))
        runs_url = f"{api.url}/v1/exports/{job_id}/runs"
        run_id = httpx.get(runs_url, headers=headers).json()["payload"][0]["jobRunId"]

        seen: list[dict] = []

        def poll() -> dict:
            """The run as the client sees it; until SUCCESS no file may be listed, partial or not."""
            detail = httpx.get(f"{runs_url}/{run_id}", headers=headers, timeout=10).json()["payload"]
            assert detail["state"] == "SUCCESS" or detail["files"] == [], detail
            seen.append(detail)
            return detail

        # The first attempt fails on the full disk and goes back to RUNNABLE with its error kept.
        wait_until(
            lambda: poll()["errorMessage"] is not None, services, "the attempt did not fail", timeout=30, every=0.1
        )
        failed = seen[-1]
        assert failed["state"] == "RUNNABLE", failed
        expected = "No space left on device" if kind == "tmpfs" else "File too large"
        # A StorageError (retryable, named as such), not the OSError of cleaning up after it.
        assert failed["errorMessage"].startswith("StorageError: "), failed
        assert expected in failed["errorMessage"], failed
        with engine.connect() as conn:
            attempts = conn.execute(text("SELECT attempts FROM job_runs WHERE id = :id"), {"id": run_id}).scalar()
        assert attempts == 1
        # Cleanly: nothing of the failed attempt is left, neither in the work dir nor in storage.
        assert _files_under(data_dir / "work") == []
        assert _files_under(files_dir) == []
        if mount is not None:
            assert _files_under(mount, ignore=ballast) == []
            ballast.unlink()  # space is back before the retry is due (DISK_BACKOFF_SECONDS)
        else:
            worker.stop()  # idle between attempts: it exits at once; its replacement has no limit
            worker.preexec = None
            worker.start()

        wait_until(lambda: poll()["state"] in TERMINAL, services, "the retried run did not end", timeout=60, every=0.1)
        done = seen[-1]
        assert done["state"] == "SUCCESS" and done["errorMessage"] is None, done
        with httpx.Client(timeout=30) as http:
            manifest = _check_success(http, api.url, headers, job_id, done)
        with engine.connect() as conn:
            attempts = conn.execute(text("SELECT attempts FROM job_runs WHERE id = :id"), {"id": run_id}).scalar()
        assert manifest["attempt"] == attempts >= 2
        # Storage holds exactly the listed parts and the manifest: the failed attempt left nothing behind.
        stored = {p.relative_to(files_dir).as_posix() for p in _files_under(files_dir)}
        assert stored == {p["key"] for p in manifest["parts"]} | {
            manifest["parts"][0]["key"].rsplit("/", 1)[0] + "/manifest.json"
        }
        finishes = [e for e in worker.events() if e.get("event") == "export.run.finished"]
        assert [e["run_id"] for e in finishes] == [run_id]
    finally:
        _stop_all(services)
        engine.dispose()
    print(
        f"\ndisk full ({kind}): attempt 1 failed with {failed['errorMessage']!r}; succeeded at attempt "
        f"{manifest['attempt']} with {len(done['files'])} part(s), {done['rows']} rows; polls={len(seen)}, "
        f"files listed before SUCCESS=0"
    )
