"""Export throughput: real job runs (worker subprocess) over a matrix, against DuckDB COPY and Polars sink_csv.

    PYTHONPATH=src .venv/bin/python bench/export.py --rows 1000000[,10000000,...] [--scope sessions|views|both]
        [--fields bench|all|both] [--format csv|jsonl|both] [--warehouse embedded|ducklake|both] [--data-dir DIR]
        [--gen-procs 2] [--skip-polars] [--skip-engine-sql]

Defaults: --scope views --fields bench --format both --warehouse embedded, the benchmark as it was before the
matrix.

What it does, for each size of --rows:
1. Generates about N pageviews with the demo generator over 7 whole UTC days (a once job's range is at most
   7 days, so one run covers everything). Days end two days ago, so the run is due at once (window end + the
   session timeout is long past). Each day is one `generate(days=1)` call; --gen-procs days are generated in
   parallel. Then the warehouse is compacted, as a week-old partition would be in production (one zstd file a
   day, rows session by session). Generation and compaction times are printed, not counted. With --data-dir,
   the data of size N lives in DIR/rows-N and is reused by later runs (bench-data.json records what was
   generated and that it was compacted); without it, a temporary directory is used and removed.
   With --warehouse ducklake or both, the same data is also put in a DuckLake lake (bench/lake.py): catalog in a
   PostgreSQL database on 127.0.0.1:5432, Parquet files on a SeaweedFS S3 server started for the size (data
   path s3://bench/lake/). It is copied from the embedded warehouse by `migrate.migrate_project`, then the
   lake's `maintain` merges its files (sorted by user_id, as compaction leaves the embedded ones) and deletes
   the replaced ones; copy and maintenance times are printed, not counted. With --data-dir the lake is kept
   too: SeaweedFS's data in DIR/rows-N/seaweedfs, the catalog in a database named after that directory, and
   bench-data.json records the copy (reused when the lake still holds its rows, else made again).
2. Runs every cell of scope x fields x format as a once job (device all) created through
   `engine.lifecycle.create_job` and executed by `dataexport worker --once` in its own process (one attempt:
   a failure ends the run FAILURE at once, and the cell is reported FAILED with the run's error), publishing to
   local storage, on each warehouse of --warehouse (with both: the embedded run, then the DuckLake run of the
   same cell; the DuckLake worker gets DATAEXPORT_WAREHOUSE=ducklake, the lake's DATAEXPORT_LAKE_* and the
   DATAEXPORT_S3_* endpoint and credentials). Its time is the run's own (claim -> SUCCESS, started_at..ended_at
   in the metadata DB); the process's wall time (interpreter start, migrations) is printed beside it. A DuckLake
   run's time includes opening the lake (extensions, ATTACH), which its worker does for that run: the time of
   one open is printed once per size. The run's files are measured (uncompressed bytes) and then deleted, so a
   large matrix does not fill the disk.
   Field sets: `bench` = 8 fields (views: FIELDS; sessions: SESSION_FIELDS, an equivalent);
   `all` = every catalog field of the scope, custom_var at CUSTOM_VAR_POSITIONS, dynamic_var of
   DYNAMIC_VAR_KEYS (values the demo generator writes) and an alias (ALIASES).
3. References, each in its own process, timed around the export call only, without a DuckDB memory limit,
   over the embedded warehouse's Parquet files (whichever --warehouse):
   - views x bench (as before the matrix): DuckDB `COPY (q) TO 'x.csv.gz' (COMPRESSION gzip)` and
     `COPY (q) TO 'x.csv'`, where q is the SELECT of the same 8 columns over read_parquet of the same files with
     the window's filter (no ORDER BY, raw types), and Polars
     `scan_parquet(files).filter(window).select(8 cols).sink_csv('x.csv.gz', compression='gzip')`;
   - every other (scope, fields): DuckDB `COPY (q) TO 'x.csv' (HEADER)` of a hand-written query computing the
     same columns (sessions: GROUP BY session; views: session columns as window aggregates), written here from
     the fields' meanings, independently of the engine's query builder; raw DuckDB types (timestamps and lists
     as DuckDB prints them);
   - for information: DuckDB COPY of the engine's SQL (sorted, ISO timestamps), plain (and gzip for views x
     bench); --skip-engine-sql leaves them out.
4. Prints, per (size, scope, fields), every step and, per warehouse, the ratios with their goals: reference
   seconds / CSV run seconds (views x bench: GOALS; otherwise plain COPY >= PLAIN_GOAL), JSONL run / CSV run
   seconds (<= JSONL_GOAL), with both warehouses DuckLake run / embedded run seconds of the same cell
   (<= LAKE_GOAL), peak RSS (< MEMORY_GOAL_MB); then, with several sizes, a linearity table (seconds and rows/s
   of each cell per size), and a summary with one line per (size, scope, fields, format, warehouse).
Peak RSS of every step is its own process's (os.wait4 rusage; they are spawned by a small helper forked at start,
so the memory this process grows to does not count in theirs). MB/s = uncompressed output bytes / s.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

FIELDS = [
    "session_id",
    "view_number",
    "view_time",
    "url",
    "device_id",
    "country_code",
    "view_duration_msec",
    "browser_name",
]
# The sessions counterpart of FIELDS: ids, time, first-known attributes and three session aggregates.
SESSION_FIELDS = [
    "session_id",
    "session_time",
    "device_id",
    "country_code",
    "browser_name",
    "session_number_of_views",
    "session_duration_msec",
    "referer_url",
]
# What the demo generator writes (warehouse/demo_views.py): custom var 1 "Goal achieved" (session scope, last
# view), 2 dataType (page scope, every view); dynamic var "AB Test" (text, first view), "cart_value" (number,
# cart and checkout views). One text and one number key, so both renderings are exercised.
CUSTOM_VAR_POSITIONS = (1, 2)
DYNAMIC_VAR_KEYS = ("AB Test", "cart_value")
ALIASES = {"user_id_unhashed": "visitor"}
SCOPES = ("sessions", "views")
FIELD_SETS = ("bench", "all")
FORMATS = ("CSV", "JSONL")
DAYS = 7
# Mean pageviews per demo session (geometric views, bots x4), measured on the generator: 3.52.
VIEWS_PER_SESSION = 3.52
JWT_SECRET = "bench-export-secret-" + "x" * 32
ROOT = Path(__file__).resolve().parent.parent
GOALS = {"duckdb-gzip": 5.0, "polars-gzip": 2.0, "duckdb-plain": 0.7}  # views x bench, CSV run
PLAIN_GOAL = 1.0  # every other cell: hand-written plain COPY seconds / CSV run seconds
JSONL_GOAL = 1.2  # JSONL run seconds / CSV run seconds, at most
MEMORY_GOAL_MB = 500
LAKE_GOAL = 1.5  # DuckLake run seconds / embedded run seconds, at most (issue 12)
WAREHOUSES = ("embedded", "ducklake")


@dataclass
class Step:
    name: str
    rows: int
    seconds: float  # the measured work
    out_bytes: int  # uncompressed output bytes
    peak_rss_mb: float
    wall: float  # the whole process
    note: str = ""
    error: str | None = None  # set when the step failed: its figures are then meaningless

    @property
    def ok(self) -> bool:
        return self.error is None

    def headline(self, width: int = 300) -> str:
        """The error on one line, without DuckDB's generic advice that follows its message."""
        text = " ".join((self.error or "").split("Possible solutions:")[0].split())
        return text if len(text) <= width else text[: width - 3] + "..."

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.ok and self.seconds > 0 else math.nan

    @property
    def mb_per_s(self) -> float:
        return self.out_bytes / 1e6 / self.seconds if self.ok and self.seconds > 0 else math.nan


