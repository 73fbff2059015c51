"""The DuckLake warehouse on real parts: a PostgreSQL catalog (one database for the module, a catalog schema per
lake), Parquet files in a local directory or on SeaweedFS S3, other processes spawned as replicas would be."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import pickle
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from dataexport.catalog import fields_for
from dataexport.config import Settings
from dataexport.demo.generate import generate
from dataexport.domain.enums import Scope
from dataexport.domain.fieldspec import FieldSpec
from dataexport.ingest.hits import validate_hits
from dataexport.query.export_read import ExportRequest, open_export
from dataexport.warehouse.backend import ReadLimits, Warehouse, open_warehouse
from dataexport.warehouse.batches import IdempotencyKeyReused, StoredBatch, as_stored_table
from dataexport.warehouse.ducklake import (
    PAGEVIEWS,
    DuckLakeSpec,
    DuckLakeWarehouse,
    LakeBatch,
    LakeSettingsError,
    LakeUnavailable,
    libpq_conninfo,
)
from dataexport.warehouse.embedded import EmbeddedWarehouse
from dataexport.warehouse.lake_ledger import TABLE as LEDGER_TABLE
from dataexport.warehouse.lake_ledger import LakeLedger
from dataexport.warehouse.schema import PAGEVIEW_SCHEMA
from processes import service_env
from support import free_port, scratch_pg_database

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
DAY = date(2026, 3, 1)
SPAWN = multiprocessing.get_context("spawn")
_projects = itertools.count(1)


# -- fixtures and helpers -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalog_url():
    with scratch_pg_database() as url:
        yield url


def lake_settings(data_dir: Path, catalog_url: str, *, schema: str | None = None, **overrides) -> Settings:
    """A lake of its own: a new catalog schema in the module's database, files under data_dir."""
    return Settings(
        data_dir=data_dir,
        warehouse="ducklake",
        lake_catalog_url=catalog_url,
        lake_schema=schema or f"lake_{uuid.uuid4().hex[:10]}",
        **overrides,
    )


@pytest.fixture(scope="module")
def lake(catalog_url, tmp_path_factory):
    """One lake shared by the tests that each work in a project of their own (opening one takes a second)."""
    with DuckLakeWarehouse.from_settings(lake_settings(tmp_path_factory.mktemp("lake"), catalog_url)) as warehouse:
        yield warehouse


@pytest.fixture
def project() -> int:
    return next(_projects)


def hit(user: str, view: int, session_time: str = "2026-03-01T10:00:00Z", **extra) -> dict:
    return {
        "user_id_unhashed": user,
        "session_number": 1,
        "session_time": session_time,
        "view_number": view,
        "view_time": session_time,
        "device_id": 1,
        "url": f"https://shop.example/p/{view}",
    } | extra


def full_hit(user: str, view: int, session_time: str = "2026-03-01T23:50:00Z") -> dict:
    """A hit with every column of the schema set, nested ones too, at the edges of their types."""
    return hit(
        user,
        view,
        session_time,
        session_number=65535,
        view_time=1772409000000 + view * 1000,
        device_id=4,
        city="Paris",
        country_code="FR",
        language="fr",
        browser_name="Chrome",
        browser_version="120.0.1",
        platform_name="Android",
        platform_version="14",
        os_version="14.1",
        app_version="3.2.1",
        model="Pixel 8",
        manufacturer="Google",
        density=2.5,
        screen_height=2400,
        screen_width=1080,
        window_height=2200,
        window_width=1080,
        document_height=4294967295,
        document_width=1080,
        referer_url="https://www.google.com/",
        url=f"https://shop.example/p/{view}?utm_source=x&q='quoted'",
        title="Produit « été »",
        screen_name="ProductScreen",
        view_duration_msec=12345,
        page_interaction_time_msec=2000,
        scroll_rate=42.5,
        dom_interactive_after_msec=800,
        fully_loaded=1500,
        start_render=400,
        frustration_score=100,
        rage_click_all_targets_ind=1,
        multiple_button_interaction_ind=0,
        any_api_error_ind=1,
        api_error_after_click_ind=0,
        is_excludable=0,
        errors=[
            {
                "message": "TypeError: x",
                "error_time": "2026-03-02T00:01:00Z",
                "filename": "app.js",
                "error_type": "js",
                "line_number": 10,
                "col_number": 4,
            }
        ],
        custom_vars=[
            {"position": 1, "key": "Goal achieved", "value": "true", "scope": "session"},
            {"position": 3, "key": "pageType", "value": "product"},
        ],
        dynamic_vars=[{"key": "AB Test", "value": "B"}, {"key": "cart_value", "value": 4294967296}],
        transactions=[{"id": "T1", "revenue_cents": 12999, "transaction_time": 1772409100000}],
        transaction_items=[
            {
                "id": "T1",
                "sku": "SKU-1",
                "catalog_id": "C",
                "product_id_hashed": 2**64 - 1,
                "revenue_cents": 12999,
                "quantity": 2,
                "transaction_time": 1772409100000,
            }
        ],
        add_to_cart_items=[
            {"sku": "SKU-1", "catalog_id": "C", "product_id_hashed": 7, "add_to_cart_time": "2026-03-01T23:59:00+01:00"}
        ],
        app_events=[{"event_name": "app_start", "event_time": 1772409000000, "event_type": 0}],
    )


