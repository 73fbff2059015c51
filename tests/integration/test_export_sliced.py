"""The large-data read path on small data: slices forced tiny, compared cell for cell with the export read whole.

Real demo traffic (every kind of nested data) in real Parquet files read by real DuckDB: one day compacted
(sorted by user_id, cut by its row-group statistics) with a late file beside it, the next day fresh (cut in
equal ranges), plus a session crossing midnight and a session of 200 views. Every catalog field of both
scopes, custom and dynamic variables and an alias, in CSV and JSONL, with and without a segment and a device
filter, must come out the same whether the window is read in one piece or in many slices.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dataexport.catalog import fields_for
from dataexport.demo.generate import generate
from dataexport.domain.enums import Scope
from dataexport.domain.fieldspec import FieldSpec
from dataexport.domain.segment_filter import parse_segment_filter
from dataexport.ingest.hits import session_id_of, user_id_of
from dataexport.query.export_read import ExportRequest, open_export
from dataexport.warehouse.backend import ReadLimits
from dataexport.warehouse.embedded import EmbeddedWarehouse
from dataexport.warehouse.embedded.compaction import compact_partition

PROJECT = 3
DAY1 = datetime(2026, 3, 9, tzinfo=UTC)
WINDOW = (DAY1, DAY1 + timedelta(days=2))
TINY = 40  # pageviews a slice: dozens of slices on this data
WHOLE = 10**12


# Parameterised fields and an alias, on top of the catalog's plain fields (the same for both scopes).
EXTRAS = [
    FieldSpec("custom_var", custom_var_position=1),
    FieldSpec("custom_var", custom_var_position=3),
    FieldSpec("dynamic_var", dynamic_var_key="AB Test"),
    FieldSpec("dynamic_var", dynamic_var_key="cart_value"),
    FieldSpec("user_id_unhashed", alias_name='visitor, "quoted"'),
]


def every_field(scope: Scope) -> list[FieldSpec]:
    names = [f.name for f in fields_for(scope) if not f.parameters and f.name != "user_id_unhashed"]
    return [FieldSpec(n) for n in names] + EXTRAS


def view(user: str, session_number: int, session_time: datetime, view_number: int, view_time: datetime, **over) -> dict:
    row = dict(
        user_id_unhashed=user,
        user_id=user_id_of(user),
        session_number=session_number,
        session_id=session_id_of(user, session_number),
        session_time=session_time,
        view_number=view_number,
        view_time=view_time,
        device_id=1,
        country_code="FR",
        city="Paris",
        url=f"https://x.test/p{view_number}",
        view_duration_msec=1000,
        errors=[],
        custom_vars=[],
        dynamic_vars=[],
        transactions=[],
        transaction_items=[],
        add_to_cart_items=[],
        app_events=[],
    )
    row.update(over)
    return row


def long_session() -> list[dict]:
    """200 views, an error on every 7th (numbered by its view), a session-scoped custom var set twice."""
    start = DAY1 + timedelta(hours=15)
    rows = []
    for n in range(1, 201):
        errors = (
            [
                {
                    "message": f"e{n}",
                    "error_time": start + timedelta(seconds=n),
                    "filename": "a.js",
                    "error_type": "TypeError",
                    "line_number": n,
                    "col_number": 1,
                }
            ]
            if n % 7 == 0
            else []
        )
        cvs = [{"position": 1, "key": "goal", "value": f"v{n}", "scope": "session"}] if n in (50, 150) else []
        rows.append(view("u-long", 1, start, n, start + timedelta(seconds=n), errors=errors, custom_vars=cvs))
    return rows


def midnight_session() -> list[dict]:
    start = DAY1 + timedelta(hours=23, minutes=59)
    return [
        view("u-midnight", 2, start, 1, start),
        view("u-midnight", 2, start, 2, start + timedelta(minutes=3)),
        view("u-midnight", 2, start, 3, start + timedelta(minutes=9), country_code="BE"),
    ]


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sliced")
    with EmbeddedWarehouse(root) as store:
        generate(store, PROJECT, days=2, sessions_per_day=120, seed=7, now=WINDOW[1] - timedelta(microseconds=1))
        assert compact_partition(store.store, PROJECT, DAY1.date()) is not None  # day 1 sorted, with statistics
        store.append(PROJECT, long_session() + midnight_session())  # late files beside the compacted one
    return root


def read(
    root: Path,
    scope: Scope,
    fields: list[FieldSpec],
    output: str,
    *,
    rows_per_slice: int,
    window=WINDOW,
    segment=None,
    device_ids=None,
    ordered=False,
    spill: Path,
) -> tuple[list, int]:
    request = ExportRequest(
        project_id=PROJECT,
        scope=scope,
        fields=fields,
        window_start=window[0],
        window_end=window[1],
        timezone="Europe/Paris",
        device_ids=device_ids,
        segment_filter=segment,
        output=output,
        ordered=ordered,
    )
    limits = ReadLimits(threads=2, memory_limit=1_000_000_000, spill_dir=spill, rows_per_slice=rows_per_slice)
    with open_export(EmbeddedWarehouse(root), request, limits) as stream:
        rows = [row for batch in stream for row in batch.to_pylist()]
        assert stream.progress == 1.0
        return rows, len(stream.slices)


def canonical(rows: list[dict], output: str) -> list:
    """Rows in a fixed order, for comparing multisets; JSONL lines parsed (key order kept)."""
    if output == "jsonl":
        return sorted((json.loads(r["line"]) for r in rows), key=lambda o: json.dumps(o, sort_keys=True))
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))


@pytest.mark.parametrize("output", ["csv", "jsonl"])
@pytest.mark.parametrize("scope", [Scope.SESSIONS, Scope.VIEWS])
def test_every_field_sliced_equals_read_whole(warehouse, tmp_path, scope, output):
    fields = every_field(scope)
    whole, whole_reads = read(warehouse, scope, fields, output, rows_per_slice=WHOLE, spill=tmp_path)
    sliced, reads = read(warehouse, scope, fields, output, rows_per_slice=TINY, spill=tmp_path)
    assert whole_reads == 1 and reads > 20
    assert len(whole) > 200
    assert canonical(sliced, output) == canonical(whole, output)


@pytest.mark.parametrize("scope", [Scope.SESSIONS, Scope.VIEWS])
def test_segment_and_device_filter_on_the_sliced_path(warehouse, tmp_path, scope):
    segment = parse_segment_filter(
        {
            "all": [
                {"field": "country_code", "op": "eq", "value": "FR"},
                {"field": "session_number_of_views", "op": "gte", "value": 2},
            ]
        }
    )
    fields = every_field(scope)
    args = dict(segment=segment, device_ids=(1, 2), spill=tmp_path)
    whole, _ = read(warehouse, scope, fields, "csv", rows_per_slice=WHOLE, **args)
    sliced, reads = read(warehouse, scope, fields, "csv", rows_per_slice=TINY, **args)
    assert reads > 10
    everything, _ = read(warehouse, scope, fields, "csv", rows_per_slice=WHOLE, spill=tmp_path)
    assert 0 < len(whole) < len(everything)  # the filters do select
    assert {r["device_id"] for r in whole} <= {1, 2}
    assert canonical(sliced, "csv") == canonical(whole, "csv")


def test_sorted_exports_stay_in_order_across_slices(warehouse, tmp_path):
    fields = [
        FieldSpec("session_time"),
        FieldSpec("user_id_unhashed"),
        FieldSpec("session_number"),
        FieldSpec("session_number_of_views"),
    ]
    whole, _ = read(warehouse, Scope.SESSIONS, fields, "csv", rows_per_slice=WHOLE, ordered=True, spill=tmp_path)
    sliced, reads = read(warehouse, Scope.SESSIONS, fields, "csv", rows_per_slice=TINY, ordered=True, spill=tmp_path)
    assert reads > 10
    assert sliced == whole  # the same rows in the same order
    assert [r["session_time"] for r in sliced] == sorted(r["session_time"] for r in sliced)


def test_the_long_and_the_midnight_sessions_are_whole_in_their_slice(warehouse, tmp_path):
    fields = [
        FieldSpec("user_id_unhashed"),
        FieldSpec("session_number_of_views"),
        FieldSpec("errors.message"),
        FieldSpec("errors.line_number"),
        FieldSpec("custom_var", custom_var_position=1),
        FieldSpec("country_code"),
        FieldSpec("session_duration_msec"),
    ]
    rows, reads = read(warehouse, Scope.SESSIONS, fields, "jsonl", rows_per_slice=TINY, spill=tmp_path)
    assert reads > 20
    by_user = {o["user_id_unhashed"]: o for o in (json.loads(r["line"]) for r in rows)}
    long = by_user["u-long"]
    assert long["session_number_of_views"] == 200
    assert long["errors.message"] == [f"e{n}" for n in range(7, 201, 7)]  # in view order
    assert long["errors.line_number"] == list(range(7, 201, 7))
    assert long["custom_var_1"] == "v150"  # the last value set
    midnight = by_user["u-midnight"]
    assert midnight["session_number_of_views"] == 3 and midnight["country_code"] == "FR"
    assert midnight["session_duration_msec"] == 9 * 60_000 + 1000
    # The midnight session belongs to its first day only.
    day2 = (DAY1 + timedelta(days=1), DAY1 + timedelta(days=2))
    later, _ = read(warehouse, Scope.VIEWS, fields[:1], "csv", rows_per_slice=TINY, window=day2, spill=tmp_path)
    assert "u-midnight" not in {r["user_id_unhashed"] for r in later}


@pytest.mark.parametrize("scope", [Scope.SESSIONS, Scope.VIEWS])
def test_a_window_with_no_data(warehouse, tmp_path, scope):
    empty = (DAY1 - timedelta(days=30), DAY1 - timedelta(days=29))
    rows, reads = read(warehouse, scope, every_field(scope), "csv", rows_per_slice=TINY, window=empty, spill=tmp_path)
    assert rows == [] and reads == 1
