"""The console over HTTP (a real server, on SQLite and PostgreSQL): sessions, CSRF, roles and project scoping, and
that its forms reach the very services of the API (a console job is the job `POST /v1/exports` makes)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from dataexport.cli import app as cli_app
from dataexport.console import accounts
from dataexport.console.jobform import body_from_form
from dataexport.engine.maintenance import run_maintenance
from dataexport.metadata.db import transaction
from dataexport.metadata.models import ConsoleSession, ExportJob, OAuthClient, Segment
from dataexport.security.secrets import verify_secret

PASSWORD = "correct horse battery"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def _operator(api, email: str, role: str, project_ids: list[int]) -> None:
    with transaction(api.context.sessions) as session:
        accounts.create_operator(
            session, email=email, password=PASSWORD, role=role, project_ids=project_ids, now=api.clock()
        )


@contextmanager
def _signed_in(api, email: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, timeout=30) as client:
        form = client.get("/console/login")
        answer = client.post(
            "/console/login",
            data={"csrf": CSRF.search(form.text).group(1), "email": email, "password": PASSWORD},
        )
        assert answer.status_code == 303 and answer.headers["location"] == "/console/projects", answer.text
        yield client


def _csrf(client: httpx.Client, path: str = "/console/projects") -> str:
    return CSRF.search(client.get(path).text).group(1)


@pytest.fixture
def admin_client(api, tenant):
    _operator(api, "ana@example.com", "admin", [tenant.project_id])
    with _signed_in(api, "ana@example.com") as client:
        yield client


JOB_FORM = [
    ("name", "Console job"),
    ("format", "JSONL"),
    ("scope", "views"),
    ("frequency.value", "daily"),
    ("deviceLabel", "mobile"),
    ("fields[0].fieldName", "session_id"),
    ("fields[0].aliasName", "sid"),
    ("fields[1].fieldName", "custom_var"),
    ("fields[1].customVarPosition", "3"),
    ("fields[2].fieldName", "dynamic_var"),
    ("fields[2].dynamicVarKey", "AB Test"),
    ("fields[2].aliasName", "ab"),
]


def test_a_console_job_is_the_job_the_api_makes_from_the_same_body(api, http, tenant, admin_client):
    answer = admin_client.post(
        f"/console/projects/{tenant.project_id}/jobs", data={"csrf": _csrf(admin_client), **dict(JOB_FORM)}
    )
    assert answer.status_code == 303, answer.text
    console_id = int(answer.headers["location"].rsplit("/", 1)[1])
    api_id = http.post("/v1/exports", json=body_from_form(JOB_FORM), headers=tenant.headers).json()["payload"]["jobId"]
    seen = {
        job_id: http.get(f"/v1/exports/{job_id}", headers=tenant.headers).json()["payload"]
        for job_id in (console_id, api_id)
    }
    # Who made it and when differ; everything the job is does not.
    differ = {"jobId", "ownerId", "lastUpdatorId", "createdAt", "updatedAt"}
    console_job, api_job = ({k: v for k, v in job.items() if k not in differ} for job in seen.values())
    assert console_job == api_job
    assert console_job["fields"] == [
        {"fieldName": "session_id", "aliasName": "sid"},
        {"fieldName": "custom_var", "customVarPosition": 3},
        {"fieldName": "dynamic_var", "dynamicVarKey": "AB Test", "aliasName": "ab"},
    ]


def test_form_errors_are_the_validators_shown_beside_their_inputs(api, tenant, admin_client):
    form = {
        "csrf": _csrf(admin_client),
        "name": "",
        "format": "XML",
        "frequency.value": "once",
        "frequency.dateRange.from": "yesterday",
        "frequency.dateRange.to": "2026-01-01",
        "fields[0].fieldName": "no_such_field",
    }
    answer = admin_client.post(f"/console/projects/{tenant.project_id}/jobs", data=form)
    assert answer.status_code == 400
    for input_id in ("format", "frequency-dateRange-from", "fields-0-fieldName"):
        assert re.search(rf'id="{input_id}"[^>]*aria-invalid="true"|error-{input_id}', answer.text) or (
            input_id == "fields-0-fieldName" and "is not an exportable field" in answer.text
        ), input_id
    with transaction(api.context.sessions) as session:
        assert session.scalar(select(func.count()).select_from(ExportJob)) == 0


def test_pages_are_not_cached_framed_or_scripted_inline(admin_client, tenant):
    answer = admin_client.get(f"/console/projects/{tenant.project_id}/credentials")
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "no-store" and answer.headers["x-frame-options"] == "DENY"
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy
    assert answer.headers["referrer-policy"] == "same-origin"  # an S3 download never learns the page
    assert "<script>" not in answer.text  # only files of /console/static run


def test_a_created_secret_is_kept_only_as_its_hash(api, tenant, admin_client):
    answer = admin_client.post(
        f"/console/projects/{tenant.project_id}/credentials", data={"csrf": _csrf(admin_client), "name": "loader"}
    )
    assert answer.status_code == 201
    secret = re.search(r'id="new-client-secret" readonly value="([^"]+)"', answer.text).group(1)
    client_id = re.search(r'id="new-client-id" readonly value="([^"]+)"', answer.text).group(1)
    with transaction(api.context.sessions) as session:
        stored = session.scalars(select(OAuthClient).where(OAuthClient.client_id == client_id)).one()
        assert stored.secret_hash != secret and verify_secret(stored.secret_hash, secret)
    assert secret not in admin_client.get(f"/console/projects/{tenant.project_id}/credentials").text


def test_revoking_from_the_console_stops_the_clients_tokens(api, http, tenant, admin_client):
    assert http.get("/v1/exports", headers=tenant.headers).status_code == 200
    answer = admin_client.post(
        f"/console/projects/{tenant.project_id}/credentials/{tenant.client_id}/revoke",
        data={"csrf": _csrf(admin_client)},
    )
    assert answer.status_code == 303
    refused = http.get("/v1/exports", headers=tenant.headers)
    assert refused.status_code == 401 and refused.json()["errorCode"] == "JWT_REVOKED"


def test_another_projects_client_cannot_be_revoked_through_ones_own(api, tenant, other_tenant, admin_client):
    answer = admin_client.post(
        f"/console/projects/{tenant.project_id}/credentials/{other_tenant.client_id}/revoke",
        data={"csrf": _csrf(admin_client)},
    )
    assert answer.status_code == 404
    with transaction(api.context.sessions) as session:
        other = session.scalars(select(OAuthClient).where(OAuthClient.client_id == other_tenant.client_id)).one()
        assert other.revoked_at is None


def test_a_viewer_is_refused_before_anything_changes(api, tenant):
    _operator(api, "victor@example.com", "viewer", [tenant.project_id])
    with _signed_in(api, "victor@example.com") as client:
        csrf = _csrf(client)
        base = f"/console/projects/{tenant.project_id}"
        for path, form in (
            (f"{base}/credentials", {"name": "x"}),
            (f"{base}/credentials/{tenant.client_id}/revoke", {}),
            (f"{base}/ingest-key", {}),
            (f"{base}/jobs", dict(JOB_FORM)),
            (f"{base}/segments", {"name": "s", "filter": '{"field": "country_code", "op": "exists"}'}),
        ):
            assert client.post(path, data={"csrf": csrf, **form}).status_code == 403, path
        assert client.get(f"{base}/jobs").status_code == 200  # reading is what a viewer does
    with transaction(api.context.sessions) as session:
        assert session.scalar(select(func.count()).select_from(ExportJob)) == 0
        assert session.scalar(select(func.count()).select_from(Segment)) == 0
        assert session.scalar(select(func.count()).select_from(OAuthClient)) == 1  # the tenant's own
        assert session.scalars(select(OAuthClient)).one().revoked_at is None


def test_forms_need_this_sessions_token_and_origin(api, tenant, admin_client):
    path = f"/console/projects/{tenant.project_id}/credentials"
    assert admin_client.post(path, data={"name": "x"}).status_code == 403
    assert admin_client.post(path, data={"name": "x", "csrf": "0" * 64}).status_code == 403
    csrf = _csrf(admin_client)
    evil = admin_client.post(path, data={"name": "x", "csrf": csrf}, headers={"Origin": "https://evil.example"})
    assert evil.status_code == 403
    # Another session's token is no good here either.
    _operator(api, "bo@example.com", "admin", [tenant.project_id])
    with _signed_in(api, "bo@example.com") as other:
        assert other.post(path, data={"name": "x", "csrf": csrf}).status_code == 403
    with transaction(api.context.sessions) as session:
        assert session.scalar(select(func.count()).select_from(OAuthClient)) == 1


def test_the_sign_in_form_refuses_a_post_without_its_own_cookie(api, tenant):
    _operator(api, "ana@example.com", "admin", [tenant.project_id])
    with httpx.Client(base_url=api.url) as client:
        token = CSRF.search(client.get("/console/login").text).group(1)
    with httpx.Client(base_url=api.url) as stranger:  # a forged sign-in: the token, but not the cookie
        answer = stranger.post("/console/login", data={"csrf": token, "email": "ana@example.com", "password": PASSWORD})
    assert answer.status_code == 403 and "dataexport_console=" not in answer.headers.get("set-cookie", "")


def test_sign_in_goes_back_only_to_console_pages(api, tenant):
    _operator(api, "ana@example.com", "admin", [tenant.project_id])
    for target, expected in (
        ("https://evil.example/", "/console/projects"),
        ("//evil.example/console", "/console/projects"),
        (f"/console/projects/{tenant.project_id}/jobs", f"/console/projects/{tenant.project_id}/jobs"),
    ):
        with httpx.Client(base_url=api.url) as client:
            token = CSRF.search(client.get("/console/login").text).group(1)
            answer = client.post(
                "/console/login",
                data={"csrf": token, "email": "ANA@example.com ", "password": PASSWORD, "next": target},
            )
            assert answer.status_code == 303 and answer.headers["location"] == expected, target


def test_sessions_expire_and_are_pruned(api, tenant, admin_client):
    assert admin_client.get("/console/projects").status_code == 200
    api.clock.set(api.clock() + timedelta(hours=13))
    expired = admin_client.get("/console/projects")
    assert expired.status_code == 303 and expired.headers["location"].startswith("/console/login")
    result = run_maintenance(api.context.sessions, api.context.pageviews, api.clock())
    assert result.sessions_closed == 1
    with transaction(api.context.sessions) as session:
        assert session.scalar(select(func.count()).select_from(ConsoleSession)) == 0


def test_a_deeply_nested_segment_filter_is_a_400_naming_the_filter(api, tenant, admin_client):
    deep = '{"not": ' * 5000 + '{"field": "country_code", "op": "exists"}' + "}" * 5000
    answer = admin_client.post(
        f"/console/projects/{tenant.project_id}/segments",
        data={"csrf": _csrf(admin_client), "name": "deep", "filter": deep},
    )
    assert answer.status_code == 400 and "filter: must nest" in answer.text


def test_bad_path_and_query_values_are_400_pages(admin_client, tenant):
    for path in ("/console/projects/abc", f"/console/projects/{tenant.project_id}/jobs?limit=0"):
        answer = admin_client.get(path)
        assert answer.status_code == 400 and answer.headers["content-type"].startswith("text/html"), path
    answer = admin_client.get(f"/console/projects/{tenant.project_id}/jobs?state=bogus")
    assert answer.status_code == 400 and "state" in answer.text


def test_users_commands(api, tenant):
    env = {"DATAEXPORT_DATA_DIR": str(api.data_dir), "DATAEXPORT_DATABASE_URL": api.context.settings.database_url}
    runner = CliRunner()

    def users(*args: str, password: str | None = None):
        stdin = None if password is None else password + "\n"
        return runner.invoke(cli_app, ["users", *args], env=env, input=stdin)

    made = users(
        "create", "--email", "Ana@Example.com", "--role", "viewer", "--project", str(tenant.project_id),
        "--password-stdin", "--json", password=PASSWORD,
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    assert '"email": "ana@example.com"' in made.output and f'"project_ids": [{tenant.project_id}]' in made.output
    for bad, needle in (
        (("create", "--email", "ana@example.com", "--role", "admin", "--password-stdin"), "exists already"),
        (("create", "--email", "bo@example.com", "--role", "root", "--password-stdin"), "role"),
        (("create", "--email", "not-an-address", "--role", "admin", "--password-stdin"), "email"),
        (("create", "--email", "bo@example.com", "--role", "admin", "--project", "999", "--password-stdin"), "999"),
    ):
        result = users(*bad, password=PASSWORD)
        assert result.exit_code == 2 and needle in result.output and "Traceback" not in result.output, result.output
    short = users("create", "--email", "bo@example.com", "--role", "admin", "--password-stdin", password="short")
    assert short.exit_code == 2 and "password" in short.output
    assert users("revoke", "--email", "ana@example.com", "--project", str(tenant.project_id)).exit_code == 0
    assert '"project_ids": []' in users("list", "--json").output
    granted = users("grant", "--email", "ana@example.com", "--project", str(tenant.project_id), "--json")
    assert f'"project_ids": [{tenant.project_id}]' in granted.output
    with _signed_in(api, "ana@example.com") as client:
        assert client.get("/console/projects").status_code == 200
        changed = users("set-password", "--email", "ana@example.com", "--password-stdin", password=PASSWORD + "!")
        assert changed.exit_code == 0, changed.output
        assert client.get("/console/projects").status_code == 303  # signed out everywhere


def test_the_cookies_are_secure_when_the_console_is_reached_over_https(api, tenant):
    from dataexport.api.app import create_app

    _operator(api, "ana@example.com", "admin", [tenant.project_id])
    app = create_app(api.context.settings, context=api.context)

    async def sign_in() -> tuple[httpx.Response, httpx.Response]:
        # What uvicorn makes of a request a trusted proxy forwarded with X-Forwarded-Proto: https.
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://127.0.0.1") as client:
            form = await client.get("/console/login")
            answer = await client.post(
                "/console/login",
                data={"csrf": CSRF.search(form.text).group(1), "email": "ana@example.com", "password": PASSWORD},
                headers={"Origin": "https://127.0.0.1"},
            )
            return form, answer

    form, answer = asyncio.run(sign_in())
    assert "secure" in form.headers["set-cookie"].lower()
    session_cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith("dataexport_console="))
    assert answer.status_code == 303 and "Secure" in session_cookie and "HttpOnly" in session_cookie


def test_the_endpoints_pages_name_exist(http, tenant, admin_client):
    """The hints name API routes (`POST /v1/oauth/token`): each must be one the server has."""
    routes = set(http.get("/openapi.json").json()["paths"])
    named = set()
    for page in ("credentials", "jobs", "segments", ""):
        text = admin_client.get(f"/console/projects/{tenant.project_id}/{page}".rstrip("/")).text
        named |= set(re.findall(r"<code>(?:GET|POST|PUT|DELETE) (/[^<\s]+)</code>", text))
    assert named and named <= routes, named - routes
