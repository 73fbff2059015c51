"""Custom-var and dynamic-var listings over real Parquet files."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataexport.errors import ValidationFailed
from dataexport.query.variables import list_custom_vars, list_dynamic_var_keys
from dataexport.warehouse.backend import ReadLimits
from dataexport.warehouse.embedded import EmbeddedWarehouse
from dataexport.warehouse.embedded.layout import partition_dir
from dataexport.warehouse.schema import PAGEVIEW_SCHEMA

T0 = datetime(2026, 2, 14, 10, tzinfo=UTC)
MONTH = (T0 - timedelta(days=30), T0 + timedelta(days=1))


@pytest.fixture
def limits(tmp_path) -> ReadLimits:
    return ReadLimits(threads=1, memory_limit=256_000_000, spill_dir=tmp_path / "spill")


def view(project_id=7, n=1, minutes=0, custom=(), dynamic=()):
    row = {name: None for name in PAGEVIEW_SCHEMA.names}
    row.update(
        project_id=project_id,
        user_id_unhashed=f"u{n}",
        session_number=1,
        session_time=T0,
        view_number=1,
        view_time=T0 + timedelta(minutes=minutes),
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
    return row


@pytest.fixture
def warehouse(tmp_path):
    rows = [
        view(
            n=1,
            custom=[(2, "dataType", "recording"), (1, "Goal achieved", "true")],
            dynamic=[("AB Test", "B"), ("score", 4294967296)],
        ),
        view(n=2, custom=[(2, "dataType", "journey"), (2, "datatype", "zoning")], dynamic=[("mixed", 3)]),
        view(
            n=3,
            minutes=90,
            custom=[(2, "dataType", "journey"), (3, "pageType", None)],
            dynamic=[("mixed", "three"), ("late", "x"), ("x'); DROP TABLE t; --", "y")],
        ),
        view(project_id=8, n=4, custom=[(5, "other", "hidden")], dynamic=[("other project", "z")]),
    ]
    d = partition_dir(tmp_path, 7, date(2026, 2, 14))
    d.mkdir(parents=True)
    path = d / "p.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=PAGEVIEW_SCHEMA), path)
    return EmbeddedWarehouse(tmp_path)


def test_custom_vars_by_position_with_the_most_frequent_key(warehouse, limits):
    assert list_custom_vars(warehouse, 7, *MONTH, limits) == [
        {"position": 1, "key": "Goal achieved", "values": ["true"]},
        {"position": 2, "key": "dataType", "values": ["journey", "recording", "zoning"]},
        {"position": 3, "key": "pageType", "values": []},
    ]


def test_custom_var_values_are_capped(warehouse, limits):
    assert list_custom_vars(warehouse, 7, *MONTH, limits, max_values=2)[1]["values"] == ["journey", "recording"]


def test_dynamic_var_keys_and_types_in_range(warehouse, limits):
    assert list_dynamic_var_keys(warehouse, 7, T0, T0 + timedelta(hours=1), limits) == [
        {"key": "AB Test", "type": "string"},
        {"key": "mixed", "type": "number"},
        {"key": "score", "type": "number"},
    ]
    assert list_dynamic_var_keys(warehouse, 7, T0, T0 + timedelta(hours=2), limits) == [
        {"key": "AB Test", "type": "string"},
        {"key": "late", "type": "string"},
        {"key": "mixed", "type": "string"},
        {"key": "score", "type": "number"},
        {"key": "x'); DROP TABLE t; --", "type": "string"},
    ]
    assert list_dynamic_var_keys(warehouse, 7, T0 + timedelta(hours=2), T0 + timedelta(hours=3), limits) == []


def test_no_files_no_variables(tmp_path, limits):
    empty = EmbeddedWarehouse(tmp_path / "empty")
    assert list_custom_vars(empty, 7, *MONTH, limits) == []
    assert list_dynamic_var_keys(empty, 7, T0, T0 + timedelta(days=1), limits) == []


def test_bad_arguments_are_validation_errors(warehouse, limits):
    with pytest.raises(ValidationFailed):
        list_custom_vars(warehouse, 7, *MONTH, limits, max_values=-1)
    with pytest.raises(ValidationFailed):
        list_dynamic_var_keys(warehouse, 7, datetime(2026, 2, 14), T0, limits)


def test_a_listing_makes_its_spill_directory_before_duckdb_needs_it(tmp_path):
    """DuckDB creates only the last component of its temp directory, when it first spills: a month of a busy
    project's custom vars (4M pageviews, bench/console.py) spilled into data_dir/work/duckdb-spill-api of an API
    process whose data dir had no work/ yet, and GET /v1/custom-vars answered 500."""
    from dataexport.demo.generate import generate

    now = datetime(2026, 3, 11, 23, tzinfo=UTC)
    spill = tmp_path / "data" / "work" / "duckdb-spill-api"
    with EmbeddedWarehouse(tmp_path / "warehouse") as warehouse:
        generate(warehouse, 1, days=1, sessions_per_day=2_000, seed=3, now=now)
        tight = ReadLimits(threads=1, memory_limit=24 * 2**20, spill_dir=spill)
        listed = list_custom_vars(warehouse, 1, now - timedelta(days=30), now, tight, max_values=100)
    assert listed and all(len(v["values"]) <= 100 for v in listed)
    assert spill.is_dir()
