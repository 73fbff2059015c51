"""Contract fuzzing: Schemathesis drives every operation of the real server's own `/openapi.json`.

Each generated request goes over real HTTP to a uvicorn server in a thread (SQLite metadata, a Parquet
warehouse seeded with demo traffic, local storage with a finished run), once with valid credentials and
once with missing or forged ones. Every answer must be: not a 5xx, a documented status code, of the
documented content type, conform to the documented schema, and, for a /v1 error, the documented envelope
(the token endpoint answers in the OAuth shape instead). The same file fuzzes the bulk loader with
random files, since it is the other way user bytes enter the system.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from dataexport import admin
from dataexport.api.app import build_context, create_app
from dataexport.config import Settings
from dataexport.demo.generate import generate
from dataexport.engine.worker import Worker
from dataexport.errors import ValidationFailed
from dataexport.ingest.bulkload import load_files
from dataexport.metadata.db import transaction
from dataexport.warehouse.embedded import EmbeddedWarehouse
from examples import example_daily, example_once
from support import ThreadedServer

# Examples per operation: ~50 with valid credentials, fewer where the answer cannot depend on the input
# (negative data is refused by the schema layer; without credentials every answer is the same 401), so the
# whole contract run stays well under two minutes on a shared two-core box.
VALID_EXAMPLES, NEGATIVE_EXAMPLES, UNAUTHENTICATED_EXAMPLES, NO_INPUT_EXAMPLES = 50, 25, 15, 3
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
ENVELOPE_KEYS = {"success", "errorCode", "errorMessage"}
FORGED = {"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.e30.forged", "X-Ingest-Key": "forged"}
_CASES: dict[str, int] = {}  # cases run, by run label: printed at the end of the module


@dataclass
class Served:
    url: str
    token: str
    ingest_key: str
    job_id: int


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A real server over SQLite with one project, demo traffic, a daily job and a finished once job."""
    data_dir = tmp_path_factory.mktemp("fuzz")
    settings = Settings(
        data_dir=data_dir,
        database_url=f"sqlite:///{data_dir / 'metadata.db'}",
        jwt_secret="fuzz-jwt-secret-" + "x" * 32,
        run_scheduler=False,
        run_worker=False,
        log_json=True,
        log_level="ERROR",
    )
    ctx = build_context(settings)
    now = datetime.now(UTC)
    with transaction(ctx.sessions) as session:
        project = admin.create_project(session, name="Fuzz", now=now, timezone="UTC")
        client = admin.create_client(session, now=now, project_id=project.project.id)
        project_id, client_id = project.project.id, client.client.client_id
        admin.create_segment(
            session,
            project_id=project_id,
            name="France",
            filter={"field": "country_code", "op": "eq", "value": "FR"},
            now=now,
        )
    generate(ctx.warehouse, project_id, days=4, sessions_per_day=10, seed=3, now=now)
    with ThreadedServer(create_app(settings, context=ctx)) as server, httpx.Client(base_url=server.url) as http:
        token = http.post(
            "/v1/oauth/token",
            json={
                "client_id": client_id,
                "client_secret": client.secret,
                "grant_type": "client_credentials",
                "scope": "data-export",
            },
        ).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        job_id = http.post("/v1/exports", json=example_once(day=now - timedelta(days=3)), headers=auth).json()
        assert http.post("/v1/exports", json=example_daily(), headers=auth).status_code == 200
        # One finished run, so run details carry files and signed URLs the files route can be fuzzed around.
        outcome = Worker(ctx.sessions, ctx.settings, ctx.storage, ctx.clock).run_once()
        assert outcome is not None
        yield Served(server.url, token, project.ingest_key, job_id["payload"]["jobId"])
        print("\nschemathesis cases run: " + ", ".join(f"{k}={v}" for k, v in sorted(_CASES.items())))
    ctx.engine.dispose()


@pytest.fixture(scope="module")
def openapi(served):
    schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json")
    # Unknown query parameters and headers are ignored, as HTTP APIs do (clients add cache-busters and
    # tracing headers); only unknown *body* fields are refused (contract.md). So negative cases do not
    # add undeclared parameters; they still break every declared parameter and the bodies.
    schema.config.generation.update(allow_extra_parameters=False)
    return schema


def _operations(schema):
    return [result.ok() for result in schema.get_all_operations()]


