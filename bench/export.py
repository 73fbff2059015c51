"""Export throughput: a real job run (worker subprocess) against DuckDB COPY and Polars sink_csv.

    PYTHONPATH=src .venv/bin/python bench/export.py --rows 1000000 [--data-dir DIR] [--gen-procs 2]

What it does:
1. Generates about --rows pageviews with the demo generator over 7 whole UTC days (a once job's range is at most
   7 days, so one run covers everything). Days end two days ago, so the run is due at once (window end + the
   session timeout is long past). Each day is one `generate(days=1)` call; --gen-procs days are generated in
   parallel. Generation time is printed, not counted. With --data-dir, data generated before is reused.
2. Creates a project and a once job (views scope, 8 fields, device all) in CSV, then one in JSONL, through
   `engine.lifecycle.create_job`; each is executed by `dataexport worker --once` in its own process, publishing
   to local storage. Its time is the run's own (claim -> SUCCESS, started_at..ended_at in the metadata DB);
   the process's wall time (interpreter start, migrations) is printed beside it.
3. References, each in its own process, timed around the export call only:
   - DuckDB `COPY (q) TO 'x.csv.gz' (COMPRESSION gzip)` and `COPY (q) TO 'x.csv'`, where q is the SELECT of the
     same 8 columns over read_parquet of the same files with the window's filter (no ORDER BY, raw types);
   - Polars `scan_parquet(files).filter(window).select(8 cols).sink_csv('x.csv.gz', compression='gzip')`;
   - for information: DuckDB COPY of the engine's exact SQL (sorted, ISO timestamps) plain and gzip.
Peak RSS of every step is its own process's (os.wait4 rusage). MB/s = uncompressed output bytes / s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

FIELDS = ["session_id", "view_number", "view_time", "url", "device_id", "country_code", "view_duration_msec",
          "browser_name"]
DAYS = 7
# Mean pageviews per demo session (geometric views, bots x4), measured on the generator: 3.52.
VIEWS_PER_SESSION = 3.52
JWT_SECRET = "bench-export-secret-" + "x" * 32
ROOT = Path(__file__).resolve().parent.parent
GOALS = {"duckdb-gzip": 5.0, "polars-gzip": 2.0, "duckdb-plain": 0.7}
MEMORY_GOAL_MB = 500


@dataclass
class Step:
    name: str
    rows: int
    seconds: float  # the measured work
    out_bytes: int  # uncompressed output bytes
    peak_rss_mb: float
    wall: float  # the whole process
    note: str = ""

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.out_bytes / 1e6 / self.seconds


# ---------------------------------------------------------------- processes with their own peak RSS


def run_measured(cmd: list[str], env: dict[str, str]) -> tuple[str, float, float]:
    """Run `cmd`; return its stdout, wall seconds and peak RSS (MB) of that process alone."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=ROOT)
        # wait4 gives the rusage of this one child (RUSAGE_CHILDREN would be the max over all of them).
        _pid, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr[-4000:]}\n{stdout[-2000:]}")
    return stdout, wall, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def child_env(data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(DATAEXPORT_DATA_DIR=str(data_dir), DATAEXPORT_JWT_SECRET=JWT_SECRET, DATAEXPORT_LOG_LEVEL="WARNING",
               PYTHONPATH=str(ROOT / "src"))
    return env


# ---------------------------------------------------------------- data


def days_of_data(today: date) -> list[date]:
    last = today - timedelta(days=2)
    return [last - timedelta(days=DAYS - 1 - i) for i in range(DAYS)]


def _generate_day(warehouse: str, project_id: int, day: date, sessions_per_day: int, seed: int) -> int:
    from dataexport.warehouse.demo import generate
    from dataexport.warehouse.store import PageviewStore


    end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1) - timedelta(microseconds=1)
    with PageviewStore(Path(warehouse)) as store:
        return generate(store, project_id, days=1, sessions_per_day=sessions_per_day, seed=seed, now=end).pageviews


