"""`dataexport pull` against a real `dataexport serve` over HTTP, behind a proxy that misbehaves on purpose.

The server holds three days of the demo generator's traffic (every field carries real values) and three daily
jobs whose windows began three days ago, so each has three successful runs of several parts: every views field
as CSV and the same as JSONL, and every sessions field as JSONL.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import httpx
import psycopg
import pytest

from dataexport.catalog import fields_for
from dataexport.client import Client
from dataexport.domain.enums import Scope
from dataexport.pull.columns import Dialect, duckdb_type
from dataexport.warehouse.duckdb_extensions import OFFLINE_CONFIG, load_extension
from fault_proxy import FaultProxy, Rule
from processes import Service, answers, cli_json, service_env, wait_until
from support import free_port, postgres_available, scratch_pg_database

pytestmark = pytest.mark.acceptance

DAYS = 3
EXTRA = [
    {"fieldName": "custom_var", "customVarPosition": 1},
    {"fieldName": "dynamic_var", "dynamicVarKey": "AB Test", "aliasName": "Experiment"},
    {"fieldName": "dynamic_var", "dynamicVarKey": "cart_value"},
]


def every_field(scope: str) -> list[dict]:
    return [{"fieldName": f.name} for f in fields_for(Scope(scope)) if not f.parameters] + EXTRA


def expected_type(field: dict, dialect: Dialect) -> str:
    if field["fieldName"] in ("custom_var", "dynamic_var"):
        return "VARCHAR"
    scope_fields = {f.name: f.type for s in Scope for f in fields_for(s)}
    return duckdb_type(scope_fields[field["fieldName"]], dialect)


@dataclass
class Served:
    proxy: FaultProxy
    serve: Service
    env: dict[str, str]
    client_id: str
    client_secret: str
    database: Path
    jobs: dict[str, int]

    def api(self) -> Client:
        return Client(self.proxy.url, self.client_id, self.client_secret)

    def pull(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
        done = subprocess.run(self.pull_argv(*args), env=self.env, capture_output=True, text=True, timeout=timeout)
        if check:
            assert done.returncode == 0, done.stdout + done.stderr
        return done

    def pull_argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "dataexport.cli", "pull", "--server", self.proxy.url, *args]

    def run_rows(self, job: str) -> dict[int, int]:
        """Each successful run of the job -> its row count, as the server's run answer states it."""
        with self.api() as api:
            runs = [r for r in api.iter_successful_runs() if r.jobId == self.jobs[job]]
            return {r.jobRunId: api.get_run(r.jobId, r.jobRunId).rows for r in runs}


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Served:
    root = tmp_path_factory.mktemp("pull")
    data_dir = root / "data"
    port = free_port()
    with FaultProxy(f"http://127.0.0.1:{port}") as proxy:
        env = service_env(
            {
                "DATAEXPORT_DATA_DIR": str(data_dir),
                "DATAEXPORT_JWT_SECRET": "pull-test-secret-" + "x" * 32,
                "DATAEXPORT_LOG_JSON": "true",
                "DATAEXPORT_POLL_INTERVAL_SECONDS": "0.2",
                "DATAEXPORT_PUBLIC_BASE_URL": proxy.url,  # tokens' endpoint and download URLs lead to the proxy
                "DATAEXPORT_PART_MAX_BYTES": str(400_000),  # several parts per run
                # Yesterday's window is due a minute after midnight, not at 02:30 UTC: the three runs exist at
                # any time of day (before, only two windows were due, and the fixture timed out until then).
                "DATAEXPORT_DAILY_LAG_MINUTES": "0",
                "DATAEXPORT_SESSION_TIMEOUT_MINUTES": "1",
            }
        )
        project = cli_json(env, "projects", "create", "--name", "Pull")
        client = cli_json(env, "clients", "create", "--project", str(project["project_id"]))
        _seed(data_dir, project["project_id"])
        serve = Service("serve", ("serve", "--port", str(port)), env, root, port).start()
        try:
            wait_until(lambda: answers(serve.url), [serve], "serve")
            served = Served(
                proxy, serve, env, client["client_id"], client["client_secret"], data_dir / "metadata.db", {}
            )
            specs = {
                "views_csv": ("CSV", "views"),
                "views_jsonl": ("JSONL", "views"),
                "sessions_jsonl": ("JSONL", "sessions"),
            }
            with served.api() as api:
                for name, (fmt, scope) in specs.items():
                    body = {
                        "name": name,
                        "format": fmt,
                        "scope": scope,
                        "frequency": {"value": "daily"},
                        "fields": every_field(scope),
                        "deviceLabel": "all",
                    }
                    served.jobs[name] = api.create_export(body)
            # Jobs made three days ago: the scheduler catches up with one run per missed day.
            began = datetime.now(UTC) - timedelta(days=DAYS)
            with closing(sqlite3.connect(served.database)) as db, db:
                db.execute("UPDATE export_jobs SET windows_from = ?", (began.strftime("%Y-%m-%d %H:%M:%S.%f"),))
            wait_until(lambda: _all_runs_done(served), [serve], "the jobs' runs", timeout=240, every=1)
            yield served
        finally:
            serve.stop()