def _assert_error_shape(case, response) -> None:
    """Every /v1 error is the documented envelope; the token endpoint's is OAuth's own."""
    if response.status_code < 400 or not case.path.startswith("/v1"):
        return
    body = response.json()
    if case.path == "/v1/oauth/token":
        assert set(body) == {"error", "error_description"}, (case.as_curl_command(), body)
        return
    assert ENVELOPE_KEYS <= set(body) <= ENVELOPE_KEYS | {"errors"}, (case.as_curl_command(), body)
    assert body["success"] is False and body["errorCode"] and body["errorMessage"], body


def _has_inputs(operation) -> bool:
    return bool(operation.body) or any(p.name.lower() != "authorization" for p in operation.iter_parameters())


def _fuzz(openapi, mode: GenerationMode, examples: int, headers_for, checks, label: str) -> list[str]:
    """Run every operation; return one report per failing operation (the run goes on after a failure).

    `headers_for(operation)` is a strategy drawing, per case, the headers to send (None: no credentials).
    """
    failures, unsatisfiable = [], []
    for operation in _operations(openapi):
        if mode is GenerationMode.NEGATIVE and not _has_inputs(operation):
            continue  # nothing to make invalid

        # A request without parameters or body is the same request every time: a few examples say it all.
        @settings(
            max_examples=examples if _has_inputs(operation) else NO_INPUT_EXAMPLES,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode), sent=headers_for(operation))
        def run(case, sent):
            _CASES[f"{label}:{mode.value}"] = _CASES.get(f"{label}:{mode.value}", 0) + 1
            if sent is None and case.headers:
                # "No credentials" means none: drop the bearer value Schemathesis generates for the security scheme.
                case.headers.pop("Authorization", None)
            response = case.call_and_validate(headers=sent, checks=checks)
            _assert_error_shape(case, response)

        try:
            run()
        except Unsatisfiable:
            # Negative mode where no input can be made invalid once serialized (a path of any string).
            assert mode is GenerationMode.NEGATIVE, operation.label
            unsatisfiable.append(operation.label)
        except (AssertionError, BaseExceptionGroup) as exc:  # every operation's failures, reported together
            failures.append(f"{operation.label} [{mode.value}]: {str(exc)[:1500]}")
    if unsatisfiable:
        print(f"\nno negative case possible for: {', '.join(unsatisfiable)}")
    return failures


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_every_operation_with_valid_credentials(served, openapi, mode):
    def headers_for(operation):
        if operation.path == "/ingest/v1/pageviews":
            return st.just({"X-Ingest-Key": served.ingest_key})
        return st.just({"Authorization": f"Bearer {served.token}"})

    examples = VALID_EXAMPLES if mode is GenerationMode.POSITIVE else NEGATIVE_EXAMPLES
    checks = CHECKS + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])
    failures = _fuzz(openapi, mode, examples, headers_for, checks, "valid")
    assert not failures, "\n\n".join(failures)


def test_every_operation_without_valid_credentials(served, openapi):
    # Each case goes out with no credentials at all or with forged ones (bearer token and ingest key).
    failures = _fuzz(
        openapi,
        GenerationMode.POSITIVE,
        UNAUTHENTICATED_EXAMPLES,
        lambda _: st.sampled_from([None, FORGED]),
        CHECKS,
        "unauthenticated",
    )
    assert not failures, "\n\n".join(failures)


def test_the_document_promises_what_the_server_answers(served):
    """Validation errors are 400 envelopes (never FastAPI's 422); the non-/v1 routes document their answers."""
    document = httpx.get(f"{served.url}/openapi.json", timeout=60).json()
    operations = {(m.upper(), path): op for path, ops in document["paths"].items() for m, op in ops.items()}
    # The only 422 is a route's own (a reused Idempotency-Key), never FastAPI's validation answer.
    with_422 = {key for key, op in operations.items() if "422" in op["responses"]}
    assert with_422 == {("POST", "/ingest/v1/pageviews")}
    assert "ErrorEnvelope" in str(operations["POST", "/ingest/v1/pageviews"]["responses"]["422"])
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for (_, path), op in operations.items():
        if path.startswith("/v1/") and path != "/v1/oauth/token":
            error = op["responses"]["400"]["content"]["application/json"]["schema"]
            assert error == {"$ref": "#/components/schemas/ErrorEnvelope"}, path
    assert {"200", "400", "401"} <= set(operations["POST", "/ingest/v1/pageviews"]["responses"])
    assert {"200", "206", "403", "404", "410", "416"} <= set(operations["GET", "/files/{key}"]["responses"])
    assert "text/plain" in operations["GET", "/metrics"]["responses"]["200"]["content"]