def rows(hits: list[dict]) -> list[dict]:
    batch = validate_hits(hits)
    assert batch.errors == []
    return batch.rows


def views(count: int, *, days: tuple[str, ...] = ("2026-03-01",), user: str = "u") -> list[dict]:
    """`count` validated hits, spread over the given session days (10 views a visitor)."""
    return rows([hit(f"{user}{i // 10}", i % 10 + 1, f"{days[i % len(days)]}T10:00:00Z") for i in range(count)])


def stored(warehouse: DuckLakeWarehouse, project_id: int) -> pa.Table:
    """Every stored row of the project, as `scan` gives them, in a fixed order."""
    batches = [b for day in warehouse.days(project_id) for b in warehouse.scan(project_id, day)]
    return pa.Table.from_batches(batches, PAGEVIEW_SCHEMA).sort_by(
        [("user_id_unhashed", "ascending"), ("view_number", "ascending")]
    )


def count(warehouse: DuckLakeWarehouse, project_id: int) -> int:
    return sum(b.num_rows for day in warehouse.days(project_id) for b in warehouse.scan(project_id, day))


def limits(tmp_path: Path, **overrides) -> ReadLimits:
    return ReadLimits(**({"threads": 1, "memory_limit": 100_000_000, "spill_dir": tmp_path / "spill"} | overrides))


def query(warehouse: DuckLakeWarehouse, sql: str, params: list | None = None) -> list[tuple]:
    with warehouse._cursor() as cur:  # the warehouse's own database: the lake attached, the catalog reachable
        return cur.execute(sql, params or []).fetchall()


def live_files(warehouse: DuckLakeWarehouse, project_id: int) -> list[str]:
    found = query(warehouse, "SELECT data_file FROM ducklake_list_files('lake', 'pageviews')")
    return sorted(path for (path,) in found if f"/project_id={project_id}/" in path)


def files_on_disk(data_dir: Path, project_id: int) -> list[str]:
    return sorted(str(p) for p in data_dir.glob(f"**/project_id={project_id}/*/*.parquet"))


# -- write side ---------------------------------------------------------------------------------------------------


def test_every_column_comes_back_as_it_went_in(lake, project, tmp_path):
    hits = [full_hit("visitor-1", v) for v in range(1, 4)] + [full_hit("visitor-2", 1, "2026-03-01T10:00:00Z")]
    sparse = hit("visitor-3", 1)  # every optional column null or empty
    batch = rows([*hits, sparse])
    stored_batch = lake.append(project, batch, now=NOW)
    assert stored_batch == StoredBatch(stored_batch.batch_id, 5, partitions=1)

    expected = as_stored_table(project, batch, NOW).sort_by(
        [("user_id_unhashed", "ascending"), ("view_number", "ascending")]
    )
    got = stored(lake, project)
    assert got.schema == PAGEVIEW_SCHEMA  # the embedded types: milliseconds, unsigned widths, nested structs
    assert got.equals(expected)
    assert got.column("transaction_items")[0].as_py()[0]["product_id_hashed"] == 2**64 - 1
    assert got.column("add_to_cart_items")[0].as_py()[0]["add_to_cart_time"] == datetime(2026, 3, 1, 22, 59, tzinfo=UTC)

    with lake.read(
        project, datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC), limits(tmp_path)
    ) as src:
        relation = src.relation(src.days)
        table = src.conn.execute(f"SELECT * FROM {relation.text}", relation.params).to_arrow_table()
    assert table.schema.names == PAGEVIEW_SCHEMA.names  # the partition column stays inside the lake
    assert table.num_rows == 5


def test_a_batch_of_several_days_is_one_snapshot(lake, project):
    (before,) = query(lake, "SELECT id FROM ducklake_current_snapshot('lake')")[0]
    result = lake.append(project, views(30, days=("2026-03-01", "2026-03-02", "2026-03-03")))
    assert result.partitions == 3 and result.rows == 30 and not result.duplicate
    assert lake.days(project) == [date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)]
    by_snapshot = query(
        lake,
        f"SELECT count(*) FROM {PAGEVIEWS} AT (VERSION => ?) WHERE project_id = ?",
        [before, project],
    )
    assert by_snapshot == [(0,)]  # nothing of it was visible before its one commit...
    (after,) = query(lake, "SELECT id FROM ducklake_current_snapshot('lake')")[0]
    inserted = query(
        lake,
        "SELECT DISTINCT snapshot_id FROM ducklake_table_changes('lake', 'main', 'pageviews', ?, ?) "
        "WHERE project_id = ?",
        [before + 1, after, project],
    )
    assert len(inserted) == 1  # ...and every day of it came in the same snapshot