def _seed(data_dir: Path, project_id: int) -> None:
    from dataexport.config import Settings
    from dataexport.demo.generate import generate
    from dataexport.warehouse.backend import open_warehouse

    with closing(open_warehouse(Settings(data_dir=data_dir))) as warehouse:
        generate(warehouse, project_id, days=DAYS + 1, sessions_per_day=400, seed=7, now=datetime.now(UTC))


def _all_runs_done(served: Served) -> bool:
    with served.api() as api:
        runs = list(api.iter_successful_runs())
    return all(sum(1 for r in runs if r.jobId == job) >= DAYS for job in served.jobs.values())


@pytest.fixture(autouse=True)
def clean_proxy(served):
    served.proxy.clear()
    yield
    served.proxy.clear()


def _json(done: subprocess.CompletedProcess) -> dict:
    return json.loads(done.stdout.strip().splitlines()[-1])


def _credentials(served: Served) -> list[str]:
    return ["--client-id", served.client_id, "--client-secret", served.client_secret]


def _table_rows(conn, table: str) -> list[tuple]:
    return conn.execute(f'SELECT * EXCLUDE (_dataexport_run_id) FROM "{table}" ORDER BY ALL').fetchall()


def _parsed_jsonl_parts(served: Served, job: str) -> list[dict]:
    """Every record of the job's runs, read from its parts with Python's own gzip and json."""
    records = []
    with served.api() as api:
        for run in [r for r in api.iter_successful_runs() if r.jobId == served.jobs[job]]:
            for file in api.get_run(run.jobId, run.jobRunId).files:
                data = gzip.decompress(httpx.get(file.url).content).decode()
                records += [json.loads(line) for line in data.splitlines()]
    return records


def _same_value(ours, theirs) -> bool:
    if isinstance(theirs, list):
        return isinstance(ours, list) and len(ours) == len(theirs) and all(map(_same_value, ours, theirs))
    if isinstance(ours, datetime):
        return ours == datetime.fromisoformat(theirs.replace("Z", "+00:00"))
    if isinstance(ours, date):
        return ours.isoformat() == theirs
    if isinstance(ours, float):
        return math.isclose(ours, float(theirs), rel_tol=1e-6)
    return ours == theirs or (ours is not None and theirs is not None and str(ours) == str(theirs))


def test_every_field_of_both_scopes_lands_in_duckdb_typed_and_whole(served, tmp_path):
    target = tmp_path / "warehouse.duckdb"
    summaries = {
        job: _json(served.pull("--job", str(served.jobs[job]), "--to", str(target), "--json", *_credentials(served)))
        for job in served.jobs
    }
    for job, summary in summaries.items():
        expected = served.run_rows(job)
        assert summary["runsDelivered"] == DAYS and summary["rows"] == sum(expected.values()) > 0
        # Window order, each run checked against its manifest.
        assert [r["from"] for r in summary["runs"]] == sorted(r["from"] for r in summary["runs"])
        assert {r["jobRunId"]: r["rows"] for r in summary["runs"]} == expected
        assert {r["checkedBy"] for r in summary["runs"]} == {"sha256"}

    with closing(duckdb.connect(str(target), read_only=True)) as conn:
        for job, scope in (("views_csv", "views"), ("sessions_jsonl", "sessions")):
            table = f"job_{served.jobs[job]}"
            described = conn.execute(f'DESCRIBE "{table}"').fetchall()
            want = [expected_type(f, Dialect.DUCKDB) for f in every_field(scope)] + ["BIGINT"]
            assert [row[1].replace("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ") for row in described] == want
        # The CSV and the JSONL export of the same data, read by different readers, are the same typed rows.
        csv_rows = _table_rows(conn, f"job_{served.jobs['views_csv']}")
        jsonl_rows = _table_rows(conn, f"job_{served.jobs['views_jsonl']}")
        assert csv_rows == jsonl_rows and len(csv_rows) == summaries["views_csv"]["rows"]
        # And they are what the parts say, as Python itself reads them.
        names = [row[0] for row in conn.execute(f'DESCRIBE "job_{served.jobs["views_jsonl"]}"').fetchall()][:-1]
        ours = {(r[names.index("session_id")], r[names.index("view_number")]): r for r in jsonl_rows}
        for record in _parsed_jsonl_parts(served, "views_jsonl"):
            row = ours[(record["session_id"], record["view_number"])]
            for name, value in record.items():
                assert _same_value(row[names.index(name)], value), (name, row[names.index(name)], value)

    again = _json(
        served.pull("--job", str(served.jobs["views_csv"]), "--to", str(target), "--json", *_credentials(served))
    )
    assert again["runsDelivered"] == 0 and again["runsAlreadyDelivered"] == DAYS and again["rows"] == 0


