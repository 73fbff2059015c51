"""Attacks on the token endpoint and on credentials fail; the legitimate client keeps working.

Over real HTTP, on SQLite and PostgreSQL. The in-thread server sees the test's source address: the attacker
connects from 127.0.0.2, the victim from 127.0.0.1 (Linux routes all of 127.0.0.0/8 to loopback).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from dataexport import admin
from dataexport.api.context import TokenGuard
from dataexport.cli import app as cli_app
from dataexport.metadata.db import transaction
from dataexport.metadata.models import OAuthClient

TOKEN = "/v1/oauth/token"
ATTACKER = "127.0.0.2"


def _body(tenant, **overrides) -> dict:
    body = {
        "client_id": tenant.client_id,
        "client_secret": tenant.client_secret,
        "grant_type": "client_credentials",
        "scope": "data-export",
    }
    return {**body, **overrides}


def _client_from(api, address: str) -> httpx.Client:
    return httpx.Client(base_url=api.url, timeout=30, transport=httpx.HTTPTransport(local_address=address))


def _fresh_guard(api, **settings) -> TokenGuard:
    ctx = api.context
    ctx.token_guard = TokenGuard(ctx.settings.model_copy(update=settings), ctx.jwt_key)
    return ctx.token_guard


@pytest.fixture
def guard(api, tenant):
    """A fresh guard once the tenant exists (its secret not yet remembered), and another one afterwards, so no
    other test meets this test's throttled keys or revoked clients."""
    yield _fresh_guard(api)
    _fresh_guard(api)


@pytest.fixture
def pinned(api):
    """The app's clock pinned one second into a minute; waits pass by advancing it."""
    api.clock.set(api.clock().replace(second=1, microsecond=0))
    return api.clock


def test_guessing_a_victims_secret_does_not_lock_the_victim_out(api, http, tenant, guard, pinned):
    with _client_from(api, ATTACKER) as attacker:
        guesses = [attacker.post(TOKEN, json=_body(tenant, client_secret=f"guess-{i}")) for i in range(35)]
        assert [g.status_code for g in guesses[:5]] == [401] * 5
        refused = guesses[5:]
        assert {g.status_code for g in refused} == {429}
        assert all(g.json()["error"] == "too_many_requests" and g.headers["Retry-After"] == "1" for g in refused)
        assert guard.hashes_checked == 5  # refused attempts never reached argon2

        # The victim's right secret, from its own address, at once.
        started = time.monotonic()
        answer = http.post(TOKEN, json=_body(tenant))
        assert answer.status_code == 200, answer.text
        assert time.monotonic() - started < 2
        assert (
            http.get("/v1/exports", headers={"Authorization": f"Bearer {answer.json()['access_token']}"}).status_code
            == 200
        )

        # The attacker gets one guess per wait, and each wait doubles.
        waits = []
        for _ in range(4):
            pinned.advance(timedelta(seconds=int(waits[-1]) if waits else 1))
            assert attacker.post(TOKEN, json=_body(tenant, client_secret="again")).status_code == 401
            refused = attacker.post(TOKEN, json=_body(tenant, client_secret="again"))
            assert refused.status_code == 429
            waits.append(refused.headers["Retry-After"])
        assert waits == ["2", "4", "8", "16"]
        # The right secret, verified lately, passes even from that address (an exact match: no argon2 spent).
        checked = guard.hashes_checked
        assert attacker.post(TOKEN, json=_body(tenant)).status_code == 200
        assert guard.hashes_checked == checked


def test_a_success_clears_its_key_and_a_remembered_secret_passes_a_throttled_key(api, http, tenant, guard, pinned):
    for _ in range(5):
        assert http.post(TOKEN, json=_body(tenant, client_secret="typo")).status_code == 401
    assert http.post(TOKEN, json=_body(tenant)).status_code == 429  # not verified lately: it waits too
    pinned.advance(timedelta(seconds=1))
    assert http.post(TOKEN, json=_body(tenant)).status_code == 200
    # The success cleared the key: five free failures again.
    typos = [http.post(TOKEN, json=_body(tenant, client_secret="typo")).status_code for _ in range(6)]
    assert typos == [401] * 5 + [429]
    # Now remembered: an exact HMAC match of the verified pair passes the throttled key without argon2.
    checked = guard.hashes_checked
    assert http.post(TOKEN, json=_body(tenant)).status_code == 200
    assert guard.hashes_checked == checked
    assert http.post(TOKEN, json=_body(tenant, client_secret="typo")).status_code == 401  # and it cleared the key