def _die_before_commit(spec, project_id: int, table: pa.Table) -> None:
    """A replica that dies once its batch's files and ledger row are written, before the COMMIT."""
    write = DuckLakeWarehouse._write

    def write_then_die(self, *args) -> None:
        write(self, *args)
        os._exit(9)

    DuckLakeWarehouse._write = write_then_die
    spec.open().append(project_id, table)


def test_a_writer_dying_before_its_commit_leaves_no_rows_and_its_files_are_collected(catalog_url, tmp_path):
    settings = lake_settings(tmp_path, catalog_url)
    table = as_stored_table(1, views(40, days=("2026-03-01", "2026-03-02")), NOW)
    with DuckLakeWarehouse.from_settings(settings) as warehouse:
        child = SPAWN.Process(target=_die_before_commit, args=(warehouse.spec, 1, table))
        child.start()
        child.join(120)
        assert child.exitcode == 9
        orphans = files_on_disk(tmp_path / "lake", 1)
        assert len(orphans) == 2  # one file per session day was written...
        assert warehouse.days(1) == []  # ...and none is part of the lake
        retried = warehouse.append(1, table)
        assert not retried.duplicate and retried.partitions == 2  # no ledger row was left: the retry stores it
        assert count(warehouse, 1) == 40

        report = warehouse.maintain(datetime.now(UTC) + timedelta(days=2), settled_after=timedelta(hours=1))
        assert report.files_deleted >= 2
        assert files_on_disk(tmp_path / "lake", 1) == live_files(warehouse, 1)
        assert not set(orphans) & set(files_on_disk(tmp_path / "lake", 1))
        assert count(warehouse, 1) == 40


def _failing_stamp(*_args) -> None:
    raise RuntimeError("the catalog went away before the commit")


def ledger_rows(catalog_url: str, schema: str, project_id: int) -> list[tuple]:
    """(committed,) of each ledger row of the project, in the lake's catalog database."""
    with psycopg.connect(catalog_url, autocommit=True) as pg:
        return pg.execute(
            f"SELECT committed FROM {schema}.{LEDGER_TABLE} WHERE project_id = %s ORDER BY reserved_at", [project_id]
        ).fetchall()


def test_a_commit_failing_before_its_commit_point_deletes_the_files_it_wrote(catalog_url, tmp_path, monkeypatch):
    settings = lake_settings(tmp_path, catalog_url)
    with DuckLakeWarehouse.from_settings(settings) as warehouse:
        with monkeypatch.context() as patched:
            patched.setattr(DuckLakeWarehouse, "_stamp", staticmethod(_failing_stamp))
            with pytest.raises(RuntimeError, match="went away"):
                warehouse.append(1, views(40, days=("2026-03-01", "2026-03-02")))
        assert files_on_disk(tmp_path / "lake", 1) == []  # both days' files were written, then deleted
        assert warehouse.days(1) == []
        assert ledger_rows(catalog_url, settings.lake_schema, 1) == []  # and its reservation dropped
        assert warehouse.append(1, views(40, days=("2026-03-01", "2026-03-02"))).partitions == 2
        assert files_on_disk(tmp_path / "lake", 1) == live_files(warehouse, 1)
        assert count(warehouse, 1) == 40


def test_a_commit_made_but_never_confirmed_is_known_by_its_snapshot(catalog_url, tmp_path, monkeypatch):
    """A writer whose lake commit went through but that died (or lost the catalog) before confirming its ledger
    rows: a retry, on another opening, finds the commit by the token in its snapshot and stores nothing."""
    settings = lake_settings(tmp_path, catalog_url)
    batch = views(20, days=("2026-03-01",))
    with DuckLakeWarehouse.from_settings(settings) as warehouse:
        with monkeypatch.context() as patched:
            patched.setattr(LakeLedger, "confirm", lambda *_args: None)
            assert not warehouse.append(1, batch, batch_key="k").duplicate
        assert ledger_rows(catalog_url, settings.lake_schema, 1) == [(False,)]
    with DuckLakeWarehouse.from_settings(settings) as another:
        assert another.append(1, batch, batch_key="k").duplicate
        assert ledger_rows(catalog_url, settings.lake_schema, 1) == [(True,)]
        assert count(another, 1) == 20


def test_maintenance_resolves_reservations_whose_writers_are_gone(catalog_url, tmp_path, monkeypatch):
    settings = lake_settings(tmp_path, catalog_url)
    with DuckLakeWarehouse.from_settings(settings) as warehouse:
        with monkeypatch.context() as patched:
            patched.setattr(LakeLedger, "confirm", lambda *_args: None)
            warehouse.append(1, views(20, user="made"))  # committed, left pending
        with monkeypatch.context() as patched:
            patched.setattr(DuckLakeWarehouse, "_stamp", staticmethod(_failing_stamp))
            patched.setattr(LakeLedger, "release", lambda *_args: None)
            with pytest.raises(RuntimeError):
                warehouse.append(1, views(20, user="lost"))  # never committed, left pending
        assert ledger_rows(catalog_url, settings.lake_schema, 1) == [(False,), (False,)]
        warehouse.maintain(datetime.now(UTC), settled_after=timedelta(hours=1))
        assert len(ledger_rows(catalog_url, settings.lake_schema, 1)) == 2  # too young: maybe still under way
        warehouse.maintain(datetime.now(UTC) + timedelta(minutes=11), settled_after=timedelta(hours=1))
        assert ledger_rows(catalog_url, settings.lake_schema, 1) == [(True,)]
        assert count(warehouse, 1) == 20
        assert warehouse.append(1, views(20, user="made")).duplicate
        assert not warehouse.append(1, views(20, user="lost")).duplicate


