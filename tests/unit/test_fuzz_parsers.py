"""Property tests of every parser of user text: for any input, a value or the documented refusal, never a crash.

Each parser that reads what a client, a tracker or an operator typed gets arbitrary input (random JSON
values, random text shaped like its grammar, mutations of a valid input) and must answer with a value or
`ValidationFailed` naming the field (or, where the function documents another verdict, that verdict).
Accepted values are checked against the parser's promises (round trips, ranges, safety). Known bugs in
modules were fixed where they were found; these tests keep them fixed.
Existing properties in test_timeparse.py and test_jobspec.py are not repeated here.
"""

from __future__ import annotations

import contextlib
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath

import orjson
import pyarrow as pa
import pytest
from fastapi.security.utils import get_authorization_scheme_param
from hypothesis import example, given, settings
from hypothesis import strategies as st

from dataexport.api.http_guards import HostPolicy, parse_host
from dataexport.api.observability import is_loopback, metrics_refusal
from dataexport.catalog.fields import segment_fields
from dataexport.config import Settings
from dataexport.domain.jobspec import parse_job_spec
from dataexport.domain.json_depth import json_depth, json_too_deep
from dataexport.domain.segment_filter import OPS, parse_segment_filter, to_json
from dataexport.domain.timeparse import MAX_YEAR, MIN_YEAR, format_instant, parse_instant
from dataexport.errors import ValidationFailed
from dataexport.ingest.hits import validate_hit, validate_hits
from dataexport.ingest.hits_rules import DERIVED, NESTED, SCALARS
from dataexport.ingest.requests import MAX_HITS_PER_REQUEST, parse_hits
from dataexport.security.tokens import TokenVerifier
from dataexport.storage.http import MAX_RANGE_HEADER, Unsatisfiable, parse_range
from dataexport.storage.keys import MAX_KEY_LENGTH, validate_key
from dataexport.storage.signing import Verdict, sign, verify
from dataexport.warehouse.schema import PAGEVIEW_SCHEMA

NOW = datetime(2026, 6, 15, 12, tzinfo=UTC)
DB_INTEGER_MAX = 2**63 - 1  # SQLite INTEGER and PostgreSQL BIGINT
# Enough to meet every branch of these small grammars (the @example cases pin the known corners), few
# enough for the unit suite to stay fast on a shared machine.
EXAMPLES = 120

# Any JSON value a client could send (plus floats JSON cannot carry, which Python callers can).
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=15,
)
# Values of types a parser is not meant for, to check it refuses rather than crashes.
foreign_values = json_values | st.binary(max_size=20) | st.tuples(st.integers()) | st.just(object())


def assert_refusal_names(exc: ValidationFailed, field: str) -> None:
    assert exc.errors, "a ValidationFailed must say which field is wrong"
    assert all(e.field.startswith(field) and e.message for e in exc.errors), exc.errors


# --- domain.timeparse.parse_instant ---------------------------------------------------------------------

# Text shaped like the accepted grammar, with any digits: impossible dates, hours, offsets, out-of-range years.
instant_like = st.from_regex(
    r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}([Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.,][0-9]{1,12})?)?"
    r"([Zz]|[+-][0-9]{2}(:?[0-9]{2})?)?)?\Z",
)


@settings(max_examples=EXAMPLES, deadline=None)
@given(instant_like)
@example("2023-02-29")  # not a leap year
@example("9999-12-31T23:59:59Z")  # past MAX_YEAR
@example("1970-01-01T00:30:00+01:00")  # 1969 in UTC
@example("2023-02-14T00:00:00+24:00")  # offset out of range
@example("2023-02-14T00:00:00+05:60")
def test_grammar_shaped_text_gives_utc_in_range_or_a_field_error(raw):
    try:
        instant = parse_instant(raw, "from")
    except ValidationFailed as exc:
        assert_refusal_names(exc, "from")
        return
    assert instant.tzinfo is UTC and instant.microsecond % 1000 == 0
    assert MIN_YEAR <= instant.year <= MAX_YEAR
    # What the API writes back is read again as the same instant.
    assert parse_instant(format_instant(instant), "from") == instant


@given(foreign_values.filter(lambda v: not isinstance(v, str)))
def test_anything_but_text_is_refused_naming_the_field(raw):
    with pytest.raises(ValidationFailed) as caught:
        parse_instant(raw, "to")
    assert_refusal_names(caught.value, "to")


