"""Worker scale-out: throughput of 1 and of 2 `dataexport worker` processes draining the same queue of runs.

    PYTHONPATH=src .venv/bin/python bench/workers.py [--warehouse embedded|ducklake|both] [--jobs 24]
        [--sessions-per-day 20000] [--workers 1,2] [--repeat 1] [--timeout 1800]

Default --warehouse both.

What it does:
1. Data, not timed: one whole UTC day (the day before yesterday) of demo traffic (`warehouse.demo.generate`,
   --sessions-per-day sessions) in an embedded warehouse, compacted as a settled partition is; with
   --warehouse ducklake or both, the same data copied into a DuckLake lake and maintained (bench/lake.py: catalog
   in a fresh PostgreSQL database, Parquet on a SeaweedFS S3 server the bench starts, data path
   s3://bench/lake/), as bench/export.py does. The metadata DB is a fresh PostgreSQL database on 127.0.0.1:5432
   (several workers claim from one database, as in a scaled-out deployment). Everything is removed at the end.
2. Rounds, for each --repeat, warehouse and worker count of --workers (in that order, so the counts alternate
   under the same drift of the machine's speed). A round starts that many `dataexport worker` processes
   together (the loop, with the worker's default threads), given the warehouse's settings (for DuckLake:
   DATAEXPORT_WAREHOUSE=ducklake, the lake's DATAEXPORT_LAKE_* and the DATAEXPORT_S3_* endpoint and
   credentials), one attempt per run, each with a data dir of its own (work and spill directories, export files
   on local storage; deleted after the round). Once every worker has started its loop (logged `worker.started`),
   so that all drain the queue from its start, it creates --jobs once jobs (views scope, the export bench's 8
   fields, CSV, device all), job i of hour i % 24 of that day, in one transaction through
   `engine.lifecycle.create_job`: their runs are RUNNABLE at creation (the windows closed long ago), so no
   scheduler is needed. When every run has ended, the workers are stopped (SIGTERM).
3. Prints per round: the span from the first run's claim to the last run's end (started_at, ended_at in the
   metadata DB), runs/s and pageviews/s over it (rows of the runs / span), the wall time from starting the
   processes to the last end beside it (interpreter start, migrations and each worker's opening of the lake
   are in the wall time; the opening of the lake, done on a worker's first run, is in the span too), and how
   many runs each worker did (its `export.run.finished` log lines). Then, per warehouse, the ratio of the
   largest worker count to 1 (runs/s, medians over --repeat), and with both warehouses DuckLake / embedded
   runs/s per worker count.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from export import FIELDS  # noqa: E402  (the export bench's 8 view fields; ROOT/src is on the path above)

JWT_SECRET = "bench-workers-secret-" + "x" * 32
WAREHOUSES = ("embedded", "ducklake")
POLL_SECONDS = 0.2  # the workers' idle wait, and this process's look at the runs


@dataclass
class Setup:
    """What every round shares: the data dir, the metadata DB, the bench project and the day of data."""

    data_dir: Path
    database_url: str
    project_id: int
    actor_id: int
    day: date
    pageviews: int
    lake_env: dict[str, str]


@dataclass
class Round:
    warehouse: str
    workers: int
    runs: int
    failed: list[str]  # errors of runs that did not succeed
    rows: int
    span: float  # first claim to last end
    wall: float  # processes started to last end
    runs_by_worker: list[int]

    @property
    def runs_per_s(self) -> float:
        return self.runs / self.span if self.span > 0 else math.nan

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.span if self.span > 0 else math.nan


# ---------------------------------------------------------------- data


def generate_day(data_dir: Path, database_url: str, sessions_per_day: int, seed: int) -> Setup:
    from dataexport import admin
    from dataexport.demo.generate import generate
    from dataexport.metadata.db import make_engine, make_sessionmaker, migrate, transaction
    from dataexport.warehouse.embedded import EmbeddedWarehouse, compaction

    engine = make_engine(database_url)
    migrate(engine)
    now = datetime.now(UTC)
    with transaction(make_sessionmaker(engine)) as session:
        project = admin.create_project(session, name="bench workers", now=now).project
        client = admin.create_client(session, now=now, project_id=project.id).client
        project_id, actor_id = project.id, client.id
    engine.dispose()
    day = now.date() - timedelta(days=2)
    end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1) - timedelta(microseconds=1)
    start = time.perf_counter()
    with EmbeddedWarehouse(data_dir / "warehouse") as store:
        summary = generate(store, project_id, days=1, sessions_per_day=sessions_per_day, seed=seed, now=end)
    compaction.compact(data_dir / "warehouse", older_than=timedelta(0))
    print(
        f"generated and compacted {summary.pageviews:,} pageviews of {day} in {time.perf_counter() - start:.1f} s "
        "(not part of the figures)"
    )
    return Setup(data_dir, database_url, project_id, actor_id, day, summary.pageviews, {})


# ---------------------------------------------------------------- a round


def create_jobs(setup: Setup, count: int) -> list[int]:
    """`count` once jobs, job i over hour i % 24 of the day: each with one RUNNABLE run."""
    from dataexport.config import Settings
    from dataexport.domain.enums import DeviceLabel, Format, Frequency, Scope
    from dataexport.domain.fieldspec import FieldSpec
    from dataexport.domain.jobspec import JobSpec
    from dataexport.engine.lifecycle import create_job
    from dataexport.metadata.db import make_engine, make_sessionmaker, transaction
    from dataexport.metadata.models import Project

    # Room for every job of the round: the default limit of active jobs is about interactive use.
    settings = Settings(
        data_dir=setup.data_dir,
        database_url=setup.database_url,
        jwt_secret=JWT_SECRET,
        max_active_jobs_per_project=10**6,
    )
    midnight = datetime(setup.day.year, setup.day.month, setup.day.day, tzinfo=UTC)
    engine = make_engine(setup.database_url)
    ids = []
    try:
        with transaction(make_sessionmaker(engine)) as session:
            project = session.get(Project, setup.project_id)
            for i in range(count):
                start = midnight + timedelta(hours=i % 24)
                spec = JobSpec(
                    name=f"bench workers {i}",
                    format=Format.CSV,
                    scope=Scope.VIEWS,
                    frequency=Frequency.ONCE,
                    fields=tuple(FieldSpec(field_name=f) for f in FIELDS),
                    device_label=DeviceLabel.ALL,
                    segment_id=None,
                    range_from=start,
                    range_to=start + timedelta(hours=1) - timedelta(milliseconds=1),
                )
                job = create_job(
                    session,
                    project=project,
                    actor_id=setup.actor_id,
                    spec=spec,
                    settings=settings,
                    now=datetime.now(UTC),
                )
                ids.append(job.id)
    finally:
        engine.dispose()
    return ids


def worker_env(setup: Setup, warehouse: str, own_dir: Path) -> dict[str, str]:
    """A worker's settings: a data dir of its own (work and spill directories, export files) and the shared
    warehouse, metadata DB and JWT secret."""
    return {
        **os.environ,
        **(setup.lake_env if warehouse == "ducklake" else {}),
        "DATAEXPORT_DATA_DIR": str(own_dir),
        "DATAEXPORT_WAREHOUSE_DIR": str(setup.data_dir / "warehouse"),  # the embedded data; unused by DuckLake
        "DATAEXPORT_DATABASE_URL": setup.database_url,
        "DATAEXPORT_JWT_SECRET": JWT_SECRET,
        "DATAEXPORT_LOG_LEVEL": "INFO",  # each run's export.run.finished line tells which worker did it
        "DATAEXPORT_POLL_INTERVAL_SECONDS": str(POLL_SECONDS),
        # One attempt: a failed run ends FAILURE at once rather than waiting for a retry
        "DATAEXPORT_MAX_ATTEMPTS": "1",
        "PYTHONPATH": str(ROOT / "src"),
    }


@contextlib.contextmanager
def workers_running(setup: Setup, warehouse: str, count: int, work: Path) -> Iterator[list[Path]]:
    """`count` `dataexport worker` processes, started together, each with a data dir of its own under `work`
    (removed at the end with the export files in it); SIGTERM at the end (they finish or hand back their run and
    exit). Yields their log files."""
    dirs = [work / f"worker-{i}" for i in range(count)]
    logs = [work / f"worker-{warehouse}-{count}-{i}.log" for i in range(count)]
    procs = []
    try:
        for own_dir, log in zip(dirs, logs, strict=True):
            with log.open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "dataexport.cli", "worker"],
                        env=worker_env(setup, warehouse, own_dir),
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        cwd=ROOT,
                    )
                )
        yield logs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for own_dir in dirs:
            shutil.rmtree(own_dir, ignore_errors=True)


def run_round(setup: Setup, warehouse: str, workers: int, jobs: int, timeout: float, work: Path) -> Round:
    started = time.time()
    with workers_running(setup, warehouse, workers, work) as logs:
        # The queue fills once every worker polls it: a worker still starting up would not take its share.
        wait_until_polling(logs)
        job_ids = create_jobs(setup, jobs)
        runs = wait_for_runs(setup.database_url, job_ids, timeout, logs)
    wall = max(r["ended_at"] for r in runs).timestamp() - started
    span = (max(r["ended_at"] for r in runs) - min(r["started_at"] for r in runs)).total_seconds()
    failed = [f"run {r['id']}: {r['error']}" for r in runs if r["state"] != "SUCCESS"]
    return Round(
        warehouse,
        workers,
        len(runs),
        failed,
        sum(r["rows"] or 0 for r in runs),
        span,
        wall,
        [finished_runs(log) for log in logs],
    )


def wait_until_polling(logs: list[Path], timeout: float = 120) -> None:
    """Until every worker has logged its start (`worker.started`: its loop then looks for runs)."""
    deadline = time.monotonic() + timeout
    while not all(logged(log, "worker.started") for log in logs):
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {log}\n{log.read_text(errors='replace')[-2000:]}" for log in logs)
            raise SystemExit(f"the workers did not start within {timeout:.0f} s:\n{tails}")
        time.sleep(POLL_SECONDS)


def wait_for_runs(database_url: str, job_ids: list[int], timeout: float, logs: list[Path]) -> list[dict]:
    """The runs of `job_ids`, once every one has ended (SUCCESS or FAILURE)."""
    from sqlalchemy import select

    from dataexport.metadata.db import make_engine
    from dataexport.metadata.models import JobRun

    engine = make_engine(database_url)
    query = select(JobRun.id, JobRun.state, JobRun.started_at, JobRun.ended_at, JobRun.rows, JobRun.error).where(
        JobRun.job_id.in_(job_ids)
    )
    deadline = time.monotonic() + timeout
    try:
        while True:
            with engine.connect() as conn:
                runs = [dict(row._mapping) for row in conn.execute(query)]
            if len(runs) == len(job_ids) and all(r["state"] in ("SUCCESS", "FAILURE") for r in runs):
                return runs
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {log}\n{log.read_text(errors='replace')[-2000:]}" for log in logs)
                states = sorted({r["state"] for r in runs})
                raise SystemExit(f"runs not ended after {timeout:.0f} s (states {states}); worker logs:\n{tails}")
            time.sleep(POLL_SECONDS)
    finally:
        engine.dispose()


def log_events(log: Path) -> list[str]:
    """The events of a worker's JSON log lines."""
    events = []
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            entry = json.loads(line)
            if isinstance(entry, dict) and "event" in entry:
                events.append(entry["event"])
    return events


