"""Fixtures: every integration test that takes `backend` runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from hypothesis import settings as hypothesis_settings

from support import (
    S3Server,
    SeaweedFS,
    SettableClock,
    ThreadedServer,
    create_pg_database,
    drop_pg_database,
    postgres_available,
    truncate_all,
)

BACKENDS = ["sqlite", "postgresql"]

# In CI every property test draws the same examples, so a landing never hinges on a lucky draw;
# `make fuzz` runs them with fresh random examples.
hypothesis_settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")


def pytest_collection_modifyitems(config, items):
    if postgres_available():
        return
    if os.environ.get("DATAEXPORT_TEST_REQUIRE_POSTGRES"):
        raise pytest.UsageError("PostgreSQL is required (DATAEXPORT_TEST_REQUIRE_POSTGRES) but does not answer")
    skip = pytest.mark.skip(reason="PostgreSQL does not answer on 127.0.0.1:5432")
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("backend") == "postgresql":
            item.add_marker(skip)


_S3_STARTUPS: list[tuple[float, float]] = []


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    """A real S3 server for the session: SeaweedFS, which enforces SigV4 signatures and presigned-URL expiry
    (moto enforced neither). Its log is `weed.log` in the fixture's temporary directory, shown if it fails to
    start."""
    weed = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    try:
        server = weed.start()
        _S3_STARTUPS.append((weed.answer_seconds, weed.startup_seconds))
        yield server
    finally:
        weed.stop()


@pytest.fixture(scope="session")
def s3_endpoint(s3_server) -> str:
    """The S3 server's URL, for callers that take only an endpoint (credentials: `s3_server`)."""
    return s3_server.endpoint_url


def pytest_terminal_summary(terminalreporter):
    for answered, writable in _S3_STARTUPS:
        terminalreporter.write_line(
            f"SeaweedFS: signed ListBuckets served {answered:.2f} s after start, a signed write {writable:.2f} s"
        )


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(scope="session")
def database_url(backend, tmp_path_factory):
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'metadata.db'}"
        return
    url = create_pg_database()
    yield url
    drop_pg_database(url)


@dataclass
class Stack:
    """A running API over one backend, shared by a session; reset before each test."""

    context: object
    server: ThreadedServer
    clock: SettableClock
    data_dir: Path

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="session")
def stack(database_url, tmp_path_factory):
    from dataexport.api.app import build_context, create_app
    from dataexport.config import Settings

    data_dir = tmp_path_factory.mktemp("data")
    settings = Settings(
        data_dir=data_dir,
        database_url=database_url,
        jwt_secret="test-jwt-secret-" + "x" * 32,
        run_scheduler=False,
        run_worker=False,
        log_json=True,
    )
    clock = SettableClock()
    ctx = build_context(settings, clock=clock)
    with ThreadedServer(create_app(settings, context=ctx)) as server:
        yield Stack(context=ctx, server=server, clock=clock, data_dir=data_dir)
    ctx.engine.dispose()


@pytest.fixture
def api(stack):
    """The shared stack, emptied: no metadata rows, no warehouse or export files, real time."""
    from dataexport.warehouse.embedded import EmbeddedWarehouse

    truncate_all(stack.context.engine)
    stack.context.projects.clear()  # ids restart after truncation: a cached project must not outlive its row
    stack.context.warehouse.close()
    shutil.rmtree(stack.context.settings.resolved_warehouse_dir, ignore_errors=True)
    stack.context.warehouse = EmbeddedWarehouse(stack.context.settings.resolved_warehouse_dir)
    shutil.rmtree(stack.context.settings.resolved_files_dir, ignore_errors=True)
    stack.clock.set(None)
    return stack


@pytest.fixture
def http(api):
    with httpx.Client(base_url=api.url, timeout=30) as client:
        yield client


@dataclass
class Tenant:
    project_id: int
    account_id: int
    client_id: str
    client_secret: str
    ingest_key: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def make_tenant(stack: Stack, http: httpx.Client, *, name: str = "Shop", timezone: str = "UTC") -> Tenant:
    from dataexport import admin
    from dataexport.metadata.db import transaction

    now = stack.clock()
    with transaction(stack.context.sessions) as session:
        new_project = admin.create_project(session, name=name, now=now, timezone=timezone)
        new_client = admin.create_client(session, now=now, project_id=new_project.project.id)
        ids = (new_project.project.id, new_project.project.account_id, new_client.client.client_id)
    answer = http.post(
        "/v1/oauth/token",
        json={
            "client_id": ids[2],
            "client_secret": new_client.secret,
            "grant_type": "client_credentials",
            "scope": "data-export",
        },
    )
    assert answer.status_code == 200, answer.text
    return Tenant(ids[0], ids[1], ids[2], new_client.secret, new_project.ingest_key, answer.json()["access_token"])


@pytest.fixture
def tenant(api, http) -> Tenant:
    return make_tenant(api, http)


@pytest.fixture
def other_tenant(api, http) -> Tenant:
    return make_tenant(api, http, name="Other shop")