# --- domain.jobspec.parse_job_spec ------------------------------------------------------------------------


def valid_body() -> dict:
    return {
        "name": "Nightly",
        "format": "CSV",
        "scope": "views",
        "frequency": {"value": "once", "dateRange": {"from": "2026-06-10", "to": "2026-06-11T23:59:59.999Z"}},
        "fields": [{"fieldName": "session_id"}, {"fieldName": "custom_var", "customVarPosition": 2}],
        "deviceLabel": "all",
    }


# Paths into the valid body where a mutation lands: every level a client can get wrong.
BODY_PATHS = [
    ("name",),
    ("format",),
    ("scope",),
    ("frequency",),
    ("frequency", "value"),
    ("frequency", "dateRange"),
    ("frequency", "dateRange", "from"),
    ("frequency", "dateRange", "to"),
    ("fields",),
    ("fields", 0),
    ("fields", 1, "customVarPosition"),
    ("fields", 0, "aliasName"),
    ("fields", 1, "dynamicVarKey"),
    ("deviceLabel",),
    ("segmentId",),
    ("unknownKey",),
]


def mutate(body: dict, path: tuple, value) -> dict:
    target = body
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return body


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(BODY_PATHS), json_values | instant_like), min_size=1, max_size=3))
def test_a_valid_body_with_any_values_planted_gives_a_spec_or_field_errors(mutations):
    body = valid_body()
    for path, value in mutations:
        # An earlier mutation may have replaced a container: then this one has nowhere to land.
        with contextlib.suppress(TypeError, IndexError, KeyError):
            mutate(body, path, value)
    try:
        spec = parse_job_spec(body, now=NOW, retention_days=395)
    except ValidationFailed as exc:
        assert exc.errors and all(e.field and e.message for e in exc.errors)
        return
    assert spec.name.strip() and spec.fields
    if spec.range_from is not None:
        assert spec.range_from < spec.range_to <= spec.range_from + timedelta(days=7, milliseconds=1)
    if spec.segment_id is not None:
        assert spec.segment_id > 0


@given(foreign_values.filter(lambda v: not isinstance(v, dict)))
def test_a_body_that_is_not_an_object_is_refused(raw):
    with pytest.raises(ValidationFailed) as caught:
        parse_job_spec(raw, now=NOW, retention_days=395)
    assert_refusal_names(caught.value, "body")


@pytest.mark.parametrize("segment_id", [2**63, 2**70, 1e300])
def test_an_accepted_segment_id_fits_a_database_integer(segment_id):
    try:
        spec = parse_job_spec({**valid_body(), "segmentId": segment_id}, now=NOW, retention_days=395)
    except ValidationFailed as exc:
        assert_refusal_names(exc, "segmentId")
    else:
        assert spec.segment_id <= DB_INTEGER_MAX


# --- domain.segment_filter.parse_segment_filter ---------------------------------------------------------

SEGMENT_FIELDS = sorted(segment_fields())
scalar_values = st.integers(-10, 10**6) | st.floats(allow_nan=True) | st.text(max_size=8) | st.booleans()
conditions = st.fixed_dictionaries(
    {"op": st.sampled_from([*OPS, "like", 1])},
    optional={"value": scalar_values | st.lists(scalar_values, max_size=3) | st.none()},
).flatmap(
    lambda base: st.sampled_from(
        [{**base, "field": name} for name in SEGMENT_FIELDS[:6]]
        + [{**base, "customVar": 3}, {**base, "dynamicVar": "AB Test"}, {**base, "customVar": 0}, {**base}]
    )
)
filters = st.recursive(
    conditions,
    lambda children: (
        st.builds(lambda c: {"all": c}, st.lists(children, max_size=3))
        | st.builds(lambda c: {"any": c}, st.lists(children, max_size=3))
        | st.builds(lambda c: {"not": c}, children)
    ),
    max_leaves=12,
)


def _check_filter(raw) -> None:
    try:
        parsed = parse_segment_filter(raw)
    except ValidationFailed as exc:
        assert_refusal_names(exc, "filter")
        return
    assert parse_segment_filter(to_json(parsed)) == parsed
    assert parse_segment_filter(json.dumps(to_json(parsed))) == parsed