# --- Inputs found by fuzzing, pinned: each once answered 500 ---------------------------------------------


@pytest.mark.parametrize("query", ["/v1/segments?ids=%C2%B2", "/v1/segments?ids=1,%D9%A3"])
def test_non_ascii_digits_in_segment_ids_are_refused_with_the_envelope(served, query):
    # str.isdigit() holds for "²" and "٣": int() then raised (500) or read another number.
    answer = httpx.get(served.url + query, headers={"Authorization": f"Bearer {served.token}"}, timeout=60)
    assert answer.status_code == 400, answer.text
    assert answer.json()["errorCode"] == "VALIDATION_ERROR" and answer.json()["errors"][0]["field"] == "ids"


# --- Deeper than the schema reaches: valid job bodies with hostile values planted -----------------------

PLANTED_PATHS = [
    ("name",),
    ("format",),
    ("scope",),
    ("frequency", "value"),
    ("frequency", "dateRange", "from"),
    ("frequency", "dateRange", "to"),
    ("fields", 0, "fieldName"),
    ("fields", 2, "customVarPosition"),
    ("fields", 3, "dynamicVarKey"),
    ("fields", 1, "aliasName"),
    ("deviceLabel",),
    ("surprise",),
]
hostile = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(
        [
            "2026-02-30",
            "9999-12-31T23:59:59Z",
            "1969-12-31",
            "csv",
            "JSONL",
            "x" * 300,
            "\u0000",
            "views",
            "ONCE",
            "2026-06-01T00:00:00+14:00",
        ]
    ),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(planted=st.lists(st.tuples(st.sampled_from(PLANTED_PATHS), hostile), min_size=1, max_size=3))
def test_create_job_answers_a_spec_or_the_envelope_for_any_planted_value(served, planted):
    """Schemathesis rarely builds a body valid enough to reach the date, segment and field rules; this does."""
    body = example_once(day=datetime.now(UTC) - timedelta(days=3))
    for path, value in planted:
        target = body
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
    answer = httpx.post(
        f"{served.url}/v1/exports", json=body, timeout=60, headers={"Authorization": f"Bearer {served.token}"}
    )
    assert answer.status_code in (200, 400), answer.text
    payload = answer.json()
    if answer.status_code == 200:
        assert payload["success"] is True and payload["payload"]["jobId"] > 0
    else:
        assert payload["success"] is False and payload["errorCode"] == "VALIDATION_ERROR"
        assert payload["errors"] and all(e["field"] and e["message"] for e in payload["errors"])


# --- Bulk load: random files never crash the loader -----------------------------------------------------


def _valid_hit(i: int) -> dict:
    return {
        "user_id_unhashed": f"user-{i // 3}",
        "session_number": 1,
        "session_time": "2026-03-01T10:00:00Z",
        "view_number": i % 3 + 1,
        "view_time": 1772359200000 + i,
        "device_id": 1 + i % 5,
        "url": f"https://shop.example/p/{i}",
        "custom_vars": [{"position": 3, "key": "pageType", "value": "p"}],
        "dynamic_vars": {"AB Test": "A", "cart_value": i},
    }


HIT_COLUMNS = [
    "user_id_unhashed",
    "session_number",
    "session_time",
    "view_number",
    "view_time",
    "device_id",
    "url",
    "custom_vars",
    "dynamic_vars",
    "scroll_rate",
    "project_id",
    "user_id",
    "transactions",
    "junk",
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)
jsonl_lines = st.one_of(
    st.integers(0, 30).map(lambda i: json.dumps(_valid_hit(i)).encode()),
    st.tuples(st.integers(0, 30), st.dictionaries(st.sampled_from(HIT_COLUMNS), json_values, max_size=3)).map(
        lambda t: json.dumps({**_valid_hit(t[0]), **t[1]}).encode()
    ),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=40).filter(lambda b: b"\n" not in b),
)


