"""HTTP ingest: per-project key, per-hit rejections, idempotent retries, data readable by the API at once."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import duckdb


def hit(i: int, when: datetime, **extra) -> dict:
    base = {
        "user_id_unhashed": f"visitor-{i % 3}",
        "session_number": 1 + i // 3,
        "view_number": 1,
        "session_time": when.isoformat().replace("+00:00", "Z"),
        "view_time": when.isoformat().replace("+00:00", "Z"),
        "device_id": 1,
        "url": f"https://shop.example/p/{i}?utm_source=news",
        "custom_vars": [{"position": 2, "key": "pageType", "value": f"type-{i % 2}"}],
        "dynamic_vars": {"AB Test": "B", "cart_value": 1200},
    }
    base.update(extra)
    return base


def stored_count(api, project_id) -> int:
    root = api.context.settings.resolved_warehouse_dir
    files = list(root.glob(f"pageviews/project_id={project_id}/*/*.parquet"))
    return (
        duckdb.execute("SELECT count(*) FROM read_parquet(?)", [[str(f) for f in files]]).fetchone()[0] if files else 0
    )


def test_ingest_stores_good_hits_and_reports_bad_ones(api, http, tenant):
    now = datetime.now(UTC) - timedelta(hours=1)
    hits = [hit(i, now) for i in range(5)]
    hits[1]["custom_vars"][0]["position"] = 21
    hits[3]["view_time"] = "not a time"
    answer = http.post("/ingest/v1/pageviews", json=hits, headers={"X-Ingest-Key": tenant.ingest_key})
    assert answer.status_code == 200, answer.text
    payload = answer.json()["payload"]
    assert payload["stored"] == 3 and payload["rejected"] == 2 and payload["duplicate"] is False
    assert sorted(e["index"] for e in payload["errors"]) == [1, 3]
    assert {e["field"] for e in payload["errors"]} == {"custom_vars[0].position", "view_time"}
    assert stored_count(api, tenant.project_id) == 3

    again = http.post("/ingest/v1/pageviews", json=hits, headers={"X-Ingest-Key": tenant.ingest_key})
    assert again.json()["payload"]["duplicate"] is True
    assert stored_count(api, tenant.project_id) == 3

    keys = http.get("/v1/dynamic-var-keys", headers=tenant.headers).json()["payload"]
    assert keys == [{"key": "AB Test", "type": "string"}, {"key": "cart_value", "type": "number"}]
    custom = http.get("/v1/custom-vars", headers=tenant.headers).json()["payload"]
    assert custom == [{"position": 2, "key": "pageType", "values": ["type-0"]}]  # hits 0, 2 and 4 were stored


def test_ndjson_and_bearer_key(api, http, tenant):
    now = datetime.now(UTC) - timedelta(hours=2)
    body = "\n".join(json.dumps(hit(i, now)) for i in range(4)) + "\n"
    answer = http.post(
        "/ingest/v1/pageviews",
        content=body.encode(),
        headers={"Authorization": f"Bearer {tenant.ingest_key}", "Content-Type": "application/x-ndjson"},
    )
    assert answer.status_code == 200 and answer.json()["payload"]["stored"] == 4


def test_ndjson_lines_are_hits_of_their_own(api, http, tenant):
    # A line that is not JSON is one rejected hit, the others are stored; a line must hold exactly one hit.
    now = datetime.now(UTC) - timedelta(hours=2)
    lines = [json.dumps(hit(i, now)) for i in range(6)]
    lines[1] = lines[1][:-3]  # cut short
    lines[3] = json.dumps(hit(30, now)) + "," + json.dumps(hit(31, now))  # two on one line
    lines.insert(2, "   ")  # blank: skipped, not numbered
    answer = http.post(
        "/ingest/v1/pageviews",
        content="\n".join(lines).encode(),
        headers={"X-Ingest-Key": tenant.ingest_key, "Content-Type": "application/x-ndjson"},
    )
    assert answer.status_code == 200, answer.text
    payload = answer.json()["payload"]
    assert (payload["stored"], payload["rejected"]) == (4, 2)
    assert [(e["index"], e["field"], e["message"]) for e in payload["errors"]] == [
        (1, "hit", "is not valid JSON"),
        (3, "hit", "is not valid JSON"),
    ]
    assert stored_count(api, tenant.project_id) == 4


def test_ingest_key_is_required_and_scoped(api, http, tenant, other_tenant):
    now = datetime.now(UTC)
    assert http.post("/ingest/v1/pageviews", json=[hit(0, now)]).status_code == 401
    assert http.post("/ingest/v1/pageviews", json=[hit(0, now)], headers={"X-Ingest-Key": "ik_nope"}).status_code == 401
    http.post("/ingest/v1/pageviews", json=[hit(0, now)], headers={"X-Ingest-Key": other_tenant.ingest_key})
    assert stored_count(api, tenant.project_id) == 0 and stored_count(api, other_tenant.project_id) == 1


def test_a_batch_of_only_bad_hits_is_a_400_and_stores_nothing(api, http, tenant):
    answer = http.post(
        "/ingest/v1/pageviews", json=[{"url": "x"}, {"bogus": 1}], headers={"X-Ingest-Key": tenant.ingest_key}
    )
    assert answer.status_code == 400 and answer.json()["errorCode"] == "INVALID_HITS"
    assert all(e["field"].startswith("hits[") for e in answer.json()["errors"])
    for raw in (b"{", b'{"a": 1}', b"42"):
        bad = http.post(
            "/ingest/v1/pageviews",
            content=raw,
            headers={"X-Ingest-Key": tenant.ingest_key, "Content-Type": "application/json"},
        )
        assert bad.status_code == 400 and bad.json()["success"] is False
    assert stored_count(api, tenant.project_id) == 0
