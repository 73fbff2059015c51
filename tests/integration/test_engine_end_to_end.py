"""A job through the whole engine: token -> job -> run -> parts -> signed download -> rows equal DuckDB's own."""

from __future__ import annotations

import csv
import gzip
import io
import json
import uuid
from datetime import UTC, datetime, timedelta

import duckdb
import httpx
import pytest

from dataexport.demo.generate import generate
from dataexport.domain.enums import RunState
from dataexport.engine import scheduler
from dataexport.engine.worker import Worker
from dataexport.storage.s3 import S3Storage
from dataexport.warehouse.embedded import EmbeddedWarehouse
from examples import create, example_once, make_segment, two_closed_days


@pytest.fixture
def seeded(api, tenant):
    """Three days of demo traffic for the tenant's project, up to now."""
    with EmbeddedWarehouse(api.context.settings.resolved_warehouse_dir) as store:
        generate(store, tenant.project_id, days=3, sessions_per_day=120, seed=7, now=api.clock())
    return tenant


@pytest.fixture(params=["local", "s3"])
def export_storage(request, api):
    """Run the test with the stack's local storage, then with S3 storage on a real S3 server (SeaweedFS)."""
    if request.param == "local":
        yield "local"
        return
    original = api.context.storage
    s3 = request.getfixturevalue("s3_server")
    api.context.storage = S3Storage(
        f"e2e-{uuid.uuid4().hex[:12]}",
        prefix="exports",
        endpoint_url=s3.endpoint_url,
        access_key_id=s3.access_key_id,
        secret_access_key=s3.secret_access_key,
    )
    yield "s3"
    api.context.storage = original


def make_tenant_token(http, tenant) -> dict:
    answer = http.post(
        "/v1/oauth/token",
        json={
            "client_id": tenant.client_id,
            "client_secret": tenant.client_secret,
            "grant_type": "client_credentials",
            "scope": "data-export",
        },
    )
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def worker_for(api) -> Worker:
    ctx = api.context
    return Worker(ctx.sessions, ctx.settings, ctx.storage, ctx.clock)


def download_rows(http, tenant, job_id) -> tuple[dict, list[bytes]]:
    run = http.get(f"/v1/exports/{job_id}/runs?limit=1&order=DESC", headers=tenant.headers).json()["payload"][0]
    detail = http.get(f"/v1/exports/{job_id}/runs/{run['jobRunId']}", headers=tenant.headers).json()["payload"]
    blobs = []
    for f in detail["files"]:
        answer = httpx.get(f["url"])  # no Authorization header: the URL is signed
        assert answer.status_code == 200
        assert int(answer.headers["content-length"]) == f["fileSize"] == len(answer.content)
        blobs.append(gzip.decompress(answer.content))
    return detail, blobs


def direct_views(api, project_id, start, end, device_ids, country) -> list[tuple]:
    """An independent hand-written DuckDB query over the stored Parquet of the same window."""
    root = api.context.settings.resolved_warehouse_dir
    sql = f"""
        WITH pv AS (SELECT * FROM read_parquet('{root}/pageviews/project_id={project_id}/*/*.parquet'))
        SELECT session_id, view_number,
               (SELECT c.value FROM unnest(custom_vars) AS t(c) WHERE c.position = 2 LIMIT 1) AS cv2,
               (SELECT coalesce(d.string_value, CAST(d.number_value AS VARCHAR)) FROM unnest(dynamic_vars) AS t(d)
                 WHERE d.key = 'AB Test' LIMIT 1) AS ab
        FROM pv
        WHERE session_time >= ? AND session_time < ? AND device_id IN ({",".join(map(str, device_ids))})
          AND (user_id_unhashed, session_number) IN (
              SELECT (user_id_unhashed, session_number) FROM pv WHERE country_code = ?)
        ORDER BY session_time, user_id_unhashed, session_number, view_number
    """
    return duckdb.execute(sql, [start, end, country]).fetchall()


def test_once_csv_job_end_to_end(api, http, seeded, export_storage):
    tenant = seeded
    day = two_closed_days(api.clock())
    body = example_once(segment_id=make_segment(api, tenant), day=day)
    job_id = create(http, tenant, body)

    outcome = worker_for(api).run_once()
    assert outcome is not None and outcome.state == RunState.SUCCESS.value

    job = http.get(f"/v1/exports/{job_id}", headers=tenant.headers).json()["payload"]
    assert job["state"] == "COMPLETED" and job["lastRunTime"] is not None and job["nextRunTime"] is None
    detail, blobs = download_rows(http, tenant, job_id)
    assert detail["state"] == "SUCCESS" and detail["completionRate"] == 100 and detail["endDate"]
    rows = []
    for i, blob in enumerate(blobs):
        reader = csv.reader(io.StringIO(blob.decode()))
        header = next(reader)
        assert header == ["Session ID", "View number in session", "My Custom Variable of index 2", "Experiment"], i
        rows.extend(reader)
    expected = direct_views(api, tenant.project_id, day, day + timedelta(days=2), [1], "FR")
    assert len(rows) == detail["rows"] == len(expected) > 0
    as_text = [tuple("" if v is None else str(v) for v in row) for row in expected]
    # Exports stream in storage order (no global sort): compare the rows as multisets.
    assert sorted(tuple(r) for r in rows) == sorted(as_text)

    runs = http.get("/v1/exports/successful-runs", headers=tenant.headers).json()["payload"]
    assert [(r["jobId"], r["nbOfFiles"]) for r in runs] == [(job_id, len(blobs))]


