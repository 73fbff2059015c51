"""Metrics, request ids and logs that never carry secrets."""

from __future__ import annotations

from examples import create, example_once


def _sample(text: str, name: str) -> float:
    line = next((line for line in text.splitlines() if line.startswith(name + " ")), None)
    return float(line.rsplit(" ", 1)[1]) if line else 0.0


def test_metrics_expose_requests_and_runs(http, tenant):
    created = 'dataexport_http_requests_total{method="POST",route="/v1/exports",status="200"}'
    before = _sample(http.get("/metrics").text, created)  # the registry lives as long as the shared server
    create(http, tenant, example_once())
    http.get("/v1/exports/999", headers=tenant.headers)
    text = http.get("/metrics").text
    assert _sample(text, created) == before + 1
    assert 'route="/v1/exports/{jobId}",status="404"' in text
    assert 'dataexport_runs{state="RUNNABLE"} 1.0' in text
    assert "dataexport_queue_depth 1.0" in text
    assert "dataexport_http_request_seconds_bucket" in text


def test_request_id_is_echoed_or_made(http, tenant):
    assert http.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    assert len(http.get("/healthz").headers["X-Request-ID"]) == 32


def test_logs_never_carry_secrets_or_tokens(http, tenant, capsys):
    http.post(
        "/v1/oauth/token",
        json={
            "client_id": tenant.client_id,
            "client_secret": tenant.client_secret,
            "grant_type": "client_credentials",
            "scope": "data-export",
        },
    )
    http.post(
        "/v1/oauth/token",
        json={
            "client_id": tenant.client_id,
            "client_secret": "wrong-secret-value",
            "grant_type": "client_credentials",
            "scope": "data-export",
        },
    )
    http.get("/v1/exports", headers=tenant.headers)
    http.get("/files/exports/1/x.csv.gz?expires=1&sig=deadbeef")
    out = capsys.readouterr()
    logged = out.out + out.err
    assert "http.request" in logged
    for secret in (tenant.client_secret, "wrong-secret-value", tenant.token, "deadbeef", tenant.ingest_key):
        assert secret not in logged
