"""The export-job endpoints, answer for answer, over real HTTP on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from examples import (
    VENDOR_FIELD_KEYS,
    VENDOR_JOB_KEYS,
    VENDOR_RUN_KEYS,
    create,
    example_daily,
    example_once,
    make_segment,
)

JOB_KEYS = VENDOR_JOB_KEYS | {"segmentId"}  # the segment is an extension
RUN_KEYS = VENDOR_RUN_KEYS


def test_create_and_get_the_two_reference_examples(http, tenant, api):
    segment_id = make_segment(api, tenant)
    daily_id = create(http, tenant, example_daily(segment_id))
    once_id = create(http, tenant, example_once(str(segment_id)))

    daily = http.get(f"/v1/exports/{daily_id}", headers=tenant.headers).json()
    assert daily["success"] is True and set(daily["payload"]) == JOB_KEYS
    job = daily["payload"]
    assert job["state"] == "ACTIVE" and job["frequency"] == "daily" and job["format"] == "JSONL"
    assert job["projectIds"] == [tenant.project_id] and job["accountId"] == tenant.account_id
    assert job["filters"] == {"deviceId": -1} and job["segmentId"] == segment_id
    assert job["fields"] == [{"fieldName": "project_id"}, {"fieldName": "session_id"}]
    assert job["lastRunTime"] is None
    # The first window is the day containing creation; its run starts 2 hours after the day ends.
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert job["nextFrom"] == f"{today}T00:00:00.000Z" and job["nextTo"] == f"{today}T23:59:59.999Z"
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d")
    assert job["nextRunTime"] == f"{tomorrow}T02:00:00.000Z"

    once = http.get(f"/v1/exports/{once_id}", headers=tenant.headers).json()["payload"]
    body = example_once()
    assert once["filters"] == {"deviceId": 1} and once["scope"] == "views" and once["format"] == "CSV"
    assert once["nextFrom"] == body["frequency"]["dateRange"]["from"]
    assert once["nextTo"] == body["frequency"]["dateRange"]["to"]
    assert once["fields"][2] == {
        "fieldName": "custom_var",
        "customVarPosition": 2,
        "aliasName": "My Custom Variable of index 2",
    }
    # A once job over past days has its single run at once, ready for a worker.
    runs = http.get(f"/v1/exports/{once_id}/runs?limit=1&order=DESC", headers=tenant.headers).json()["payload"]
    assert len(runs) == 1 and set(runs[0]) == RUN_KEYS and runs[0]["state"] == "RUNNABLE"
    assert runs[0]["completionRate"] == 0 and runs[0]["startDate"] is None


def test_run_detail_lists_files_and_the_window(http, tenant):
    job_id = create(http, tenant, example_once())
    run_id = http.get(f"/v1/exports/{job_id}/runs", headers=tenant.headers).json()["payload"][0]["jobRunId"]
    answer = http.get(f"/v1/exports/{job_id}/runs/{run_id}", headers=tenant.headers)
    assert answer.status_code == 200
    run = answer.json()["payload"]
    assert RUN_KEYS | {"files"} <= set(run) and run["files"] == []
    assert run["from"] == example_once()["frequency"]["dateRange"]["from"]
    assert http.get(f"/v1/exports/{job_id}/runs/{run_id + 1000}", headers=tenant.headers).status_code == 404


def test_listing_pagination_order_and_edges(http, tenant):
    ids = [create(http, tenant, {**example_daily(), "name": f"job {i}"}) for i in range(5)]

    def page(**params):
        answer = http.get("/v1/exports", params=params, headers=tenant.headers)
        return answer.status_code, answer.json()

    assert [j["jobId"] for j in page()[1]["payload"]] == sorted(ids, reverse=True)
    assert [j["jobId"] for j in page(order="ASC")[1]["payload"]] == sorted(ids)
    assert [j["jobId"] for j in page(order="asc", limit=2, page=2)[1]["payload"]] == sorted(ids)[2:4]
    assert [j["jobId"] for j in page(limit=1)[1]["payload"]] == [max(ids)]
    assert len(page(limit=100)[1]["payload"]) == 5
    assert page(page=3, limit=5)[1]["payload"] == []
    for bad in ({"limit": 101}, {"limit": 0}, {"page": 0}, {"order": "UP"}, {"limit": "ten"}):
        status, body = page(**bad)
        assert status == 400 and body["success"] is False, bad
        assert body["errors"][0]["field"] == next(iter(bad))


def test_listing_filters_are_case_insensitive(http, tenant):
    daily = create(http, tenant, example_daily())
    once = create(http, tenant, example_once())
    hourly = create(http, tenant, {**example_daily(), "frequency": {"value": "hourly"}, "format": "CSV"})

    def ids(**params):
        return {j["jobId"] for j in http.get("/v1/exports", params=params, headers=tenant.headers).json()["payload"]}

    assert ids(format="csv") == {once, hourly}
    assert ids(format="JSONL") == {daily}
    assert ids(frequency="ONCE") == {once}
    assert ids(scope="views") == {once}
    assert ids(scope="sessions") == {daily, hourly}
    assert ids(state="active") == {daily, once, hourly}
    assert ids(state="completed") == set()
    for bad in ({"format": "XML"}, {"frequency": "weekly"}, {"scope": "users"}, {"state": "RUNNING"}):
        answer = http.get("/v1/exports", params=bad, headers=tenant.headers)
        assert answer.status_code == 400 and answer.json()["errors"][0]["field"] == next(iter(bad))


def test_runs_listing_filters_and_pages(http, tenant):
    job_id = create(http, tenant, example_once())
    assert len(http.get(f"/v1/exports/{job_id}/runs?state=runnable", headers=tenant.headers).json()["payload"]) == 1
    assert http.get(f"/v1/exports/{job_id}/runs?state=success", headers=tenant.headers).json()["payload"] == []
    assert http.get(f"/v1/exports/{job_id}/runs?state=nope", headers=tenant.headers).status_code == 400
    assert http.get(f"/v1/exports/{job_id}/runs?page=2", headers=tenant.headers).json()["payload"] == []


def test_successful_runs_is_empty_before_any_run_succeeds(http, tenant):
    create(http, tenant, example_once())
    answer = http.get("/v1/exports/successful-runs", headers=tenant.headers)
    assert answer.status_code == 200 and answer.json() == {"payload": [], "success": True}
    assert http.get("/v1/exports/successful-runs?limit=101", headers=tenant.headers).status_code == 400


def test_another_projects_ids_are_not_found(http, tenant, other_tenant):
    job_id = create(http, tenant, example_once())
    run_id = http.get(f"/v1/exports/{job_id}/runs", headers=tenant.headers).json()["payload"][0]["jobRunId"]
    for path in (f"/v1/exports/{job_id}", f"/v1/exports/{job_id}/runs", f"/v1/exports/{job_id}/runs/{run_id}"):
        answer = http.get(path, headers=other_tenant.headers)
        assert answer.status_code == 404 and answer.json()["errorCode"] == "NOT_FOUND", path
        assert "Test API POST" not in answer.text
    assert http.get("/v1/exports", headers=other_tenant.headers).json()["payload"] == []
    assert http.delete(f"/v1/exports/{job_id}", headers=other_tenant.headers).status_code == 404


def test_delete_suspend_resume_extensions(http, tenant):
    daily = create(http, tenant, example_daily())
    once = create(http, tenant, example_once())
    suspended = http.post(f"/v1/exports/{daily}/suspend", headers=tenant.headers).json()["payload"]
    assert suspended["state"] == "SUSPENDED" and suspended["nextRunTime"] is None
    assert http.post(f"/v1/exports/{once}/suspend", headers=tenant.headers).status_code == 409
    resumed = http.post(f"/v1/exports/{daily}/resume", headers=tenant.headers).json()["payload"]
    assert resumed["state"] == "ACTIVE" and resumed["nextRunTime"] is not None
    assert http.delete(f"/v1/exports/{daily}", headers=tenant.headers).json()["payload"]["state"] == "DELETED"
    listed = {j["jobId"] for j in http.get("/v1/exports", headers=tenant.headers).json()["payload"]}
    assert listed == {once}
    deleted = http.get("/v1/exports?state=DELETED", headers=tenant.headers).json()["payload"]
    assert [j["jobId"] for j in deleted] == [daily]
    assert http.delete(f"/v1/exports/{daily}", headers=tenant.headers).status_code == 404
    assert http.post(f"/v1/exports/{daily}/resume", headers=tenant.headers).status_code == 404


def test_get_requests_with_a_json_body_are_served(http, tenant):
    answer = http.request(
        "GET", "/v1/exports", content=b"{}", headers={**tenant.headers, "Content-Type": "application/json"}
    )
    assert answer.status_code == 200 and answer.json()["success"] is True


def test_segments_listing_with_ids_filter(http, tenant, other_tenant, api):
    first, second = make_segment(api, tenant), make_segment(api, tenant)
    make_segment(api, other_tenant)
    payload = http.get("/v1/segments", headers=tenant.headers).json()["payload"]
    assert [s["id"] for s in payload] == [first, second]
    assert set(payload[0]) == {"id", "name", "source", "createdAt", "updatedAt"}
    assert [s["id"] for s in http.get(f"/v1/segments?ids={second}", headers=tenant.headers).json()["payload"]] == [
        second
    ]
    assert http.get("/v1/segments?ids=a,b", headers=tenant.headers).status_code == 400
    assert http.get("/v1/segments", headers=other_tenant.headers).json()["payload"][0]["id"] not in (first, second)


@pytest.mark.parametrize("scope", ["sessions", "views", "VIEWS"])
def test_exportable_fields_lists_the_catalog(http, tenant, scope):
    payload = http.get(f"/v1/exportable-fields?scope={scope}", headers=tenant.headers).json()["payload"]
    names = {f["name"] for f in payload}
    assert {"project_id", "session_id", "custom_var", "dynamic_var"} <= names
    # The vendor's five keys, plus `type` (extension).
    assert all(set(f) == VENDOR_FIELD_KEYS | {"type"} for f in payload)
    assert next(f for f in payload if f["name"] == "custom_var")["parameters"] == ["customVarPosition"]
    assert ("view_number" in names) == (scope.lower() == "views")


def test_exportable_fields_needs_a_valid_scope(http, tenant):
    assert http.get("/v1/exportable-fields", headers=tenant.headers).json()["errors"][0]["field"] == "scope"
    assert http.get("/v1/exportable-fields?scope=users", headers=tenant.headers).status_code == 400


def test_variables_endpoints_answer_empty_without_data(http, tenant):
    assert http.get("/v1/custom-vars", headers=tenant.headers).json() == {"payload": [], "success": True}
    answer = http.get("/v1/dynamic-var-keys?from=2026-01-01T00:00:00&to=2026-01-05T00:00:00", headers=tenant.headers)
    assert answer.json() == {"payload": [], "success": True}
    bad = http.get("/v1/dynamic-var-keys?from=yesterday", headers=tenant.headers)
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "from"
    empty = http.get("/v1/dynamic-var-keys?to=", headers=tenant.headers)  # given but empty: not the default
    assert empty.status_code == 400 and empty.json()["errors"][0]["field"] == "to"


def test_more_than_ten_concurrent_requests_get_429(api, tenant):
    """Hold ten requests of one project in flight, then an eleventh is refused with Retry-After."""
    limiter = api.context.concurrency
    for _ in range(10):
        assert limiter.try_acquire(tenant.project_id)
    try:
        answer = httpx.get(f"{api.url}/v1/exports", headers=tenant.headers)
        assert answer.status_code == 429
        assert answer.json()["errorCode"] == "TOO_MANY_CONCURRENT_REQUESTS"
        assert int(answer.headers["Retry-After"]) >= 1
    finally:
        for _ in range(10):
            limiter.release(tenant.project_id)
    assert httpx.get(f"{api.url}/v1/exports", headers=tenant.headers).status_code == 200


def test_parallel_requests_within_the_limit_all_succeed(api, tenant):
    results: list[int] = []

    def call():
        results.append(httpx.get(f"{api.url}/v1/exports", headers=tenant.headers, timeout=30).status_code)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 8


def test_a_repeated_query_parameter_is_refused(http, tenant):
    answer = http.get("/v1/segments?ids=1&ids=2", headers=tenant.headers)
    assert answer.status_code == 400 and answer.json()["errors"] == [{"field": "ids", "message": "must be given once"}]
    assert http.get("/v1/exports?limit=1&limit=100", headers=tenant.headers).status_code == 400