@pytest.mark.skipif(not postgres_available(), reason="PostgreSQL is not reachable")
def test_pull_into_postgres_types_and_rows(served, tmp_path):
    job = served.jobs["views_csv"]
    with scratch_pg_database() as url:
        summary = _json(served.pull("--job", str(job), "--to", url, "--json", *_credentials(served)))
        assert summary["runsDelivered"] == DAYS and summary["rows"] == sum(served.run_rows("views_csv").values())
        with psycopg.connect(url) as pg:
            types = pg.execute(
                "SELECT data_type, udt_name FROM information_schema.columns WHERE table_name = %s "
                "ORDER BY ordinal_position",
                (f"job_{job}",),
            ).fetchall()
            count = pg.execute(f"SELECT count(*), count(DISTINCT _dataexport_run_id) FROM job_{job}").fetchone()
            deliveries = pg.execute("SELECT run_id, rows FROM _dataexport_deliveries ORDER BY window_from").fetchall()
        assert count == (summary["rows"], DAYS)
        assert [d[0] for d in deliveries] == [r["jobRunId"] for r in summary["runs"]]
        pg_names = {
            "BIGINT": "int8",
            "INTEGER": "int4",
            "SMALLINT": "int2",
            "VARCHAR": "varchar",
            "FLOAT": "float4",
            "DATE": "date",
            "TIMESTAMPTZ": "timestamptz",
            "UBIGINT": "numeric",
        }
        want = [expected_type(f, Dialect.POSTGRES) for f in every_field("views")] + ["BIGINT"]
        assert [t[1] for t in types] == [
            ("_" + pg_names[w.removesuffix("[]")]) if w.endswith("[]") else pg_names[w] for w in want
        ]
        # The same rows as DuckDB reads from the same parts.
        duck = tmp_path / "same.duckdb"
        served.pull("--job", str(job), "--to", str(duck), *_credentials(served))
        with closing(duckdb.connect(str(duck), config=dict(OFFLINE_CONFIG))) as conn:
            load_extension(conn, "postgres_scanner")
            conn.execute(f"ATTACH '{url}' AS pg (TYPE postgres, READ_ONLY)")
            differ = conn.execute(
                f"SELECT count(*) FROM ((SELECT * EXCLUDE (_dataexport_run_id) FROM job_{job} EXCEPT ALL "
                f"SELECT * EXCLUDE (_dataexport_run_id) FROM pg.public.job_{job}) UNION ALL "
                f"(SELECT * EXCLUDE (_dataexport_run_id) FROM pg.public.job_{job} EXCEPT ALL "
                f"SELECT * EXCLUDE (_dataexport_run_id) FROM job_{job}))"
            ).fetchone()[0]
        assert differ == 0
        again = _json(served.pull("--job", str(job), "--to", url, "--json", *_credentials(served)))
        assert again["runsDelivered"] == 0