@dataclass
class Data:
    """One size's prepared data: metadata DB with the bench project, and the window's Parquet files (embedded);
    `lake_env` is what points a process at the lake copy of the same data, when there is one."""

    rows_wanted: int
    data_dir: Path
    project_id: int
    actor_id: int
    timezone: str
    window: tuple[datetime, datetime]
    files: list[str]
    lake_env: dict[str, str] = field(default_factory=dict)
    lake_open_seconds: float = math.nan  # one open of the lake, which each DuckLake run's time includes


@dataclass
class Group:
    """The steps of one (size, scope, fields): its job runs (one a format and warehouse) and their references."""

    rows_wanted: int
    scope: str
    fieldset: str
    warehouses: list[str]
    lake_open_seconds: float = math.nan  # of the lake's data (Data.lake_open_seconds)
    steps: dict[str, Step] = field(default_factory=dict)

    def job(self, fmt: str, warehouse: str) -> Step | None:
        return self.steps.get(run_name(warehouse, fmt))


def run_name(warehouse: str, fmt: str) -> str:
    return f"{warehouse} run {fmt}"


@dataclass
class Check:
    label: str  # short, for the summary
    text: str  # long, for the group report


# ---------------------------------------------------------------- processes with their own peak RSS


@dataclass
class Proc:
    stdout: str
    stderr: str
    code: int
    wall: float
    peak_rss_mb: float

    def failure(self) -> str:
        if self.code < 0:  # e.g. -9: the kernel's OOM killer
            return f"killed by signal {-self.code}"
        lines = (self.stderr.strip() or self.stdout.strip()).splitlines()
        return f"exit {self.code}: {lines[-1] if lines else 'no output'}"  # a traceback's last line names the error


# A child's ru_maxrss starts from the peak RSS of the process that spawned it (exec records the memory it
# replaces, and vfork shares the parent's), so children spawned by this process, which grows with the metadata
# DB, migrations and compaction, would all report at least its peak (a bare `python -c pass`: 138 MB). They are
# spawned by a helper forked first thing in main(), while this process is still small.
_spawner = None


def start_spawner() -> None:
    global _spawner
    _spawner = multiprocessing.get_context("fork").Pool(1)  # Pool forks its worker now, not on first use


def run_measured(cmd: list[str], env: dict[str, str]) -> Proc:
    """Run `cmd`; return its output, exit code, wall seconds and peak RSS (MB) of that process alone."""
    return _spawner.apply(_run_measured, (cmd, env)) if _spawner else _run_measured(cmd, env)


def _run_measured(cmd: list[str], env: dict[str, str]) -> Proc:
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=ROOT)
        # wait4 gives the rusage of this one child (RUSAGE_CHILDREN would be the max over all of them).
        _pid, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    return Proc(stdout, stderr, proc.returncode, wall, usage.ru_maxrss / 1024)  # ru_maxrss is in KiB on Linux


def last_json_line(text: str):
    lines = text.strip().splitlines()
    try:
        return json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        return None


def child_env(data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATAEXPORT_DATA_DIR=str(data_dir),
        DATAEXPORT_JWT_SECRET=JWT_SECRET,
        DATAEXPORT_LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT / "src"),
    )
    return env


def worker_env(data_dir: Path, warehouse_env: dict[str, str]) -> dict[str, str]:
    # One attempt: a failed run ends FAILURE inside this `worker --once` instead of waiting as RUNNABLE for a
    # retry that the next cell's worker would pick up (and time as its own).
    return {**child_env(data_dir), **warehouse_env, "DATAEXPORT_MAX_ATTEMPTS": "1"}


# ---------------------------------------------------------------- data


def days_of_data(today: date) -> list[date]:
    last = today - timedelta(days=2)
    return [last - timedelta(days=DAYS - 1 - i) for i in range(DAYS)]


def _generate_day(warehouse: str, project_id: int, day: date, sessions_per_day: int, seed: int) -> int:
    from dataexport.demo.generate import generate
    from dataexport.warehouse.embedded import EmbeddedWarehouse

    end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1) - timedelta(microseconds=1)
    with EmbeddedWarehouse(Path(warehouse)) as store:
        return generate(store, project_id, days=1, sessions_per_day=sessions_per_day, seed=seed, now=end).pageviews


def _generate(settings, sessions, rows: int, procs: int, seed: int, days: list[date]) -> dict:
    from dataexport import admin
    from dataexport.demo.data import WEEKDAY
    from dataexport.metadata.db import transaction

    now = datetime.now(UTC)
    with transaction(sessions) as session:
        project = admin.create_project(session, name="bench", now=now).project
        client = admin.create_client(session, now=now, project_id=project.id).client
        project_id, actor_id = project.id, client.id
    mean_weekday = sum(WEEKDAY[d.weekday()] for d in days) / DAYS
    per_day = math.ceil(rows / (DAYS * mean_weekday * VIEWS_PER_SESSION))
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=procs) as pool:
        futures = [
            pool.submit(_generate_day, str(settings.resolved_warehouse_dir), project_id, d, per_day, seed + i)
            for i, d in enumerate(days)
        ]
        pageviews = sum(f.result() for f in futures)
    print(
        f"generated {pageviews:,} pageviews ({per_day:,} sessions/day x {DAYS} days) "
        f"in {time.perf_counter() - start:.1f} s (not part of the figures)"
    )
    return {"pageviews": pageviews, "project_id": project_id, "actor_id": actor_id, "compacted": False}


def _compact(warehouse: Path) -> float:
    """Compact every partition now (they are at least two days old: production would have compacted them)."""
    from dataexport.warehouse.embedded import compaction

    start = time.perf_counter()
    results = compaction.compact(warehouse, older_than=timedelta(0))
    seconds = time.perf_counter() - start
    before, after = sum(r.rows_before for r in results), sum(r.rows_after for r in results)
    print(
        f"compacted {len(results)} partition(s), {before:,} -> {after:,} rows, in {seconds:.1f} s "
        f"(not part of the figures)"
    )
    return seconds


