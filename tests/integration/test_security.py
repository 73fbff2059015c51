"""Attacks that must fail, with nothing leaking: foreign ids, forged tokens, tampered URLs, hostile text."""

from __future__ import annotations

import csv
import gzip
import io
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest

from dataexport.demo.generate import generate
from dataexport.engine.worker import Worker
from dataexport.warehouse.embedded import EmbeddedWarehouse
from examples import create, example_once, make_segment, two_closed_days


def run_job(api, http, tenant, body) -> dict:
    job_id = create(http, tenant, body)
    ctx = api.context
    assert Worker(ctx.sessions, ctx.settings, ctx.storage, ctx.clock).run_once().state == "SUCCESS"
    run = http.get(f"/v1/exports/{job_id}/runs", headers=tenant.headers).json()["payload"][0]
    detail = http.get(f"/v1/exports/{job_id}/runs/{run['jobRunId']}", headers=tenant.headers).json()["payload"]
    return {"job_id": job_id, "run_id": run["jobRunId"], "detail": detail}


@pytest.fixture
def exported(api, http, tenant):
    with EmbeddedWarehouse(api.context.settings.resolved_warehouse_dir) as store:
        generate(store, tenant.project_id, days=3, sessions_per_day=60, seed=3, now=api.clock())
    return run_job(api, http, tenant, example_once(day=two_closed_days(api.clock())))


def test_another_projects_run_file_and_segment_are_invisible(api, http, tenant, other_tenant, exported):
    job_id, run_id = exported["job_id"], exported["run_id"]
    for path in (f"/v1/exports/{job_id}", f"/v1/exports/{job_id}/runs/{run_id}", f"/v1/exports/{job_id}/runs"):
        answer = http.get(path, headers=other_tenant.headers)
        assert answer.status_code == 404 and "url" not in answer.text and "Test API POST" not in answer.text
    assert http.get("/v1/exports/successful-runs", headers=other_tenant.headers).json()["payload"] == []
    segment = make_segment(api, tenant)
    assert http.get(f"/v1/segments?ids={segment}", headers=other_tenant.headers).json()["payload"] == []
    answer = http.post("/v1/exports", json=example_once(segment_id=segment), headers=other_tenant.headers)
    assert answer.status_code == 400 and answer.json()["errors"][0]["field"] == "segmentId"


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_tokens_with_altered_claims_are_refused(http, tenant, other_tenant):
    header, payload, signature = tenant.token.split(".")
    claims = jwt.decode(tenant.token, options={"verify_signature": False})
    for change in ({"pid": other_tenant.project_id}, {"scope": "data-export admin"}, {"exp": claims["exp"] + 9e6}):
        forged_payload = jwt.utils.base64url_encode(jwt.api_jws.json.dumps({**claims, **change}).encode()).decode()
        forged = f"{header}.{forged_payload}.{signature}"
        answer = http.get("/v1/exports", headers={"Authorization": f"Bearer {forged}"})
        assert answer.status_code == 401 and answer.json()["errorCode"] == "JWT_INVALID"
    hs512 = jwt.encode(claims, "test-jwt-secret-" + "x" * 32, algorithm="HS512")
    assert http.get("/v1/exports", headers={"Authorization": f"Bearer {hs512}"}).status_code == 401


def _url_parts(url: str):
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    return f"{parts.scheme}://{parts.netloc}", parts.path, query


def test_signed_urls_resist_tampering_and_traversal(api, exported):
    url = exported["detail"]["files"][0]["url"]
    assert httpx.get(url).status_code == 200
    base, path, query = _url_parts(url)
    key = path.removeprefix("/files/")
    manifest_key = key.rsplit("/", 1)[0] + "/manifest.json"
    attempts = {
        "other key, same signature": f"{base}/files/{manifest_key}?expires={query['expires']}&sig={query['sig']}",
        "later expiry": f"{base}{path}?expires={int(query['expires']) + 3600}&sig={query['sig']}",
        "flipped signature": f"{base}{path}?expires={query['expires']}&sig={query['sig'][::-1]}",
        "no signature": f"{base}{path}",
        "traversal": f"{base}/files/{key}/../../../../metadata.db?expires={query['expires']}&sig={query['sig']}",
        "encoded traversal": f"{base}/files/%2e%2e/%2e%2e/metadata.db?expires={query['expires']}&sig={query['sig']}",
        "absolute": f"{base}/files//etc/passwd?expires={query['expires']}&sig={query['sig']}",
    }
    for name, attempt in attempts.items():
        answer = httpx.get(attempt)
        assert answer.status_code in (403, 404), name
        assert b"SQLite" not in answer.content and b"root:" not in answer.content, name
    api.clock.advance(timedelta(days=7, seconds=1))
    assert httpx.get(url).status_code == 410  # replay after expiry


def test_hostile_text_is_stored_and_exported_verbatim(api, http, tenant):
    hostile = 'x\'); DROP TABLE job_runs; -- "quoted" ,; 📦 ' + "é" * 200
    now = api.clock()
    hit = {
        "user_id_unhashed": hostile[:100],
        "session_number": 1,
        "view_number": 1,
        "session_time": (now - timedelta(days=2)).isoformat(),
        "view_time": (now - timedelta(days=2)).isoformat(),
        "device_id": 1,
        "url": "https://a.example/?q=' OR 1=1 --",
        "title": hostile[:255],
        "dynamic_vars": {hostile[:512]: hostile[:255]},
        "custom_vars": [{"position": 3, "key": hostile[:512], "value": hostile[:255]}],
    }
    stored = http.post("/ingest/v1/pageviews", json=[hit], headers={"X-Ingest-Key": tenant.ingest_key})
    assert stored.json()["payload"]["stored"] == 1
    day = (now - timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)
    body = example_once(day=day - timedelta(days=1))  # [3 days ago, yesterday): closed a day ago at any hour
    body["name"] = hostile
    body["deviceLabel"] = "all"
    body["fields"] = [
        {"fieldName": "title", "aliasName": hostile[:255]},
        {"fieldName": "dynamic_var", "dynamicVarKey": hostile[:512], "aliasName": "dv"},
        {"fieldName": "custom_var", "customVarPosition": 3, "aliasName": "cv"},
        {"fieldName": "url"},
    ]
    result = run_job(api, http, tenant, body)
    part = gzip.decompress(httpx.get(result["detail"]["files"][0]["url"]).content).decode()
    rows = list(csv.reader(io.StringIO(part)))
    assert rows[0] == [hostile[:255], "dv", "cv", "url"]
    assert rows[1] == [hostile[:255], hostile[:255], hostile[:255], "https://a.example/?q=' OR 1=1 --"]
    job = http.get(f"/v1/exports/{result['job_id']}", headers=tenant.headers).json()["payload"]
    assert job["name"] == hostile
    keys = http.get("/v1/dynamic-var-keys", headers=tenant.headers).json()["payload"]
    assert keys == [{"key": hostile[:512], "type": "string"}]
