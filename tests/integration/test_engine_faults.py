"""The engine under faults, with real processes, a real metadata DB (SQLite and PostgreSQL) and real files.

- a worker killed with SIGKILL in the middle of a run: the next worker takes the run once the lease ran out,
  and the run ends SUCCESS once, with whole files and no trace of the killed attempt in what is listed;
- a storage backend that fails: the attempt is retried with backoff, or the run fails after max_attempts
  with the error shown to the client;
- two workers racing over the same runs: each run executed exactly once.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from sqlalchemy import select

from dataexport.catalog import fields_for
from dataexport.config import Settings
from dataexport.demo.generate import generate
from dataexport.domain.enums import DeviceLabel, Format, Frequency, Scope
from dataexport.domain.fieldspec import FieldSpec
from dataexport.domain.jobspec import JobSpec
from dataexport.engine.lifecycle import create_job
from dataexport.engine.worker import Worker
from dataexport.errors import StorageError
from dataexport.metadata.db import transaction
from dataexport.metadata.models import ExportJob, JobRun, Project, RunFile
from dataexport.storage import LocalStorage, build_storage
from dataexport.warehouse.embedded import EmbeddedWarehouse
from support import SettableClock

ROOT = Path(__file__).resolve().parents[2]
FIELDS = ["session_id", "view_number", "view_time", "url", "country_code", "browser_name"]
LEASE_SECONDS = 2


# ---------------------------------------------------------------- helpers


def seed(warehouse: Path, project_id: int, sessions_per_day: int) -> tuple[datetime, datetime]:
    """Two whole days of demo traffic ending yesterday at midnight; returns that window [start, end).

    Ending a day back (not at the last midnight) keeps the once run due at once at any time of day: it
    waits for window end + the session timeout (30 minutes)."""
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    with EmbeddedWarehouse(warehouse) as store:
        generate(
            store, project_id, days=2, sessions_per_day=sessions_per_day, seed=11, now=end - timedelta(microseconds=1)
        )
    return end - timedelta(days=2), end


def add_once_job(
    sessions,
    settings: Settings,
    project_id: int,
    window: tuple[datetime, datetime],
    name: str = "faults",
    scope: Scope = Scope.VIEWS,
    fields: list[str] = FIELDS,
) -> int:
    """A once job over the window (created through the lifecycle, with its run); returns the run id."""
    spec = JobSpec(
        name=name,
        format=Format.CSV,
        scope=scope,
        frequency=Frequency.ONCE,
        fields=tuple(FieldSpec(field_name=f) for f in fields),
        device_label=DeviceLabel.ALL,
        segment_id=None,
        range_from=window[0],
        range_to=window[1] - timedelta(milliseconds=1),
    )
    with transaction(sessions) as session:
        project = session.get(Project, project_id)
        job = create_job(session, project=project, actor_id=1, spec=spec, settings=settings, now=datetime.now(UTC))
        session.flush()
        return session.scalars(select(JobRun.id).where(JobRun.job_id == job.id)).one()


def load_run(sessions, run_id: int) -> tuple[JobRun, list[RunFile]]:
    with transaction(sessions) as session:
        run = session.get(JobRun, run_id)
        files = list(session.scalars(select(RunFile).where(RunFile.run_id == run_id).order_by(RunFile.part_id)))
        session.expunge_all()
        return run, files


def direct_keys(warehouse: Path, project_id: int, window: tuple[datetime, datetime]) -> list[tuple[str, str]]:
    """(session_id, view_number) of every pageview of the window, by a hand-written DuckDB query."""
    rows = duckdb.execute(
        f"SELECT session_id, view_number FROM read_parquet('{warehouse}/pageviews/project_id={project_id}/*/*.parquet')"
        " WHERE project_id = ? AND session_time >= ? AND session_time < ?",
        [project_id, *window],
    ).fetchall()
    return [(str(s), str(v)) for s, v in rows]


def check_listed_files(storage: LocalStorage, run: JobRun, files: list[RunFile]) -> list[tuple[str, str]]:
    """Every listed part is whole and matches the manifest; returns the (session_id, view_number) of its rows."""
    manifest = json.loads(storage.local_path(run.manifest_key).read_bytes())
    assert manifest["attempt"] == run.attempts
    assert [p["key"] for p in manifest["parts"]] == [f.key for f in files]
    assert [f.part_id for f in files] == list(range(len(files)))
    keys: list[tuple[str, str]] = []
    for f, part in zip(files, manifest["parts"], strict=True):
        assert f"/a{run.attempts}/" in f.key
        blob = storage.local_path(f.key).read_bytes()
        assert len(blob) == f.size == part["fileSize"]
        assert hashlib.sha256(blob).hexdigest() == f.sha256 == part["sha256"]
        reader = csv.reader(io.StringIO(gzip.decompress(blob).decode()))  # whole: gunzip to the end
        assert next(reader) == FIELDS
        rows = [(r[0], r[1]) for r in reader]
        assert len(rows) == f.rows == part["rows"]
        keys.extend(rows)
    assert manifest["totalRows"] == run.rows == len(keys)
    return keys


class FailingStorage(LocalStorage):
    """Fault injection around the real local backend: after `succeed_first` publishes, the next `failures`
    publishes raise StorageError; later ones succeed again."""

    def __init__(self, root: Path, secret: bytes | str, failures: float, succeed_first: int = 0) -> None:
        super().__init__(root, secret)
        self.failures = failures
        self.succeed_first = succeed_first
        self.lock = threading.Lock()

    def publish(self, local_path: Path, key: str) -> int:
        with self.lock:
            self.succeed_first -= 1
            fail = self.succeed_first < 0 and self.failures > 0
            if fail:
                self.failures -= 1
        if fail:
            raise StorageError(f"Publishing {key} failed: injected outage")
        return super().publish(local_path, key)


@pytest.fixture
def engine_env(api, database_url, tmp_path):
    """A clean metadata DB (the shared stack's, emptied by `api`), with a project; own data dir per test."""
    from dataexport import admin

    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        jwt_secret=api.context.settings.jwt_secret,
        lease_seconds=LEASE_SECONDS,
        max_attempts=3,
        retry_backoff_seconds=30,
        log_json=True,
    )
    with transaction(api.context.sessions) as session:
        project_id = admin.create_project(session, name="faults", now=datetime.now(UTC)).project.id
    return api.context.sessions, settings, project_id