@settings(max_examples=EXAMPLES, deadline=None)
@given(filters)
def test_filter_shaped_json_parses_and_round_trips_or_names_the_culprit(raw):
    _check_filter(raw)


@given(foreign_values | st.text(max_size=40) | st.binary(max_size=40))
def test_any_value_or_text_gives_a_filter_or_a_field_error(raw):
    _check_filter(raw)


def test_deeply_nested_json_text_is_refused():
    with pytest.raises(ValidationFailed):
        parse_segment_filter("[" * 100_000)


# --- warehouse.hits.validate_hit / validate_hits --------------------------------------------------------


def valid_hit(i: int = 0) -> dict:
    return {
        "user_id_unhashed": f"visitor-{i}",
        "session_number": 1,
        "session_time": "2026-03-01T10:00:00Z",
        "view_number": 1 + i,
        "view_time": 1772359200000 + i,
        "device_id": 1,
        "url": "https://x.example/",
        "custom_vars": [{"position": 2, "key": "pageType", "value": "product"}],
        "dynamic_vars": {"AB Test": "A", "cart": 12},
    }


HIT_KEYS = [*SCALARS, *NESTED, "custom_vars", "dynamic_vars", *DERIVED, "bogus"]
hit_values = (
    json_values
    | st.integers(-(2**70), 2**70)
    | st.sampled_from(["2026-03-01T10:00:00Z", "2026-03-01T10:00:00", "1970-01-01T00:00:00+14:00", "", "x" * 300])
)
hit_mutations = st.dictionaries(st.sampled_from(HIT_KEYS), hit_values, max_size=4)


def _check_hit(raw, index: int) -> None:
    row, errors = validate_hit(raw, index)
    assert (row is None) == bool(errors)
    # The field is the offending key as sent (even ""), so it is any string, never missing.
    assert all(e.index == index and isinstance(e.field, str) and e.message for e in errors)
    if row is not None:
        # What validation accepts, storage must accept: the row fits the stored Arrow schema.
        table = pa.Table.from_pylist([{**row, "project_id": 1, "ingested_at": 0}], schema=PAGEVIEW_SCHEMA)
        assert table.num_rows == 1


@settings(max_examples=EXAMPLES, deadline=None)
@given(hit_mutations, st.integers(0, 10_000))
def test_a_valid_hit_with_any_fields_planted_gives_a_row_or_its_errors(mutations, index):
    _check_hit({**valid_hit(), **mutations}, index)


@settings(max_examples=EXAMPLES, deadline=None)
@given(foreign_values | st.dictionaries(st.sampled_from(HIT_KEYS) | st.text(max_size=8), json_values, max_size=8))
def test_any_value_gives_a_row_or_its_errors(raw):
    _check_hit(raw, 7)


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.builds(valid_hit, st.integers(0, 50)), hit_mutations.map(lambda m: {**valid_hit(), **m}), json_values
        ),
        max_size=8,
    ),
    st.integers(0, 100),
)
def test_a_batch_accounts_for_every_hit(raws, start):
    batch = validate_hits(raws, start_index=start)
    assert len(batch.rows) + batch.rejected == len(raws)
    rejected_indexes = {e.index for e in batch.errors}
    assert len(rejected_indexes) == batch.rejected
    assert rejected_indexes <= set(range(start, start + len(raws)))


# --- warehouse.ingest.parse_hits ------------------------------------------------------------------------


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    st.binary(max_size=200)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.lists(json_values, max_size=4).map(lambda v: json.dumps({"hits": v}).encode())
)
def test_any_body_gives_a_list_of_hits_or_a_body_error(body):
    try:
        hits = parse_hits(body)
    except ValidationFailed as exc:
        assert exc.errors and exc.errors[0].field in ("body", "hits")
        return
    assert isinstance(hits, list) and len(hits) <= MAX_HITS_PER_REQUEST
    decoded = orjson.loads(body)
    assert hits == (decoded["hits"] if isinstance(decoded, dict) else decoded)


# --- storage.keys.validate_key --------------------------------------------------------------------------

key_like = st.lists(
    st.sampled_from(
        ["exports", "42", "part-00000.csv.gz", ".", "..", "", ".hidden", "a=b", "%2e%2e", "a\\b", "é", "\x00", " ", "~"]
    )
    | st.text(max_size=6),
    min_size=1,
    max_size=6,
).map("/".join)