def prepare(data_dir: Path, rows: int, procs: int, seed: int) -> Data:
    """Metadata DB with a project, and the warehouse data (generated, then compacted), reused when it matches."""
    from dataexport.config import Settings
    from dataexport.metadata.db import make_engine, make_sessionmaker, migrate, transaction
    from dataexport.metadata.models import Project
    from dataexport.warehouse.embedded.layout import partition_files

    settings = Settings(data_dir=data_dir, jwt_secret=JWT_SECRET)
    marker = data_dir / "bench-data.json"
    # DATAEXPORT_BENCH_TODAY pins the data's days, so a long matrix run across midnight reuses its data.
    pinned = os.environ.get("DATAEXPORT_BENCH_TODAY")
    days = days_of_data(date.fromisoformat(pinned) if pinned else datetime.now(UTC).date())
    wanted = {"rows": rows, "seed": seed, "days": [d.isoformat() for d in days]}
    engine = make_engine(settings.resolved_database_url)
    migrate(engine)
    sessions = make_sessionmaker(engine)
    saved = json.loads(marker.read_text()) if marker.exists() else {}
    if saved.get("wanted") == wanted:
        print(f"reusing data in {data_dir}: {saved['pageviews']:,} pageviews")
    else:
        saved = {"wanted": wanted, **_generate(settings, sessions, rows, procs, seed, days)}
        marker.write_text(json.dumps(saved))  # before compacting: a crash there leaves it to be compacted
    if not saved.get("compacted"):  # new data, or data of a bench version that did not compact
        saved.update(compacted=True, compaction_seconds=_compact(settings.resolved_warehouse_dir))
        marker.write_text(json.dumps(saved))
    with transaction(sessions) as session:
        timezone = session.get(Project, saved["project_id"]).timezone
    engine.dispose()
    window = window_of(days)
    files = partition_files(settings.resolved_warehouse_dir, saved["project_id"], *window)
    return Data(rows, data_dir, saved["project_id"], saved["actor_id"], timezone, window, files)


def prepare_lake(data: Data, lake) -> None:
    """The same data in the lake (bench/lake.py): copied from the embedded warehouse and maintained, or reused
    when bench-data.json records a copy of this data and the lake still holds its rows."""
    from lake import copy_into_lake, empty_lake, lake_rows, timed_open

    from dataexport.config import Settings

    marker = data.data_dir / "bench-data.json"
    saved = json.loads(marker.read_text())
    recorded = saved.get("lake")
    held = _rows_held(lake, data) if recorded else None
    if recorded and held == recorded["rows"]:
        print(f"reusing the lake copy in {recorded['database']}: {held:,} pageviews")
    else:
        if recorded:
            print(f"the lake copy bench-data.json records is gone or differs ({held} rows held): copying again")
        empty_lake(lake)  # whatever an interrupted copy, or a copy of older data, left there
        warehouse_dir = Settings(data_dir=data.data_dir, jwt_secret=JWT_SECRET).resolved_warehouse_dir
        copy = copy_into_lake(warehouse_dir, lake, data.data_dir, data.project_id)
        saved["lake"] = {
            "database": lake.catalog_url.rsplit("/", 1)[1],
            "seaweedfs": str(data.data_dir / "seaweedfs"),
            "rows": copy.rows,
            "migrate_seconds": copy.migrate_seconds,
            "maintain_seconds": copy.maintain_seconds,
        }
        marker.write_text(json.dumps(saved))
        if (held := lake_rows(lake, data.data_dir, data.project_id, *data.window)) != copy.rows:
            raise SystemExit(f"the lake holds {held:,} pageviews of the window after copying {copy.rows:,}")
    data.lake_env = lake.env()
    data.lake_open_seconds = timed_open(lake, data.data_dir)
    print(
        f"opening the lake takes {data.lake_open_seconds:.2f} s: part of each DuckLake run's time (its "
        "`worker --once` opens the lake for that run; a long-lived worker opens it once)"
    )


def _rows_held(lake, data: Data) -> int | None:
    from lake import lake_rows

    try:
        return lake_rows(lake, data.data_dir, data.project_id, *data.window)
    except Exception as exc:  # files gone from under the catalog, say: the copy is made again
        print(f"the lake cannot be read ({type(exc).__name__}: {str(exc)[:200]})")
        return None


def window_of(days: list[date]) -> tuple[datetime, datetime]:
    first = datetime(days[0].year, days[0].month, days[0].day, tzinfo=UTC)
    return first, first + timedelta(days=DAYS)


# ---------------------------------------------------------------- field sets


def field_specs(scope: str, fieldset: str) -> list:
    """The job's fields[]: FieldSpec objects, as the API would build them from the request."""
    from dataexport.catalog import fields_for
    from dataexport.domain.enums import Scope
    from dataexport.domain.fieldspec import CUSTOM_VAR, DYNAMIC_VAR, FieldSpec

    if fieldset == "bench":
        return [FieldSpec(field_name=f) for f in (FIELDS if scope == "views" else SESSION_FIELDS)]
    specs = []
    for f in fields_for(Scope(scope)):  # catalog order; the parameterised fields where the catalog lists them
        if f.name == CUSTOM_VAR:
            specs += [FieldSpec(field_name=CUSTOM_VAR, custom_var_position=p) for p in CUSTOM_VAR_POSITIONS]
        elif f.name == DYNAMIC_VAR:
            specs += [FieldSpec(field_name=DYNAMIC_VAR, dynamic_var_key=k) for k in DYNAMIC_VAR_KEYS]
        else:
            specs.append(FieldSpec(field_name=f.name, alias_name=ALIASES.get(f.name)))
    return specs


# ---------------------------------------------------------------- the job runs


def job_run(data: Data, scope: str, fieldset: str, fmt: str, warehouse: str) -> Step:
    """One cell run as a once job by a `worker --once` on `warehouse` (the embedded data or its lake copy)."""
    from dataexport.config import Settings
    from dataexport.metadata.db import make_engine, make_sessionmaker

    settings = Settings(data_dir=data.data_dir, jwt_secret=JWT_SECRET)
    engine = make_engine(settings.resolved_database_url)
    sessions = make_sessionmaker(engine)
    try:
        _retire_unfinished_jobs(sessions, data)
        job_id = _create_job(sessions, settings, data, scope, fieldset, fmt)
        cmd = [str(ROOT / ".venv/bin/python"), "-m", "dataexport.cli", "worker", "--once"]
        proc = run_measured(cmd, worker_env(data.data_dir, data.lake_env if warehouse == "ducklake" else {}))
        return _job_outcome(sessions, settings, data, job_id, run_name(warehouse, fmt), proc)
    finally:
        engine.dispose()