def logged(log: Path, event: str) -> bool:
    return log.exists() and event in log_events(log)


def finished_runs(log: Path) -> int:
    """Runs a worker finished, from its log."""
    return log_events(log).count("export.run.finished")


# ---------------------------------------------------------------- report


def report_round(r: Round) -> None:
    state = "ok" if not r.failed else f"{len(r.failed)} FAILED, first: {r.failed[0][:300]}"
    print(
        f"  {r.warehouse:<9}{r.workers:>3} worker(s): {r.runs} runs, {r.rows:,} pageviews in {r.span:.2f} s "
        f"(wall {r.wall:.1f} s): {r.runs_per_s:.2f} runs/s, {r.rows_per_s:,.0f} pageviews/s; runs by worker "
        f"{r.runs_by_worker}; {state}",
        flush=True,
    )


def _median(rounds: list[Round], warehouse: str, workers: int, attr: str) -> float:
    values = [getattr(r, attr) for r in rounds if (r.warehouse, r.workers) == (warehouse, workers) and not r.failed]
    return statistics.median(values) if values else math.nan


def report_summary(rounds: list[Round], warehouses: list[str], counts: list[int]) -> None:
    print("\nsummary (medians over the rounds; runs/s and pageviews/s over first claim -> last end):")
    print(f"{'warehouse':<10}{'workers':>8}{'runs/s':>9}{'pageviews/s':>13}")
    for warehouse in warehouses:
        for n in counts:
            runs, rows = _median(rounds, warehouse, n, "runs_per_s"), _median(rounds, warehouse, n, "rows_per_s")
            print(f"{warehouse:<10}{n:>8}{runs:>9.2f}{rows:>13,.0f}")
    top = max(counts)
    if 1 in counts and top > 1:
        for warehouse in warehouses:
            ratio = _median(rounds, warehouse, top, "runs_per_s") / _median(rounds, warehouse, 1, "runs_per_s")
            print(
                f"{warehouse}: {top} workers / 1 worker = {ratio:.2f}x runs/s (ideal on {os.cpu_count()} cores: {top})"
            )
    if len(warehouses) == 2:
        for n in counts:
            lake, embedded = _median(rounds, "ducklake", n, "runs_per_s"), _median(rounds, "embedded", n, "runs_per_s")
            print(f"{n} worker(s): DuckLake / embedded = {lake / embedded:.2f}x runs/s")


