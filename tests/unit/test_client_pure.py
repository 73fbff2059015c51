"""The client's and the pull's pure rules: retry waits, answer decisions, gzip checks, column types, run order."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from dataexport.client.core import Fail, Renew, Use, Wait, decide_api, decide_token
from dataexport.client.download import GzipCheck
from dataexport.client.errors import ApiError, AuthFailed
from dataexport.client.models import ExportableField, JobField, SuccessfulRun
from dataexport.client.policy import RetryPolicy, parse_retry_after, renewal_due
from dataexport.pull.columns import (
    Column,
    Dialect,
    catalog_types,
    duckdb_type,
    job_columns,
    named_as_in_file,
    output_name,
    read_parts_sql,
)
from dataexport.pull.deliveries import runs_to_deliver

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_retry_after_reads_seconds_and_http_dates():
    assert parse_retry_after("7", NOW) == 7
    assert parse_retry_after("Tue, 01 Dec 2026 12:00:30 GMT", NOW) == 30
    assert parse_retry_after("Tue, 01 Dec 2026 11:00:00 GMT", NOW) == 0
    assert parse_retry_after("soon", NOW) is None and parse_retry_after(None, NOW) is None


def test_waits_follow_retry_after_with_jitter_and_otherwise_back_off():
    policy = RetryPolicy(attempts=4, base=0.5, cap=4)
    assert policy.delay(1, 10, rand=lambda: 0) == 10
    assert policy.delay(1, 10, rand=lambda: 1) == 11  # up to a tenth more, so refused clients spread out
    assert policy.delay(1, 10_000, rand=lambda: 0) == policy.max_retry_after
    assert [policy.delay(a, None, rand=lambda: 1) for a in (1, 2, 3, 4, 5)] == [0.5, 1, 2, 4, 4]
    assert policy.should_retry(3) and not policy.should_retry(4)


def test_a_token_is_renewed_before_it_expires():
    assert not renewal_due(fetched_at=0, expires_in=3600, now=3539, margin=60)
    assert renewal_due(fetched_at=0, expires_in=3600, now=3540, margin=60)
    assert renewal_due(fetched_at=0, expires_in=10, now=5, margin=60)  # at most half the life of a short token


def _answer(status: int, body: object, headers: dict | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


EXPIRED = {"success": False, "errorMessage": "Auth token is expired.", "errorCode": "JWT_EXPIRED"}


def test_answers_become_decisions():
    policy = RetryPolicy()
    assert decide_api(_answer(200, {"payload": [], "success": True}), attempt=1, renewed=False, policy=policy) == Use(
        {"payload": [], "success": True}
    )
    assert decide_api(_answer(401, EXPIRED), attempt=1, renewed=False, policy=policy) == Renew()
    renewed_twice = decide_api(_answer(401, EXPIRED), attempt=2, renewed=True, policy=policy)
    assert isinstance(renewed_twice, Fail) and renewed_twice.error.error_code == "JWT_EXPIRED"
    busy = decide_api(
        _answer(429, {"errorCode": "TOO_MANY_CONCURRENT_REQUESTS"}, {"Retry-After": "3"}),
        attempt=1,
        renewed=False,
        policy=policy,
    )
    assert isinstance(busy, Wait) and 3 <= busy.seconds <= 3.3
    quota = decide_api(_answer(429, {"errorCode": "TOO_MANY_ACTIVE_JOBS"}), attempt=1, renewed=False, policy=policy)
    assert isinstance(quota, Fail)
    gave_up = decide_api(_answer(429, {}), attempt=policy.attempts, renewed=False, policy=policy)
    assert isinstance(gave_up, Fail)
    invalid = decide_api(
        _answer(
            400,
            {"errorCode": "VALIDATION_ERROR", "errorMessage": "Bad.", "errors": [{"field": "name", "message": "x"}]},
        ),
        attempt=1,
        renewed=False,
        policy=policy,
    )
    assert isinstance(invalid, Fail) and isinstance(invalid.error, ApiError)
    assert invalid.error.errors[0].field == "name" and invalid.error.message == "Bad."
    refused = decide_token(
        _answer(401, {"error": "invalid_client", "error_description": "no"}), attempt=1, policy=policy
    )
    assert isinstance(refused, Fail) and isinstance(refused.error, AuthFailed)


def test_an_error_without_envelope_is_still_readable():
    error = ApiError.from_answer(502, "<html>Bad Gateway</html>")
    assert error.error_code == "HTTP_502" and "Bad Gateway" in str(error)


def test_gzip_check_accepts_whole_streams_only():
    data = gzip.compress(b"a,b\n1,2\n" * 1000) + gzip.compress(b"3,4\n")  # two members, as concatenated parts are
    whole = GzipCheck()
    for i in range(0, len(data), 100):
        whole.update(data[i : i + 100])
    assert whole.whole()
    truncated = GzipCheck()
    truncated.update(data[:-10])
    assert not truncated.whole()
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0xFF
    corrupt = GzipCheck()
    corrupt.update(bytes(flipped))
    assert not corrupt.whole()


@pytest.mark.parametrize(
    ("catalog", "duck", "postgres"),
    [
        ("String", "VARCHAR", "VARCHAR"),
        ("UInt8", "UTINYINT", "SMALLINT"),
        ("UInt16", "USMALLINT", "INTEGER"),
        ("UInt32", "UINTEGER", "BIGINT"),
        ("UInt64", "UBIGINT", "UBIGINT"),
        ("Int8", "TINYINT", "SMALLINT"),
        ("Float32", "FLOAT", "FLOAT"),
        ("DateTime", "TIMESTAMPTZ", "TIMESTAMPTZ"),
        ("Date", "DATE", "DATE"),
        ("Array(UInt32)", "UINTEGER[]", "BIGINT[]"),
        ("Array(DateTime)", "TIMESTAMPTZ[]", "TIMESTAMPTZ[]"),
        ("Nullable(UInt16)", "USMALLINT", "INTEGER"),
        ("Map(String, String)", "VARCHAR", "VARCHAR"),
        (None, "VARCHAR", "VARCHAR"),
    ],
)
def test_catalog_types_map_to_column_types(catalog, duck, postgres):
    assert duckdb_type(catalog, Dialect.DUCKDB) == duck
    assert duckdb_type(catalog, Dialect.POSTGRES) == postgres


def test_job_columns_take_aliases_names_and_types():
    catalog = [
        ExportableField(name="session_duration_msec", aliases=["session_duration"], type="UInt32"),
        ExportableField(name="view_time", type="DateTime"),
    ]
    fields = [
        JobField(fieldName="session_duration"),
        JobField(fieldName="view_time", aliasName="seen at"),
        JobField(fieldName="custom_var", customVarPosition=3),
        JobField(fieldName="dynamic_var", dynamicVarKey="AB Test"),
    ]
    columns = job_columns(fields, catalog_types(catalog), Dialect.DUCKDB)
    assert columns == [
        Column("session_duration", "UINTEGER"),
        Column("seen at", "TIMESTAMPTZ"),
        Column("custom_var_3", "VARCHAR"),
        Column("dynamic_var_AB Test", "VARCHAR"),
    ]
    assert output_name(fields[2]) == "custom_var_3"
    assert named_as_in_file(columns, ["a", "b", "c", "d"])[1] == Column("b", "TIMESTAMPTZ")
    with pytest.raises(ValueError, match="3 columns"):
        named_as_in_file(columns, ["a", "b", "c"])


def test_read_sql_quotes_names_and_parses_arrays():
    sql = read_parts_sql("CSV", [Column('we"ird', "VARCHAR"), Column("n", "UINTEGER[]")], 2)
    assert '"we""ird"' in sql and 'from_json("n", \'["UINTEGER"]\')' in sql and "allow_quoted_nulls = false" in sql
    assert "read_json(?" in read_parts_sql("JSONL", [Column("n", "UINTEGER[]")], 1)


def _run(run_id: int, job: int, start: datetime) -> SuccessfulRun:
    return SuccessfulRun.model_validate(
        {"jobId": job, "jobRunId": run_id, "from": start.isoformat(), "to": (start + timedelta(days=1)).isoformat()}
    )


def test_runs_to_deliver_are_new_ones_of_the_job_in_window_order():
    day = timedelta(days=1)
    runs = [_run(5, 1, NOW), _run(3, 1, NOW - 2 * day), _run(4, 1, NOW - day), _run(9, 2, NOW - 3 * day)]
    assert [r.jobRunId for r in runs_to_deliver(runs, job_id=1, delivered={4}, since=None)] == [3, 5]
    assert [r.jobRunId for r in runs_to_deliver(runs, job_id=1, delivered=set(), since=NOW - day)] == [4, 5]


def test_the_progress_bars_show_a_whole_pull_in_a_terminal():
    import io

    from rich.console import Console

    from dataexport.pull.progress import RichReporter
    from dataexport.pull.runner import Delivered

    out = io.StringIO()
    run = _run(7, 1, NOW)
    with RichReporter(Console(file=out, force_terminal=True, color_system=None, width=120)) as bars:
        for _ in range(2):  # two runs, one after the other
            bars.run_started(run, 2, 2_000_000)
            bars.downloaded(1_500_000)
            bars.downloaded(500_000)
            bars.load_started(run, 1234)
            bars.loading(0.5)
            bars.run_finished(Delivered(7, NOW, NOW + timedelta(days=1), 1234, 2, 2_000_000, "sha256", 1.5))
    text = out.getvalue()
    assert text.count("delivered run 7") == 2 and "1,234 rows" in text