def _retire_unfinished_jobs(sessions, data: Data) -> None:
    """Delete the project's jobs that could still run (left by an interrupted bench or a killed worker), so the
    worker started next can only claim the run of the job created next."""
    from dataexport.engine.lifecycle import delete_job
    from dataexport.metadata.db import transaction
    from dataexport.metadata.models import ExportJob
    from dataexport.metadata.repositories.work import EXECUTABLE_JOB_STATES

    with transaction(sessions) as session:
        stale = (
            session.query(ExportJob.id)
            .filter(ExportJob.project_id == data.project_id, ExportJob.state.in_(EXECUTABLE_JOB_STATES))
            .all()
        )
        for (job_id,) in stale:
            delete_job(session, data.project_id, job_id, actor_id=data.actor_id, now=datetime.now(UTC))


def _create_job(sessions, settings, data: Data, scope: str, fieldset: str, fmt: str) -> int:
    from dataexport.domain.enums import DeviceLabel, Format, Frequency, Scope
    from dataexport.domain.jobspec import JobSpec
    from dataexport.engine.lifecycle import create_job
    from dataexport.metadata.db import transaction
    from dataexport.metadata.models import Project

    spec = JobSpec(
        name=f"bench {scope} {fieldset} {fmt}",
        format=Format(fmt),
        scope=Scope(scope),
        frequency=Frequency.ONCE,
        fields=tuple(field_specs(scope, fieldset)),
        device_label=DeviceLabel.ALL,
        segment_id=None,
        range_from=data.window[0],
        range_to=data.window[1] - timedelta(milliseconds=1),
    )
    with transaction(sessions) as session:
        project = session.get(Project, data.project_id)
        job = create_job(
            session, project=project, actor_id=data.actor_id, spec=spec, settings=settings, now=datetime.now(UTC)
        )
        return job.id


def _job_outcome(sessions, settings, data: Data, job_id: int, name: str, proc: Proc) -> Step:
    from dataexport.engine.lifecycle import delete_job
    from dataexport.metadata.db import transaction
    from dataexport.metadata.models import JobRun, RunFile

    outcome = last_json_line(proc.stdout) if proc.code == 0 else None
    with transaction(sessions) as session:
        run = session.query(JobRun).filter_by(job_id=job_id).one()
        keys = [f.key for f in session.query(RunFile).filter_by(run_id=run.id).order_by(RunFile.part_id)]
        state, error, rows = run.state, run.error, run.rows or 0
        seconds = (run.ended_at - run.started_at).total_seconds() if run.ended_at and run.started_at else math.nan
        if state not in ("SUCCESS", "FAILURE"):  # the worker died mid-run: no later worker may take it over
            delete_job(session, data.project_id, job_id, actor_id=data.actor_id, now=datetime.now(UTC))
    if state == "SUCCESS" and (outcome or {}).get("run_id") == run.id:
        raw = _measure_and_delete(settings.resolved_files_dir, keys)
        return Step(name, rows, seconds, raw, proc.peak_rss_mb, proc.wall, f"{len(keys)} part(s), claim->SUCCESS")
    why = error if state == "FAILURE" and error else proc.failure() if proc.code else f"worker said {outcome}"
    return Step(name, rows, seconds, 0, proc.peak_rss_mb, proc.wall, "claim->end", error=f"run {state}: {why}")


def _measure_and_delete(files_dir: Path, keys: list[str]) -> int:
    """Uncompressed bytes of a run's parts (untimed); the parts are deleted after."""
    from isal import igzip

    raw = 0
    for key in keys:
        path = files_dir / key
        with igzip.open(path, "rb") as f:
            while block := f.read(1 << 22):
                raw += len(block)
        path.unlink()
    return raw


# ---------------------------------------------------------------- hand-written reference queries
# Written from the field meanings (catalog/fields.py and primitives.py descriptions), not from the engine's
# SQL templates, so a shared mistake or a costly construct of the engine does not hide in the reference. Raw
# DuckDB types throughout: the reference does no output formatting.

_SOURCE = "read_parquet(?, hive_partitioning = false) WHERE project_id = ? AND session_time >= ? AND session_time < ?"
_SESSION = "user_id_unhashed, session_number"
# A session's device and environment: the first view's value that is known (arg_min skips NULLs).
_ATTRIBUTES = (
    "device_id",
    "city",
    "country_code",
    "language",
    "browser_name",
    "browser_version",
    "platform_name",
    "platform_version",
    "screen_height",
    "screen_width",
    "os_version",
    "app_version",
    "model",
    "manufacturer",
    "density",
)
_APP_EVENT = ("event_name", "event_time", "event_type")
_ERROR = ("message", "error_time", "filename", "error_type", "line_number", "col_number")
_ITEM = ("id", "sku", "catalog_id", "product_id_hashed", "revenue_cents", "quantity", "transaction_time")
_CART = ("sku", "catalog_id", "product_id_hashed")
_UTM = ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term")
_VIEW_COLUMNS = (
    "view_duration_msec",
    "page_interaction_time_msec",
    "scroll_rate",
    "window_height",
    "window_width",
    "document_height",
    "document_width",
    "dom_interactive_after_msec",
    "fully_loaded",
    "start_render",
    "frustration_score",
    "rage_click_all_targets_ind",
    "multiple_button_interaction_ind",
)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _out(name: str) -> str:
    """The quoted output column of a field (its alias if the job gives it one)."""
    return _q(ALIASES.get(name, name))


def _members(source: str, prefix: str, members: tuple[str, ...]) -> list[str]:
    return [f"list_transform({source}, lambda _e: _e.{m}) AS {_q(f'{prefix}.{m}')}" for m in members]


def _custom_var_of_view(position: int, session_scoped: bool = False) -> str:
    cond = f"_c.position = {position}" + (" AND _c.scope = 'session'" if session_scoped else "")
    return f"list_filter(custom_vars, lambda _c: {cond})[-1].value"


def _dynamic_var_of_view(key: str, pick: int) -> str:
    # The value as text (CSV): a number entry has number_value set instead of string_value.
    return (
        f"list_transform(list_filter(dynamic_vars, lambda _d: _d.key = {_lit(key)}), "
        f"lambda _d: coalesce(_d.string_value, CAST(_d.number_value AS VARCHAR)))[{pick}]"
    )


def _sessions_bench_sql() -> str:
    return f"""
SELECT any_value(session_id) AS session_id,
       date_trunc('second', min(session_time)) AS session_time,
       arg_min(device_id, view_number) AS device_id,
       arg_min(country_code, view_number) AS country_code,
       arg_min(browser_name, view_number) AS browser_name,
       count(*) AS session_number_of_views,
       max(epoch_ms(view_time) + coalesce(view_duration_msec, 0)) - epoch_ms(min(session_time))
           AS session_duration_msec,
       first(referer_url ORDER BY view_number) AS referer_url
FROM {_SOURCE}
GROUP BY {_SESSION}"""