@settings(max_examples=EXAMPLES, deadline=None)
@given(key_like | st.text(max_size=40) | st.sampled_from(["/etc/passwd", "a//b", "a/", "x" * (MAX_KEY_LENGTH + 1)]))
def test_a_key_is_returned_unchanged_only_when_it_cannot_leave_the_root(key):
    try:
        accepted = validate_key(key, "key")
    except ValidationFailed as exc:
        assert_refusal_names(exc, "key")
        return
    assert accepted == key and key.isascii() and len(key) <= MAX_KEY_LENGTH
    parts = key.split("/")
    assert all(part and not part.startswith(".") and "\\" not in part for part in parts)
    root = PurePosixPath("/storage/root")
    assert (root / key).parts[: len(root.parts)] == root.parts and ".." not in (root / key).parts


@given(foreign_values.filter(lambda v: not isinstance(v, str)) | st.just(""))
def test_a_key_that_is_not_a_non_empty_string_is_refused(key):
    with pytest.raises(ValidationFailed) as caught:
        validate_key(key, "key")
    assert_refusal_names(caught.value, "key")


# --- storage.signing.verify -----------------------------------------------------------------------------

SECRET = b"fuzz-secret"
query_text = st.text(max_size=80) | st.from_regex(r"\A-?[0-9]{1,25}\Z") | st.sampled_from(["1_000", " 12 ", "１２"])


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    st.text(max_size=60),
    query_text,
    query_text | st.from_regex(r"\A[0-9a-fA-F]{64}\Z"),
    st.floats(allow_nan=True) | st.integers(0, 2**40),
)
def test_any_query_gives_a_verdict(key, expires, sig, now):
    assert verify(SECRET, key, expires, sig, now) in set(Verdict)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.text(max_size=60), st.integers(0, 2**40), st.integers(0, 2**40), st.booleans())
def test_a_signed_url_verifies_until_it_expires_and_not_once_altered(key, expires, now, upper):
    sig = sign(SECRET, key, expires)
    sent = sig.upper() if upper else sig  # hex digits are case-insensitive
    assert verify(SECRET, key, str(expires), sent, now) is (Verdict.OK if now < expires else Verdict.EXPIRED)
    flipped = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    assert verify(SECRET, key, expires, flipped, now) is Verdict.BAD_SIGNATURE
    assert verify(SECRET, key + "x", expires, sig, now) is Verdict.BAD_SIGNATURE
    assert verify(b"other-secret", key, expires, sig, now) is Verdict.BAD_SIGNATURE


# --- storage.http.parse_range ---------------------------------------------------------------------------


def expected_range(first: int | None, last: int | None, size: int):
    """RFC 9110 single byte ranges, written independently of the implementation."""
    if first is None and last is None:
        return None
    if first is None:
        if last == 0 or size == 0:
            return Unsatisfiable
        return max(0, size - last), size - 1
    if last is not None and last < first:
        return None
    if first >= size:
        return Unsatisfiable
    return first, size - 1 if last is None else min(last, size - 1)


bound = st.none() | st.integers(0, 10**20)


@settings(max_examples=EXAMPLES, deadline=None)
@given(bound, bound, st.integers(0, 10**6), st.sampled_from(["bytes={}-{}", "BYTES = {} - {}", " bytes={}-{} "]))
def test_well_formed_single_ranges_follow_the_rfc(first, last, size, template):
    header = template.format("" if first is None else first, "" if last is None else last)
    expected = expected_range(first, last, size)
    if expected is Unsatisfiable:
        with pytest.raises(Unsatisfiable):
            parse_range(header, size)
    else:
        assert parse_range(header, size) == expected


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    st.text(max_size=40) | st.from_regex(r"\A\s*bytes\s*=\s*[0-9]{0,25}\s*-\s*[0-9]{0,25}(,[0-9-]*)?\s*\Z") | st.none(),
    st.integers(0, 10**6),
)
def test_any_header_gives_a_range_inside_the_file_none_or_unsatisfiable(header, size):
    try:
        wanted = parse_range(header, size)
    except Unsatisfiable:
        return
    if wanted is not None:
        first, last = wanted
        assert 0 <= first <= last < size


