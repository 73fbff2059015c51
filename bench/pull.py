"""Pull benchmark, run by hand:

    PYTHONPATH=src:bench .venv/bin/python bench/pull.py [--sessions-per-day 500000] [--days 7] [--repeat 2]

One big run delivered by `dataexport pull`, as a data engineer's cron would: `--days` of demo traffic in the
embedded warehouse (about 4 pageviews a session; the defaults make about 10M pageviews in the run's window), one
once job of scope views over them (CSV, 12 typical fields: ids, times, url, device, place, a custom var), run by
a real `dataexport serve` with its scheduler and worker. Then, alternated --repeat times:
  (a) `dataexport pull --to <file>.duckdb` (a new file each time): download, SHA-256 check, typed load, record,
  (b) `dataexport pull --to postgresql://...` (a new database each time), the same into PostgreSQL,
  (c) the baseline: DuckDB's own `CREATE TABLE AS SELECT * FROM read_csv([parts], types=...)` of the same parts,
      already downloaded (what loading them by hand costs, with no download and no check; the two UInt64 ids
      typed by hand, as auto-detection fails on them),
  (d) the floor of (b): PostgreSQL's own `COPY FROM STDIN (FORMAT csv)` of the same parts, decompressed, into a
      table of the same types.
Prints rows/s of each and its ratio to (c) (goal for (a) and (b): at least 0.8).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import httpx
import psycopg
from ingest import wait_healthy
from load import free_port
from rich.console import Console
from rich.table import Table

from dataexport import admin
from dataexport.client import Client
from dataexport.config import Settings
from dataexport.demo.generate import generate
from dataexport.metadata.db import make_engine, make_sessionmaker, migrate, transaction
from dataexport.warehouse.backend import open_warehouse

PG_ADMIN = os.environ.get("DATAEXPORT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
UINT64_IDS = {"session_id": "UBIGINT", "user_id": "UBIGINT"}
FIELDS = [
    "session_id",
    "user_id",
    "view_number",
    "view_time",
    "session_time",
    "url",
    "title",
    "device_id",
    "country_code",
    "city",
    "view_duration_msec",
]


def seed(data_dir: Path, days: int, sessions_per_day: int, now: datetime) -> tuple[int, str, str, int]:
    settings = Settings(data_dir=data_dir)
    engine = make_engine(settings.resolved_database_url)
    migrate(engine)
    with transaction(make_sessionmaker(engine)) as session:
        project = admin.create_project(session, name="Busy shop", now=now).project
        client = admin.create_client(session, now=now, project_id=project.id, name="bench")
        ids = (project.id, client.client.client_id, client.secret)
    engine.dispose()
    with open_warehouse(settings) as warehouse:
        summary = generate(
            warehouse, ids[0], days=days, sessions_per_day=sessions_per_day, now=now, workers=os.cpu_count() or 1
        )
    return (*ids, summary.pageviews)


def pull(url: str, client_id: str, secret: str, job: int, to: str) -> tuple[float, dict]:
    argv = [sys.executable, "-m", "dataexport.cli", "pull", "--server", url, "--job", str(job), "--to", to, "--json"]
    argv += ["--client-id", client_id, "--client-secret", secret]
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    return time.perf_counter() - started, json.loads(done.stdout.splitlines()[-1])


def baseline(parts: list[str], target: Path) -> tuple[float, int]:
    started = time.perf_counter()
    with duckdb.connect(str(target)) as conn:
        # Auto-detected types, but for the two UInt64 ids: detection takes them for BIGINT from its sample, then
        # fails on the first hash above 2^63 (a first try without this line did).
        conn.execute("CREATE TABLE t AS SELECT * FROM read_csv(?, types = ?)", [parts, UINT64_IDS])
        rows = conn.execute("SELECT count(*) FROM t").fetchone()[0]
    return time.perf_counter() - started, rows


def pg_copy(parts: list[str], url: str, pulled: str, rows: int) -> float:
    """PostgreSQL's own `COPY ... FROM STDIN (FORMAT csv)` of the decompressed parts, into a table of the pulled
    table's types: the floor of any load into PostgreSQL (one backend parses and writes every row)."""
    with psycopg.connect(url) as pg:
        pg.execute(f"CREATE TABLE copied (LIKE {pulled})")
        pg.execute("ALTER TABLE copied DROP COLUMN _dataexport_run_id")
        started = time.perf_counter()
        with pg.cursor() as cursor:
            for part in parts:
                with cursor.copy("COPY copied FROM STDIN (FORMAT csv, HEADER true)") as copy, gzip.open(part) as data:
                    while chunk := data.read(1 << 20):
                        copy.write(chunk)
        pg.commit()
        seconds = time.perf_counter() - started
        assert pg.execute("SELECT count(*) FROM copied").fetchone()[0] == rows
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--sessions-per-day", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    console = Console()
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="bench-pull-") as tmp:
        root = Path(tmp)
        data_dir = root / "data"
        started = time.perf_counter()
        project_id, client_id, secret, pageviews = seed(data_dir, args.days, args.sessions_per_day, now)
        console.print(f"{pageviews:,} pageviews over {args.days} days seeded in {time.perf_counter() - started:.0f} s")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "DATAEXPORT_DATA_DIR": str(data_dir), "DATAEXPORT_PORT": str(port)}
        env |= {"DATAEXPORT_LOG_LEVEL": "WARNING", "DATAEXPORT_POLL_INTERVAL_SECONDS": "0.5"}
        server = subprocess.Popen(
            [sys.executable, "-m", "dataexport.cli", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(root / "server.log").open("wb"),
        )
        try:
            wait_healthy(port, server)
            job, run_seconds = export(url, client_id, secret, now, args.days)
            console.print(f"the run exported in {run_seconds:.0f} s")
            timings = measure(url, client_id, secret, job, root, args.repeat, console)
        finally:
            server.terminate()
            server.wait(timeout=60)
    report(console, timings)


def export(url: str, client_id: str, secret: str, now: datetime, days: int) -> tuple[int, float]:
    end = now.replace(hour=0, minute=0, second=0, microsecond=0)
    start = end - timedelta(days=days)
    body = {
        "name": "bench",
        "format": "CSV",
        "scope": "views",
        "deviceLabel": "all",
        "frequency": {"value": "once", "dateRange": {"from": start.isoformat(), "to": end.isoformat()}},
        "fields": [{"fieldName": f} for f in FIELDS] + [{"fieldName": "custom_var", "customVarPosition": 2}],
    }
    started = time.perf_counter()
    with Client(url, client_id, secret) as api:
        job = api.create_export(body)
        while not list(api.iter_runs(job, state="SUCCESS")):
            failed = list(api.iter_runs(job, state="FAILURE"))
            assert not failed, failed
            time.sleep(1)
    return job, time.perf_counter() - started


def measure(url: str, client_id: str, secret: str, job: int, root: Path, repeat: int, console: Console) -> dict:
    timings: dict[str, list[float]] = {"duckdb": [], "postgres": [], "read_csv": [], "pg_copy": []}
    rows = 0
    with Client(url, client_id, secret) as api:
        run = next(iter(api.iter_runs(job, state="SUCCESS")))
        detail = api.get_run(job, run.jobRunId)
        parts = []
        for file in detail.files:
            target = root / "parts" / f"part-{file.partId:05d}.csv.gz"
            target.parent.mkdir(exist_ok=True)
            with httpx.stream("GET", file.url) as answer, target.open("wb") as out:
                for chunk in answer.iter_raw():
                    out.write(chunk)
            parts.append(str(target))
    console.print(f"{len(parts)} parts, {sum(Path(p).stat().st_size for p in parts):,} bytes")
    for i in range(repeat):
        seconds, summary = pull(url, client_id, secret, job, str(root / f"pull-{i}.duckdb"))
        timings["duckdb"].append(seconds)
        rows = summary["rows"]
        database = f"bench_pull_{os.getpid()}_{i}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as pg:
            pg.execute(f"DROP DATABASE IF EXISTS {database}")
            pg.execute(f"CREATE DATABASE {database}")
        try:
            pg_url = PG_ADMIN.rsplit("/", 1)[0] + "/" + database
            seconds, summary = pull(url, client_id, secret, job, pg_url)
            assert summary["rows"] == rows
            timings["postgres"].append(seconds)
            timings["pg_copy"].append(pg_copy(parts, pg_url, f"job_{job}", rows))
        finally:
            with psycopg.connect(PG_ADMIN, autocommit=True) as pg:
                pg.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        seconds, counted = baseline(parts, root / f"baseline-{i}.duckdb")
        assert counted == rows, (counted, rows)
        timings["read_csv"].append(seconds)
        for leftover in root.glob("*.duckdb*"):
            if leftover.is_file():
                leftover.unlink()
        console.print(f"round {i + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in timings.items()))
    timings["rows"] = [rows]
    return timings


def report(console: Console, timings: dict) -> None:
    rows = timings.pop("rows")[0]
    base = statistics.median(timings["read_csv"])
    table = Table(title=f"pull of one {rows:,}-row run (median of {len(timings['read_csv'])})")
    for column in ("what", "seconds", "rows/s", "vs read_csv"):
        table.add_column(column)
    labels = {
        "duckdb": "dataexport pull -> DuckDB file",
        "postgres": "dataexport pull -> PostgreSQL",
        "read_csv": "DuckDB read_csv of the downloaded parts",
        "pg_copy": "PostgreSQL COPY (csv) of the downloaded parts",
    }
    for key, label in labels.items():
        seconds = statistics.median(timings[key])
        table.add_row(label, f"{seconds:.1f}", f"{rows / seconds:,.0f}", f"{base / seconds:.2f}x")
    console.print(table)


if __name__ == "__main__":
    main()