def _with_view_number(column: str) -> str:
    # Each element of the view's list, tagged with the view's number, gathered over the session in view order.
    return (
        f"flatten(list(list_transform({column}, lambda _e: struct_insert(_e, view_number := view_number)) "
        f"ORDER BY view_number)) AS {column}"
    )


def _sessions_all_sql() -> str:
    """One row per session: the aggregates in `s`, the output columns (and list members) over them."""
    aggregates = [
        "any_value(project_id) AS project_id",
        "any_value(user_id) AS user_id",
        "any_value(session_id) AS session_id",
        "min(session_time) AS started",
        "count(*) AS views",
        # the session ends when its last-ending view does: view start + time spent on it
        "max(epoch_ms(view_time) + coalesce(view_duration_msec, 0)) AS end_ms",
        *(f"arg_min({c}, view_number) AS {c}" for c in _ATTRIBUTES),
        "first(referer_url ORDER BY view_number) AS referer_url",  # NULL when the first view had none
        "sum(len(transactions)) AS transactions",
        "sum(list_sum(list_transform(transactions, lambda _t: _t.revenue_cents))) AS revenue",
        "max(is_excludable) AS is_excludable",
        # last value set in the session: arg_max skips the views that did not set it
        *(f"arg_max({_custom_var_of_view(p)}, view_number) AS cv_{p}" for p in CUSTOM_VAR_POSITIONS),
        *(f"arg_max({_dynamic_var_of_view(k, -1)}, view_number) AS dv_{i}" for i, k in enumerate(DYNAMIC_VAR_KEYS)),
        _with_view_number("app_events"),
        _with_view_number("transaction_items"),
        _with_view_number("add_to_cart_items"),
        "flatten(list(errors ORDER BY view_number)) AS errors",
    ]
    columns = [
        "project_id",
        "user_id",
        f"user_id_unhashed AS {_out('user_id_unhashed')}",
        "session_id",
        "session_number",
        "CAST(timezone(?, started) AS DATE) AS session_date",
        "date_trunc('second', started) AS session_time",
        *_ATTRIBUTES[:6],
        "TRY_CAST(split_part(browser_version, '.', 1) AS USMALLINT) AS browser_major_version",
        *_ATTRIBUTES[6:],
        "referer_url",
        "views AS session_number_of_views",
        "end_ms - epoch_ms(started) AS session_duration_msec",
        "coalesce(transactions, 0) AS session_number_of_transactions",
        "coalesce(revenue, 0) AS session_transactions_revenue_cents",
        "coalesce(is_excludable, 0) AS is_excludable",
        *(f"cv_{p} AS custom_var_{p}" for p in CUSTOM_VAR_POSITIONS),
        *(f"dv_{i} AS {_q(f'dynamic_var_{k}')}" for i, k in enumerate(DYNAMIC_VAR_KEYS)),
        *_members("app_events", "app_events", (*_APP_EVENT, "view_number")),
        *_members("transaction_items", "session_transaction_items", _ITEM),
        "list_transform(transaction_items, lambda _e: _e.view_number) AS "
        '"session_transaction_items.transaction_view_number"',
        *_members("add_to_cart_items", "session_add_to_cart_items", _CART),
        # 1 if the cart item's SKU was bought in the same session
        "list_transform(add_to_cart_items, lambda _c: CAST(coalesce(list_contains("
        "list_transform(transaction_items, lambda _t: _t.sku), _c.sku), false) AS UTINYINT)) AS "
        '"session_add_to_cart_items.is_in_transaction"',
        "list_transform(add_to_cart_items, lambda _e: _e.add_to_cart_time) AS "
        '"session_add_to_cart_items.add_to_cart_time"',
        "list_transform(add_to_cart_items, lambda _e: _e.view_number) AS "
        '"session_add_to_cart_items.add_to_cart_view_number"',
        *_members("errors", "errors", _ERROR),
    ]
    sep = ",\n       "
    return f"""
WITH s AS (
    SELECT {_SESSION},
           {sep.join(aggregates)}
    FROM {_SOURCE}
    GROUP BY {_SESSION}
)
SELECT {sep.join(columns)}
FROM s"""


def _utm(param: str) -> str:
    # First occurrence in the query string, '+' and %XX decoded; NULL when absent (or empty).
    found = rf"regexp_extract(_query, '(?:^|&){param}=([^&]*)', 1)"
    return f"url_decode(replace(NULLIF({found}, ''), '+', ' ')) AS {param}"


def _views_all_sql() -> str:
    """One row per pageview; its session's columns as aggregates over the whole session (window w)."""
    columns = [
        "project_id",
        "user_id",
        f"user_id_unhashed AS {_out('user_id_unhashed')}",
        "session_id",
        "session_number",
        "CAST(timezone(?, session_time) AS DATE) AS session_date",
        "date_trunc('second', session_time) AS session_time",
        *_ATTRIBUTES[:6],
        "TRY_CAST(split_part(browser_version, '.', 1) AS USMALLINT) AS browser_major_version",
        *_ATTRIBUTES[6:],
        "first_value(referer_url) OVER w AS referer_url",  # the first view's, NULL included
        "count(*) OVER w AS session_number_of_views",
        "max(epoch_ms(view_time) + coalesce(view_duration_msec, 0)) OVER w - epoch_ms(session_time) "
        "AS session_duration_msec",
        "coalesce(sum(len(transactions)) OVER w, 0) AS session_number_of_transactions",
        "coalesce(sum(list_sum(list_transform(transactions, lambda _t: _t.revenue_cents))) OVER w, 0) "
        "AS session_transactions_revenue_cents",
        "coalesce(max(is_excludable) OVER w, 0) AS is_excludable",
        # the view's own value, else the last session-scoped value of the session
        *(
            f"coalesce({_custom_var_of_view(p)}, last_value({_custom_var_of_view(p, session_scoped=True)} "
            f"IGNORE NULLS) OVER w) AS custom_var_{p}"
            for p in CUSTOM_VAR_POSITIONS
        ),
        *(f"{_dynamic_var_of_view(k, 1)} AS {_q(f'dynamic_var_{k}')}" for k in DYNAMIC_VAR_KEYS),
        *_members("app_events", "app_events", _APP_EVENT),
        'list_transform(app_events, lambda _e: view_number) AS "app_events.view_number"',
        "view_number",
        "view_time",
        "url",
        # URL parts after RFC 3986 appendix B: scheme ":" "//" authority path "?" query "#" fragment
        "regexp_extract(url, '^[^?#]*') AS url_no_query_param",
        "regexp_extract(url, '^([^:/?#]+):', 1) AS scheme",
        "regexp_extract(url, '^[^:/?#]+://[^/?#]*') AS prefix",
        "regexp_extract(url, '^(?:[^:/?#]+:)?(?://[^/?#]*)?([^?#]*)', 1) AS path",
        "_query AS query",
        "regexp_extract(url, '#(.*)', 1) AS hash",
        "title",
        "screen_name",
        "CAST(view_number = min(view_number) OVER w AS UTINYINT) AS is_first",
        "CAST(view_number = max(view_number) OVER w AS UTINYINT) AS is_last",
        *_VIEW_COLUMNS,
        "CAST(coalesce(len(errors), 0) > 0 AS UTINYINT) AS any_js_error_ind",
        "any_api_error_ind",
        "api_error_after_click_ind",
        *_members("errors", "errors", _ERROR),
        *(_utm(p) for p in _UTM),
    ]
    sep = ",\n       "
    return rf"""
WITH pv AS (SELECT *, regexp_extract(url, '^[^?#]*\?([^#]*)', 1) AS _query FROM {_SOURCE})
SELECT {sep.join(columns)}
FROM pv
WINDOW w AS (PARTITION BY {_SESSION} ORDER BY view_number ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)"""


