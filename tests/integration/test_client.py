"""`dataexport.client` against the real API over HTTP (the in-process server of conftest, on SQLite and PostgreSQL):
every endpoint typed, listings walked page after page, errors carried whole, a token held and renewed."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from dataexport.client import ApiError, AsyncClient, AuthFailed, Client, ExportableField, Job, RunDetail, Segment
from examples import example_daily, example_once


class Counting:
    """The requests a client sent, by path (an httpx event hook)."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def __call__(self, request: httpx.Request) -> None:
        self.paths.append(request.url.path)

    def tokens(self) -> int:
        return self.paths.count("/v1/oauth/token")


def _client(api, tenant, counting: Counting, **kwargs) -> Client:
    http = httpx.Client(timeout=30, event_hooks={"request": [counting]})
    return Client(api.url, tenant.client_id, tenant.client_secret, http=http, **kwargs)


def _segment(api, tenant) -> int:
    from dataexport import admin
    from dataexport.metadata.db import transaction

    with transaction(api.context.sessions) as session:
        segment = admin.create_segment(
            session,
            project_id=tenant.project_id,
            name="French",
            filter={"field": "country_code", "op": "eq", "value": "FR"},
            now=api.clock(),
        )
        return segment.id


def test_every_endpoint_answers_typed_models_with_one_token(api, tenant):
    counting = Counting()
    segment_id = _segment(api, tenant)
    with _client(api, tenant, counting) as client:
        daily = client.create_export(example_daily(segment_id))
        once = client.create_export(example_once())
        job = client.get_export(daily)
        assert isinstance(job, Job) and job.jobId == daily and job.frequency == "daily" and job.segmentId == segment_id
        assert [f.fieldName for f in job.fields] == ["project_id", "session_id"]
        assert isinstance(job.createdAt, datetime) and job.filters is not None and job.filters.deviceId == -1
        assert [j.jobId for j in client.list_exports(order="ASC")] == [daily, once]
        assert [j.jobId for j in client.iter_exports(frequency="daily")] == [daily]
        assert client.list_successful_runs() == []
        runs = client.list_runs(once)
        assert len(runs) == 1 and runs[0].state in ("CREATED", "RUNNABLE")
        detail = client.get_run(once, runs[0].jobRunId)
        assert isinstance(detail, RunDetail) and detail.files == [] and detail.from_ is not None
        fields = client.exportable_fields("views")
        assert all(isinstance(f, ExportableField) for f in fields)
        assert next(f for f in fields if f.name == "view_time").type == "DateTime"
        assert client.custom_vars() == []
        assert client.dynamic_var_keys(datetime.now(UTC) - timedelta(days=1), datetime.now(UTC)) == []
        segments = client.segments()
        assert [s.id for s in segments] == [segment_id] and isinstance(segments[0], Segment)
        assert client.segments(ids=[segment_id + 1]) == []
        # Extensions: the lifecycle of a recurring job.
        assert client.suspend_export(daily).state == "SUSPENDED"
        assert client.resume_export(daily).state == "ACTIVE"
        assert client.delete_export(daily).state == "DELETED"
        assert client.token().project_id == tenant.project_id
    assert counting.tokens() == 1  # one token for every call


def test_listings_are_walked_page_after_page(api, tenant):
    with Client(api.url, tenant.client_id, tenant.client_secret) as client:
        made = []
        for i in range(105):  # suspended, so they do not count against the 100 active jobs a project may have
            made.append(client.create_export({**example_daily(), "name": f"job {i}"}))
            client.suspend_export(made[-1])
        assert [j.jobId for j in client.iter_exports()] == made  # two pages of 100, ascending
        assert [j.jobId for j in client.iter_exports(order="DESC")] == made[::-1]
        assert len(client.list_exports(limit=100)) == 100 and len(client.list_exports(page=2, limit=100)) == 5