@pytest.mark.parametrize("header", ["bytes=" + "9" * 5000 + "-", "bytes=-" + "9" * 5000])
def test_absurdly_long_bounds_are_ignored_or_unsatisfiable(header):
    # A start past any file is unsatisfiable; a suffix longer than the file is the whole file (RFC 9110).
    with contextlib.suppress(Unsatisfiable):
        assert parse_range(header, 100) in (None, (0, 99))


# --- header parsers, for time: every parser of a header or a query value is linear ------------------------
#
# A backtracking regex in parse_range took 15 s of CPU (holding the GIL) on a 3 KB Range header. Every parser
# of request text is fed long runs of the characters its grammar cares about (spaces, digits, separators), up
# to 100 KB, and must answer well under 50 ms (linear parsers answer in microseconds; the regex took seconds
# at 3 KB). The best of three runs is kept, so that a GC pause on a busy machine does not fail the test.

PARSE_BUDGET_SECONDS = 0.05
HEADER_PIECES = [" ", "\t", "-", "=", ",", ":", ".", "[", "]", "0", "9", "bytes", "Bearer ", "a", "\\", '"']

# Long runs of a few pieces, up to 100 KB: what makes a backtracking parser explode.
hostile_headers = st.lists(
    st.tuples(st.sampled_from(HEADER_PIECES), st.integers(1, 25_000)), min_size=1, max_size=5
).map(lambda runs: "".join(piece * count for piece, count in runs)[:100_000])


def best_of_three(fn, *args) -> float:
    elapsed = []
    for _ in range(3):
        started = time.perf_counter()
        with contextlib.suppress(Exception):
            fn(*args)
        elapsed.append(time.perf_counter() - started)
    return min(elapsed)


VERIFIER = TokenVerifier("unit-test-key-" + "k" * 32)
HOSTS = HostPolicy.from_settings(Settings(allowed_hosts=["api.example", "other.example:8443"]))
HEADER_PARSERS = {
    "Range": lambda text: parse_range(text, 10**6),
    "Authorization (FastAPI HTTPBearer)": get_authorization_scheme_param,
    "Authorization (token verification)": lambda text: VERIFIER.verify(text, now=NOW),
    "Authorization (metrics)": lambda text: metrics_refusal("metrics-token", text, "127.0.0.1"),
    "Host": HOSTS.allows,
    "client address": is_loopback,
    "expires/sig query values": lambda text: verify(SECRET, "exports/1/part.csv.gz", text, text, NOW),
    "JSON body nesting": lambda text: json_too_deep(text.encode()),
}


@pytest.mark.parametrize("name", sorted(HEADER_PARSERS))
def test_the_attack_headers_parse_at_once(name):
    parser = HEADER_PARSERS[name]
    for text in ("bytes=" + " " * 1500 + "-" + " " * 1500 + "x", "bytes=" + " " * 100_000 + "-" + " " * 100_000):
        assert best_of_three(parser, text) < PARSE_BUDGET_SECONDS, name


@settings(max_examples=40, deadline=None)
@given(hostile_headers)
def test_every_header_parser_is_linear_on_long_runs(text):
    for name, parser in HEADER_PARSERS.items():
        assert best_of_three(parser, text) < PARSE_BUDGET_SECONDS, (name, len(text))


def test_range_headers_past_the_length_cap_are_ignored():
    well_formed = "bytes=" + " " * (MAX_RANGE_HEADER - len("bytes=0-9")) + "0-9"
    assert len(well_formed) == MAX_RANGE_HEADER and parse_range(well_formed, 100) == (0, 9)
    assert parse_range(" " + well_formed, 100) is None  # one character over: answered 200, whole file
    for header in ("bytes=0-1,5-6", "bytes=+1-2", "bytes=1 2-3", "bytes=٣-", "items=0-1", "bytes 0-1", "bytes=0"):
        assert parse_range(header, 100) is None, header


# --- api.http_guards: Host names and JSON nesting --------------------------------------------------------