def handwritten_sql(scope: str, fieldset: str, spec: dict) -> tuple[str, list]:
    """The plain reference query of (scope, fields) and its parameters: files, project, window (, time zone)."""
    params = [
        spec["files"],
        spec["project_id"],
        datetime.fromisoformat(spec["start"]),
        datetime.fromisoformat(spec["end"]),
    ]
    if scope == "views" and fieldset == "bench":
        return f"SELECT {', '.join(FIELDS)} FROM {_SOURCE}", params  # as before the matrix
    if scope == "sessions" and fieldset == "bench":
        return _sessions_bench_sql(), params
    sql = _sessions_all_sql() if scope == "sessions" else _views_all_sql()
    return sql, [*params, spec["timezone"]]


# ---------------------------------------------------------------- references (run in child processes)


def engine_sql(scope: str, fieldset: str, spec: dict) -> tuple[str, list]:
    from dataexport.domain.enums import Scope
    from dataexport.query.export_sql import build_export_query
    from dataexport.warehouse.relations import parquet_source

    q = build_export_query(
        source=parquet_source(spec["files"]),
        project_id=spec["project_id"],
        scope=Scope(scope),
        fields=field_specs(scope, fieldset),
        window_start=datetime.fromisoformat(spec["start"]),
        window_end=datetime.fromisoformat(spec["end"]),
        timezone=spec["timezone"],
        device_ids=None,
        segment_filter=None,
        output="csv",
    )
    return q.sql, q.params


def copy_to(sql: str, params: list, out: Path, gzip: bool) -> tuple[int, list[str]]:
    """DuckDB COPY of the query to CSV; returns (rows written, column names)."""
    import duckdb

    conn = duckdb.connect()
    try:
        # COPY cannot take parameters inside its subquery: a view over the parameterised relation can.
        relation = conn.sql(sql, params=params)
        relation.create_view("q")
        options = " (HEADER, COMPRESSION gzip)" if gzip else " (HEADER)"
        (rows,) = conn.execute(f"COPY (SELECT * FROM q) TO '{out}'{options}").fetchone()
        return rows, relation.columns
    finally:
        conn.close()


def polars_sink(spec: dict, out: Path) -> None:
    import polars as pl

    start, end = datetime.fromisoformat(spec["start"]), datetime.fromisoformat(spec["end"])
    (
        pl.scan_parquet(spec["files"], hive_partitioning=False)
        .filter(
            (pl.col("project_id") == spec["project_id"])
            & (pl.col("session_time") >= start)
            & (pl.col("session_time") < end)
        )
        .select(FIELDS)
        .sink_csv(out, compression="gzip")
    )


_STEP_IMPORTS = {
    "polars-gzip": ("polars",),
    "engine-sql-duckdb-gzip": ("duckdb", "dataexport.query.export_sql"),
    "engine-sql-duckdb-plain": ("duckdb", "dataexport.query.export_sql"),
}


def reference_step(name: str, spec_path: Path) -> None:
    """Child process body: one export, timed around the call; prints JSON {seconds, out_bytes, rows, columns}."""
    from isal import igzip

    spec = json.loads(spec_path.read_text())
    scope, fieldset = spec["scope"], spec["fieldset"]
    gzip = name.endswith("gzip")
    out = Path(spec["out_dir"]) / f"{name}.csv{'.gz' if gzip else ''}"
    for module in _STEP_IMPORTS.get(name, ("duckdb",)):  # before the timer: it times the export call alone
        importlib.import_module(module)
    start = time.perf_counter()
    if name in ("duckdb-gzip", "duckdb-plain"):
        rows, columns = copy_to(*handwritten_sql(scope, fieldset, spec), out, gzip=gzip)
    elif name in ("engine-sql-duckdb-gzip", "engine-sql-duckdb-plain"):
        rows, columns = copy_to(*engine_sql(scope, fieldset, spec), out, gzip=gzip)
    elif name == "polars-gzip":
        polars_sink(spec, out)
        rows, columns = None, FIELDS
    else:
        raise SystemExit(f"unknown step {name}")
    seconds = time.perf_counter() - start
    raw = lines = 0
    opener = igzip.open if gzip else open
    with opener(out, "rb") as f:
        while block := f.read(1 << 22):
            raw += len(block)
            lines += block.count(b"\n")
    out.unlink()
    rows = lines - 1 if rows is None else rows  # Polars does not say: its lines (text with newlines would differ)
    print(json.dumps({"seconds": seconds, "out_bytes": raw, "rows": rows, "columns": columns}))


def reference(name: str, spec_path: Path, data_dir: Path, columns: list[str]) -> Step:
    cmd = [str(ROOT / ".venv/bin/python"), str(Path(__file__).resolve()), "--step", name, "--spec", str(spec_path)]
    proc = run_measured(cmd, child_env(data_dir))
    got = last_json_line(proc.stdout) if proc.code == 0 else None
    if got is None:
        return Step(name, 0, math.nan, 0, proc.peak_rss_mb, proc.wall, "export call only", error=proc.failure())
    note = "export call only" + ("" if got["columns"] == columns else _column_mismatch(got["columns"], columns))
    return Step(name, got["rows"], got["seconds"], got["out_bytes"], proc.peak_rss_mb, proc.wall, note)


def _column_mismatch(got: list[str], wanted: list[str]) -> str:
    missing, extra = [c for c in wanted if c not in got], [c for c in got if c not in wanted]
    if not missing and not extra:
        return "; WARNING: columns in another order than the job's"
    return f"; WARNING: columns differ from the job's: missing {missing}, extra {extra}"


