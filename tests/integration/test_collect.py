"""The tag's routes over real HTTP: the served tag, CORS, origins, rates, and beacons stored once."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import duckdb
import orjson
import pytest

from dataexport import admin
from dataexport.collect.geo import GeoLookup
from dataexport.metadata.db import transaction
from dataexport.metadata.repositories import tenants
from dataexport.security.throttle import RequestRate

SHOP = "http://127.0.0.1:8001"
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"


def _tag_id(api, tenant, *origins: str) -> str:
    with transaction(api.context.sessions) as session:
        for origin in origins:
            admin.allow_origin(session, tenant.project_id, origin)
        return tenants.get_project(session, tenant.project_id).tag_id


def _beacon(batch: str = "batch-0001", view_number: int = 1, url: str = "http://127.0.0.1:8001/cart") -> bytes:
    now = int(time.time() * 1000)
    return orjson.dumps(
        {
            "v": 1,
            "batch": batch,
            "sent_at": now,
            "user": "2f1c6c2e-7a52-4a53-9a55-3c6d1f0e8b11",
            "session_number": 1,
            "session_start": now - 60_000,
            "views": [{"view_number": view_number, "view_time": now - 5_000, "url": url, "title": "Cart"}],
        }
    )


def _post(http, tag_id: str, body: bytes, origin: str | None = SHOP):
    headers = {"Content-Type": "text/plain;charset=UTF-8", "User-Agent": UA}
    if origin:
        headers["Origin"] = origin
    return http.post(f"/collect/v1/{tag_id}", content=body, headers=headers)


def _stored(api, project_id: int) -> list[dict]:
    files = list(api.context.settings.resolved_warehouse_dir.glob(f"pageviews/project_id={project_id}/*/*.parquet"))
    if not files:
        return []
    rel = duckdb.execute(
        "SELECT url, view_number, browser_name, device_id FROM read_parquet(?)", [[str(f) for f in files]]
    )
    return [dict(zip(("url", "view_number", "browser_name", "device_id"), r, strict=True)) for r in rel.fetchall()]


def test_the_tag_is_served_versioned_and_cacheable(api, http, tenant):
    tag_id = _tag_id(api, tenant)
    answer = http.get(f"/tag/{tag_id}.js")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/javascript")
    assert f'"endpoint": "{api.url}/collect/v1/{tag_id}"' in answer.text
    assert answer.text.rstrip().endswith(");") and "__dataexportTag.install(window," in answer.text
    assert "max-age=300" in answer.headers["cache-control"]
    assert answer.headers["content-encoding"] == "gzip"  # httpx asks for it, as browsers do
    plain = http.get(f"/tag/{tag_id}.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.text == answer.text
    assert plain.headers["etag"] != answer.headers["etag"]  # two representations, two tags
    again = http.get(f"/tag/{tag_id}.js", headers={"If-None-Match": answer.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert http.get("/tag/0000000000000000.js").status_code == 404
    assert http.get("/tag/..%2Fetc.js").status_code == 404


def test_a_beacon_from_an_allowed_origin_is_stored_once(api, http, tenant):
    tag_id = _tag_id(api, tenant, SHOP)
    answer = _post(http, tag_id, _beacon())
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == SHOP
    assert answer.json()["payload"]["stored"] == 1
    resent = _post(http, tag_id, _beacon())  # same batch; `sent_at` and times moved on, as a resend's would
    assert resent.status_code == 200 and resent.json()["payload"]["duplicate"] is True
    rows = _stored(api, tenant.project_id)
    assert rows == [{"url": f"{SHOP}/cart", "view_number": 1, "browser_name": "Chrome", "device_id": 1}]


def test_other_origins_and_pages_without_origin_are_refused(api, http, tenant):
    tag_id = _tag_id(api, tenant, SHOP)
    refused = _post(http, tag_id, _beacon(), origin="https://evil.example")
    assert refused.status_code == 403 and refused.json()["errorCode"] == "ORIGIN_NOT_ALLOWED"
    assert "access-control-allow-origin" not in refused.headers
    assert _post(http, tag_id, _beacon(), origin=None).status_code == 403
    by_referer = http.post(
        f"/collect/v1/{tag_id}", content=_beacon("batch-0002"), headers={"Referer": f"{SHOP}/cart?x=1"}
    )
    assert by_referer.status_code == 200  # a browser that sends no Origin still names its page
    assert len(_stored(api, tenant.project_id)) == 1


def test_preflights_are_answered_for_allowed_origins_only(api, http, tenant):
    tag_id = _tag_id(api, tenant, SHOP)
    asked = {"Origin": SHOP, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    answer = http.options(f"/collect/v1/{tag_id}", headers=asked)
    assert answer.status_code == 204
    assert answer.headers["access-control-allow-origin"] == SHOP
    assert "POST" in answer.headers["access-control-allow-methods"]
    other = http.options(f"/collect/v1/{tag_id}", headers=asked | {"Origin": "https://evil.example"})
    assert other.status_code == 403 and "access-control-allow-origin" not in other.headers


def test_bad_beacons_get_400_naming_the_key_and_store_nothing(api, http, tenant):
    tag_id = _tag_id(api, tenant, SHOP)
    body = orjson.loads(_beacon())
    body["views"][0]["view_time"] = "yesterday"
    answer = _post(http, tag_id, orjson.dumps(body))
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["field"] == "views[0].view_time"
    assert answer.headers["access-control-allow-origin"] == SHOP
    assert _post(http, tag_id, b"\x00" * 70_000).status_code == 413
    assert _stored(api, tenant.project_id) == []


def test_a_client_that_sends_too_much_gets_429_with_retry_after(api, http, tenant):
    tag_id = _tag_id(api, tenant, SHOP)
    app = api.server.server.config.app
    kept = app.state.collection.rate
    app.state.collection.rate = RequestRate(per_minute=6, burst=2)
    try:
        answers = [_post(http, tag_id, _beacon(f"batch-{i:06d}", view_number=i + 1)) for i in range(3)]
    finally:
        app.state.collection.rate = kept
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert int(answers[2].headers["retry-after"]) >= 1


def test_a_rotated_tag_id_stops_the_old_one(api, http, tenant):
    old = _tag_id(api, tenant, SHOP)
    with transaction(api.context.sessions) as session:
        new = admin.rotate_tag_id(session, tenant.project_id)
    app = api.server.server.config.app
    app.state.collection.tags.clear()  # the processes' 5-second cache, which the test does not wait out
    assert http.get(f"/tag/{old}.js").status_code == 404
    assert _post(http, new, _beacon()).status_code == 200


GEOIP_DIR = Path(".cache/geoip")


@pytest.mark.skipif(
    not GEOIP_DIR.exists() and not os.environ.get("CI"), reason="no GeoIP databases here (`make geoip`)"
)
def test_addresses_give_real_places_and_private_ones_none():
    geo = GeoLookup(GEOIP_DIR)
    try:
        assert geo.enabled
        assert geo.place_of("81.2.69.142") == ("London", "GB")
        city, country = geo.place_of("2a00:1450:4007:80e::200e")  # an IPv6 address of Google's in Europe
        assert country and len(country) == 2
        assert geo.place_of("127.0.0.1") == ("", "") and geo.place_of("10.1.2.3") == ("", "")
        assert geo.place_of("not an address") == ("", "")
    finally:
        geo.close()


def test_beacons_arriving_together_are_stored_as_one_batch_and_each_answered(api, tenant):
    import asyncio

    import httpx

    from dataexport.engine.maintenance import run_maintenance
    from dataexport.metadata.repositories import beacons

    tag_id = _tag_id(api, tenant, SHOP)
    bodies = [_beacon(f"together-{i:04d}", view_number=i + 1) for i in range(120)]
    late = orjson.loads(bodies[7])
    late["views"][0]["view_time"] = late["sent_at"] + 3_600_000  # an hour ahead of the beacon's own clock
    bodies[7] = orjson.dumps(late)
    headers = {"Origin": SHOP, "Content-Type": "text/plain;charset=UTF-8", "User-Agent": UA}

    async def send_all() -> list[dict]:
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            answers = await asyncio.gather(
                *(client.post(f"/collect/v1/{tag_id}", content=b, headers=headers) for b in bodies)
            )
        assert {a.status_code for a in answers} == {200}
        return [a.json()["payload"] for a in answers]

    app = api.server.server.config.app
    kept = app.state.collection.rate
    app.state.collection.rate = RequestRate(per_minute=10_000, burst=1_000)  # one client address sends them all
    try:
        first = asyncio.run(send_all())
        again = asyncio.run(send_all())  # every beacon resent (the rejected one included: it was claimed)
    finally:
        app.state.collection.rate = kept
    assert [p["batchId"] for p in first] == [f"together-{i:04d}" for i in range(120)]
    assert first[7]["stored"] == 0 and first[7]["rejected"] == 1
    assert first[7]["errors"][0]["index"] == 0 and first[7]["errors"][0]["field"] == "view_time"
    assert all(p["stored"] == 1 and not p["duplicate"] for i, p in enumerate(first) if i != 7)
    stored = _stored(api, tenant.project_id)
    assert sorted(r["view_number"] for r in stored) == [i + 1 for i in range(120) if i != 7]
    files = list(
        api.context.settings.resolved_warehouse_dir.glob(f"pageviews/project_id={tenant.project_id}/*/*.parquet")
    )
    assert len(files) <= 30  # 119 pageviews, a file per batch: they were stored together, not one by one

    assert all(p["duplicate"] and p["stored"] == 0 for p in again)
    assert len(_stored(api, tenant.project_id)) == 119

    with api.context.engine.connect() as conn:
        assert len(beacons.collected(conn, tenant.project_id)) == 120
    later = api.context.clock() + timedelta(days=beacons.BEACON_MEMORY_DAYS, minutes=1)
    assert run_maintenance(api.context.sessions, api.context.pageviews, later).beacons_forgotten == 120