@pytest.mark.parametrize(
    "header, parsed",
    [
        ("localhost", ("localhost", None)),
        ("LOCALHOST.:8000", ("localhost", 8000)),
        ("[::1]:80", ("::1", 80)),
        ("127.0.0.1:65535", ("127.0.0.1", 65535)),
        ("api.example", ("api.example", None)),
        ("", None),
        ("a b", None),
        ("evil.example@localhost", None),
        ("localhost:", None),
        ("localhost:65536", None),
        ("localhost:80:80", None),
        ("[::1", None),
        ("[::1]x", None),
        ("::1", None),
        ("ｌocalhost", None),
        ("localhost/x", None),
        ("[]:80", None),
        ("localhost:+80", None),
        ("localhost:٨٠", None),
    ],
)
def test_parse_host(header, parsed):
    assert parse_host(header) == parsed


def test_the_host_policy_allows_loopback_public_and_listed_names_only():
    policy = HostPolicy.from_settings(
        Settings(
            host="10.0.0.5",
            public_base_url="https://exports.example.com/base",
            allowed_hosts=["api.example", "other.example:8443"],
        )
    )
    for allowed in (
        "localhost",
        "localhost:1234",
        "127.0.0.1:8000",
        "[::1]:8000",
        "10.0.0.5:8000",
        "exports.example.com",
        "EXPORTS.example.com:443",
        "api.example:9",
        "other.example:8443",
        None,
    ):
        assert policy.allows(allowed), allowed
    for refused in (
        "evil.example",
        "other.example",
        "other.example:443",
        "127.0.0.2",
        "localhost.evil.example",
        "exports.example.com.evil",
        "",
        "[::2]:80",
    ):
        assert not policy.allows(refused), refused
    wildcard_bind = HostPolicy.from_settings(Settings(host="0.0.0.0"))
    assert not wildcard_bind.allows("0.0.0.0:8000") and wildcard_bind.allows("127.0.0.1:8000")
    with pytest.raises(ValueError, match="allowed_hosts"):
        HostPolicy.from_settings(Settings(allowed_hosts=["http://api.example/"]))


def reference_depth(value) -> int:
    if isinstance(value, list):
        return 1 + max((reference_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((reference_depth(v) for v in value.values()), default=0)
    return 0


# Strings full of what a naive bracket count gets wrong: brackets, quotes and backslashes.
tricky_text = st.text(alphabet='[]{}"\\ab,:', max_size=12)
nested_values = st.recursive(
    st.none() | st.integers() | tricky_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(tricky_text, children, max_size=4),
    max_leaves=30,
)


@settings(max_examples=EXAMPLES, deadline=None)
@given(nested_values, st.booleans())
def test_json_depth_is_the_nesting_of_the_value(value, ascii_only):
    text = json.dumps(value, ensure_ascii=ascii_only, indent=None if ascii_only else 1)
    assert json_depth(text.encode()) == reference_depth(value)


@pytest.mark.parametrize("depth, deep", [(64, False), (65, True), (1_000, True), (100_000, True)])
def test_json_nested_past_the_limit_is_too_deep(depth, deep):
    assert json_too_deep(b"[" * depth + b"]" * depth) is deep
    assert json_too_deep(b' {"a":' * depth + b"1" + b"}" * depth) is deep
    # The same brackets inside a string, or in a body that is not JSON (a form), nest nothing.
    assert not json_too_deep(b'["' + b"[" * depth + b'"]')
    assert not json_too_deep(b"client_secret=" + b"[" * depth)


# --- api.observability: who may scrape /metrics ---------------------------------------------------------


@pytest.mark.parametrize(
    "token, authorization, client, allowed",
    [
        (None, None, "127.0.0.1", True),
        (None, None, "127.8.9.10", True),
        (None, None, "::1", True),
        (None, None, "::ffff:127.0.0.1", True),
        (None, "Bearer x", "10.1.2.3", False),
        (None, None, None, False),
        (None, None, "localhost", False),
        ("s3cret", "Bearer s3cret", "10.1.2.3", True),
        ("s3cret", "bearer  s3cret ", "10.1.2.3", True),
        ("s3cret", None, "127.0.0.1", False),
        ("s3cret", "Bearer s3cre", "127.0.0.1", False),
        ("s3cret", "Basic s3cret", "10.1.2.3", False),
        ("s3cret", "Bearer sécret", "10.1.2.3", False),
    ],
)
def test_metrics_access(token, authorization, client, allowed):
    refusal = metrics_refusal(token, authorization, client)
    assert (refusal is None) is allowed
    if refusal is not None:
        assert refusal.status == (401 if token else 403)