def test_parallel_guesses_on_one_key_get_no_more_than_sequential_ones(api, tenant, guard):
    async def guess_all() -> list[int]:
        transport = httpx.AsyncHTTPTransport(local_address=ATTACKER)
        limits = httpx.Limits(max_connections=40)
        async with httpx.AsyncClient(base_url=api.url, timeout=60, transport=transport, limits=limits) as client:
            answers = await asyncio.gather(
                *[client.post(TOKEN, json=_body(tenant, client_secret=f"guess-{i}")) for i in range(40)]
            )
        return [a.status_code for a in answers]

    codes = asyncio.run(guess_all())
    # Each waiting attempt looks again when its argon2 turn comes, and sees the failures before it.
    assert codes.count(401) <= api.context.settings.auth_free_failures + api.context.settings.auth_hash_concurrency
    assert codes.count(401) + codes.count(429) == 40
    assert guard.hashes_checked == codes.count(401)


def test_over_the_global_failure_rate_only_keys_that_failed_are_refused(api, http, tenant, guard, pinned):
    guard = _fresh_guard(api, auth_global_failures_per_minute=20)
    spray = [secrets.token_hex(12) for _ in range(21)]
    for client_id in spray:  # one failure per key: no key is throttled by its own count
        assert http.post(TOKEN, json=_body(tenant, client_id=client_id)).status_code == 401
    checked = guard.hashes_checked
    refused = http.post(TOKEN, json=_body(tenant, client_id=spray[0]))
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 50
    assert guard.hashes_checked == checked  # refused without argon2
    # Keys without a failure still proceed: the legitimate client, and a first attempt of an unknown one.
    assert http.post(TOKEN, json=_body(tenant)).status_code == 200
    assert http.post(TOKEN, json=_body(tenant, client_id=secrets.token_hex(12))).status_code == 401
    pinned.advance(timedelta(minutes=2))
    assert http.post(TOKEN, json=_body(tenant, client_id=spray[0])).status_code == 401  # the flood has ebbed


def test_a_flood_of_random_client_ids_is_hashed_two_at_a_time_and_the_api_keeps_answering(api, http, tenant, guard):
    assert http.post(TOKEN, json=_body(tenant)).status_code == 200  # the legitimate secret, verified once
    flood_size = 120

    async def attack_and_serve() -> tuple[list[int], list[float], int]:
        limits = httpx.Limits(max_connections=flood_size)
        async with (
            httpx.AsyncClient(base_url=api.url, timeout=120, limits=limits) as flood,
            httpx.AsyncClient(base_url=api.url, timeout=30) as legit,
        ):
            attack = [
                asyncio.ensure_future(flood.post(TOKEN, json=_body(tenant, client_id=secrets.token_hex(12))))
                for _ in range(flood_size)
            ]
            while guard.hashes_in_flight == 0:
                await asyncio.sleep(0.005)
            latencies = []
            for _ in range(3):
                for call in (legit.get("/v1/exports", headers=tenant.headers), legit.post(TOKEN, json=_body(tenant))):
                    started = time.monotonic()
                    answer = await call
                    latencies.append(time.monotonic() - started)
                    assert answer.status_code == 200, answer.text
            still_running = sum(not a.done() for a in attack)
            codes = [a.status_code for a in await asyncio.gather(*attack)]
        return codes, latencies, still_running

    codes, latencies, still_running = asyncio.run(attack_and_serve())
    assert codes == [401] * flood_size
    assert still_running > 0  # the legitimate calls were answered while the attack ran
    assert max(latencies) < 2, latencies
    print("latencies under the flood", [round(x, 3) for x in latencies], "still running", still_running)
    assert guard.hashes_peak == api.context.settings.auth_hash_concurrency == 2
    assert guard.hashes_checked == 1 + flood_size  # unknown client ids still pay the slow hash: no timing oracle