def prepare(data_dir: Path, rows: int, procs: int, seed: int) -> tuple[int, int, list[date]]:
    """Metadata DB with a project, and the warehouse data; returns (project_id, actor_id, days)."""
    from dataexport import admin
    from dataexport.config import Settings
    from dataexport.metadata.db import make_engine, make_sessionmaker, migrate, transaction
    from dataexport.warehouse.demo_data import WEEKDAY

    settings = Settings(data_dir=data_dir, jwt_secret=JWT_SECRET)
    marker = data_dir / "bench-data.json"
    days = days_of_data(datetime.now(UTC).date())
    wanted = {"rows": rows, "seed": seed, "days": [d.isoformat() for d in days]}
    engine = make_engine(settings.resolved_database_url)
    migrate(engine)
    sessions = make_sessionmaker(engine)
    if marker.exists() and json.loads(marker.read_text()).get("wanted") == wanted:
        saved = json.loads(marker.read_text())
        print(f"reusing data in {data_dir}: {saved['pageviews']:,} pageviews")
        return saved["project_id"], saved["actor_id"], days
    now = datetime.now(UTC)
    with transaction(sessions) as session:
        project = admin.create_project(session, name="bench", now=now).project
        client = admin.create_client(session, now=now, project_id=project.id).client
        project_id, actor_id = project.id, client.id
    mean_weekday = sum(WEEKDAY[d.weekday()] for d in days) / DAYS
    per_day = math.ceil(rows / (DAYS * mean_weekday * VIEWS_PER_SESSION))
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=procs) as pool:
        futures = [pool.submit(_generate_day, str(settings.resolved_warehouse_dir), project_id, d, per_day,
                               seed + i) for i, d in enumerate(days)]
        pageviews = sum(f.result() for f in futures)
    print(f"generated {pageviews:,} pageviews ({per_day:,} sessions/day x {DAYS} days) "
          f"in {time.perf_counter() - start:.1f} s (not part of the figures)")
    marker.write_text(json.dumps({"wanted": wanted, "pageviews": pageviews, "project_id": project_id,
                                  "actor_id": actor_id}))
    engine.dispose()
    return project_id, actor_id, days


def window_of(days: list[date]) -> tuple[datetime, datetime]:
    first = datetime(days[0].year, days[0].month, days[0].day, tzinfo=UTC)
    return first, first + timedelta(days=DAYS)


# ---------------------------------------------------------------- the job runs


def job_run(data_dir: Path, project_id: int, actor_id: int, window: tuple[datetime, datetime], fmt: str) -> Step:
    from isal import igzip

    from dataexport.config import Settings
    from dataexport.domain.enums import DeviceLabel, Format, Frequency, Scope
    from dataexport.domain.fieldspec import FieldSpec
    from dataexport.domain.jobspec import JobSpec
    from dataexport.engine.lifecycle import create_job
    from dataexport.metadata.db import make_engine, make_sessionmaker, transaction
    from dataexport.metadata.models import JobRun, Project, RunFile

    settings = Settings(data_dir=data_dir, jwt_secret=JWT_SECRET)
    engine = make_engine(settings.resolved_database_url)
    sessions = make_sessionmaker(engine)
    spec = JobSpec(
        name=f"bench {fmt}", format=Format(fmt), scope=Scope.VIEWS, frequency=Frequency.ONCE,
        fields=tuple(FieldSpec(field_name=f) for f in FIELDS), device_label=DeviceLabel.ALL, segment_id=None,
        range_from=window[0], range_to=window[1] - timedelta(milliseconds=1),
    )
    with transaction(sessions) as session:
        project = session.get(Project, project_id)
        job = create_job(session, project=project, actor_id=actor_id, spec=spec, settings=settings,
                         now=datetime.now(UTC))
        job_id = job.id
    cmd = [str(ROOT / ".venv/bin/python"), "-m", "dataexport.cli", "worker", "--once"]
    stdout, wall, rss = run_measured(cmd, child_env(data_dir))
    outcome = json.loads(stdout.strip().splitlines()[-1])
    with transaction(sessions) as session:
        run = session.query(JobRun).filter_by(job_id=job_id).one()
        files = session.query(RunFile).filter_by(run_id=run.id).order_by(RunFile.part_id).all()
        if outcome is None or outcome["run_id"] != run.id or run.state != "SUCCESS":
            raise SystemExit(f"the {fmt} run did not succeed: {outcome} {run.state} {run.error}")
        seconds = (run.ended_at - run.started_at).total_seconds()
        rows, keys = run.rows, [f.key for f in files]
    raw = 0
    for key in keys:  # untimed: the uncompressed size of what the run produced
        with igzip.open(settings.resolved_files_dir / key, "rb") as f:
            while block := f.read(1 << 22):
                raw += len(block)
    engine.dispose()
    return Step(f"job run {fmt}", rows, seconds, raw, rss, wall, f"{len(keys)} part(s), claim->SUCCESS")