def test_once_jsonl_job_and_manifest(api, http, seeded, export_storage):
    tenant = seeded
    day = two_closed_days(api.clock())
    body = example_once(day=day)
    body.update(format="JSONL", deviceLabel="all")
    job_id = create(http, tenant, body)
    assert worker_for(api).run_once().state == "SUCCESS"
    detail, blobs = download_rows(http, tenant, job_id)
    lines = [json.loads(line) for blob in blobs for line in blob.decode().splitlines()]
    assert len(lines) == detail["rows"] > 0
    assert list(lines[0]) == ["Session ID", "View number in session", "My Custom Variable of index 2", "Experiment"]
    manifest = httpx.get(detail["manifestUrl"]).json()
    assert manifest["totalRows"] == detail["rows"] and len(manifest["parts"]) == len(blobs)


def test_daily_job_catches_up_missed_windows_with_no_gap(api, http, seeded):
    tenant = seeded
    start = api.clock()
    body = {
        "name": "daily",
        "format": "CSV",
        "scope": "sessions",
        "frequency": {"value": "daily"},
        "fields": [{"fieldName": "session_id"}],
        "deviceLabel": "all",
    }
    api.clock.set(start - timedelta(days=3))  # the job was created three days ago, then nothing ran
    job_id = create(http, tenant, body)
    api.clock.set(start)
    ctx = api.context
    result = scheduler.tick(ctx.sessions, ctx.settings, ctx.storage, start)
    expected_windows = 3 if start.hour >= 2 else 2  # today's window is not closed; yesterday's runs at 02:00
    assert result.runs_created == expected_windows
    assert scheduler.tick(ctx.sessions, ctx.settings, ctx.storage, start).runs_created == 0  # idempotent
    worker = worker_for(api)
    while worker.run_once() is not None:
        pass
    runs = http.get(f"/v1/exports/{job_id}/runs?order=ASC", headers=tenant.headers).json()["payload"]
    assert [r["state"] for r in runs] == ["SUCCESS"] * expected_windows
    details = [
        http.get(f"/v1/exports/{job_id}/runs/{r['jobRunId']}", headers=tenant.headers).json()["payload"] for r in runs
    ]
    for earlier, later in zip(details, details[1:], strict=False):
        assert datetime.fromisoformat(later["from"]) - datetime.fromisoformat(earlier["to"]) == timedelta(
            milliseconds=1
        )
    first = datetime.fromisoformat(details[0]["from"])
    last = datetime.fromisoformat(details[-1]["to"]) + timedelta(milliseconds=1)
    root = api.context.settings.resolved_warehouse_dir
    direct = duckdb.execute(
        f"SELECT count(DISTINCT (user_id_unhashed, session_number)) FROM read_parquet("
        f"'{root}/pageviews/project_id={tenant.project_id}/*/*.parquet') WHERE session_time >= ? AND session_time < ?",
        [first, last],
    ).fetchone()[0]
    assert sum(d["rows"] for d in details) == direct > 0
    job = http.get(f"/v1/exports/{job_id}", headers=tenant.headers).json()["payload"]
    assert job["nextFrom"] == last.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def test_expired_download_url_is_refused_and_files_are_swept(api, http, seeded):
    tenant = seeded
    job_id = create(http, tenant, example_once(day=two_closed_days(api.clock())))
    assert worker_for(api).run_once().state == "SUCCESS"
    run = http.get(f"/v1/exports/{job_id}/runs", headers=tenant.headers).json()["payload"][0]
    url = http.get(f"/v1/exports/{job_id}/runs/{run['jobRunId']}", headers=tenant.headers).json()["payload"]["files"][
        0
    ]["url"]
    assert httpx.get(url.replace("part-00000", "part-00001")).status_code in (403, 404)
    assert httpx.get(url[:-1] + ("0" if url[-1] != "0" else "1")).status_code == 403
    api.clock.advance(timedelta(days=7, seconds=1))
    assert httpx.get(url).status_code in (403, 410)
    ctx = api.context
    assert scheduler.tick(ctx.sessions, ctx.settings, ctx.storage, api.clock()).files_expired >= 1
    fresh = make_tenant_token(http, tenant)
    answer = http.get(f"/v1/exports/{job_id}/runs/{run['jobRunId']}", headers=fresh)
    assert answer.status_code == 200, answer.text
    detail = answer.json()["payload"]
    assert detail["files"] == []


def test_a_stopping_worker_hands_its_run_back(api, http, seeded):
    tenant = seeded
    job_id = create(http, tenant, example_once(day=two_closed_days(api.clock())))
    worker = worker_for(api)
    run_id = worker.claim()
    assert run_id is not None
    worker.stopping.set()  # SIGTERM arrived while the run was starting
    assert worker.execute(run_id).state == "HANDED_BACK"
    run = http.get(f"/v1/exports/{job_id}/runs/{run_id}", headers=tenant.headers).json()["payload"]
    assert run["state"] == "RUNNABLE" and run["files"] == []
    assert http.get(f"/v1/exports/{job_id}", headers=tenant.headers).json()["payload"]["state"] == "ACTIVE"
    again = worker_for(api).run_once()
    assert again.state == "SUCCESS" and again.run_id == run_id
    detail = http.get(f"/v1/exports/{job_id}/runs/{run_id}", headers=tenant.headers).json()["payload"]
    stored = sorted(p.name for p in api.context.settings.resolved_files_dir.rglob("*") if p.is_file())
    assert stored == sorted(["manifest.json"] + [f"part-{f['partId']:05d}.csv.gz" for f in detail["files"]])