def test_pull_into_a_directory_as_parts_and_as_parquet(served, tmp_path):
    job = served.jobs["views_csv"]
    raw, parquet = tmp_path / "raw", tmp_path / "parquet"
    summary = _json(served.pull("--job", str(job), "--to", str(raw), "--json", *_credentials(served)))
    with served.api() as api:
        for run in summary["runs"]:
            detail = api.get_run(job, run["jobRunId"])
            manifest = api.manifest(detail)
            folder = next((raw / f"job-{job}").glob(f"*_run-{run['jobRunId']}"))
            parts = sorted(folder.glob("part-*.csv.gz"))
            assert len(parts) == len(detail.files) == run["parts"] > 1
            for part in parts:
                listed = manifest.part(int(part.name[5:10]))
                assert hashlib.sha256(part.read_bytes()).hexdigest() == listed.sha256
            assert json.loads((folder / "manifest.json").read_text())["totalRows"] == run["rows"]
    state = json.loads((raw / "_dataexport_deliveries.json").read_text())
    assert [d["run_id"] for d in state["deliveries"]] == [r["jobRunId"] for r in summary["runs"]]
    assert not list((raw / ".dataexport-pull").rglob("*.gz"))  # nothing left in the work folder

    as_parquet = _json(
        served.pull("--job", str(job), "--to", str(parquet), "--parquet", "--json", *_credentials(served))
    )
    with closing(duckdb.connect()) as conn:
        files = sorted(str(p) for p in (parquet / f"job-{job}").glob("*/data.parquet"))
        assert len(files) == DAYS
        assert conn.execute("SELECT count(*) FROM read_parquet(?)", [files]).fetchone()[0] == as_parquet["rows"]
        schema = dict(conn.execute("SELECT name, type FROM parquet_schema(?)", [files[0]]).fetchall())
    assert schema["view_time"] == "INT64" and schema["session_id"] == "INT64"  # typed, not text
    assert (
        _json(served.pull("--job", str(job), "--to", str(raw), "--json", *_credentials(served)))["runsDelivered"] == 0
    )