# ---------------------------------------------------------------- entry point


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warehouse", choices=["embedded", "ducklake", "both"], default="both")
    parser.add_argument("--jobs", type=int, default=24, help="once jobs (runs) of each round, an hour each")
    parser.add_argument("--sessions-per-day", type=int, default=20_000, help="demo sessions of the day of data")
    parser.add_argument("--workers", default="1,2", help="worker counts, a comma list")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of each (warehouse, worker count)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds a round may take")
    args = parser.parse_args()
    args.warehouses = list(WAREHOUSES) if args.warehouse == "both" else [args.warehouse]
    args.counts = [int(n) for n in args.workers.split(",") if n.strip()]
    if args.jobs < 1 or not args.counts or min(args.counts) < 1:
        parser.error("--jobs and every --workers count must be positive")
    return args


def main() -> None:
    args = parse_args()
    from lake import copy_into_lake, drop_database, fresh_database, running_lake

    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        database_url = fresh_database("workers")
        stack.callback(drop_database, database_url.rsplit("/", 1)[1])
        setup = generate_day(work / "data", database_url, args.sessions_per_day, args.seed)
        if "ducklake" in args.warehouses:
            lake = stack.enter_context(running_lake(work / "lake", keep=False))
            copy_into_lake(setup.data_dir / "warehouse", lake, setup.data_dir, setup.project_id)
            setup.lake_env = lake.env()
        print(
            f"{args.jobs} once jobs of an hour each per round, over {setup.pageviews:,} pageviews of {setup.day}; "
            f"workers with their default threads, on {os.cpu_count()} cores"
        )
        rounds = []
        for _ in range(args.repeat):
            for warehouse in args.warehouses:
                for n in args.counts:
                    rounds.append(run_round(setup, warehouse, n, args.jobs, args.timeout, work))
                    report_round(rounds[-1])
        report_summary(rounds, args.warehouses, args.counts)


if __name__ == "__main__":
    main()
