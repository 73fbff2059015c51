"""The fast paths (columnar, msgspec) agree with the per-hit validator: it accepts nothing that one rejects, and
builds exactly the same rows; when in doubt it steps aside."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataexport.ingest.hits import validate_hits
from dataexport.ingest.hits_columnar import (
    HitWindow,
    refuse_outside,
    session_days,
    validate_batch,
    validate_to_table,
)
from dataexport.ingest.hits_msgspec import decode_batch, decode_lines
from dataexport.warehouse.batches import as_stored_table, content_fingerprint
from dataexport.warehouse.schema import PAGEVIEW_SCHEMA

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def fingerprint_of(table: pa.Table, ingested: datetime = NOW) -> str:
    return content_fingerprint(as_stored_table(1, table, ingested))


def slow_table(hits: list) -> tuple[pa.Table, int]:
    batch = validate_hits(hits)
    return pa.Table.from_pylist(batch.rows, schema=PAGEVIEW_SCHEMA), batch.rejected


# Each field: (valid values, invalid values). A hit is clean, or carries one invalid value.
def ints(lo, hi):
    return [lo, hi, (lo + hi) // 2, None], [lo - 1, hi + 1, True, 1.0, "1"]


def strings(limit, empty_ok=True):
    valid = ["a", "é" * limit, "Paris"] + (["", None] if empty_ok else [])
    return valid, ["x" * (limit + 1), 5] + ([] if empty_ok else ["", None])


TIMES = (
    [
        "2026-03-01T10:00:00Z",
        "2026-03-01T11:00:00.123456+01:00",
        "2026-03-01T04:30:00.125-05:30",
        1772359200000,
        1772359200999,
    ],
    [
        "2026-03-01T10:00:00",
        -5,
        253402300800000,
        1.5,
        "nope",
        "2026-03-01",
        None,
        "2026-02-30T00:00:00Z",
        "2026-03-01T24:00:00Z",
        "2026-03-01T23:59:60Z",
        "2026-03-01T00:00:00+24:00",
    ],
)
FIELDS = {
    "user_id_unhashed": strings(128, empty_ok=False),
    "session_number": ints(1, 65535),
    "session_time": TIMES,
    "view_number": ints(1, 65535),
    "view_time": TIMES,
    "device_id": ints(0, 5),
    "url": strings(8192, empty_ok=False),
    "city": strings(8192),
    "screen_width": ints(0, 65535),
    "document_height": ints(0, 2**32 - 1),
    "frustration_score": ints(0, 100),
    "is_excludable": ints(0, 1),
    "scroll_rate": ([0, 100, 55.5, None], [100.5, -0.1, float("nan"), "5", True]),
    "session_id": ([0, 2**64 - 1, None], [2**64, -1]),
}
REQUIRED_NOT_NULL = {
    "user_id_unhashed",
    "session_number",
    "session_time",
    "view_number",
    "view_time",
    "device_id",
    "url",
}
DYN_VALUES = (["v", "v" * 255, 0, 4294967296], ["v" * 256, 4294967297, -1, True, 1.5, None])
DYN_KEYS = (["AB Test", "k", "k" * 512], ["", "k" * 513])
CV = {
    "position": ints(1, 20),
    "key": strings(512, empty_ok=False),
    "value": strings(255),
    "scope": (["page", "session"], ["visit"]),
}


def pick(draw, choices, dirty):
    valid, invalid = choices
    return draw(st.sampled_from(invalid if dirty else valid))


@st.composite
def hits(draw):
    dirty_field = draw(st.sampled_from([None, None, None, "scalar", "custom", "dynamic", "nested", "unknown"]))
    hit = {
        "user_id_unhashed": "u",
        "session_number": 1,
        "session_time": "2026-03-01T10:00:00Z",
        "view_number": 1,
        "view_time": "2026-03-01T10:00:01Z",
        "device_id": 1,
        "url": "https://x/",
    }
    names = draw(st.lists(st.sampled_from(sorted(FIELDS)), min_size=1, max_size=3, unique=True))
    for i, name in enumerate(names):
        value = pick(draw, FIELDS[name], dirty_field == "scalar" and i == 0)
        if value is None and name in REQUIRED_NOT_NULL and dirty_field != "scalar":
            continue
        hit[name] = value
    if draw(st.booleans()) or dirty_field == "custom":
        entries = []
        for i in range(draw(st.integers(0 if dirty_field != "custom" else 1, 3))):
            dirty = dirty_field == "custom" and i == 0
            entry = {k: pick(draw, CV[k], dirty and k == draw(st.sampled_from(sorted(CV)))) for k in CV}
            entry["position"] = entry["position"] if entry["position"] is not None else 1 + i
            if draw(st.booleans()):
                entry.pop("scope")
            entries.append(entry)
        if dirty_field == "custom" and draw(st.booleans()):
            entries.append(dict(entries[0]))  # a position set twice
        hit["custom_vars"] = entries
    if draw(st.booleans()) or dirty_field == "dynamic":
        dirty = dirty_field == "dynamic"
        pairs = [
            (pick(draw, DYN_KEYS, dirty and i == 0 and draw(st.booleans())), pick(draw, DYN_VALUES, dirty and i == 0))
            for i in range(draw(st.integers(int(dirty), 4)))
        ]
        if dirty and draw(st.booleans()):
            pairs = [(f"k{i}", i) for i in range(41)]
        if draw(st.booleans()):
            hit["dynamic_vars"] = dict(pairs)
        else:
            hit["dynamic_vars"] = [{"key": k, "value": v} for k, v in pairs]
    if draw(st.booleans()) or dirty_field == "nested":
        dirty = dirty_field == "nested"
        bad = draw(st.sampled_from(["message", "line_number", "error_time"])) if dirty else None
        hit["errors"] = [
            {
                "message": pick(draw, strings(8192), bad == "message"),
                "line_number": pick(draw, ints(0, 2**32 - 1), bad == "line_number"),
                "error_time": pick(draw, TIMES, bad == "error_time"),
            }
            for _ in range(draw(st.integers(int(dirty), 2)))
        ]
        hit["transactions"] = [{"id": "T", "revenue_cents": pick(draw, ints(0, 2**64 - 1), False)}]
    if dirty_field == "unknown":
        hit[draw(st.sampled_from(["veiw_number", "user_id", "project_id"]))] = 1
    return hit


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hits(), min_size=1, max_size=4))
def test_fast_path_accepts_only_what_the_per_hit_validator_accepts_and_builds_the_same_rows(batch):
    fast = validate_batch(batch)
    slow, rejected = slow_table(batch)
    if fast is not None:
        assert rejected == 0
        assert fast.equals(slow), (fast.to_pylist(), slow.to_pylist())
    table, errors = validate_to_table(batch)
    assert table.equals(slow) and errors.rejected == rejected
    # The msgspec path, from the JSON bytes, holds to the same promise.
    body = json.dumps(batch).encode()
    decoded = decode_batch(body)
    if decoded is not None:
        slow_from_json, rejected_from_json = slow_table(json.loads(body))
        assert rejected_from_json == 0
        assert decoded.equals(slow_from_json), (decoded.to_pylist(), slow_from_json.to_pylist())
    # As JSON Lines (bulk load), too: the same answer as the array.
    from_lines = decode_lines([json.dumps(hit).encode() for hit in batch])
    assert (from_lines is None) == (decoded is None)
    assert from_lines is None or from_lines.equals(decoded)
    # An Idempotency-Key's fingerprint depends on the rows only, not on the path that built them: a retry whose
    # batch took another path must not be taken for other content.
    if table.num_rows:
        fingerprint = fingerprint_of(table)
        assert fingerprint_of(slow) == fingerprint
        for other in (fast, decoded, from_lines):
            assert other is None or fingerprint_of(other) == fingerprint


def typical(i: int) -> dict:
    return {
        "user_id_unhashed": f"visitor-{i // 4}",
        "session_number": 1 + i % 3,
        "session_time": 1772359200000,
        "view_number": 1 + i % 4,
        "view_time": f"2026-03-01T10:0{i % 10}:00.5+00:00",
        "device_id": i % 6,
        "url": "https://x/",
        "scroll_rate": 40 + i % 3 / 2,
        "custom_vars": [{"position": 1, "key": "Goal", "value": "no", "scope": "session"}],
        "dynamic_vars": {"AB Test": "A", "cart_value": i} if i % 2 else [{"key": "n", "value": 4294967296}],
        "errors": [] if i % 3 else [{"message": "boom", "error_time": "2026-03-01T10:00:00Z"}],
        "transactions": [{"id": "T", "revenue_cents": 2**64 - 1}] if i == 5 else [],
    }


def test_typical_batches_take_the_fast_paths_and_match():
    batch = [typical(i) for i in range(50)]
    fast = validate_batch(batch)
    assert fast is not None
    assert fast.equals(slow_table(batch)[0])
    decoded = decode_batch(json.dumps(batch).encode())
    assert decoded is not None and decoded.equals(fast)
    assert decode_batch(json.dumps({"hits": batch}).encode()).equals(fast)
    assert decode_lines([json.dumps(hit).encode() for hit in batch]).equals(fast)


def test_doubtful_batches_fall_back_with_errors_reported():
    batch = [typical(i) for i in range(5)]
    batch[3]["device_id"] = 9
    assert validate_batch(batch) is None
    assert decode_batch(json.dumps(batch).encode()) is None
    table, errors = validate_to_table(batch)
    assert table.num_rows == 4 and errors.rejected == 1
    assert [(e.index, e.field) for e in errors.errors] == [(3, "device_id")]


@st.composite
def iso_instants(draw) -> str:
    """Instants in the shapes trackers send (and near misses): the column-wise Arrow parse must read each
    exactly as datetime.fromisoformat does, or step aside."""
    moment = draw(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30)))
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    fraction = draw(
        st.sampled_from(["", f".{moment.microsecond // 1000:03d}", f".{moment.microsecond:06d}", ".5", ".1234567"])
    )
    zone = draw(
        st.one_of(
            st.just("Z"),
            st.builds(
                lambda sign, h, m: f"{sign}{h:02d}:{m:02d}",
                st.sampled_from("+-"),
                st.integers(0, 24),
                st.integers(0, 59),
            ),
        )
    )
    return text + fraction + zone


@settings(max_examples=200, deadline=None)
@given(st.lists(iso_instants(), min_size=1, max_size=5))
def test_iso_instants_are_read_as_python_reads_them(instants):
    batch = [
        {
            "user_id_unhashed": "u",
            "session_number": 1,
            "session_time": t,
            "view_number": 1,
            "view_time": t,
            "device_id": 1,
            "url": "https://x/",
        }
        for t in instants
    ]
    decoded = decode_batch(json.dumps(batch).encode())
    slow, rejected = slow_table(batch)
    if decoded is not None:
        assert rejected == 0 and decoded.equals(slow), (instants, decoded.to_pylist(), slow.to_pylist())
    else:
        assert validate_to_table(batch)[0].equals(slow)


def test_common_iso_shapes_are_parsed_column_wise(monkeypatch):
    from dataexport.ingest import hits_msgspec

    def one_by_one(values):
        raise AssertionError(f"per-value parse of {values}")

    monkeypatch.setattr(hits_msgspec, "_times_one_by_one", one_by_one)
    times = ["2026-03-12T00:00:46.885000+00:00", "2026-03-12T01:00:46.885+01:00", "2026-03-12T00:00:46Z"]
    batch = [
        {
            "user_id_unhashed": "u",
            "session_number": 1,
            "session_time": t,
            "view_number": 1,
            "view_time": t,
            "device_id": 1,
            "url": "https://x/",
        }
        for t in times
    ]
    decoded = decode_batch(json.dumps(batch).encode())
    assert decoded is not None and decoded.equals(slow_table(batch)[0])
    assert [v.isoformat() for v in decoded.column("view_time").to_pylist()] == [
        "2026-03-12T00:00:46.885000+00:00",
        "2026-03-12T00:00:46.885000+00:00",
        "2026-03-12T00:00:46+00:00",
    ]


# -- the time window and the session days of a batch --------------------------------------------------------------


def timed(i: int, session: datetime, view: datetime | None = None) -> dict:
    return {
        "user_id_unhashed": f"u{i}",
        "session_number": 1,
        "view_number": 1,
        "device_id": 1,
        "url": "https://x/",
        "session_time": session.isoformat(),
        "view_time": (view or session).isoformat(),
    }


def test_the_window_refuses_the_future_past_the_skew_and_what_retention_deletes():
    window = HitWindow.at(NOW, max_future_seconds=300, retention_days=30)
    batch = [
        timed(0, NOW),
        timed(1, NOW + timedelta(seconds=300)),  # the skew is inclusive
        timed(2, NOW + timedelta(seconds=301)),
        timed(3, NOW - timedelta(minutes=5), NOW + timedelta(hours=1)),  # a view in the future: only view_time
        timed(4, datetime(2026, 2, 8, 0, 0, tzinfo=UTC)),  # the first day kept: 2026-03-10 minus 30 days
        timed(5, datetime(2026, 2, 7, 23, 59, tzinfo=UTC)),  # the day before: the sweep deletes it
    ]
    table, _ = validate_to_table(batch)
    kept, errors, refused = refuse_outside(table, window)
    assert kept.column("user_id_unhashed").to_pylist() == ["u0", "u1", "u4"] and refused == 3
    assert [(e.index, e.field) for e in errors] == [
        (2, "session_time"),
        (2, "view_time"),
        (3, "view_time"),
        (5, "session_time"),
    ]
    assert errors[0].message == ("must not be after 2026-03-10T12:05:00Z (the server's time plus 300 s of clock skew)")
    assert errors[-1].message == (
        "must not be before 2026-02-08T00:00:00Z: the project keeps 30 days of data, older sessions are deleted"
    )


def test_refused_rows_are_named_by_the_numbers_given_and_a_clean_table_is_returned_as_is():
    window = HitWindow.at(NOW)  # no retention: the past is not bounded
    table, _ = validate_to_table([timed(0, datetime(1970, 1, 1, tzinfo=UTC)), timed(1, NOW + timedelta(days=1))])
    kept, errors, refused = refuse_outside(table, window, numbers=[7, 12])
    assert kept.num_rows == 1 and refused == 1 and {e.index for e in errors} == {12}
    assert refuse_outside(kept, window) == (kept, [], 0)
    assert refuse_outside(PAGEVIEW_SCHEMA.empty_table(), window)[2] == 0


def test_session_days_count_the_utc_days_of_session_starts():
    table, _ = validate_to_table(
        [
            timed(0, datetime(2026, 3, 1, 23, 59, tzinfo=UTC), datetime(2026, 3, 2, 0, 30, tzinfo=UTC)),
            timed(1, datetime(2026, 3, 1, 0, 0, tzinfo=UTC)),
            timed(2, datetime(2026, 3, 2, 0, 0, tzinfo=UTC)),
        ]
    )
    assert session_days(table) == 2
    assert session_days(PAGEVIEW_SCHEMA.empty_table()) == 0


def test_the_fingerprint_ignores_when_a_batch_arrived_but_not_what_it_holds():
    table, _ = validate_to_table([typical(i) for i in range(10)])
    assert fingerprint_of(table) == fingerprint_of(table, NOW + timedelta(hours=1))  # a retry, an hour later
    assert fingerprint_of(pa.concat_tables([table.slice(0, 4), table.slice(4)])) == fingerprint_of(table)
    changed = table.set_column(table.schema.get_field_index("url"), "url", pa.array(["https://y/"] * 10))
    assert fingerprint_of(changed) != fingerprint_of(table)
    assert fingerprint_of(table.slice(0, 9)) != fingerprint_of(table)