def test_fresh_files_tell_where_their_user_ids_are(lake, project, tmp_path):
    """Ingest writes each file's user_id statistics, so a day not yet merged is sliced by file as a merged one."""
    first, second = views(30, user="a"), views(30, user="b")
    for batch in (first, second):
        lake.append(project, batch)
    window = (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC))
    with lake.read(project, *window, limits(tmp_path)) as src:
        groups = src.row_groups(DAY)
    expected = []
    for batch in (first, second):
        user_ids = as_stored_table(project, batch, NOW).column("user_id")
        expected.append((pc.min(user_ids).as_py(), pc.max(user_ids).as_py(), 30))
    assert sorted((g.min_user_id, g.max_user_id, g.rows) for g in groups) == sorted(expected)


def _append_as_replica(spec, project_id: int, table: pa.Table, barrier, results) -> None:
    try:
        barrier.wait(60)  # both open the new lake at once: its bootstrap races too
        warehouse = spec.open()
        try:
            barrier.wait(60)
            results.put(("stored", warehouse.append(project_id, table, batch_key="the-same-request").duplicate))
        finally:
            warehouse.close()
    except BaseException as exc:  # reported by the test
        results.put(("error", repr(exc)))


def test_the_same_batch_from_two_processes_at_once_is_stored_once(catalog_url, tmp_path):
    settings = lake_settings(tmp_path, catalog_url)  # a lake nobody has opened yet
    spec = DuckLakeSpec.from_settings(settings)
    table = as_stored_table(1, views(500, days=("2026-03-01", "2026-03-02")), NOW)
    barrier, results = SPAWN.Barrier(2), SPAWN.Queue()
    children = [SPAWN.Process(target=_append_as_replica, args=(spec, 1, table, barrier, results)) for _ in range(2)]
    for child in children:
        child.start()
    outcomes = sorted(results.get(timeout=120) for _ in children)
    for child in children:
        child.join(60)
    assert outcomes == [("stored", False), ("stored", True)]
    with spec.open() as warehouse:
        assert count(warehouse, 1) == 500
        assert ledger_rows(catalog_url, settings.lake_schema, 1) == [(True,)]
        options = query(
            warehouse,
            "SELECT option_name, value FROM ducklake_options('lake') WHERE scope_entry = 'main.pageviews'",
        )
        assert dict(options) == {
            "data_inlining_row_limit": "0",
            "sort_on_insert": "false",
            "target_file_size": "64000000",
        }
        snapshot = "SELECT id FROM ducklake_current_snapshot('lake')"
        (before,) = query(warehouse, snapshot)
        spec.open().close()  # opening a lake that exists changes nothing in it
        assert query(warehouse, snapshot) == [before]


def test_a_key_sent_again_with_other_rows_is_refused(lake, project):
    first = lake.append(project, views(20), batch_key="req-1")
    again = lake.append(project, views(20), batch_key="req-1")  # a retry: the same rows
    assert not first.duplicate and again.duplicate and again.batch_id == first.batch_id
    with pytest.raises(IdempotencyKeyReused):
        lake.append(project, views(21), batch_key="req-1")
    unkeyed = [lake.append(project, views(5, user="w")) for _ in range(2)]  # identified by their natural keys
    assert [b.duplicate for b in unkeyed] == [False, True]
    assert lake.append(project + 10_000, views(20), batch_key="req-1").duplicate is False  # another project's key
    assert count(lake, project) == 25
    assert lake.append(project, []) == StoredBatch("", 0)


def test_batches_waiting_during_a_commit_share_the_next_one_each_with_its_own_outcome(lake, project):
    """Group commit: while one commit waits (here on the write lock, held by a DELETE-like peer), the batches that
    arrive pile up and go in one lake commit; each caller still gets its own answer."""
    lake.append(project, views(3, user="first"), batch_key="seed")
    batches = {f"k{i}": views(4, user=f"g{i}") for i in range(6)}
    batches["seed"] = views(3, user="first")  # a retry, inside the group: duplicate
    before = query(lake, "SELECT count(*) FROM ducklake_snapshots('lake')")[0][0]
    blocker = psycopg.connect(lake.spec.catalog, autocommit=True)
    blocker.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", [lake._lock_key("write")])
    outcomes: dict[str, object] = {}

    def send(key: str) -> None:
        try:
            outcomes[key] = lake.append(project, batches[key], batch_key=key)
        except Exception as exc:  # the assertion below shows it
            outcomes[key] = exc

    threads = [threading.Thread(target=send, args=(key,)) for key in batches]
    threads[0].start()
    deadline = time.monotonic() + 10
    waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    while blocker.execute(waiting).fetchone()[0] == 0:  # until the first batch's commit waits for the lock
        assert time.monotonic() < deadline
        time.sleep(0.01)
    for thread in threads[1:]:
        thread.start()
    while lake._committer._queue.qsize() < len(threads) - 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    blocker.close()  # releases the lock: the first commit goes, then one commit for all the others
    for thread in threads:
        thread.join(10)
    assert {k: (o.rows, o.duplicate) for k, o in outcomes.items()} == {
        **{k: (4, False) for k in batches if k != "seed"},
        "seed": (3, True),
    }
    assert query(lake, "SELECT count(*) FROM ducklake_snapshots('lake')")[0][0] - before == 2
    assert count(lake, project) == 3 + 6 * 4