# ---------------------------------------------------------------- kill -9 in the middle of a run


def worker_process(settings: Settings, part_max_bytes: int) -> subprocess.Popen:
    env = dict(os.environ)
    env.update(
        DATAEXPORT_DATA_DIR=str(settings.data_dir),
        DATAEXPORT_DATABASE_URL=settings.resolved_database_url,
        DATAEXPORT_JWT_SECRET=settings.jwt_secret,
        DATAEXPORT_LEASE_SECONDS=str(LEASE_SECONDS),
        DATAEXPORT_PART_MAX_BYTES=str(part_max_bytes),
        PYTHONPATH=str(ROOT / "src"),
    )
    return subprocess.Popen(
        [sys.executable, "-m", "dataexport.cli", "worker", "--once"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_for_partial_publish(sessions, run_id: int, attempt_dir: Path, proc: subprocess.Popen) -> int:
    """Poll until the run is RUNNING under the subprocess and some of its parts are published; returns how many."""
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the worker ended before it could be killed: make the run bigger"
        published = list(attempt_dir.glob("part-*.csv.gz")) if attempt_dir.is_dir() else []
        if published:
            run, _ = load_run(sessions, run_id)
            assert run.state == "RUNNING" and run.attempts == 1 and run.lease_owner
            return len(published)
        time.sleep(0.01)
    raise AssertionError("the run never published a part")


def test_a_worker_killed_mid_run_is_replaced_and_the_run_succeeds_once(engine_env):
    sessions, settings, project_id = engine_env
    part_max_bytes = 4096  # hundreds of parts: the run lasts seconds, and is killed while publishing
    settings = settings.model_copy(update={"part_max_bytes": part_max_bytes})
    window = seed(settings.resolved_warehouse_dir, project_id, sessions_per_day=1500)
    run_id = add_once_job(sessions, settings, project_id, window)
    run, _ = load_run(sessions, run_id)
    storage = build_storage(settings)
    first_attempt_dir = storage.local_path(f"exports/{project_id}/{run.job_id}/{run_id}/a1/x").parent

    proc = worker_process(settings, part_max_bytes)
    try:
        published = wait_for_partial_publish(sessions, run_id, first_attempt_dir, proc)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert published >= 1
    killed, listed = load_run(sessions, run_id)
    assert killed.state == "RUNNING" and killed.attempts == 1 and listed == []

    clock = SettableClock()
    survivor = Worker(sessions, settings, storage, clock)
    clock.set(killed.lease_expires_at - timedelta(milliseconds=1))
    assert survivor.run_once() is None  # the dead worker's lease still runs: nobody may take the run yet
    clock.set(killed.lease_expires_at + timedelta(seconds=1))
    outcome = survivor.run_once()
    assert outcome is not None and outcome.run_id == run_id and outcome.state == "SUCCESS"
    assert survivor.run_once() is None  # and nothing is left to do: the run is not executed again

    run, files = load_run(sessions, run_id)
    assert run.state == "SUCCESS" and run.attempts == 2 and run.error is None and run.completion_rate == 100
    assert run.lease_owner is None and run.ended_at is not None
    assert files and all("/a1/" not in f.key for f in files)  # nothing of the killed attempt is listed
    assert not first_attempt_dir.exists() or not any(first_attempt_dir.iterdir())  # and its orphans are gone
    assert len({f.key for f in files}) == len(files)
    keys = check_listed_files(storage, run, files)
    expected = direct_keys(settings.resolved_warehouse_dir, project_id, window)
    assert len(keys) == len(set(keys)) == len(expected) > 0  # nothing duplicated, nothing lost
    assert sorted(keys) == sorted(expected)


# ---------------------------------------------------------------- failures that would repeat


def run_to_the_end(worker: Worker, clock: SettableClock, sessions, run_id: int) -> list[str]:
    """Run attempts until the run is no longer retried; returns each attempt's outcome."""
    states = []
    for _ in range(5):
        states.append(worker.run_once().state)
        run, _ = load_run(sessions, run_id)
        if run.state != "RUNNABLE":
            return states
        clock.set(run.runnable_at)
    return states


def test_running_out_of_memory_fails_the_run_at_once_saying_what_to_change(engine_env):
    sessions, settings, project_id = engine_env
    # One slice for the whole window under a memory limit no session aggregate fits in.
    settings = settings.model_copy(update={"duckdb_memory_limit": 4_000_000, "export_slice_rows": 10**9})
    window = seed(settings.resolved_warehouse_dir, project_id, sessions_per_day=300)
    fields = [f.name for f in fields_for(Scope.SESSIONS) if not f.parameters]
    run_id = add_once_job(sessions, settings, project_id, window, scope=Scope.SESSIONS, fields=fields)
    clock = SettableClock()
    clock.set(datetime.now(UTC))

    assert run_to_the_end(Worker(sessions, settings, build_storage(settings), clock), clock, sessions, run_id) == [
        "FAILURE"
    ]
    run, files = load_run(sessions, run_id)
    assert run.attempts == 1 and files == []
    assert run.error.startswith("ExtractionOutOfMemory: The export ran out of memory")
    assert "4.0MB" in run.error and "DATAEXPORT_EXPORT_SLICE_ROWS" in run.error
    assert "DATAEXPORT_DUCKDB_MEMORY_LIMIT" in run.error

    # With the slices sized from the limit (the default), the same export fits.
    settings = settings.model_copy(update={"duckdb_memory_limit": 64_000_000, "export_slice_rows": None})
    run_id = add_once_job(sessions, settings, project_id, window, name="sliced", scope=Scope.SESSIONS, fields=fields)
    clock.set(datetime.now(UTC))
    assert run_to_the_end(Worker(sessions, settings, build_storage(settings), clock), clock, sessions, run_id) == [
        "SUCCESS"
    ]


def test_a_job_that_no_longer_validates_fails_at_once_naming_the_field(engine_env):
    sessions, settings, project_id = engine_env
    window = seed(settings.resolved_warehouse_dir, project_id, sessions_per_day=20)
    run_id = add_once_job(sessions, settings, project_id, window)
    with transaction(sessions) as session:  # as if the field had left the catalog since the job was made
        job = session.get(ExportJob, session.get(JobRun, run_id).job_id)
        job.fields = [{"fieldName": "gone_field"}, *job.fields[1:]]
    clock = SettableClock()
    clock.set(datetime.now(UTC))

    assert run_to_the_end(Worker(sessions, settings, build_storage(settings), clock), clock, sessions, run_id) == [
        "FAILURE"
    ]
    run, _ = load_run(sessions, run_id)
    assert run.attempts == 1
    assert "fields[0].fieldName" in run.error and "unknown field" in run.error


# ---------------------------------------------------------------- storage failures


def test_a_failed_publish_is_retried_later_and_the_next_attempt_succeeds(engine_env):
    sessions, settings, project_id = engine_env
    settings = settings.model_copy(update={"part_max_bytes": 8192})  # several parts
    window = seed(settings.resolved_warehouse_dir, project_id, sessions_per_day=150)
    run_id = add_once_job(sessions, settings, project_id, window)
    real = build_storage(settings)
    storage = FailingStorage(real.root, real.secret, failures=1, succeed_first=2)  # fails on the third part
    clock = SettableClock()
    start = datetime.now(UTC)
    clock.set(start)
    worker = Worker(sessions, settings, storage, clock)

    assert worker.run_once().state == "RUNNABLE"
    run, files = load_run(sessions, run_id)
    assert run.state == "RUNNABLE" and run.attempts == 1 and files == []
    assert run.runnable_at == start + timedelta(seconds=settings.retry_backoff_seconds)
    assert run.error.startswith("StorageError:") and "injected outage" in run.error
    assert not any(real.root.rglob("part-*"))  # the two parts published before the failure were removed

    clock.set(start + timedelta(seconds=settings.retry_backoff_seconds - 1))
    assert worker.run_once() is None  # backing off
    clock.set(start + timedelta(seconds=settings.retry_backoff_seconds))
    assert worker.run_once().state == "SUCCESS"
    run, files = load_run(sessions, run_id)
    assert run.state == "SUCCESS" and run.attempts == 2 and run.error is None and len(files) >= 3
    keys = check_listed_files(storage, run, files)
    assert sorted(keys) == sorted(direct_keys(settings.resolved_warehouse_dir, project_id, window))


def test_a_storage_that_always_fails_ends_in_failure_shown_to_the_client(engine_env, tenant, http):
    sessions, settings, _ = engine_env
    window = seed(settings.resolved_warehouse_dir, tenant.project_id, sessions_per_day=100)
    run_id = add_once_job(sessions, settings, tenant.project_id, window)
    real = build_storage(settings)
    clock = SettableClock()
    clock.set(datetime.now(UTC))
    worker = Worker(sessions, settings, FailingStorage(real.root, real.secret, failures=float("inf")), clock)

    states = []
    for _ in range(settings.max_attempts):
        states.append(worker.run_once().state)
        run, _ = load_run(sessions, run_id)
        if run.runnable_at is not None and run.state == "RUNNABLE":
            clock.set(run.runnable_at)
    assert states == ["RUNNABLE"] * (settings.max_attempts - 1) + ["FAILURE"]
    assert worker.run_once() is None  # a failed run is never taken again
    run, files = load_run(sessions, run_id)
    assert run.state == "FAILURE" and run.attempts == settings.max_attempts and files == []

    answer = http.get(f"/v1/exports/{run.job_id}/runs/{run_id}", headers=tenant.headers)
    assert answer.status_code == 200, answer.text
    detail = answer.json()["payload"]
    assert detail["state"] == "FAILURE" and detail["files"] == []
    assert detail["errorMessage"].startswith("StorageError:") and "injected outage" in detail["errorMessage"]


# ---------------------------------------------------------------- racing workers


def test_two_workers_racing_execute_every_run_exactly_once(engine_env):
    sessions, settings, project_id = engine_env
    window = seed(settings.resolved_warehouse_dir, project_id, sessions_per_day=60)
    run_ids = [add_once_job(sessions, settings, project_id, window, name=f"race {i}") for i in range(8)]
    storage = build_storage(settings)
    outcomes: dict[str, list] = {"a": [], "b": []}
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def drain(name: str) -> None:
        worker = Worker(sessions, settings, storage, SettableClock(), worker_id=f"racer-{name}")
        barrier.wait()
        try:
            while (outcome := worker.run_once()) is not None:
                outcomes[name].append(outcome)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=drain, args=(name,)) for name in outcomes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    done = [o.run_id for o in outcomes["a"] + outcomes["b"]]
    assert sorted(done) == sorted(run_ids)  # each run by exactly one of the two
    assert all(o.state == "SUCCESS" for o in outcomes["a"] + outcomes["b"])
    expected = len(direct_keys(settings.resolved_warehouse_dir, project_id, window))
    for run_id in run_ids:
        run, files = load_run(sessions, run_id)
        assert run.state == "SUCCESS" and run.attempts == 1 and run.rows == expected > 0
        assert files and all("/a1/" in f.key for f in files)
