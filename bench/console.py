"""Console benchmark, run by hand:

    PYTHONPATH=src .venv/bin/python bench/console.py [--days 30] [--sessions-per-day 40000] [--repeat 5]

What the console's data-heavy pages cost on a busy project: `--days` of demo traffic (`--sessions-per-day`
sessions a day, about 4 pageviews each) in the embedded warehouse, served by a real `dataexport serve
--no-scheduler --no-worker` on the same machine, an admin signed in over HTTP. Alternated, --repeat times:
  (a) GET the project's overview: ingest volume per hour (48 h) and per day (30 days), the last pageview,
  (b) GET the new-job form: the field catalog of both scopes, custom vars of 30 days, dynamic var keys of 7 days,
  (c) the jobs list (metadata only: what a page costs without a warehouse read),
  (d) the floor of (a) and (b): DuckDB counting the same 30 days of pageviews by `view_time` over the same Parquet
      files (`SELECT count(*) ... GROUP BY` per quarter hour, in this process), i.e. one scan of that column.
Prints median milliseconds of each and the ratios (a)/(d) and (b)/(d).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import httpx
from ingest import wait_healthy
from load import free_port
from rich.console import Console
from rich.table import Table

from dataexport.config import Settings
from dataexport.console import accounts
from dataexport.demo.generate import generate
from dataexport.metadata.db import make_engine, make_sessionmaker, migrate, transaction
from dataexport.warehouse.backend import open_warehouse

PASSWORD = "bench password"


def seed(data_dir: Path, days: int, sessions_per_day: int) -> tuple[int, int]:
    from dataexport import admin

    settings = Settings(data_dir=data_dir)
    engine = make_engine(settings.resolved_database_url)
    migrate(engine)
    now = datetime.now(UTC)
    with transaction(make_sessionmaker(engine)) as session:
        project = admin.create_project(session, name="Busy shop", now=now).project
        accounts.create_operator(
            session, email="bench@example.com", password=PASSWORD, role="admin", project_ids=[project.id], now=now
        )
        project_id = project.id
    engine.dispose()
    warehouse = open_warehouse(settings)
    try:
        summary = generate(
            warehouse, project_id, days=days, sessions_per_day=sessions_per_day, now=now, workers=os.cpu_count() or 1
        )
    finally:
        warehouse.close()
    return project_id, summary.pageviews


def duckdb_floor(data_dir: Path, project_id: int) -> float:
    files = sorted(str(p) for p in (data_dir / "warehouse").rglob(f"project_id={project_id}/**/*.parquet"))
    started = time.perf_counter()
    duckdb.execute(
        "SELECT epoch_ms(view_time) // 900000 AS q, count(*) FROM read_parquet(?) WHERE project_id = ? GROUP BY q",
        [files, project_id],
    ).fetchall()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--sessions-per-day", type=int, default=40_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="bench-console-") as tmp:
        data_dir = Path(tmp) / "data"
        started = time.perf_counter()
        project_id, pageviews = seed(data_dir, args.days, args.sessions_per_day)
        console.print(f"{pageviews:,} pageviews over {args.days} days seeded in {time.perf_counter() - started:.0f} s")
        port = free_port()
        env = {
            **os.environ,
            "DATAEXPORT_DATA_DIR": str(data_dir),
            "DATAEXPORT_PORT": str(port),
            "DATAEXPORT_LOG_LEVEL": "WARNING",
            "DATAEXPORT_LOG_JSON": "false",
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "dataexport.cli", "serve", "--no-scheduler", "--no-worker"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(Path(tmp) / "server.log").open("wb"),
        )
        try:
            wait_healthy(port, server)
            try:
                timings = measure(f"http://127.0.0.1:{port}", project_id, data_dir, args.repeat)
            except AssertionError:
                console.print((Path(tmp) / "server.log").read_text()[-3000:], markup=False)
                raise
        finally:
            server.terminate()
            server.wait(timeout=30)
    report(console, timings, pageviews)


def measure(url: str, project_id: int, data_dir: Path, repeat: int) -> dict[str, list[float]]:
    pages = {
        "overview": f"/console/projects/{project_id}",
        "new job form": f"/console/projects/{project_id}/jobs/new",
        "jobs list": f"/console/projects/{project_id}/jobs",
    }
    timings: dict[str, list[float]] = {name: [] for name in [*pages, "DuckDB floor"]}
    with httpx.Client(base_url=url, timeout=300) as client:
        token = re.search(r'name="csrf" value="([^"]+)"', client.get("/console/login").text).group(1)
        signed_in = client.post(
            "/console/login", data={"csrf": token, "email": "bench@example.com", "password": PASSWORD}
        )
        assert signed_in.status_code == 303, signed_in.text
        for path in pages.values():  # warm: the server's first DuckDB connection, the OS page cache
            warm = client.get(path)
            assert warm.status_code == 200, (path, warm.status_code, warm.text[-600:])
        for _ in range(repeat):
            for name, path in pages.items():
                started = time.perf_counter()
                answer = client.get(path)
                timings[name].append(time.perf_counter() - started)
                assert answer.status_code == 200, (path, answer.status_code)
            timings["DuckDB floor"].append(duckdb_floor(data_dir, project_id))
    return timings


def report(console: Console, timings: dict[str, list[float]], pageviews: int) -> None:
    medians = {name: statistics.median(values) * 1000 for name, values in timings.items()}
    floor = medians["DuckDB floor"]
    table = Table(title=f"console pages over {pageviews:,} pageviews (median of {len(timings['overview'])})")
    table.add_column("page")
    table.add_column("ms", justify="right")
    table.add_column("min-max ms", justify="right")
    table.add_column("vs DuckDB floor", justify="right")
    for name, values in timings.items():
        spread = f"{min(values) * 1000:.0f}-{max(values) * 1000:.0f}"
        ratio = "" if name == "DuckDB floor" else f"{medians[name] / floor:.1f}x"
        table.add_row(name, f"{medians[name]:.0f}", spread, ratio)
    console.print(table)


if __name__ == "__main__":
    main()