def reference_names(scope: str, fieldset: str, skip_polars: bool, skip_engine_sql: bool) -> list[str]:
    if scope == "views" and fieldset == "bench":
        names = ["duckdb-gzip", "duckdb-plain"] + ([] if skip_polars else ["polars-gzip"])
        return names + ([] if skip_engine_sql else ["engine-sql-duckdb-gzip", "engine-sql-duckdb-plain"])
    return ["duckdb-plain"] + ([] if skip_engine_sql else ["engine-sql-duckdb-plain"])


def goals_for(scope: str, fieldset: str) -> dict[str, float]:
    return dict(GOALS) if scope == "views" and fieldset == "bench" else {"duckdb-plain": PLAIN_GOAL}


# ---------------------------------------------------------------- the matrix


def run_group(data: Data, scope: str, fieldset: str, formats: list[str], args, tmp: Path) -> Group:
    group = Group(data.rows_wanted, scope, fieldset, args.warehouses, data.lake_open_seconds)
    for fmt in formats:
        for warehouse in args.warehouses:  # one after the other: both under the same drift of the machine's speed
            print(f"  {warehouse} run {scope} x {fieldset} x {fmt} ...", flush=True)
            group.steps[run_name(warehouse, fmt)] = job_run(data, scope, fieldset, fmt, warehouse)
    if "CSV" not in formats:
        print("  references skipped: they are compared with the CSV run, and --format has none")
        return group
    spec_path = tmp / f"spec-{data.rows_wanted}-{scope}-{fieldset}.json"
    spec_path.write_text(
        json.dumps(
            {
                "files": data.files,
                "project_id": data.project_id,
                "start": data.window[0].isoformat(),
                "end": data.window[1].isoformat(),
                "timezone": data.timezone,
                "scope": scope,
                "fieldset": fieldset,
                "out_dir": str(tmp),
            }
        )
    )
    columns = [f.output_name for f in field_specs(scope, fieldset)]
    for name in reference_names(scope, fieldset, args.skip_polars, args.skip_engine_sql):
        print(f"  reference {name} ...", flush=True)
        group.steps[name] = reference(name, spec_path, data.data_dir, columns)
    return group


def checks(group: Group, fmt: str, warehouse: str) -> list[Check]:
    """The goals of one cell on one warehouse: speed against the references (CSV) or against the CSV run (JSONL),
    against the embedded run (DuckLake, when both ran), and memory."""
    job = group.job(fmt, warehouse)
    if job is None or not job.ok:
        error = job.headline(60) if job is not None else "not run"
        return [Check(f"FAILED: {error}", "the run FAILED: no ratios")]
    speed = _reference_checks(group, job) if fmt == "CSV" else _jsonl_checks(group, job, warehouse)
    if warehouse == "ducklake" and "embedded" in group.warehouses:
        speed.append(_lake_check(group.job(fmt, "embedded"), job))
    met = job.peak_rss_mb < MEMORY_GOAL_MB
    memory = Check(
        f"RSS {_verdict(met)}",
        f"{fmt} run peak RSS {job.peak_rss_mb:.0f} MB   goal < {MEMORY_GOAL_MB} MB at 10M rows  {_verdict(met)}",
    )
    return [*speed, memory]


def _reference_checks(group: Group, csv: Step) -> list[Check]:
    out = []
    for ref, goal in goals_for(group.scope, group.fieldset).items():
        step = group.steps.get(ref)
        if step is None:  # skipped (--skip-polars)
            continue
        short = ref.removeprefix("duckdb-").removesuffix("-gzip")  # plain, gzip, polars
        if not step.ok:
            out.append(Check(f"{short} FAILED", f"vs {ref:<14} reference FAILED: {step.headline()}"))
            continue
        ratio = step.seconds / csv.seconds
        met = ratio >= goal
        out.append(
            Check(
                f"{short} {ratio:.2f}x {_verdict(met)}",
                f"vs {ref:<14} {ratio:6.2f}x   goal >= {goal}x  {_verdict(met)}",
            )
        )
    return out


def _jsonl_checks(group: Group, jsonl: Step, warehouse: str) -> list[Check]:
    csv = group.job("CSV", warehouse)
    if csv is None or not csv.ok:
        return [Check("JSONL/CSV -", "JSONL run / CSV run time: no successful CSV run to compare with")]
    ratio = jsonl.seconds / csv.seconds
    met = ratio <= JSONL_GOAL
    return [
        Check(
            f"JSONL/CSV {ratio:.2f} {_verdict(met)}",
            f"JSONL run / CSV run time: {ratio:.2f}   goal <= {JSONL_GOAL}  {_verdict(met)}",
        )
    ]


def _lake_check(embedded: Step | None, lake: Step) -> Check:
    if embedded is None or not embedded.ok:
        return Check("lake/emb -", "DuckLake run / embedded run time: no successful embedded run to compare with")
    ratio = lake.seconds / embedded.seconds
    met = ratio <= LAKE_GOAL
    return Check(
        f"lake/emb {ratio:.2f} {_verdict(met)}",
        f"DuckLake run / embedded run time: {ratio:.2f}   goal <= {LAKE_GOAL}  {_verdict(met)}",
    )


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


# ---------------------------------------------------------------- report


def _num(value: float, width: int, fmt: str) -> str:
    return f"{'-':>{width}}" if math.isnan(value) else f"{value:>{width}{fmt}}"


def report_group(group: Group, formats: list[str]) -> None:
    columns = len(field_specs(group.scope, group.fieldset))
    print(f"\n== {group.rows_wanted:,} rows, scope {group.scope}, fields {group.fieldset} ({columns} columns) ==")
    print(f"{'step':<26}{'rows':>12}{'seconds':>9}{'rows/s':>12}{'MB/s':>8}{'peak RSS MB':>13}{'wall s':>8}  note")
    runs = [s for s in (group.job(f, w) for f in FORMATS for w in WAREHOUSES) if s is not None and s.ok]
    expected = runs[0].rows if runs else None
    for s in group.steps.values():
        flag = (
            ""
            if not s.ok or expected is None or s.rows == expected
            else f"  WARNING: rows differ from the first run's {expected:,}"
        )
        state = f"  FAILED: {s.headline()}" if not s.ok else ""
        print(
            f"{s.name:<26}{_num(s.rows if s.ok else math.nan, 12, ',')}{_num(s.seconds, 9, '.2f')}"
            f"{_num(s.rows_per_s, 12, ',.0f')}{_num(s.mb_per_s, 8, '.0f')}{s.peak_rss_mb:>13.0f}{s.wall:>8.1f}"
            f"  {s.note}{flag}{state}"
        )
    print("goals (CSV: reference seconds / run seconds):")
    for warehouse in group.warehouses:
        for fmt in formats:
            for check in checks(group, fmt, warehouse):
                print(f"  {warehouse:<9}{fmt:<6}{check.text}")
        csv = group.job("CSV", warehouse)
        for ref in ("engine-sql-duckdb-gzip", "engine-sql-duckdb-plain"):
            step = group.steps.get(ref)
            if step is not None and step.ok and csv is not None and csv.ok:
                ratio = step.seconds / csv.seconds
                print(f"  {warehouse:<9}CSV   vs {ref:<24} {ratio:6.2f}x   (information: the engine's SQL, sorted)")
    if "ducklake" in group.warehouses and "embedded" in group.warehouses:
        for fmt in formats:
            lake, embedded = group.job(fmt, "ducklake"), group.job(fmt, "embedded")
            if lake is not None and lake.ok and embedded is not None and embedded.ok:
                ratio = (lake.seconds - group.lake_open_seconds) / embedded.seconds
                print(
                    f"  ducklake {fmt:<6}DuckLake run less one lake open ({group.lake_open_seconds:.2f} s) / embedded "
                    f"run: {ratio:.2f}   (information: what a long-lived worker, which opens the lake once, would see)"
                )