def _prepare_in_worker(stager, project_id: int, table: pa.Table) -> LakeBatch:
    return stager.prepare(project_id, table, batch_key="chunk-1", now=NOW)


def test_a_batch_prepared_in_another_process_commits_once(lake, project):
    stager = pickle.loads(pickle.dumps(lake.stager()))
    table = pa.Table.from_pylist(views(50, days=("2026-03-01", "2026-03-02")), PAGEVIEW_SCHEMA)
    with SPAWN.Pool(1) as pool:  # as bulk-load workers do: the stager goes out, the prepared batch comes back
        prepared = pool.apply(_prepare_in_worker, (stager, project, table))
    assert isinstance(prepared, LakeBatch) and prepared.rows == 50 and prepared.fingerprint
    prepared = pickle.loads(pickle.dumps(prepared))
    assert lake.commit(project, prepared) == StoredBatch(prepared.batch_id, 50, partitions=2)
    assert lake.commit(project, prepared).duplicate
    assert lake.append(project, table, batch_key="chunk-1", now=NOW).duplicate  # the same batch id as append's
    assert count(lake, project) == 50
    assert lake.commit(project, lake.stager().prepare(project, table.slice(0, 0))) == StoredBatch("", 0)
    with pytest.raises(ValueError, match="prepared for project"):
        lake.commit(project + 1, prepared)
    with pytest.raises(TypeError, match="LakeBatch"):
        lake.commit(project, StoredBatch("x", 1))


def test_restored_rows_keep_their_ingestion_time_and_are_stored_once(lake, project):
    moved = as_stored_table(project, views(30, days=("2026-03-01", "2026-03-02")), datetime(2025, 1, 1, tzinfo=UTC))
    first = lake.restore(project, moved, batch_key="migrate:1")
    assert first == StoredBatch(first.batch_id, 30, partitions=2)
    assert lake.restore(project, moved, batch_key="migrate:1").duplicate
    got = stored(lake, project)
    assert got.equals(moved.sort_by([("user_id_unhashed", "ascending"), ("view_number", "ascending")]))
    with pytest.raises(ValueError, match="cannot be restored into project"):
        lake.restore(project + 1, moved, batch_key="migrate:2")
    with pytest.raises(IdempotencyKeyReused):
        lake.restore(project, moved.slice(0, 10), batch_key="migrate:1")


# -- read side ----------------------------------------------------------------------------------------------------


def test_a_read_stays_on_its_snapshot_through_appends_and_merges(lake, project, tmp_path):
    lake.append(project, views(40, days=("2026-03-01",), user="a"))
    lake.append(project, views(40, days=("2026-03-01",), user="b"))
    window = (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC))
    with lake.read(project, *window, limits(tmp_path)) as src:
        relation = src.relation(src.days)
        counted = f"SELECT count(*) FROM {relation.text}"
        assert src.days == [DAY]
        assert src.conn.execute(counted, relation.params).fetchall() == [(80,)]
        lake.append(project, views(40, days=("2026-03-01", "2026-03-02"), user="c"))
        lake.maintain(datetime.now(UTC), settled_after=timedelta(hours=1))  # its files merged away meanwhile
        assert src.conn.execute(counted, relation.params).fetchall() == [(80,)]
        assert src.relation([]).params == []  # no day: the empty relation
    with lake.read(project, *window, limits(tmp_path)) as later:
        relation = later.relation(later.days)
        assert later.days == [DAY, date(2026, 3, 2)]
        assert later.conn.execute(f"SELECT count(*) FROM {relation.text}", relation.params).fetchall() == [(120,)]
    with lake.read(project, window[1], window[1] + timedelta(days=1), limits(tmp_path)) as empty:
        assert empty.days == []


def test_a_read_sets_the_shared_database_to_the_limits_under_way(lake, project, tmp_path):
    base = lake.spec.memory_limit
    memory = "SELECT current_setting('memory_limit'), current_setting('threads')"
    with lake.read(project, NOW, NOW + timedelta(days=1), limits(tmp_path, threads=1, memory_limit=300_000_000)):
        with lake.read(project, NOW, NOW + timedelta(days=1), limits(tmp_path, threads=2, memory_limit=200_000_000)):
            both = query(lake, memory)
        one = query(lake, memory)
    assert both == [(shown_memory_limit(base + 500_000_000), 2)]  # the sum of both reads', the most threads
    assert one == [(shown_memory_limit(base + 300_000_000), 1)]
    assert query(lake, memory)[0][0] == shown_memory_limit(base)


