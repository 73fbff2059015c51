"""Moving a project's pageviews between warehouses: every row as stored, once, also when run again."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from dataexport.warehouse.demo import generate
from dataexport.warehouse.embedded import EmbeddedWarehouse
from dataexport.warehouse.migrate import migrate_project

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
