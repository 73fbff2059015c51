"""Token endpoint and bearer auth, over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import jwt
import pytest

from dataexport import admin
from dataexport.metadata.db import transaction

EXPIRED_BODY = {"success": False, "errorMessage": "Auth token is expired.", "errorCode": "JWT_EXPIRED"}


def _token_request(tenant, **overrides):
    body = {
        "client_id": tenant.client_id,
        "client_secret": tenant.client_secret,
        "grant_type": "client_credentials",
        "scope": "data-export",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def test_token_as_json_has_every_documented_field(http, tenant, api):
    answer = http.post("/v1/oauth/token", json=_token_request(tenant))
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope", "project_id", "endpoint"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == "data-export"
    assert body["project_id"] == tenant.project_id
    assert body["endpoint"] == api.url
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 3600 and claims["pid"] == tenant.project_id


def test_token_as_form_with_camel_case_project_and_several_scopes(http, tenant):
    answer = http.post(
        "/v1/oauth/token",
        data=_token_request(tenant, scope="data-export metrics", projectId=str(tenant.project_id)),
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["scope"] == "data-export metrics"
    assert answer.json()["project_id"] == tenant.project_id


@pytest.mark.parametrize(
    ("overrides", "status", "error"),
    [
        ({"client_secret": "wrong"}, 401, "invalid_client"),
        ({"client_id": "nobody"}, 401, "invalid_client"),
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"scope": "admin"}, 400, "invalid_scope"),
        ({"scope": None}, 400, "invalid_request"),
        ({"client_id": None}, 400, "invalid_request"),
        ({"project_id": "abc"}, 400, "invalid_request"),
        ({"project_id": 999999}, 400, "invalid_request"),
    ],
)
def test_token_errors_use_the_oauth_shape(http, tenant, overrides, status, error):
    answer = http.post("/v1/oauth/token", json=_token_request(tenant, **overrides))
    assert answer.status_code == status
    assert answer.json()["error"] == error
    assert set(answer.json()) == {"error", "error_description"}
    assert tenant.client_secret not in answer.text


def test_token_rejects_malformed_json(http):
    answer = http.post("/v1/oauth/token", content=b"{not json", headers={"Content-Type": "application/json"})
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_request"


def test_missing_garbage_and_foreign_tokens_get_401(http, tenant):
    for headers, code in [
        ({}, "JWT_MISSING"),
        ({"Authorization": "Bearer garbage"}, "JWT_INVALID"),
        ({"Authorization": "Basic abc"}, "JWT_MISSING"),
        (
            {
                "Authorization": "Bearer "
                + jwt.encode(
                    {
                        "pid": tenant.project_id,
                        "aid": tenant.account_id,
                        "sub": "1",
                        "scope": "data-export",
                        "iat": 1,
                        "exp": 4102444800,
                        "iss": "dataexport",
                    },
                    "another-key-another-key-another-key",
                    algorithm="HS256",
                )
            },
            "JWT_INVALID",
        ),
    ]:
        answer = http.get("/v1/exports", headers=headers)
        assert answer.status_code == 401, headers
        assert answer.json()["success"] is False and answer.json()["errorCode"] == code


def test_alg_none_token_is_refused(http, tenant):
    claims = jwt.decode(tenant.token, options={"verify_signature": False})
    forged = jwt.encode(claims, None, algorithm="none")
    assert http.get("/v1/exports", headers={"Authorization": f"Bearer {forged}"}).status_code == 401


def test_expired_token_gets_the_exact_documented_body(http, tenant, api):
    api.clock.set(api.clock() + timedelta(hours=1, seconds=1))
    answer = http.get("/v1/exports", headers=tenant.headers)
    assert answer.status_code == 401
    assert answer.json() == EXPIRED_BODY


def test_token_without_data_export_scope_gets_403(http, tenant):
    token = http.post("/v1/oauth/token", json=_token_request(tenant, scope="metrics")).json()["access_token"]
    answer = http.get("/v1/exports", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 403 and answer.json()["errorCode"] == "INSUFFICIENT_SCOPE"


def test_account_level_client_needs_a_project_of_its_account(http, api, tenant, other_tenant):
    with transaction(api.context.sessions) as session:
        second = admin.create_project(session, name="Second", now=api.clock(), account_id=tenant.account_id)
        client = admin.create_client(session, now=api.clock(), account_id=tenant.account_id)
        second_id, client_id, secret = second.project.id, client.client.client_id, client.secret
    base = {"client_id": client_id, "client_secret": secret, "grant_type": "client_credentials", "scope": "data-export"}
    assert http.post("/v1/oauth/token", json=base).json()["error"] == "invalid_request"  # two projects: must choose
    for project_id in (tenant.project_id, second_id):
        answer = http.post("/v1/oauth/token", json={**base, "project_id": project_id})
        assert answer.status_code == 200 and answer.json()["project_id"] == project_id
    assert http.post("/v1/oauth/token", json={**base, "project_id": other_tenant.project_id}).status_code == 400


def test_project_client_cannot_reach_another_project(http, tenant, other_tenant):
    answer = http.post("/v1/oauth/token", json=_token_request(tenant, project_id=other_tenant.project_id))
    assert answer.status_code == 400


def test_at_most_ten_clients_per_project(api, tenant):
    from dataexport.errors import Conflict

    with transaction(api.context.sessions) as session:
        for _ in range(9):
            admin.create_client(session, now=api.clock(), project_id=tenant.project_id)
    with pytest.raises(Conflict), transaction(api.context.sessions) as session:
        admin.create_client(session, now=api.clock(), project_id=tenant.project_id)


def test_client_secret_is_stored_hashed(api, tenant):
    from sqlalchemy import select

    from dataexport.metadata.models import OAuthClient

    with transaction(api.context.sessions) as session:
        stored = session.scalars(select(OAuthClient.secret_hash)).all()
    assert stored and all(h.startswith("$argon2") and tenant.client_secret not in h for h in stored)
