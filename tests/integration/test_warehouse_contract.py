"""One suite for every warehouse backend: what the `Warehouse` protocol (warehouse/backend.py) promises, checked on
each backend through the protocol only, on real parts (Parquet files on disk; DuckLake with its catalog in a real
PostgreSQL database and its files in a directory or on a real S3 server, SeaweedFS).

Each DuckLake warehouse gets a PostgreSQL schema and a data path of its own, in one PostgreSQL database (and one
bucket) per module: a fresh database per test would cost more than the tests.
"""

from __future__ import annotations

import pickle
import threading
import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pytest

from dataexport.demo.generate import generate
from dataexport.domain.enums import Scope
from dataexport.query.variables import list_custom_vars, list_dynamic_var_keys
from dataexport.warehouse.backend import MaintenanceReport, Warehouse
from dataexport.warehouse.batches import IdempotencyKeyReused, as_stored_table
from dataexport.warehouse.embedded import EmbeddedWarehouse
from dataexport.warehouse.relations import empty_source
from dataexport.warehouse.schema import PAGEVIEW_SCHEMA
from support import scratch_pg_database
from warehouse_backends import (
    BACKENDS,
    Lake,
    at,
    count_window,
    every_column_rows,
    export_rows,
    in_child,
    in_key_order,
    key_of,
    open_backend,
    pageview,
    read_limits,
    relation_rows,
    scanned,
    select_window,
    table_of,
    views_on,
)

P, Q = 7, 8  # two projects: whatever one does must not touch the other
D1 = date(2026, 3, 9)
DAYS = [D1 + timedelta(days=n) for n in range(5)]
NOW = datetime(2026, 3, 14, 9, 30, tzinfo=UTC)  # the appends' `now` (their ingested_at), long before real time
WHOLE = 10**12  # rows_per_slice that never slices
TINY = 40  # rows_per_slice that cuts the demo window into dozens of slices

DEMO_PROJECT = 3
DEMO_NOW = datetime(2026, 3, 11, tzinfo=UTC) - timedelta(microseconds=1)
DEMO_WINDOW = (datetime(2026, 3, 9, tzinfo=UTC), datetime(2026, 3, 11, tzinfo=UTC))
DEMO_DAYS = dict(days=2, sessions_per_day=60, seed=7, now=DEMO_NOW)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def lake_catalog():
    """A PostgreSQL database for the module's lake catalogs, dropped at its end."""
    with scratch_pg_database() as url:
        yield url


@pytest.fixture(scope="module")
def lake_bucket(s3_server) -> str:
    name = f"lake-{uuid.uuid4().hex[:8]}"
    s3_server.client().create_bucket(Bucket=name)
    return name


def lake_of(kind: str, request: pytest.FixtureRequest) -> Lake | None:
    """The catalog (and bucket) a backend needs; only asked for by the DuckLake variants, so that the embedded
    one runs without PostgreSQL or S3."""
    if kind == "embedded":
        return None
    catalog = request.getfixturevalue("lake_catalog")
    if kind == "ducklake-s3":
        return Lake(catalog, request.getfixturevalue("s3_server"), request.getfixturevalue("lake_bucket"))
    return Lake(catalog)


@pytest.fixture(params=BACKENDS)
def warehouse(request, tmp_path):
    """A fresh, empty warehouse of each backend."""
    opened = open_backend(request.param, tmp_path / "data", lake_of(request.param, request))
    yield opened
    opened.close()


@pytest.fixture
def limits(tmp_path):
    return read_limits(tmp_path)


@pytest.fixture(scope="module", params=BACKENDS)
def demo_warehouse(request, tmp_path_factory):
    """Two days of demo traffic in a warehouse of each backend, shared by the tests that only read it."""
    opened = open_backend(request.param, tmp_path_factory.mktemp("demo"), lake_of(request.param, request))
    generate(opened, DEMO_PROJECT, **DEMO_DAYS)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same demo traffic in the embedded backend: what every backend's answers are compared with."""
    with EmbeddedWarehouse(tmp_path_factory.mktemp("reference")) as embedded:
        summary = generate(embedded, DEMO_PROJECT, **DEMO_DAYS)
        yield embedded, summary