def shown_memory_limit(limit: int) -> str:
    """How DuckDB shows a memory limit of `limit` bytes."""
    with duckdb.connect(config={"memory_limit": f"{limit}B"}) as conn:
        return conn.execute("SELECT current_setting('memory_limit')").fetchone()[0]


EXPORT_WINDOW = (datetime(2026, 3, 9, tzinfo=UTC), datetime(2026, 3, 11, tzinfo=UTC))


def export(warehouse: Warehouse, project_id: int, scope: Scope, rows_per_slice: int, spill: Path) -> tuple[list, int]:
    fields = [FieldSpec(f.name) for f in fields_for(scope) if not f.parameters]
    fields += [FieldSpec("custom_var", custom_var_position=1), FieldSpec("dynamic_var", dynamic_var_key="AB Test")]
    request = ExportRequest(
        project_id=project_id,
        scope=scope,
        fields=fields,
        window_start=EXPORT_WINDOW[0],
        window_end=EXPORT_WINDOW[1],
        timezone="Europe/Paris",
        device_ids=None,
        segment_filter=None,
        output="csv",
    )
    read_limits = ReadLimits(threads=2, memory_limit=500_000_000, spill_dir=spill, rows_per_slice=rows_per_slice)
    with open_export(warehouse, request, read_limits) as stream:
        out = [row for batch in stream for row in batch.to_pylist()]
        return sorted(out, key=lambda r: json.dumps(r, sort_keys=True, default=str)), len(stream.slices)


@pytest.mark.parametrize("scope", [Scope.SESSIONS, Scope.VIEWS])
def test_an_export_of_the_lake_equals_the_embedded_one_whole_and_sliced(lake, project, tmp_path, scope):
    now = EXPORT_WINDOW[1] - timedelta(microseconds=1)
    with EmbeddedWarehouse(tmp_path / "embedded") as embedded:
        generate(embedded, project, days=2, sessions_per_day=60, seed=3, now=now)
        generate(lake, project, days=2, sessions_per_day=60, seed=3, now=now)
        lake.maintain(datetime.now(UTC), settled_after=timedelta(hours=1))  # sorted files: sliced by their ranges
        expected, _ = export(embedded, project, scope, 10**9, tmp_path)
    whole, whole_reads = export(lake, project, scope, 10**9, tmp_path)
    sliced, reads = export(lake, project, scope, 30, tmp_path)
    assert len(expected) > 100
    assert whole == expected and whole_reads == 1
    assert sliced == expected and reads > 5


# -- upkeep -------------------------------------------------------------------------------------------------------


def test_delete_before_drops_whole_days_while_other_threads_append(lake, project):
    old_days = [date(2026, 2, d) for d in range(1, 6)]
    for day in old_days:
        lake.append(project, views(10, days=(day.isoformat(),), user=f"old{day.day}-"))
    stop, errors, appended = threading.Event(), [], []
    appending = threading.Barrier(3)

    def keep_appending(name: str) -> None:
        try:
            for n in itertools.count():
                appended.append(lake.append(project, views(10, days=("2026-03-01",), user=f"{name}{n}-")).rows)
                if n == 0:
                    appending.wait(60)  # the deletes start once both threads are committing
                if stop.is_set():
                    return
        except BaseException as exc:  # reported by the test
            errors.append(exc)
            appending.abort()

    appenders = [threading.Thread(target=keep_appending, args=(name,)) for name in ("a", "b")]
    for appender in appenders:
        appender.start()
    try:
        appending.wait(60)
        dropped = [lake.delete_before(project, day + timedelta(days=1)) for day in old_days]
    finally:
        stop.set()
        for appender in appenders:
            appender.join(60)
    assert errors == []
    assert dropped == [1, 1, 1, 1, 1]
    assert lake.days(project) == [DAY]
    assert count(lake, project) == sum(appended) > 20
    assert lake.delete_before(project, DAY) == 0


def test_copies_of_a_pageview_are_collapsed_once_their_partition_has_settled(catalog_url, tmp_path):
    with DuckLakeWarehouse.from_settings(lake_settings(tmp_path, catalog_url)) as warehouse:
        first = warehouse.append(1, views(30), batch_key="a", now=NOW)
        warehouse.append(1, views(30), batch_key="b", now=NOW + timedelta(minutes=5))  # the same hits, rekeyed
        hour = timedelta(hours=1)
        now = datetime.now(UTC)
        fresh = warehouse.maintain(now, settled_after=hour)
        assert fresh.partitions_deduplicated == 0 and count(warehouse, 1) == 60  # still receiving: left alone
        settled = warehouse.maintain(now + 2 * hour, settled_after=hour)
        assert settled.partitions_deduplicated == 1 and count(warehouse, 1) == 30
        kept = query(warehouse, f"SELECT DISTINCT ingested_at FROM {PAGEVIEWS} WHERE project_id = 1")
        assert kept == [(NOW + timedelta(minutes=5),)]  # the latest copy wins, as in the embedded compaction
        assert first.rows == 30
        again = warehouse.maintain(now + 3 * hour, settled_after=hour)
        assert again.partitions_deduplicated == 0 and count(warehouse, 1) == 30