def test_errors_carry_the_envelope(api, tenant):
    with Client(api.url, tenant.client_id, tenant.client_secret) as client:
        with pytest.raises(ApiError) as invalid:
            client.create_export({**example_daily(), "fields": [{"fieldName": "custom_var", "customVarPosition": 99}]})
        assert invalid.value.status == 400 and invalid.value.error_code == "VALIDATION_ERROR"
        assert [e.field for e in invalid.value.errors] == ["fields[0].customVarPosition"]
        assert "fields[0].customVarPosition" in str(invalid.value)
        with pytest.raises(ApiError) as missing:
            client.get_export(987654)
        assert (missing.value.status, missing.value.error_code) == (404, "NOT_FOUND")
        with pytest.raises(ApiError) as quota:  # a 429 that waiting does not lift is not retried
            for i in range(101):
                client.create_export({**example_daily(), "name": f"active {i}"})
        assert quota.value.error_code == "TOO_MANY_ACTIVE_JOBS" and quota.value.retry_after is None
        with pytest.raises(ApiError) as bad_filter:
            client.list_exports(state="sleeping")
        assert bad_filter.value.status == 400 and bad_filter.value.errors[0].field == "state"
    with pytest.raises(AuthFailed) as refused, Client(api.url, tenant.client_id, "not the secret") as client:
        client.token()
    assert (refused.value.status, refused.value.error) == (401, "invalid_client")


def test_a_token_the_server_calls_expired_is_renewed_once(api, tenant):
    counting = Counting()
    with _client(api, tenant, counting) as client:
        client.create_export(example_daily())
        # The client's own clock says its token is fresh; the server's says it expired an hour ago.
        api.clock.advance(timedelta(hours=2))
        assert len(client.list_exports()) == 1
        assert counting.paths.count("/v1/exports") == 3  # created, refused with JWT_EXPIRED, sent again
        assert counting.tokens() == 2


def test_the_async_client_does_the_same(api, tenant):
    async def scenario() -> tuple[list[int], list[int], int]:
        counting = Counting()

        async def hook(request: httpx.Request) -> None:
            counting(request)

        http = httpx.AsyncClient(timeout=30, event_hooks={"request": [hook]})
        async with AsyncClient(api.url, tenant.client_id, tenant.client_secret, http=http) as client:
            made = list(
                await asyncio.gather(*(client.create_export({**example_daily(), "name": f"j{i}"}) for i in range(3)))
            )
            api.clock.advance(timedelta(hours=2))
            listed = [job.jobId async for job in client.iter_exports()]
            with pytest.raises(ApiError) as missing:
                await client.get_run(made[0], 123456)
            assert missing.value.status == 404
        await http.aclose()
        return sorted(made), listed, counting.tokens()

    made, listed, tokens = asyncio.run(scenario())
    assert listed == made and tokens == 2  # three concurrent calls shared one token; renewed once


def test_the_client_needs_none_of_the_servers_dependencies(api, tenant):
    """Imported with the server's libraries made unimportable, it still gets a token and lists jobs."""
    script = textwrap.dedent(
        f"""
        import sys
        class Refuse:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {{"fastapi", "sqlalchemy", "duckdb", "pyarrow", "typer", "rich", "structlog",
                                            "uvicorn", "boto3", "psycopg", "alembic", "numpy", "jinja2", "argon2"}}:
                    raise ImportError("server dependency " + name)
        sys.meta_path.insert(0, Refuse())
        from dataexport.client import Client
        with Client({api.url!r}, {tenant.client_id!r}, {tenant.client_secret!r}) as client:
            print(len(client.list_exports()), client.token().project_id)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", str(tenant.project_id)]


def test_ingest_pageviews_with_the_ingest_key(api, tenant):
    now = datetime.now(UTC)
    hit = {
        "user_id_unhashed": "client-u1",
        "session_number": 1,
        "view_number": 1,
        "session_time": now.isoformat(),
        "view_time": now.isoformat(),
        "url": "https://shop.example/",
        "device_id": 1,
    }
    with Client(api.url) as client:
        first = client.ingest_pageviews([hit], ingest_key=tenant.ingest_key, idempotency_key="batch-1")
        again = client.ingest_pageviews([hit], ingest_key=tenant.ingest_key, idempotency_key="batch-1")
        assert (first.stored, first.duplicate, again.duplicate) == (1, False, True)
        with pytest.raises(ApiError) as refused:
            client.ingest_pageviews([hit], ingest_key="wrong")
        assert (refused.value.status, refused.value.error_code) == (401, "INGEST_KEY_INVALID")