# ---------------------------------------------------------------- references (run in child processes)


def reference_sql(files: list[str], project_id: int, window: tuple[datetime, datetime]) -> tuple[str, list]:
    cols = ", ".join(FIELDS)
    sql = (f"SELECT {cols} FROM read_parquet(?, hive_partitioning = false) "
           "WHERE project_id = ? AND session_time >= ? AND session_time < ?")
    return sql, [files, project_id, window[0], window[1]]


def engine_sql(files: list[str], project_id: int, window: tuple[datetime, datetime]) -> tuple[str, list]:
    from dataexport.domain.enums import Scope
    from dataexport.domain.fieldspec import FieldSpec
    from dataexport.warehouse.query import build_export_query

    q = build_export_query(files=files, project_id=project_id, scope=Scope.VIEWS,
                           fields=[FieldSpec(field_name=f) for f in FIELDS], window_start=window[0],
                           window_end=window[1], timezone="UTC", device_ids=None, segment_filter=None, output="csv")
    return q.sql, q.params


def copy_to(sql: str, params: list, out: Path, gzip: bool) -> None:
    import duckdb

    conn = duckdb.connect()
    try:
        # COPY cannot take parameters inside its subquery: a view over the parameterised relation can.
        conn.sql(sql, params=params).create_view("q")
        options = " (HEADER, COMPRESSION gzip)" if gzip else " (HEADER)"
        conn.execute(f"COPY (SELECT * FROM q) TO '{out}'{options}")
    finally:
        conn.close()


def polars_sink(files: list[str], project_id: int, window: tuple[datetime, datetime], out: Path) -> None:
    import polars as pl

    (pl.scan_parquet(files, hive_partitioning=False)
     .filter((pl.col("project_id") == project_id) & (pl.col("session_time") >= window[0])
             & (pl.col("session_time") < window[1]))
     .select(FIELDS)
     .sink_csv(out, compression="gzip"))


def reference_step(name: str, spec_path: Path) -> None:
    """Child process body: one export, timed around the call; prints JSON {seconds, out_bytes}."""
    from isal import igzip

    spec = json.loads(spec_path.read_text())
    files, project_id = spec["files"], spec["project_id"]
    window = (datetime.fromisoformat(spec["start"]), datetime.fromisoformat(spec["end"]))
    out = Path(spec["out_dir"]) / f"{name}.csv{'.gz' if name.endswith('gzip') else ''}"
    start = time.perf_counter()
    if name == "duckdb-gzip":
        copy_to(*reference_sql(files, project_id, window), out, gzip=True)
    elif name == "duckdb-plain":
        copy_to(*reference_sql(files, project_id, window), out, gzip=False)
    elif name == "engine-sql-duckdb-gzip":
        copy_to(*engine_sql(files, project_id, window), out, gzip=True)
    elif name == "engine-sql-duckdb-plain":
        copy_to(*engine_sql(files, project_id, window), out, gzip=False)
    elif name == "polars-gzip":
        polars_sink(files, project_id, window, out)
    else:
        raise SystemExit(f"unknown step {name}")
    seconds = time.perf_counter() - start
    raw = lines = 0
    opener = igzip.open if out.suffix == ".gz" else open
    with opener(out, "rb") as f:
        while block := f.read(1 << 22):
            raw += len(block)
            lines += block.count(b"\n")
    out.unlink()
    print(json.dumps({"seconds": seconds, "out_bytes": raw, "rows": lines - 1}))