def test_maintenance_merges_files_sorted_and_keeps_every_row(catalog_url, tmp_path):
    with DuckLakeWarehouse.from_settings(lake_settings(tmp_path, catalog_url)) as warehouse:
        for n in range(6):
            warehouse.append(1, views(500, days=("2026-03-01", "2026-03-02"), user=f"v{n}-"))
        before = stored(warehouse, 1)
        assert len(live_files(warehouse, 1)) == 12

        # Another scheduler holds the maintenance lock: this one does nothing.
        with psycopg.connect(catalog_url, autocommit=True) as other:
            key = warehouse._lock_key("maintenance")
            other.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", [key])
            assert warehouse.maintain(datetime.now(UTC), settled_after=timedelta(hours=1)).partitions_compacted == 0
        assert len(live_files(warehouse, 1)) == 12

        report = warehouse.maintain(datetime.now(UTC), settled_after=timedelta(hours=1))
        assert report.partitions_compacted == 2
        assert report.batch_records_pruned == 0  # today's ledger rows are what retries are checked against
        assert len(live_files(warehouse, 1)) == 2  # one file per session day
        assert stored(warehouse, 1).equals(before)

        window = (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC))
        with warehouse.read(1, *window, limits(tmp_path)) as src:
            (group,) = src.row_groups(DAY)  # the merged file's user_id range, from the catalog
        day_one = before.filter(pc.equal(before.column("session_time").cast(pa.date32()), pa.scalar(DAY)))
        user_ids = day_one.column("user_id")
        assert (group.min_user_id, group.max_user_id, group.rows) == (
            pc.min(user_ids).as_py(),
            pc.max(user_ids).as_py(),
            1500,
        )
        (merged,) = [f for f in live_files(warehouse, 1) if "session_day=2026-03-01" in f]
        ids = pq.read_table(merged, columns=["user_id"]).column("user_id").to_pylist()
        assert ids == sorted(ids)  # merged in the table's sort order

        # Two days on, the ledger rows, the snapshots and the merged-away files are past any use.
        later = warehouse.maintain(datetime.now(UTC) + timedelta(days=2), settled_after=timedelta(hours=1))
        assert later.batch_records_pruned == 6
        assert later.snapshots_expired > 6
        assert later.files_deleted == 12
        assert files_on_disk(tmp_path / "lake", 1) == live_files(warehouse, 1)
        assert stored(warehouse, 1).equals(before)
        assert warehouse.append(1, views(500, days=("2026-03-01", "2026-03-02"), user="v0-")).duplicate is False


# -- S3, settings and errors --------------------------------------------------------------------------------------


def s3_lake_settings(tmp_path: Path, catalog_url: str, s3_server, prefix: str) -> tuple[str, Settings]:
    """A new bucket, and the settings of a lake under s3://bucket/prefix on it."""
    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    s3_server.client().create_bucket(Bucket=bucket)
    settings = lake_settings(
        tmp_path,
        catalog_url,
        lake_data_path=f"s3://{bucket}/{prefix}",
        s3_endpoint_url=s3_server.endpoint_url,
        s3_access_key_id=s3_server.access_key_id,
        s3_secret_access_key=s3_server.secret_access_key,
        s3_region=s3_server.region,
    )
    return bucket, settings


def test_a_lake_on_s3(catalog_url, tmp_path, s3_server, project):
    bucket, settings = s3_lake_settings(tmp_path, catalog_url, s3_server, "pageviews")
    with open_warehouse(settings) as warehouse:
        assert isinstance(warehouse, DuckLakeWarehouse) and isinstance(warehouse, Warehouse)
        for user in ("a", "b"):
            warehouse.append(project, views(100, days=("2026-03-01", "2026-03-02"), user=user))
        keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]]
        assert len(keys) == 4 and all(k.startswith("pageviews/") and f"project_id={project}/" in k for k in keys)
        assert warehouse.maintain(datetime.now(UTC), settled_after=timedelta(hours=1)).partitions_compacted == 2
        with warehouse.read(project, datetime(2026, 3, 1, tzinfo=UTC), NOW, limits(tmp_path)) as src:
            relation = src.relation(src.days)
            assert src.conn.execute(f"SELECT count(*) FROM {relation.text}", relation.params).fetchall() == [(200,)]
        assert warehouse.delete_before(project, date(2026, 3, 2)) == 1
        assert count(warehouse, project) == 100
        later = warehouse.maintain(datetime.now(UTC) + timedelta(days=2), settled_after=timedelta(hours=1))
        assert later.files_deleted == 5  # the four appended files, and the merged file of the deleted day
        keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]]
        assert len(keys) == 1 and "session_day=2026-03-02" in keys[0]


