"""The authenticated hot path under concurrency, over real HTTP on SQLite and PostgreSQL.

100 authenticated GETs over 10 projects (10 per project: exactly the per-project limit) and token requests,
all in flight at once against the real server: no 5xx, no 429, and every answer is the caller's own data
(another project's job id is answered 404, exactly like an unknown id).
"""

from __future__ import annotations

import asyncio

import httpx

from conftest import make_tenant
from examples import create, example_daily

PROJECTS = 10
GETS_PER_PROJECT = 10  # the per-project concurrency limit: none of them may be refused with 429
FOREIGN_GETS_PER_PROJECT = 2  # of which: another project's job id
TOKENS_PER_PROJECT = 2


def _token_body(tenant) -> dict:
    return {
        "client_id": tenant.client_id,
        "client_secret": tenant.client_secret,
        "grant_type": "client_credentials",
        "scope": "data-export",
    }


def test_concurrent_authenticated_gets_and_token_requests(api, http):
    zones = ("UTC", "Europe/Paris")
    tenants = [make_tenant(api, http, name=f"Shop {i}", timezone=zones[i % 2]) for i in range(PROJECTS)]
    zone_of = {t.project_id: zones[i % 2] for i, t in enumerate(tenants)}
    jobs = {t.project_id: [create(http, t, example_daily()) for _ in range(2)] for t in tenants}
    api.context.projects.clear()  # the burst also takes the cold path: projects read from the DB at once

    async def get_job(client: httpx.AsyncClient, tenant, job_id: int, own: bool) -> None:
        answer = await client.get(f"/v1/exports/{job_id}", headers=tenant.headers)
        if not own:
            assert answer.status_code == 404, answer.text
            assert answer.json()["errorCode"] == "NOT_FOUND" and answer.json()["success"] is False
            return
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["success"] is True
        job = body["payload"]
        assert job["jobId"] == job_id and job["projectIds"] == [tenant.project_id]
        assert job["accountId"] == tenant.account_id and job["frequency"] == "daily"
        # The daily window follows the project's time zone: a project must never be answered with another's.
        local_midnight = (
            ("T22:00:00.000Z", "T23:00:00.000Z") if zone_of[tenant.project_id] != "UTC" else ("T00:00:00.000Z",)
        )
        assert job["nextFrom"].endswith(local_midnight), (zone_of[tenant.project_id], job["nextFrom"])
        assert answer.headers["X-Request-ID"]

    async def token(client: httpx.AsyncClient, tenant) -> None:
        answer = await client.post("/v1/oauth/token", json=_token_body(tenant))
        assert answer.status_code == 200, answer.text
        assert answer.json()["project_id"] == tenant.project_id and answer.json()["access_token"]

    async def burst() -> list:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=api.url, timeout=60, limits=limits) as client:
            calls = []
            for i, tenant in enumerate(tenants):
                own = jobs[tenant.project_id]
                foreign = jobs[tenants[(i + 1) % PROJECTS].project_id]
                for n in range(GETS_PER_PROJECT):
                    if n < FOREIGN_GETS_PER_PROJECT:
                        calls.append(get_job(client, tenant, foreign[n % len(foreign)], own=False))
                    else:
                        calls.append(get_job(client, tenant, own[n % len(own)], own=True))
                calls += [token(client, tenant) for _ in range(TOKENS_PER_PROJECT)]
            return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(burst())
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, failures[:5]
    assert len(results) == PROJECTS * (GETS_PER_PROJECT + TOKENS_PER_PROJECT)
    # Every per-project slot was given back.
    assert all(api.context.concurrency.try_acquire(t.project_id) for t in tenants)
    for t in tenants:
        api.context.concurrency.release(t.project_id)