def stored(project_id: int, rows: list[dict], now: datetime = NOW) -> list[dict]:
    """What the store must hold for appended `rows`: project_id and ingested_at set, nothing else changed."""
    return in_key_order(as_stored_table(project_id, table_of(rows), now).to_pylist())


def window_of(days: list[date]) -> tuple[datetime, datetime]:
    return at(days[0], 0), at(days[-1], 24)


# ---------------------------------------------------------------- the protocol itself


def test_it_is_a_warehouse_whose_spec_opens_the_same_one(warehouse, request):
    assert isinstance(warehouse, Warehouse)
    assert warehouse.name == request.node.callspec.params["warehouse"].removesuffix("-s3")
    warehouse.append(P, views_on(DAYS[:1]))
    other = pickle.loads(pickle.dumps(warehouse.spec)).open()  # a recipe for another process
    try:
        assert other.name == warehouse.name
        assert scanned(other, P) == scanned(warehouse, P) != []
    finally:
        other.close()


# ---------------------------------------------------------------- round trip


@pytest.mark.parametrize("shape", ["dicts", "table"])
def test_every_column_round_trips_through_append_scan_and_read(warehouse, limits, shape):
    rows = every_column_rows(D1)
    batch = warehouse.append(P, rows if shape == "dicts" else table_of(rows), now=NOW)
    assert (batch.rows, batch.partitions, batch.duplicate) == (len(rows), 2, False)
    expected = stored(P, rows)
    assert scanned(warehouse, P) == expected
    assert relation_rows(warehouse, P, *window_of([D1, D1 + timedelta(days=1)]), limits) == expected
    full = next(r for r in scanned(warehouse, P) if r["user_id"] == 2**64 - 1)
    assert full["dynamic_vars"][2] == {"key": "negative", "string_value": None, "number_value": -(2**63)}
    nulls = next(r for r in scanned(warehouse, P) if r["user_id_unhashed"] == "visitor-nulls")
    empty = next(r for r in scanned(warehouse, P) if r["user_id_unhashed"] == "visitor-empty")
    assert nulls["errors"] is None and empty["errors"] == []  # a null list stays null, an empty one empty


def test_scan_and_relation_have_the_stored_types(warehouse, limits):
    warehouse.append(P, every_column_rows(D1), now=NOW)
    for day in warehouse.days(P):
        for batch in warehouse.scan(P, day):
            assert batch.schema.equals(PAGEVIEW_SCHEMA), f"{day}: {batch.schema} is not the stored schema"
    window = window_of([D1, D1 + timedelta(days=1)])
    with warehouse.read(P, *window, limits) as source:
        relation = source.relation(source.days)
        columns = source.conn.execute(f"DESCRIBE SELECT * FROM {relation.text}", relation.params).fetchall()
        stored_columns = source.conn.execute(f"DESCRIBE SELECT * FROM {empty_source().text}").fetchall()
    # What the shared export SQL is written against: the stored columns, with their DuckDB types, and no other.
    assert [(c[0], c[1]) for c in columns] == [(c[0], c[1]) for c in stored_columns]


# ---------------------------------------------------------------- days, scan, read windows


def test_days_and_scan_give_each_session_day_of_a_project(warehouse):
    own, others = [DAYS[0], DAYS[2], DAYS[4]], [DAYS[1]]
    warehouse.append(P, views_on(own))
    warehouse.append(Q, views_on(others, prefix="q"))
    assert warehouse.days(P) == own
    assert warehouse.days(Q) == others
    assert warehouse.days(99) == []
    for day in own:
        rows = in_key_order([r for batch in warehouse.scan(P, day) for r in batch.to_pylist()])
        assert [key_of(r) for r in rows] == [key_of(r) for r in stored(P, views_on([day]))]
        assert {r["project_id"] for r in rows} == {P}
    assert [r for batch in warehouse.scan(P, DAYS[1]) for r in batch.to_pylist()] == []  # Q's day, not P's
    assert [r for batch in warehouse.scan(99, DAYS[0]) for r in batch.to_pylist()] == []