def _load(data: bytes, suffix: str):
    """Load one file into a fresh store: a summary, or the ValidationFailed that refused it."""
    with tempfile.TemporaryDirectory() as tmp, EmbeddedWarehouse(Path(tmp) / "wh") as store:
        path = Path(tmp) / f"input{suffix}"
        path.write_bytes(data)
        try:
            return load_files(store, 1, [path], workers=1)
        except ValidationFailed as exc:
            assert exc.errors and exc.errors[0].field and exc.errors[0].message
            return exc


@settings(max_examples=40, deadline=None, database=None)
@given(lines=st.lists(jsonl_lines, max_size=12), suffix=st.sampled_from([".jsonl", ".ndjson", ".json"]))
def test_random_jsonl_is_stored_or_rejected_record_by_record(lines, suffix):
    summary = _load(b"\n".join(lines), suffix)
    assert not isinstance(summary, ValidationFailed), summary
    records = sum(1 for line in b"\n".join(lines).split(b"\n") if line.strip())
    assert summary.rows_stored + summary.rows_rejected + summary.rows_already_stored == records
    assert sum(summary.reasons.values()) >= summary.rows_rejected


csv_cells = st.one_of(
    st.text(max_size=15),
    st.integers().map(str),
    st.just(""),
    st.sampled_from(
        ["2026-03-01T10:00:00Z", "1772359200000", '[{"position": 3, "key": "k", "value": "v"}]', '{"AB": 1}', "[1,"]
    ),
)


@settings(max_examples=40, deadline=None, database=None)
@given(
    header=st.lists(st.sampled_from(HIT_COLUMNS) | st.text(max_size=8), max_size=10),
    rows=st.lists(st.lists(csv_cells, max_size=11), max_size=10),
)
def test_random_csv_is_stored_or_rejected_row_by_row(header, rows):
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    summary = _load(text.getvalue().encode(), ".csv")
    if isinstance(summary, ValidationFailed):
        return
    records = len(list(csv.reader(io.StringIO(text.getvalue())))) - 1 if header or rows else 0
    assert summary.rows_stored + summary.rows_rejected + summary.rows_already_stored == max(records, 0)


@settings(max_examples=25, deadline=None, database=None)
@given(data=st.binary(max_size=300))
@example(data=b"\xef\xbb\xbf{}\n\x00\xff\n[[[[")
@pytest.mark.parametrize("suffix", [".jsonl", ".ndjson", ".json"])
def test_random_bytes_as_jsonl_never_crash(suffix, data):
    _load(data, suffix)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"url\n\xff\xfe\n", id="invalid-utf8"),
        pytest.param(b"url\n" + b"x" * 200_000 + b"\n", id="cell-over-csv-field-limit"),
    ],
)
def test_undecodable_csv_is_refused_not_crashed(data):
    _load(data, ".csv")


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"PAR1 not really parquet", id="corrupt"),
        pytest.param(
            _parquet_bytes(pa.table({"view_time": pa.array([2**62], pa.timestamp("ms"))})), id="year-past-9999"
        ),
        pytest.param(_parquet_bytes(pa.table({"view_time": pa.array([2**62], pa.timestamp("ns"))})), id="nanoseconds"),
    ],
)
def test_unreadable_parquet_is_refused_not_crashed(data):
    _load(data, ".parquet")


parquet_columns = st.dictionaries(
    st.sampled_from(HIT_COLUMNS),
    st.one_of(
        st.lists(st.integers(-(2**31), 2**31), min_size=3, max_size=3),
        st.lists(st.text(max_size=10), min_size=3, max_size=3),
        st.lists(st.floats(), min_size=3, max_size=3),
        st.lists(st.booleans(), min_size=3, max_size=3),
        st.lists(st.lists(st.integers(0, 99), max_size=2), min_size=3, max_size=3),
    ),
    max_size=8,
)


@settings(max_examples=30, deadline=None, database=None)
@given(columns=parquet_columns, valid=st.integers(0, 3))
def test_random_parquet_columns_are_stored_or_rejected_row_by_row(columns, valid):
    base = pa.Table.from_pylist([_valid_hit(i) for i in range(3)])
    table = base.slice(0, valid) if not columns else pa.table({**{n: base[n] for n in base.column_names}, **columns})
    summary = _load(_parquet_bytes(table), ".parquet")
    assert not isinstance(summary, ValidationFailed), summary
    assert summary.rows_stored + summary.rows_rejected + summary.rows_already_stored == table.num_rows
