"""The demo generator writing into a real store."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import duckdb

from dataexport.demo.generate import generate
from dataexport.warehouse.embedded import EmbeddedWarehouse
from dataexport.warehouse.embedded.layout import partition_files
from dataexport.warehouse.schema import PARTITION_ROOT

NOW = datetime(2026, 3, 18, 15, 45, tzinfo=UTC)


def query(root, sql: str) -> list[tuple]:
    files = sorted(str(p) for p in (root / PARTITION_ROOT).glob("project_id=4/*/*.parquet"))
    relation = f"read_parquet({files!r}, hive_partitioning = false, filename = true)"
    return duckdb.connect().sql(sql.replace("PAGEVIEWS", relation)).fetchall()


def test_generates_recent_days_into_day_partitions_and_reruns_store_nothing(tmp_path):
    with EmbeddedWarehouse(tmp_path) as store:
        summary = generate(store, 4, days=3, sessions_per_day=1200, seed=11, now=NOW)
        again = generate(store, 4, days=3, sessions_per_day=1200, seed=11, now=NOW)
    assert (summary.first_day, summary.last_day) == (date(2026, 3, 16), date(2026, 3, 18))
    assert summary.pageviews > 3 * 1200 * 2 and summary.files == 3
    assert again.pageviews == summary.pageviews and again.files == 0  # same batches: acknowledged, not written
    assert query(tmp_path, "SELECT count(*) FROM PAGEVIEWS") == [(summary.pageviews,)]
    # A job over the last day finds data; nothing lies in the future.
    assert partition_files(tmp_path, 4, NOW - timedelta(days=1), NOW)
    assert query(tmp_path, "SELECT max(view_time) <= ?::TIMESTAMPTZ FROM PAGEVIEWS".replace("?", f"'{NOW}'")) == [
        (True,)
    ]
    # Every row sits in the partition of its session's start day.
    misplaced = query(
        tmp_path,
        """SELECT count(*) FROM PAGEVIEWS
        WHERE filename NOT LIKE '%session_day=' || strftime(session_time AT TIME ZONE 'UTC', '%Y-%m-%d') || '/%'""",
    )
    assert misplaced == [(0,)]


def test_a_session_crossing_midnight_lands_in_its_first_days_partition(tmp_path):
    with EmbeddedWarehouse(tmp_path) as store:
        generate(store, 4, days=3, sessions_per_day=1200, seed=11, now=NOW)
    crossing = query(
        tmp_path,
        """
        SELECT session_id, min(view_time AT TIME ZONE 'UTC')::DATE, max(view_time AT TIME ZONE 'UTC')::DATE,
               count(DISTINCT filename), any_value(filename)
        FROM PAGEVIEWS GROUP BY session_id
        HAVING min(view_time AT TIME ZONE 'UTC')::DATE < max(view_time AT TIME ZONE 'UTC')::DATE""",
    )
    assert crossing, "the seed should produce at least one session across midnight"
    for _, first_day, _, files, filename in crossing:
        assert files == 1
        assert f"session_day={first_day.isoformat()}" in filename


def test_days_built_in_worker_processes_are_the_same_data(tmp_path):
    now = datetime(2026, 3, 4, 15, 30, tzinfo=UTC)
    tables = {}
    for workers in (1, 2):
        root = tmp_path / f"w{workers}"
        with EmbeddedWarehouse(root) as store:
            summary = generate(store, 7, days=3, sessions_per_day=300, seed=11, now=now, workers=workers)
        files = sorted(str(p) for p in root.glob(f"{PARTITION_ROOT}/*/*/*.parquet"))
        tables[workers] = duckdb.execute(
            "SELECT * EXCLUDE (ingested_at) FROM read_parquet(?, hive_partitioning = false) "
            "ORDER BY user_id_unhashed, session_number, view_number",
            [files],
        ).fetchall()
        assert summary.pageviews == len(tables[workers]) > 0
    assert tables[1] == tables[2]