def test_a_read_gives_the_windows_days_and_their_rows(warehouse, limits):
    warehouse.append(P, views_on(DAYS[:4]))
    warehouse.append(Q, views_on(DAYS[:4], prefix="q"))
    start, end = at(DAYS[1], 9), at(DAYS[3], 0)  # from the second session of day 2 to the end of day 3
    with warehouse.read(P, start, end, limits) as source:
        assert source.days == [DAYS[1], DAYS[2]]
        got = in_key_order(select_window(source, source.days, P, start, end).to_pylist())
        one_day = in_key_order(select_window(source, [DAYS[2]], P, start, end).to_pylist())
        assert count_window(source, [], P, start, end) == 0  # what an export of no days reads
    expected = [r for r in stored(P, views_on(DAYS[1:3])) if r["session_time"] >= start]
    assert [key_of(r) for r in got] == [key_of(r) for r in expected]
    assert len(got) == 2 * 2 + 3 * 2  # two sessions of day 2, three of day 3, two views each
    assert [key_of(r) for r in one_day] == [key_of(r) for r in stored(P, views_on(DAYS[2:3]))]
    with warehouse.read(P, at(DAYS[4], 0), at(DAYS[4], 24), limits) as empty:
        assert empty.days == []
        assert count_window(empty, empty.days, P, at(DAYS[4], 0), at(DAYS[4], 24)) == 0


def test_a_read_is_not_changed_by_an_append_made_while_it_is_open(warehouse, limits):
    warehouse.append(P, views_on(DAYS[:1]))
    start, end = window_of(DAYS[:2])
    with warehouse.read(P, start, end, limits) as source:
        days, before = list(source.days), count_window(source, source.days, P, start, end)
        warehouse.append(P, views_on(DAYS[:2], prefix="late"))  # into the day read, and into a new one
        assert source.days == days == DAYS[:1]
        assert count_window(source, source.days, P, start, end) == before == 6
        assert count_window(source, DAYS[:2], P, start, end) == before  # a relation asked for afterwards too
    assert len(relation_rows(warehouse, P, start, end, limits)) == 6 + 12  # a new read sees the append


# ---------------------------------------------------------------- appends: whole, idempotent


def test_a_batch_over_several_session_days_is_stored_whole(warehouse):
    midnight = at(DAYS[0], 23.9)
    crossing = [pageview("night", 1, v, midnight, view_time=midnight + timedelta(minutes=5 * v)) for v in (1, 2, 3)]
    rows = views_on(DAYS[:3]) + crossing
    batch = warehouse.append(P, rows, now=NOW)
    assert (batch.rows, batch.partitions, batch.duplicate) == (len(rows), 3, False)
    assert warehouse.days(P) == DAYS[:3]
    assert scanned(warehouse, P) == stored(P, rows)
    first_day = [r["user_id_unhashed"] for b in warehouse.scan(P, DAYS[0]) for r in b.to_pylist()]
    assert first_day.count("night") == 3  # a session lives in the day it started, views after midnight too


def test_the_same_key_with_the_same_rows_is_a_duplicate(warehouse):
    rows = views_on(DAYS[:2])
    first = warehouse.append(P, rows, batch_key="req-1", now=NOW)
    # A client's retry, later, its rows in another shape (a table rather than dicts): the same content.
    again = warehouse.append(P, table_of(rows), batch_key="req-1", now=NOW + timedelta(minutes=5))
    assert not first.duplicate and again.duplicate
    assert again.batch_id == first.batch_id and again.rows == len(rows)
    assert scanned(warehouse, P) == stored(P, rows)  # nothing new, the first ingested_at kept
    assert not warehouse.append(Q, rows, batch_key="req-1").duplicate  # a key is a project's own