def reference(name: str, spec_path: Path, data_dir: Path) -> Step:
    cmd = [str(ROOT / ".venv/bin/python"), str(Path(__file__).resolve()), "--step", name, "--spec", str(spec_path)]
    stdout, wall, rss = run_measured(cmd, child_env(data_dir))
    got = json.loads(stdout.strip().splitlines()[-1])
    return Step(name, got["rows"], got["seconds"], got["out_bytes"], rss, wall, "export call only")


# ---------------------------------------------------------------- report


def report(steps: dict[str, Step], expected_rows: int) -> None:
    print(f"\n{'step':<26}{'rows':>12}{'seconds':>9}{'rows/s':>12}{'MB/s':>8}{'peak RSS MB':>13}{'wall s':>8}  note")
    for s in steps.values():
        flag = "" if s.rows == expected_rows else f"  (rows differ from {expected_rows:,}: text with newlines?)"
        print(f"{s.name:<26}{s.rows:>12,}{s.seconds:>9.2f}{s.rows_per_s:>12,.0f}{s.mb_per_s:>8.0f}"
              f"{s.peak_rss_mb:>13.0f}{s.wall:>8.1f}  {s.note}{flag}")
    job = steps["job run CSV"]
    print("\njob-run speed (CSV) relative to each reference (reference seconds / run seconds):")
    for ref, goal in GOALS.items():
        if ref in steps:
            ratio = steps[ref].seconds / job.seconds
            verdict = "met" if ratio >= goal else "NOT met"
            print(f"  vs {ref:<14} {ratio:6.2f}x   goal >= {goal}x  {verdict}")
    for ref in ("engine-sql-duckdb-gzip", "engine-sql-duckdb-plain"):
        if ref in steps:
            print(f"  vs {ref:<24} {steps[ref].seconds / job.seconds:6.2f}x   (information: same SQL as the run)")
    if "job run JSONL" in steps:
        print(f"  JSONL run / CSV run time: {steps['job run JSONL'].seconds / job.seconds:.2f}")
    peak = max(steps["job run CSV"].peak_rss_mb, steps.get("job run JSONL", job).peak_rss_mb)
    print(f"  job-run peak RSS {peak:.0f} MB   goal < {MEMORY_GOAL_MB} MB at 10M rows  "
          f"{'met' if peak < MEMORY_GOAL_MB else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--data-dir", type=Path, default=None, help="keep (and reuse) the generated data here")
    parser.add_argument("--gen-procs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--skip-engine-sql", action="store_true", help="skip the informational engine-SQL COPYs")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        reference_step(args.step, args.spec)
        return
    sys.path.insert(0, str(ROOT / "src"))
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        data_dir = args.data_dir or Path(tmp) / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        project_id, actor_id, days = prepare(data_dir, args.rows, args.gen_procs, args.seed)
        window = window_of(days)
        steps: dict[str, Step] = {}
        for fmt in ("CSV", "JSONL"):
            steps[f"job run {fmt}"] = job_run(data_dir, project_id, actor_id, window, fmt)
        from dataexport.config import Settings
        from dataexport.warehouse.layout import partition_files

        files = partition_files(Settings(data_dir=data_dir).resolved_warehouse_dir, project_id, *window)
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps({"files": files, "project_id": project_id, "start": window[0].isoformat(),
                                         "end": window[1].isoformat(), "out_dir": tmp}))
        names = ["duckdb-gzip", "duckdb-plain", "polars-gzip"]
        if not args.skip_engine_sql:
            names += ["engine-sql-duckdb-gzip", "engine-sql-duckdb-plain"]
        for name in names:
            steps[name] = reference(name, spec_path, data_dir)
        print(f"window {window[0]:%Y-%m-%d} .. {window[1]:%Y-%m-%d} (7 days, one run), {len(files)} Parquet files; "
              f"2 worker threads; DuckDB and Polars use all cores ({os.cpu_count()})")
        report(steps, steps["job run CSV"].rows)


if __name__ == "__main__":
    main()