def test_a_pull_killed_mid_download_resumes_with_range_and_ends_exact(served, tmp_path):
    job = served.jobs["views_jsonl"]
    target = tmp_path / "killed.duckdb"
    served.proxy.add(Rule("/files/", "slow", times=100, bytes_per_second=60_000))
    argv = served.pull_argv("--job", str(job), "--to", str(target), "--json", *_credentials(served))
    victim = subprocess.Popen(argv, env=served.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    work = tmp_path / "killed.duckdb.pull"
    deadline = time.monotonic() + 60
    while not any(p.stat().st_size > 20_000 for p in work.rglob("*.partial")):
        assert victim.poll() is None and time.monotonic() < deadline, "no partial download appeared"
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    partial = max(work.rglob("*.partial"), key=lambda p: p.stat().st_size)
    kept = partial.stat().st_size
    served.proxy.clear()

    summary = _json(served.pull("--job", str(job), "--to", str(target), "--json", *_credentials(served)))
    expected = served.run_rows("views_jsonl")
    assert summary["rows"] == sum(expected.values())
    resumed = served.proxy.requests(lambda s: s.range is not None and "/files/" in s.path)
    assert any(int(s.range.removeprefix("bytes=").rstrip("-")) >= kept for s in resumed), resumed
    with closing(duckdb.connect(str(target), read_only=True)) as conn:
        per_run = dict(conn.execute(f"SELECT _dataexport_run_id, count(*) FROM job_{job} GROUP BY ALL").fetchall())
    assert per_run == expected


def test_a_second_pull_of_the_same_destination_stops_at_once(served, tmp_path):
    job = served.jobs["views_csv"]
    target = tmp_path / "busy.duckdb"
    served.proxy.add(Rule("/files/", "slow", times=100, bytes_per_second=200_000))
    argv = served.pull_argv("--job", str(job), "--to", str(target), "--json", *_credentials(served))
    first = subprocess.Popen(argv, env=served.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        work = tmp_path / "busy.duckdb.pull"
        deadline = time.monotonic() + 60
        while not any(work.rglob("*.partial")):
            assert first.poll() is None and time.monotonic() < deadline, "the first pull did not start downloading"
            time.sleep(0.05)
        second = served.pull("--job", str(job), "--to", str(target), *_credentials(served), check=False)
        assert second.returncode == 2 and "another pull is delivering" in second.stdout
    finally:
        served.proxy.clear()
        out, err = first.communicate(timeout=180)
    assert first.returncode == 0, out + err
    assert _json(subprocess.CompletedProcess(argv, 0, out, err))["rows"] == sum(served.run_rows("views_csv").values())


def test_a_corrupted_part_and_a_broken_connection_are_fetched_again(served, tmp_path):
    job = served.jobs["views_csv"]
    served.proxy.add(Rule("/part-00000", "corrupt", times=1))
    served.proxy.add(Rule("/part-00001", "cut", times=1, after_bytes=5_000))
    summary = _json(served.pull("--job", str(job), "--to", str(tmp_path / "c.duckdb"), "--json", *_credentials(served)))
    assert summary["rows"] == sum(served.run_rows("views_csv").values())
    first = summary["runs"][0]["jobRunId"]
    fetched = served.proxy.requests(lambda s: f"/{first}/" in s.path or "part-0000" in s.path)
    part0 = [s for s in served.proxy.requests(lambda s: "/part-00000" in s.path)]
    part1 = [s for s in served.proxy.requests(lambda s: "/part-00001" in s.path)]
    assert len(part0) == DAYS + 1 and all(s.range is None for s in part0)  # the bad copy, then a whole new one
    assert [s.range for s in part1].count("bytes=5000-") == 1, fetched


def test_429_and_an_expired_token_are_survived(served, tmp_path):
    job = served.jobs["views_csv"]
    expired = {"success": False, "errorMessage": "Auth token is expired.", "errorCode": "JWT_EXPIRED"}
    served.proxy.add(
        Rule(
            "/v1/exports/successful-runs",
            "answer",
            times=2,
            status=429,
            headers={"Retry-After": "1"},
            body={"success": False, "errorCode": "TOO_MANY_CONCURRENT_REQUESTS", "errorMessage": "Too many."},
        )
    )
    served.proxy.add(Rule(f"/v1/exports/{job}/runs/", "answer", times=1, status=401, body=expired))
    started = time.monotonic()
    summary = _json(served.pull("--job", str(job), "--to", str(tmp_path / "t.duckdb"), "--json", *_credentials(served)))
    assert summary["runsDelivered"] == DAYS
    assert time.monotonic() - started >= 2  # it waited out both Retry-After answers
    assert len(served.proxy.requests(lambda s: s.path == "/v1/oauth/token")) == 2  # one token, renewed once


def test_calls_go_to_the_endpoint_the_token_answer_names(served):
    """Asked at the server itself, the token names the proxy (the public base URL): every later call goes there."""
    with Client(served.serve.url, served.client_id, served.client_secret) as api:
        assert api.token().endpoint == served.proxy.url
        jobs = [job.jobId for job in api.iter_exports()]
    assert sorted(jobs) == sorted(served.jobs.values())
    relayed = [s.path for s in served.proxy.requests()]
    assert relayed and all(p.startswith("/v1/exports") for p in relayed)  # the token was not asked through it


def test_the_vendors_answer_shapes_alone_are_enough(served, tmp_path):
    """No manifestUrl, no run window or rows, no field types: parts are checked as gzip streams, columns are text."""
    job = served.jobs["views_csv"]
    served.proxy.vendor_shapes = True
    served.proxy.add(Rule("/part-00000", "corrupt", times=1))
    target = tmp_path / "vendor.duckdb"
    summary = _json(served.pull("--job", str(job), "--to", str(target), "--json", *_credentials(served)))
    assert not served.proxy.requests(lambda s: "manifest.json" in s.path)
    assert {r["checkedBy"] for r in summary["runs"]} == {"gzip"} and summary["runsDelivered"] == DAYS
    served.proxy.vendor_shapes = False
    assert summary["rows"] == sum(served.run_rows("views_csv").values())
    with closing(duckdb.connect(str(target), read_only=True)) as conn:
        types = {row[1] for row in conn.execute(f"DESCRIBE job_{job}").fetchall()}
    assert types == {"VARCHAR", "BIGINT"}  # text columns, and the run id


def test_files_that_expired_before_the_pull_exit_non_zero_and_name_the_run(served, tmp_path):
    job = served.jobs["sessions_jsonl"]
    runs = sorted(served.run_rows("sessions_jsonl"))
    gone = runs[0]
    with closing(sqlite3.connect(served.database)) as db, db:
        db.execute("UPDATE run_files SET expiration_date = '2000-01-01 00:00:00.000000' WHERE run_id = ?", (gone,))
    try:
        target = tmp_path / "e.duckdb"
        done = served.pull("--job", str(job), "--to", str(target), *_credentials(served), check=False)
        assert done.returncode == 3, done.stdout + done.stderr
        assert f"run {gone}" in done.stdout and "expired" in done.stdout
        summary = _json(
            served.pull("--job", str(job), "--to", str(target), "--json", "--skip-expired", *_credentials(served))
        )
        assert summary["runsAlreadyDelivered"] == DAYS - 1 and [e["jobRunId"] for e in summary["expired"]] == [gone]
    finally:
        later = (datetime.now(UTC) + timedelta(days=7)).strftime("%Y-%m-%d %H:%M:%S.%f")
        with closing(sqlite3.connect(served.database)) as db, db:
            db.execute("UPDATE run_files SET expiration_date = ? WHERE run_id = ?", (later, gone))