def test_the_same_key_with_other_rows_is_refused_and_stores_nothing(warehouse):
    rows = views_on(DAYS[:1])
    warehouse.append(P, rows, batch_key="req-1", now=NOW)
    changed = [dict(r, url="https://shop.example/other") if r is rows[0] else r for r in rows]
    with pytest.raises(IdempotencyKeyReused):
        warehouse.append(P, changed, batch_key="req-1")
    with pytest.raises(IdempotencyKeyReused):  # over several days: none of them written
        warehouse.append(P, views_on(DAYS[1:4]), batch_key="req-1")
    assert warehouse.days(P) == DAYS[:1]
    assert scanned(warehouse, P) == stored(P, rows)


def test_an_unkeyed_batch_sent_again_is_a_duplicate(warehouse):
    rows = views_on(DAYS[:2])
    first = warehouse.append(P, rows, now=NOW)
    again = warehouse.append(P, table_of(rows), now=NOW + timedelta(minutes=1))  # same rows, another shape
    other = warehouse.append(P, views_on(DAYS[:2], prefix="v"))
    assert not first.duplicate and again.duplicate and not other.duplicate
    assert again.batch_id == first.batch_id != other.batch_id
    assert not warehouse.append(Q, rows).duplicate  # the same rows for another project are another batch
    assert len(scanned(warehouse, P)) == 2 * len(rows)


def test_an_empty_batch_stores_nothing(warehouse):
    for empty in ([], PAGEVIEW_SCHEMA.empty_table()):
        batch = warehouse.append(P, empty)
        assert (batch.rows, batch.partitions, batch.duplicate) == (0, 0, False)
    assert warehouse.days(P) == []


def test_a_retry_through_another_opening_is_recognised(warehouse):
    keyed, unkeyed = views_on(DAYS[:2]), views_on(DAYS[2:3], prefix="plain")
    first = warehouse.append(P, keyed, batch_key="req-9", now=NOW)
    warehouse.append(P, unkeyed, now=NOW)
    other = pickle.loads(pickle.dumps(warehouse.spec)).open()  # another process, or another replica
    try:
        retry = other.append(P, keyed, batch_key="req-9")
        assert retry.duplicate and retry.batch_id == first.batch_id
        assert other.append(P, unkeyed).duplicate
        with pytest.raises(IdempotencyKeyReused):
            other.append(P, views_on(DAYS[3:4]), batch_key="req-9")
        new = other.append(P, views_on(DAYS[3:4]), batch_key="req-10", now=NOW)
        assert not new.duplicate
        assert warehouse.append(P, views_on(DAYS[3:4]), batch_key="req-10").duplicate  # and the other way round
    finally:
        other.close()
    assert scanned(warehouse, P) == stored(P, keyed + unkeyed + views_on(DAYS[3:4]))


