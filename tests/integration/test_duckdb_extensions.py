"""DuckDB's extensions load from their pinned PyPI packages, with no download, and DuckLake works on them.

A real PostgreSQL catalog (a fresh database per test) and real Parquet files on a local data path.
"""

from __future__ import annotations

import re
import threading
from datetime import date

import duckdb
import pytest

from dataexport.warehouse.duckdb_extensions import (
    LAKE_EXTENSIONS,
    ExtensionMissing,
    connect,
    extension_file,
)
from support import scratch_pg_database

DAY_1, DAY_2 = date(2026, 3, 1), date(2026, 3, 2)


@pytest.fixture
def catalog_url():
    with scratch_pg_database() as url:
        yield url


def offline(tmp_path, **kwargs):
    # An empty extension directory of the test's own: nothing installed in ~/.duckdb can make a test pass.
    return connect(config={"extension_directory": str(tmp_path / "no-extensions")}, **kwargs)


def test_each_extension_file_is_the_one_its_package_ships_for_this_duckdb():
    for name in LAKE_EXTENSIONS:
        path = extension_file(name)
        assert path.name == f"{name}.duckdb_extension"
        assert path.parent.name == f"v{duckdb.__version__}"
        assert f"duckdb_extension_{name}" in path.parts
    with pytest.raises(ExtensionMissing, match="duckdb_extension_no_such_thing is not installed"):
        extension_file("no_such_thing")


def test_a_connection_loads_signed_extensions_from_files_and_never_downloads(tmp_path):
    with offline(tmp_path) as conn:
        loaded = dict(
            conn.execute(
                "SELECT extension_name, install_mode FROM duckdb_extensions() WHERE loaded AND extension_name = ANY(?)",
                [list(LAKE_EXTENSIONS)],
            ).fetchall()
        )
        # Loaded, yet not installed: they came from the package files, not from an extension directory.
        assert loaded == dict.fromkeys(LAKE_EXTENSIONS, "NOT_INSTALLED")
        # Unsigned binaries stay refused, so each LOAD above passed DuckDB's signature check.
        assert conn.execute("SELECT current_setting('allow_unsigned_extensions')").fetchone() == (False,)

    with offline(tmp_path, extensions=()) as bare:
        # Without the files, DuckLake and S3 fail at once (looking only in the empty directory) instead of
        # fetching the extension.
        with pytest.raises(duckdb.IOException, match='ducklake.duckdb_extension" not found'):
            bare.execute(f"ATTACH 'ducklake:{tmp_path / 'lake.ducklake'}' AS lake")
        with pytest.raises(duckdb.Error, match="requires the extension httpfs to be loaded"):
            bare.execute("SELECT * FROM read_parquet('s3://bucket/pageviews.parquet')")
    assert list((tmp_path / "no-extensions").rglob("*")) == []
    assert not (tmp_path / "lake.ducklake").exists()


def attach(conn: duckdb.DuckDBPyConnection, catalog_url: str, data_path) -> None:
    # Data inlining off: every insert writes Parquet files, which is what partition pruning is about.
    conn.execute(
        f"ATTACH 'ducklake:postgres:{catalog_url}' AS lake (DATA_PATH '{data_path}/', DATA_INLINING_ROW_LIMIT 0)"
    )


def files_read(conn: duckdb.DuckDBPyConnection, sql: str) -> int:
    plan = conn.execute("EXPLAIN ANALYZE " + sql).fetchall()[0][1]
    counts = [int(n) for n in re.findall(r"Total Files Read: (\d+)", plan)]
    assert counts, plan
    return sum(counts)


def test_ducklake_on_postgresql_takes_appends_from_two_connections_and_prunes_partitions(tmp_path, catalog_url):
    data_path = tmp_path / "lake"
    first, second = offline(tmp_path), offline(tmp_path)
    try:
        attach(first, catalog_url, data_path)
        first.execute("CREATE TABLE lake.pageviews (project_id INTEGER, session_day DATE, view_id INTEGER)")
        first.execute("ALTER TABLE lake.pageviews SET PARTITIONED BY (project_id, session_day)")
        attach(second, catalog_url, data_path)

        # Both connections append at once, each as its own DuckDB instance (as two processes would), in
        # interleaved transactions that commit to the same PostgreSQL catalog.
        batches = {first: range(0, 400, 100), second: range(1000, 1400, 100)}
        start = threading.Barrier(2)
        errors: list[BaseException] = []

        def append(conn: duckdb.DuckDBPyConnection) -> None:
            try:
                start.wait()
                for base in batches[conn]:
                    conn.execute(
                        "INSERT INTO lake.pageviews SELECT 1 + (i % 2), ?::DATE + (i // 2 % 2)::INTEGER, ? + i "
                        "FROM range(4) t(i)",
                        [DAY_1, base],
                    )
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=append, args=(conn,)) for conn in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []

        expected = sorted(
            (1 + i % 2, DAY_1 if i // 2 % 2 == 0 else DAY_2, base + i)
            for bases in batches.values()
            for base in bases
            for i in range(4)
        )
        everything = "SELECT project_id, session_day, view_id FROM lake.pageviews ORDER BY ALL"
        # Each connection reads every row, its own and the other's.
        assert first.execute(everything).fetchall() == expected
        assert second.execute(everything).fetchall() == expected

        # The files are laid out by partition, and a filtered read opens only its partition's files.
        files = second.execute("SELECT data_file FROM ducklake_list_files('lake', 'pageviews')").fetchall()
        assert len(files) == 8 * 4  # 8 inserts, each writing one file to each of 4 partitions
        assert all("project_id=" in path and "/session_day=" in path for (path,) in files)
        one_partition = f"SELECT view_id FROM lake.pageviews WHERE project_id = 2 AND session_day = DATE '{DAY_2}'"
        assert sorted(v for (v,) in first.execute(one_partition).fetchall()) == [
            v for p, d, v in expected if p == 2 and d == DAY_2
        ]
        assert files_read(first, "SELECT view_id FROM lake.pageviews") == 32
        assert files_read(first, one_partition) == 8
    finally:
        first.close()
        second.close()