def report_linearity(groups: list[Group], sizes: list[int], formats: list[str]) -> None:
    """Seconds and rows/s of each cell per size; last/first rows/s near 1.0 means linear."""
    sizes = sorted(sizes)  # whatever order --rows gave them in
    print("\nlinearity (seconds / rows/s per size; scaling = rows/s at the largest size / at the smallest):")
    header = "".join(f"{f'{n:,} rows':>26}" for n in sizes)
    print(f"{'cell':<33}{header}{'scaling':>9}")
    for scope, fieldset, fmt, warehouse in _cells(groups, formats):
        by_size = {g.rows_wanted: g.job(fmt, warehouse) for g in groups if (g.scope, g.fieldset) == (scope, fieldset)}
        steps = [by_size.get(n) for n in sizes]
        cells = "".join(f"{_seconds_rate(s):>26}" for s in steps)
        rates = [s.rows_per_s for s in steps if s is not None and s.ok]
        scaling = f"{rates[-1] / rates[0]:>9.2f}" if len(rates) == len(sizes) else f"{'-':>9}"
        print(f"{f'{scope} {fieldset} {fmt} {warehouse}':<33}{cells}{scaling}")


def _seconds_rate(step: Step | None) -> str:
    if step is None:
        return "-"
    return "FAILED" if not step.ok else f"{step.seconds:.2f} s {step.rows_per_s:>11,.0f}/s"


def _cells(groups: list[Group], formats: list[str]) -> list[tuple[str, str, str, str]]:
    seen = dict.fromkeys(
        (g.scope, g.fieldset, f, w) for g in groups for f in formats for w in g.warehouses if g.job(f, w) is not None
    )
    return list(seen)


def report_summary(groups: list[Group], formats: list[str]) -> None:
    print(
        "\nsummary (ratios: reference seconds / CSV run seconds; JSONL/CSV: run seconds; lake/emb: DuckLake run "
        f"seconds / embedded run seconds; RSS goal < {MEMORY_GOAL_MB} MB):"
    )
    print(
        f"{'rows':>12}  {'scope':<9}{'fields':<7}{'format':<7}{'warehouse':<10}{'state':<8}{'rows/s':>11}{'MB/s':>7}"
        f"{'RSS MB':>8}  ratios and verdicts"
    )
    for g in groups:
        for fmt in formats:
            for warehouse in g.warehouses:
                job = g.job(fmt, warehouse)
                if job is None:
                    continue
                verdicts = " | ".join(c.label for c in checks(g, fmt, warehouse))
                print(
                    f"{g.rows_wanted:>12,}  {g.scope:<9}{g.fieldset:<7}{fmt:<7}{warehouse:<10}"
                    f"{'ok' if job.ok else 'FAILED':<8}{_num(job.rows_per_s, 11, ',.0f')}{_num(job.mb_per_s, 7, '.0f')}"
                    f"{job.peak_rss_mb:>8.0f}  {verdicts}"
                )


# ---------------------------------------------------------------- entry point


def _choice(value: str, options: tuple[str, ...]) -> list[str]:
    return list(options) if value == "both" else [o for o in options if o.lower() == value.lower()]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1000000", help="pageviews to generate; a comma list for several sizes")
    parser.add_argument("--scope", choices=["sessions", "views", "both"], default="views")
    parser.add_argument("--fields", choices=["bench", "all", "both"], default="bench")
    parser.add_argument("--format", choices=["csv", "jsonl", "both"], default="both")
    parser.add_argument(
        "--warehouse",
        choices=["embedded", "ducklake", "both"],
        default="embedded",
        help="where the runs read the data: the embedded Parquet files, their DuckLake copy, or both in one run",
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="keep (and reuse) the data in DIR/rows-N")
    parser.add_argument("--gen-procs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--skip-polars", action="store_true", help="skip the Polars reference (views x bench)")
    parser.add_argument("--skip-engine-sql", action="store_true", help="skip the informational engine-SQL COPYs")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.warehouses = _choice(args.warehouse, WAREHOUSES)
    return args


def main() -> None:
    args = parse_args()
    if args.step:
        reference_step(args.step, args.spec)
        return
    start_spawner()
    try:
        run_matrix(args)
    finally:
        _spawner.terminate()


def run_matrix(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT / "src"))
    sizes = [int(n.replace("_", "")) for n in args.rows.split(",") if n.strip()]
    scopes, fieldsets = _choice(args.scope, SCOPES), _choice(args.fields, FIELD_SETS)
    formats = _choice(args.format, FORMATS)
    groups: list[Group] = []
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        for rows in sizes:
            data_dir = (args.data_dir or Path(tmp)) / f"rows-{rows}"
            data_dir.mkdir(parents=True, exist_ok=True)
            print(f"\n### {rows:,} rows: data in {data_dir}")
            data = prepare(data_dir, rows, args.gen_procs, args.seed)
            with contextlib.ExitStack() as lake_running:
                if "ducklake" in args.warehouses:
                    # Kept under --data-dir with the data it copies; else it goes with the temporary directory.
                    from lake import running_lake  # here: the reference steps' processes need none of it

                    lake = lake_running.enter_context(running_lake(data_dir, keep=args.data_dir is not None))
                    prepare_lake(data, lake)
                print(
                    f"window {data.window[0]:%Y-%m-%d} .. {data.window[1]:%Y-%m-%d} (7 days, one run), "
                    f"{len(data.files)} Parquet files; 2 worker threads; DuckDB and Polars use all cores "
                    f"({os.cpu_count()})"
                )
                for scope in scopes:
                    for fieldset in fieldsets:
                        group = run_group(data, scope, fieldset, formats, args, Path(tmp))
                        report_group(group, formats)
                        groups.append(group)
            if args.data_dir is None:  # temporary data: free the disk before the next size
                shutil.rmtree(data_dir, ignore_errors=True)
    if len(sizes) > 1:
        report_linearity(groups, sizes, formats)
    report_summary(groups, formats)


if __name__ == "__main__":
    main()