def test_the_same_batch_appended_at_once_by_two_openings_is_stored_once(warehouse):
    rows = views_on(DAYS[:3], users=20)
    other = warehouse.spec.open()
    start, results, errors = threading.Barrier(2), [], []

    def send(target) -> None:
        start.wait()
        try:
            results.append(target.append(P, rows, batch_key="race"))
        except Exception as exc:  # reported below, with the other thread's outcome
            errors.append(exc)

    try:
        threads = [threading.Thread(target=send, args=(w,)) for w in (warehouse, other)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        other.close()
    assert errors == []
    assert sorted(r.duplicate for r in results) == [False, True]
    assert len(scanned(warehouse, P)) == len(rows)


def test_a_demo_rerun_stores_nothing_twice(warehouse):
    # The demo's `now` is long past: a retry is recognised by when the batch was committed, not by its `now`.
    first = generate(warehouse, DEMO_PROJECT, **DEMO_DAYS)
    again = generate(warehouse, DEMO_PROJECT, **DEMO_DAYS)
    assert first.files == 2 and again.files == 0
    assert len(scanned(warehouse, DEMO_PROJECT)) == first.pageviews > 0


# ---------------------------------------------------------------- prepare elsewhere, commit here


def test_a_batch_prepared_elsewhere_commits_once(warehouse, limits):
    rows = views_on(DAYS[:2])
    stager = pickle.loads(pickle.dumps(warehouse.stager()))  # as a bulk-load worker receives it
    prepared = stager.prepare(P, table_of(rows), batch_key="chunk-1", now=NOW)
    assert prepared.rows == len(rows)
    assert warehouse.days(P) == []  # prepared, not committed: nothing to read yet
    prepared = pickle.loads(pickle.dumps(prepared))  # back from the worker
    batch = warehouse.commit(P, prepared)
    assert (batch.batch_id, batch.rows, batch.partitions, batch.duplicate) == (prepared.batch_id, len(rows), 2, False)
    assert scanned(warehouse, P) == stored(P, rows)
    assert relation_rows(warehouse, P, *window_of(DAYS[:2]), limits) == stored(P, rows)

    again = pickle.loads(pickle.dumps(stager.prepare(P, table_of(rows), batch_key="chunk-1")))
    assert warehouse.commit(P, again).duplicate  # a reloaded chunk
    assert warehouse.append(P, rows, batch_key="chunk-1").duplicate  # the same idempotency as append
    other = pickle.loads(pickle.dumps(stager.prepare(P, table_of(views_on(DAYS[2:3])), batch_key="chunk-1")))
    with pytest.raises(IdempotencyKeyReused):
        warehouse.commit(P, other)
    unkeyed = pickle.loads(pickle.dumps(stager.prepare(P, table_of(views_on(DAYS[3:4])), now=NOW)))
    assert not warehouse.commit(P, unkeyed).duplicate
    assert warehouse.append(P, views_on(DAYS[3:4])).duplicate
    assert scanned(warehouse, P) == stored(P, rows + views_on(DAYS[3:4]))


def test_a_batch_prepared_in_another_process_commits_here(warehouse):
    rows = views_on(DAYS[:2])
    prepared = in_child("prepare_in_child", warehouse.stager(), P, rows, "chunk-7", NOW)
    assert warehouse.days(P) == []
    batch = warehouse.commit(P, prepared)
    assert (batch.rows, batch.duplicate) == (len(rows), False)
    assert scanned(warehouse, P) == stored(P, rows)


def test_a_batch_is_kept_when_its_process_dies_right_after_the_append(warehouse):
    rows = views_on(DAYS[:2])
    batch = in_child("append_in_child", warehouse.spec, P, rows, "durable", NOW)
    assert (batch.rows, batch.duplicate) == (len(rows), False)
    assert scanned(warehouse, P) == stored(P, rows)
    assert warehouse.append(P, rows, batch_key="durable").duplicate  # and its retry is recognised here


def test_a_batch_prepared_for_another_project_is_refused(warehouse):
    prepared = warehouse.stager().prepare(Q, table_of(views_on(DAYS[:1])), now=NOW)
    with pytest.raises(ValueError, match="project"):
        warehouse.commit(P, prepared)
    assert warehouse.days(P) == [] and warehouse.days(Q) == []


# ---------------------------------------------------------------- restore: rows moved from another warehouse


def as_moved(project_id: int, rows: list[dict]) -> pa.Table:
    """Rows as another warehouse stored them: each with its own ingested_at, as rows of several batches have."""
    table = as_stored_table(project_id, table_of(rows), NOW)
    ingested = pa.array(
        [NOW - timedelta(days=30, minutes=n) for n in range(len(rows))], PAGEVIEW_SCHEMA.field("ingested_at").type
    )
    return table.set_column(PAGEVIEW_SCHEMA.get_field_index("ingested_at"), "ingested_at", ingested)


def test_restore_stores_rows_exactly_as_given(warehouse, limits):
    table = as_moved(P, every_column_rows(D1))
    batch = warehouse.restore(P, table, batch_key="migrate:1")
    assert (batch.rows, batch.partitions, batch.duplicate) == (table.num_rows, 2, False)
    expected = in_key_order(table.to_pylist())  # ingested_at included
    assert scanned(warehouse, P) == expected
    assert relation_rows(warehouse, P, *window_of([D1, D1 + timedelta(days=1)]), limits) == expected


def test_restore_is_idempotent_and_refuses_rows_of_another_project(warehouse):
    table = as_moved(P, views_on(DAYS[:2]))
    warehouse.restore(P, table, batch_key="migrate:1")
    again = warehouse.restore(P, table, batch_key="migrate:1")  # a migration run again
    assert again.duplicate and again.rows == table.num_rows
    with pytest.raises(IdempotencyKeyReused):
        warehouse.restore(P, as_moved(P, views_on(DAYS[2:3])), batch_key="migrate:1")
    with pytest.raises(ValueError, match="project"):
        warehouse.restore(P, as_moved(Q, views_on(DAYS[3:4])), batch_key="migrate:2")
    assert warehouse.days(Q) == [] and warehouse.days(P) == DAYS[:2]
    assert scanned(warehouse, P) == in_key_order(table.to_pylist())


def test_rows_scanned_from_another_warehouse_restore_unchanged(warehouse, reference):
    embedded, summary = reference
    for day in embedded.days(DEMO_PROJECT):
        table = pa.Table.from_batches(list(embedded.scan(DEMO_PROJECT, day)))
        assert not warehouse.restore(DEMO_PROJECT, table, batch_key=f"migrate:{day}").duplicate
    assert warehouse.days(DEMO_PROJECT) == embedded.days(DEMO_PROJECT)
    moved = scanned(warehouse, DEMO_PROJECT)
    assert len(moved) == summary.pageviews and moved == scanned(embedded, DEMO_PROJECT)


# ---------------------------------------------------------------- retention


def test_delete_before_drops_exactly_the_earlier_days(warehouse, limits):
    warehouse.append(P, views_on(DAYS), now=NOW)
    warehouse.append(Q, views_on(DAYS, prefix="q"), now=NOW)
    assert warehouse.delete_before(P, DAYS[2]) == 2
    assert warehouse.days(P) == DAYS[2:]
    assert scanned(warehouse, P) == stored(P, views_on(DAYS[2:]))  # the days kept are whole
    assert warehouse.days(Q) == DAYS  # another project is untouched
    assert relation_rows(warehouse, P, *window_of(DAYS), limits) == stored(P, views_on(DAYS[2:]))
    assert warehouse.delete_before(P, DAYS[2]) == 0  # nothing left to do
    assert warehouse.delete_before(99, DAYS[4]) == 0
    warehouse.append(P, views_on(DAYS[:1], prefix="back"))  # a deleted day can be written again
    assert warehouse.days(P) == [DAYS[0], *DAYS[2:]]


# ---------------------------------------------------------------- the export read


@pytest.mark.parametrize("scope", [Scope.SESSIONS, Scope.VIEWS])
def test_a_sliced_export_equals_the_export_read_whole(demo_warehouse, reference, tmp_path, scope):
    embedded, summary = reference
    whole, whole_reads = export_rows(demo_warehouse, DEMO_PROJECT, scope, DEMO_WINDOW, read_limits(tmp_path, WHOLE))
    sliced, reads = export_rows(demo_warehouse, DEMO_PROJECT, scope, DEMO_WINDOW, read_limits(tmp_path, TINY))
    assert whole_reads == 1 and reads > 10
    assert sliced == whole
    assert len(whole) == (summary.sessions if scope is Scope.SESSIONS else summary.pageviews)
    expected, _ = export_rows(embedded, DEMO_PROJECT, scope, DEMO_WINDOW, read_limits(tmp_path, WHOLE))
    assert whole == expected  # the same export whatever the backend


# ---------------------------------------------------------------- variables


def with_vars(n: int, minutes: int = 0, custom=(), dynamic=()) -> dict:
    """A pageview of visitor `n` carrying these custom (position, key, value) and dynamic (key, value) vars."""
    start = at(D1, 10)
    return dict(
        pageview(f"u{n}", 1, 1, start, view_time=start + timedelta(minutes=minutes)),
        custom_vars=[{"position": p, "key": k, "value": v, "scope": "page"} for p, k, v in custom],
        dynamic_vars=[
            {
                "key": k,
                "string_value": v if isinstance(v, str) else None,
                "number_value": v if isinstance(v, int) else None,
            }
            for k, v in dynamic
        ],
    )


def test_variables_give_the_same_answers_on_every_backend(warehouse, limits):
    warehouse.append(
        P,
        [
            with_vars(
                1,
                custom=[(2, "dataType", "recording"), (1, "Goal achieved", "true")],
                dynamic=[("AB Test", "B"), ("score", 4294967296)],
            ),
            with_vars(2, custom=[(2, "dataType", "journey"), (2, "datatype", "zoning")], dynamic=[("mixed", 3)]),
            with_vars(
                3,
                minutes=90,
                custom=[(2, "dataType", "journey"), (3, "pageType", None)],
                dynamic=[("mixed", "three"), ("late", "x"), ("x'); DROP TABLE t; --", "y")],
            ),
        ],
    )
    warehouse.append(Q, [with_vars(4, custom=[(5, "other", "hidden")], dynamic=[("other project", "z")])])
    day, t0 = window_of([D1]), at(D1, 10)
    assert list_custom_vars(warehouse, P, *day, limits) == [
        {"position": 1, "key": "Goal achieved", "values": ["true"]},
        {"position": 2, "key": "dataType", "values": ["journey", "recording", "zoning"]},
        {"position": 3, "key": "pageType", "values": []},
    ]
    assert list_custom_vars(warehouse, P, *day, limits, max_values=2)[1]["values"] == ["journey", "recording"]
    assert list_custom_vars(warehouse, P, at(D1, 11), at(D1, 12), limits) == []
    assert list_dynamic_var_keys(warehouse, P, t0, t0 + timedelta(hours=1), limits) == [
        {"key": "AB Test", "type": "string"},
        {"key": "mixed", "type": "number"},
        {"key": "score", "type": "number"},
    ]
    assert list_dynamic_var_keys(warehouse, P, t0, t0 + timedelta(hours=2), limits) == [
        {"key": "AB Test", "type": "string"},
        {"key": "late", "type": "string"},
        {"key": "mixed", "type": "string"},
        {"key": "score", "type": "number"},
        {"key": "x'); DROP TABLE t; --", "type": "string"},
    ]
    # From the next day: the views of sessions started the day before are still seen (the lookback).
    assert list_dynamic_var_keys(warehouse, P, at(D1, 11), at(D1, 48), limits) == [
        {"key": "late", "type": "string"},
        {"key": "mixed", "type": "string"},
        {"key": "x'); DROP TABLE t; --", "type": "string"},
    ]
    assert list_custom_vars(warehouse, Q, *day, limits) == [{"position": 5, "key": "other", "values": ["hidden"]}]


def test_variables_of_demo_traffic_match_the_reference(demo_warehouse, reference, tmp_path):
    embedded, _ = reference
    limits = read_limits(tmp_path)
    custom = list_custom_vars(demo_warehouse, DEMO_PROJECT, *DEMO_WINDOW, limits)
    assert custom == list_custom_vars(embedded, DEMO_PROJECT, *DEMO_WINDOW, limits)
    assert [c["key"] for c in custom] == ["Goal achieved", "dataType", "pageType"]
    last_day = (DEMO_WINDOW[0] + timedelta(days=1), DEMO_WINDOW[1])
    dynamic = list_dynamic_var_keys(demo_warehouse, DEMO_PROJECT, *last_day, limits)
    assert dynamic == list_dynamic_var_keys(embedded, DEMO_PROJECT, *last_day, limits)
    assert {"key": "cart_value", "type": "number"} in dynamic


# ---------------------------------------------------------------- maintenance


def stored_with_duplicates(warehouse: Warehouse) -> list[dict]:
    """Three batches on two settled days, one of them resending some pageviews (same natural keys, other values,
    a later ingested_at) under another key, as a client that lost its key would; everything stored, as scanned."""
    rows = views_on(DAYS[:2])
    warehouse.append(P, rows, batch_key="first", now=NOW)
    resent = [dict(r, url=r["url"] + "?resent") for r in rows if r["session_time"].date() == DAYS[0]]
    warehouse.append(P, resent, batch_key="resent", now=NOW + timedelta(hours=1))
    warehouse.append(P, views_on(DAYS[:1], prefix="more"), now=NOW)
    warehouse.append(Q, views_on(DAYS[:1], prefix="q"), now=NOW)
    before = scanned(warehouse, P)
    assert len(before) == len(rows) + len(resent) + 6
    return before


def maintain_now(warehouse: Warehouse) -> MaintenanceReport:
    """Maintenance with every partition settled (the data was written before now)."""
    return warehouse.maintain(datetime.now(UTC), settled_after=timedelta(0))


def test_maintain_keeps_every_row_and_the_batch_records_in_use(warehouse):
    before = stored_with_duplicates(warehouse)
    report = maintain_now(warehouse)
    assert isinstance(report, MaintenanceReport)
    assert report.partitions_compacted >= 1  # day 1 held three batches' files
    after = scanned(warehouse, P)
    assert {key_of(r) for r in after} == {key_of(r) for r in before}  # every pageview is still there
    assert all(row in before for row in after)  # each one a copy that was stored, not a mix of copies
    assert scanned(warehouse, Q) == stored(Q, views_on(DAYS[:1], prefix="q"))
    assert warehouse.append(P, views_on(DAYS[:2]), batch_key="first").duplicate  # retries still recognised
    assert maintain_now(warehouse) is not None and scanned(warehouse, P) == after  # a second run changes nothing


def test_maintain_keeps_one_copy_per_natural_key(warehouse):
    before = stored_with_duplicates(warehouse)
    maintain_now(warehouse)
    after = scanned(warehouse, P)
    copies = Counter(key_of(r) for r in after)
    assert max(copies.values()) == 1 and len(copies) == len({key_of(r) for r in before})


def test_maintained_partitions_tell_where_their_user_ids_are(warehouse, limits):
    stored_with_duplicates(warehouse)
    maintain_now(warehouse)
    start, end = window_of(DAYS[:2])
    with warehouse.read(P, start, end, limits) as source:
        for day in source.days:
            groups = source.row_groups(day)
            rows = select_window(source, [day], P, *window_of([day])).to_pylist()
            if not groups:
                continue  # allowed: unknown
            assert sum(g.rows for g in groups) == len(rows)
            for row in rows:
                assert any(
                    g.min_user_id <= row["user_id"] <= g.max_user_id for g in groups if g.min_user_id is not None
                )


def test_maintain_may_run_from_two_schedulers_at_once(warehouse):
    before = stored_with_duplicates(warehouse)
    other = warehouse.spec.open()
    start, errors = threading.Barrier(2), []

    def run(target) -> None:
        start.wait()
        try:
            maintain_now(target)
        except Exception as exc:  # reported below
            errors.append(exc)

    try:
        threads = [threading.Thread(target=run, args=(w,)) for w in (warehouse, other)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        other.close()
    assert errors == []
    assert {key_of(r) for r in scanned(warehouse, P)} == {key_of(r) for r in before}