def test_an_s3_commit_failing_before_its_commit_point_deletes_its_objects(
    catalog_url, tmp_path, s3_server, project, monkeypatch
):
    bucket, settings = s3_lake_settings(tmp_path, catalog_url, s3_server, "lake/")
    client = s3_server.client()
    with DuckLakeWarehouse.from_settings(settings) as warehouse:
        with monkeypatch.context() as patched:
            patched.setattr(DuckLakeWarehouse, "_stamp", staticmethod(_failing_stamp))
            with pytest.raises(RuntimeError, match="went away"):
                warehouse.append(project, views(20, days=("2026-03-01", "2026-03-02")))
        assert client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
        assert warehouse.append(project, views(20, days=("2026-03-01", "2026-03-02"))).partitions == 2
        keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"])
        assert [f"s3://{bucket}/{key}" for key in keys] == live_files(warehouse, project)


def test_an_s3_lake_without_its_bucket_names_the_setting(catalog_url, tmp_path, s3_server):
    settings = lake_settings(
        tmp_path,
        catalog_url,
        lake_data_path="s3://no-such-bucket/lake/",
        s3_endpoint_url=s3_server.endpoint_url,
        s3_access_key_id=s3_server.access_key_id,
        s3_secret_access_key=s3_server.secret_access_key,
    )
    with pytest.raises(LakeUnavailable, match="DATAEXPORT_LAKE_DATA_PATH"):
        DuckLakeWarehouse.from_settings(settings)


def test_an_unreachable_catalog_names_the_setting(tmp_path):
    settings = lake_settings(tmp_path, f"postgresql://postgres:s3cret@127.0.0.1:{free_port()}/nowhere")
    with pytest.raises(LakeUnavailable, match="DATAEXPORT_LAKE_CATALOG_URL") as caught:
        DuckLakeWarehouse.from_settings(settings)
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lake_catalog_url": None, "database_url": "sqlite:///x.db"}, "DATAEXPORT_LAKE_CATALOG_URL"),
        ({"lake_catalog_url": "mysql://u@h/db"}, "must be a postgresql:// URL"),
        ({"lake_schema": "Robert'); DROP"}, "DATAEXPORT_LAKE_SCHEMA"),
        ({"lake_data_path": "gs://bucket/lake/"}, "DATAEXPORT_LAKE_DATA_PATH"),
        ({"lake_data_path": "s3://bucket/lake/"}, "DATAEXPORT_S3_ACCESS_KEY_ID"),
        (
            {
                "lake_data_path": "s3://b/",
                "s3_access_key_id": "k",
                "s3_secret_access_key": "s",
                "s3_endpoint_url": "ftp://h",
            },
            "DATAEXPORT_S3_ENDPOINT_URL",
        ),
    ],
)
def test_settings_that_describe_no_lake_are_refused_by_name(tmp_path, overrides, message):
    settings = lake_settings(tmp_path, "postgresql://postgres@127.0.0.1/db").model_copy(update=overrides)
    with pytest.raises(LakeSettingsError, match=message):
        DuckLakeWarehouse.from_settings(settings)


def test_the_catalog_url_becomes_quoted_libpq_keywords():
    assert libpq_conninfo("postgresql+psycopg://us%40er:p%27a%20ss@db.example:6432/my%20db?sslmode=require") == (
        "host='db.example' port='6432' user='us@er' password='p\\'a ss' dbname='my db' sslmode='require'"
    )
    # Text that would add a keyword stays inside its quoted value.
    assert libpq_conninfo("postgresql://u@h/db%20host=evil") == "host='h' user='u' dbname='db host=evil'"
    assert libpq_conninfo("postgres://%2Fvar%2Frun%2Fpostgresql/db") == "host='/var/run/postgresql' dbname='db'"
    with pytest.raises(LakeSettingsError, match="not a libpq connection parameter"):
        libpq_conninfo("postgresql://u@h/db?host%3Devil=1")
    with pytest.raises(LakeSettingsError, match="DATAEXPORT_DATABASE_URL is not a valid URL"):
        libpq_conninfo("postgresql://u@h:notaport/db", "DATAEXPORT_DATABASE_URL")


def test_the_catalog_falls_back_to_a_postgresql_database_url(catalog_url, tmp_path):
    settings = lake_settings(tmp_path, catalog_url).model_copy(
        update={"lake_catalog_url": None, "database_url": catalog_url.replace("postgresql://", "postgresql+psycopg://")}
    )
    with DuckLakeWarehouse.from_settings(settings) as warehouse:
        assert warehouse.spec.catalog_setting == "DATAEXPORT_DATABASE_URL"
        assert warehouse.append(1, views(3)).rows == 3
        assert pickle.loads(pickle.dumps(warehouse.spec)) == warehouse.spec


def test_a_command_with_lake_settings_that_describe_no_lake_ends_with_one_line(tmp_path):
    env = service_env({"DATAEXPORT_WAREHOUSE": "ducklake", "DATAEXPORT_DATA_DIR": str(tmp_path)})
    done = subprocess.run(
        [sys.executable, "-m", "dataexport.cli", "worker", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "DATAEXPORT_LAKE_CATALOG_URL" in done.stdout and "Traceback" not in done.stdout + done.stderr
