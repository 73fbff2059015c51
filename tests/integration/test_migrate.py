"""Moving a project's pageviews between warehouses: every row as stored, once, also when run again."""

from __future__ import annotations

import subprocess
import sys
from contextlib import closing
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from dataexport.config import Settings
from dataexport.demo.generate import generate
from dataexport.warehouse.backend import open_warehouse
from dataexport.warehouse.embedded import EmbeddedWarehouse
from dataexport.warehouse.migrate import migrate_project
from processes import cli_json, service_env
from support import scratch_pg_database

NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)


def rows_of(warehouse, project_id: int) -> list[tuple]:
    table = pa.Table.from_batches([b for day in warehouse.days(project_id) for b in warehouse.scan(project_id, day)])
    keys = ["user_id_unhashed", "session_number", "view_number", "ingested_at", "url", "custom_vars"]
    return sorted(tuple(map(str, r.values())) for r in table.select(keys).to_pylist())


@pytest.fixture
def source(tmp_path):
    with EmbeddedWarehouse(tmp_path / "source") as warehouse:
        generate(warehouse, 3, days=3, sessions_per_day=80, seed=5, now=NOW)
        generate(warehouse, 4, days=1, sessions_per_day=10, seed=6, now=NOW)  # another project: not moved
        yield warehouse


def test_every_row_moves_as_stored_and_a_second_run_stores_nothing(source, tmp_path):
    with EmbeddedWarehouse(tmp_path / "target") as target:
        first = migrate_project(source, target, 3, rows_per_chunk=50)
        assert first.rows == first.stored == len(rows_of(source, 3)) > 400
        assert [d.day for d in first.days] == source.days(3)
        assert rows_of(target, 3) == rows_of(source, 3)  # ingested_at included
        assert target.days(4) == []
        again = migrate_project(source, target, 3, rows_per_chunk=50)
        assert again.rows == first.rows and again.stored == 0
        assert rows_of(target, 3) == rows_of(source, 3)


def test_rows_of_another_project_are_refused(source, tmp_path):
    table = pa.Table.from_batches(list(source.scan(3, source.days(3)[0])))
    with EmbeddedWarehouse(tmp_path / "target") as target, pytest.raises(ValueError, match="project"):
        target.restore(4, table, batch_key="k")
    assert target.days(4) == []


@pytest.fixture
def catalog_url():
    with scratch_pg_database() as url:
        yield url


def test_the_cli_moves_a_project_into_ducklake_once(tmp_path, catalog_url):
    env = service_env(
        {
            "DATAEXPORT_DATA_DIR": str(tmp_path / "data"),
            "DATAEXPORT_WAREHOUSE": "ducklake",
            "DATAEXPORT_LAKE_CATALOG_URL": catalog_url,
            "DATAEXPORT_LAKE_DATA_PATH": str(tmp_path / "lake"),
        }
    )
    project = cli_json(env, "projects", "create", "--name", "Moving")["project_id"]
    with EmbeddedWarehouse(tmp_path / "old") as source:
        generate(source, project, days=2, sessions_per_day=40, seed=8, now=NOW)
        expected = rows_of(source, project)
    args = ("warehouse", "migrate", "--project", str(project), "--from-dir", str(tmp_path / "old"))
    first = cli_json(env, *args)
    assert first["rows_read"] == first["rows_stored"] == len(expected) > 0 and len(first["days"]) == 2
    again = cli_json(env, *args)
    assert again["rows_read"] == len(expected) and again["rows_stored"] == 0
    settings = Settings(
        data_dir=tmp_path / "check",
        warehouse="ducklake",
        lake_catalog_url=catalog_url,
        lake_data_path=str(tmp_path / "lake"),
    )
    with closing(open_warehouse(settings)) as lake:
        assert rows_of(lake, project) == expected


def test_the_cli_needs_a_lake_to_migrate_into(tmp_path):
    env = service_env({"DATAEXPORT_DATA_DIR": str(tmp_path / "data")})
    project = cli_json(env, "projects", "create", "--name", "Staying")["project_id"]
    done = subprocess.run(
        [sys.executable, "-m", "dataexport.cli", "warehouse", "migrate", "--project", str(project)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "DATAEXPORT_WAREHOUSE" in done.stdout, done.stdout + done.stderr