def test_token_answers_are_never_cached(api, http, tenant, guard):
    answers = [
        http.post(TOKEN, json=_body(tenant)),
        http.post(TOKEN, json=_body(tenant, client_secret="wrong")),
        http.post(TOKEN, json=_body(tenant, grant_type="password")),
        http.post(TOKEN, content=b"{not json", headers={"Content-Type": "application/json"}),
    ]
    for _ in range(5):
        answers.append(http.post(TOKEN, json=_body(tenant, client_secret="wrong")))
    assert [a.status_code for a in answers] == [200, 401, 400, 400, 401, 401, 401, 401, 429]
    for answer in answers:
        assert answer.headers["Cache-Control"] == "no-store" and answer.headers["Pragma"] == "no-cache"


def _revoke_with_cli(api, client_id: str) -> dict:
    """`dataexport clients revoke` against the stack's database, as an operator would from another process."""
    env = {
        "DATAEXPORT_DATABASE_URL": api.context.settings.resolved_database_url,
        "DATAEXPORT_DATA_DIR": str(api.data_dir),
    }
    result = CliRunner().invoke(cli_app, ["clients", "revoke", client_id, "--json"], env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _client_pk(api, client_id: str) -> int:
    with transaction(api.context.sessions) as session:
        return session.scalars(select(OAuthClient.id).where(OAuthClient.client_id == client_id)).one()


def test_a_revoked_clients_tokens_stop_working_within_a_second_everywhere(api, http, tenant, other_tenant, guard):
    assert http.get("/v1/exports", headers=tenant.headers).status_code == 200
    out = _revoke_with_cli(api, tenant.client_id)
    assert out["client_id"] == tenant.client_id and out["revoked_at"].endswith("Z")
    started = time.monotonic()
    while (answer := http.get("/v1/exports", headers=tenant.headers)).status_code == 200:
        assert time.monotonic() - started < 5, "the revoked token kept working"
        time.sleep(0.05)
    assert time.monotonic() - started < 3
    assert answer.status_code == 401
    assert answer.json() == {"success": False, "errorCode": "JWT_REVOKED", "errorMessage": "Auth token was revoked."}
    refused = http.post(TOKEN, json=_body(tenant))
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    # Nobody else is affected.
    assert http.get("/v1/exports", headers=other_tenant.headers).status_code == 200
    assert http.post(TOKEN, json=_body(other_tenant)).status_code == 200
    # Revoking again changes nothing.
    assert _revoke_with_cli(api, tenant.client_id)["revoked_at"] == out["revoked_at"]


def test_a_revocation_through_this_process_counts_at_once(api, http, tenant, guard):
    assert http.post(TOKEN, json=_body(tenant)).status_code == 200  # remembered: it must be forgotten
    with transaction(api.context.sessions) as session:
        pk = admin.revoke_client(session, tenant.client_id, now=api.clock()).id
    guard.revoke(pk)
    answer = http.get("/v1/exports", headers=tenant.headers)
    assert answer.status_code == 401 and answer.json()["errorCode"] == "JWT_REVOKED"
    checked = guard.hashes_checked
    refused = http.post(TOKEN, json=_body(tenant))
    assert refused.status_code == 401 and "revoked" in refused.json()["error_description"]
    assert guard.hashes_checked == checked + 1  # the remembered secret was forgotten: argon2 ran again
    # A wrong secret on a revoked client learns nothing about it.
    wrong = http.post(TOKEN, json=_body(tenant, client_secret="wrong"))
    assert wrong.json() == {"error": "invalid_client", "error_description": "Client authentication failed."}


def test_revoked_clients_leave_room_under_the_cap(api, http, tenant, guard):
    from dataexport.errors import Conflict

    with transaction(api.context.sessions) as session:
        for _ in range(9):
            admin.create_client(session, now=api.clock(), project_id=tenant.project_id)
    with pytest.raises(Conflict, match="revoke"), transaction(api.context.sessions) as session:
        admin.create_client(session, now=api.clock(), project_id=tenant.project_id)
    _revoke_with_cli(api, tenant.client_id)
    with transaction(api.context.sessions) as session:
        new = admin.create_client(session, now=api.clock(), project_id=tenant.project_id)
        client_id, secret = new.client.client_id, new.secret
    assert http.post(TOKEN, json=_body(tenant, client_id=client_id, client_secret=secret)).status_code == 200
    with pytest.raises(Conflict), transaction(api.context.sessions) as session:
        admin.create_client(session, now=api.clock(), project_id=tenant.project_id)


def test_clients_list_shows_every_client_without_secrets(api, tenant, other_tenant, guard):
    with transaction(api.context.sessions) as session:
        account_client = admin.create_client(session, now=api.clock(), account_id=tenant.account_id).client.client_id
    _revoke_with_cli(api, tenant.client_id)
    env = {
        "DATAEXPORT_DATABASE_URL": api.context.settings.resolved_database_url,
        "DATAEXPORT_DATA_DIR": str(api.data_dir),
    }
    runner = CliRunner()

    def listed(*args: str) -> list[dict]:
        result = runner.invoke(cli_app, ["clients", "list", *args, "--json"], env=env)
        assert result.exit_code == 0, result.output
        assert tenant.client_secret not in result.output
        return json.loads(result.output)["clients"]

    everything = listed()
    assert [c["client_id"] for c in everything] == [tenant.client_id, other_tenant.client_id, account_client]
    assert everything[0]["revoked_at"] and everything[1]["revoked_at"] is None
    assert [c["client_id"] for c in listed("--project", str(tenant.project_id))] == [tenant.client_id]
    assert [c["client_id"] for c in listed("--account", str(tenant.account_id))] == [tenant.client_id, account_client]
    table = runner.invoke(cli_app, ["clients", "list"], env=env)
    assert table.exit_code == 0, table.output
    rows = {
        line.split()[0]: line.split()
        for line in table.output.splitlines()
        if line.split()[:1] in ([tenant.client_id], [other_tenant.client_id], [account_client])
    }
    assert set(rows) == {tenant.client_id, other_tenant.client_id, account_client}
    revoked = everything[0]
    assert rows[tenant.client_id][-2:] == [revoked["created_at"][:10], revoked["revoked_at"][:10]]
    assert rows[other_tenant.client_id][-1] == everything[1]["created_at"][:10]  # no revocation date
    assert rows[account_client][1] == "all"
    for bad in (
        ["list", "--project", "999"],
        ["revoke", "no-such-client"],
        ["list", "--project", "1", "--account", "1"],
    ):
        result = runner.invoke(cli_app, ["clients", *bad], env=env)
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output


def test_a_metrics_token_reads_segments_and_nothing_else(api, http, tenant, guard):
    answer = http.post(TOKEN, json=_body(tenant, scope="metrics"))
    assert answer.status_code == 200 and answer.json()["scope"] == "metrics"
    metrics = {"Authorization": f"Bearer {answer.json()['access_token']}"}
    segments = http.get("/v1/segments", headers=metrics)
    assert segments.status_code == 200 and segments.json() == {"payload": [], "success": True}
    assert http.get("/v1/segments", headers=tenant.headers).status_code == 200  # data-export too
    for path in ("/v1/exports", "/v1/exportable-fields?scope=sessions"):
        refused = http.get(path, headers=metrics)
        assert refused.status_code == 403 and refused.json()["errorCode"] == "INSUFFICIENT_SCOPE", path
    assert http.post("/v1/exports", headers=metrics, json={}).status_code == 403


def test_the_migrations_give_the_tables_of_the_models(api):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from dataexport.metadata.models import Base

    with api.context.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    tables = ("oauth_clients", "'projects'", "collected_beacons", "operators", "operator_projects", "console_sessions")
    assert [d for d in diffs if any(t in repr(d) for t in tables)] == []
    assert "revoked_at" in OAuthClient.__table__.c
