"""Cost of a worker's claim query with many queued runs: the fair claim against a plain FIFO baseline.

    PYTHONPATH=src .venv/bin/python bench/claim.py [--backend sqlite|postgresql|both] [--backlog 9000]
        [--history 0] [--claims 25]

Builds a metadata DB (SQLite in a temporary directory, or a fresh PostgreSQL database on 127.0.0.1 that is
dropped afterwards) with 20 projects: the first has --backlog runnable hourly runs, the 19 others 50 each, and
every project --history finished runs (what a long-running deployment accumulates). Then, alternating, it times
--claims calls of `repositories.work.claim_candidates` (the fair claim, each followed by a real `try_claim` so
that projects' latest starts move as in production) and of the FIFO query the project used before (oldest
runnable first, no fairness), and prints the median and max of each and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session

from dataexport import admin
from dataexport.domain.enums import RunState
from dataexport.metadata.db import make_engine, make_sessionmaker, migrate, transaction
from dataexport.metadata.models import ExportJob, JobRun, Project
from dataexport.metadata.repositories import work

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PROJECTS = 20
OTHER_BACKLOG = 50


def fifo_candidates(session: Session, now: datetime, limit: int = 5) -> list[int]:
    """The claim before fairness: the oldest runnable runs, whoever's they are."""
    stmt = (
        select(JobRun.id)
        .join(ExportJob, ExportJob.id == JobRun.job_id)
        .where(JobRun.state == RunState.RUNNABLE.value, JobRun.runnable_at <= now)
        .order_by(JobRun.runnable_at, JobRun.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=JobRun)
    )
    return list(session.scalars(stmt))


def _seed(sessions, backlog: int, history: int) -> int:
    now = datetime.now(UTC)
    with transaction(sessions) as s:
        project_ids = [admin.create_project(s, name=f"P{i}", now=now).project.id for i in range(PROJECTS)]
        jobs = []
        for p in project_ids:
            job = ExportJob(
                project_id=p,
                account_id=s.get(Project, p).account_id,
                owner_id=1,
                last_updator_id=1,
                name="hourly",
                format="CSV",
                scope="views",
                frequency="hourly",
                device_label="all",
                fields=[],
                state="ACTIVE",
                windows_from=now,
                created_at=now,
                updated_at=now,
            )
            s.add(job)
            jobs.append(job)
        s.flush()
        rows = []
        for n, job in enumerate(jobs):
            for k in range(backlog if n == 0 else OTHER_BACKLOG):
                start = now - timedelta(hours=k + 1)
                rows.append(
                    dict(
                        job_id=job.id,
                        project_id=job.project_id,
                        window_start=start,
                        window_end=start + timedelta(hours=1),
                        state="RUNNABLE",
                        runnable_at=now - timedelta(days=400) + timedelta(seconds=n * 100_000 + k),
                        created_at=now,
                        completion_rate=0.0,
                        attempts=0,
                    )
                )
            for k in range(history):
                start = now - timedelta(days=3000) + timedelta(hours=k)
                rows.append(
                    dict(
                        job_id=job.id,
                        project_id=job.project_id,
                        window_start=start,
                        window_end=start + timedelta(hours=1),
                        state="SUCCESS",
                        runnable_at=start,
                        started_at=start,
                        ended_at=start,
                        created_at=now,
                        completion_rate=100.0,
                        attempts=1,
                    )
                )
        s.execute(insert(JobRun), rows)
    return len(rows)


def _time_claims(sessions, candidates, claims: int) -> list[float]:
    times = []
    for _ in range(claims):
        with transaction(sessions) as s:
            now = datetime.now(UTC)
            started = time.perf_counter()
            ids = candidates(s, now)
            times.append(time.perf_counter() - started)
            work.try_claim(s, ids[0], worker_id="bench", now=now, lease=timedelta(seconds=60))
    return times


def run(backend: str, backlog: int, history: int, claims: int) -> None:
    database = None
    with tempfile.TemporaryDirectory() as tmp:
        if backend == "sqlite":
            url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        else:
            database = f"bench_claim_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{database}"')
            url = f"postgresql://postgres@127.0.0.1:5432/{database}"
        engine = make_engine(url)
        try:
            migrate(engine)
            sessions = make_sessionmaker(engine)
            runs = _seed(sessions, backlog, history)
            if backend != "sqlite":  # fresh statistics, as autovacuum would have
                with engine.begin() as conn:
                    conn.execute(text("ANALYZE"))
            fair, fifo = [], []
            for _ in range(2):  # alternated, so that a drift of the machine hits both alike
                fair += _time_claims(sessions, work.claim_candidates, claims)
                fifo += _time_claims(sessions, fifo_candidates, claims)
            fair_ms, fifo_ms = statistics.median(fair) * 1000, statistics.median(fifo) * 1000
            print(
                f"{backend:10} runs {runs:>8,}  fair claim median {fair_ms:7.1f} ms (max {max(fair) * 1000:7.1f})"
                f"  FIFO median {fifo_ms:7.1f} ms (max {max(fifo) * 1000:7.1f})  fair/FIFO {fair_ms / fifo_ms:5.2f}x"
            )
        finally:
            engine.dispose()
            if database is not None:
                with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--backlog", type=int, default=9000, help="runnable runs of the first project")
    parser.add_argument("--history", type=int, default=0, help="finished runs of every project")
    parser.add_argument("--claims", type=int, default=25, help="timed claims per round and query")
    args = parser.parse_args()
    for backend in ("sqlite", "postgresql") if args.backend == "both" else (args.backend,):
        run(backend, args.backlog, args.history, args.claims)


if __name__ == "__main__":
    main()
