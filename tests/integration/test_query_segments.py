"""Segment filters evaluated by DuckDB over real Parquet files, through the export query."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataexport.domain.enums import Scope
from dataexport.domain.fieldspec import FieldSpec
from dataexport.domain.segment_filter import parse_segment_filter
from dataexport.query.export_sql import build_export_query
from dataexport.warehouse.embedded.layout import partition_dir
from dataexport.warehouse.relations import parquet_source
from dataexport.warehouse.schema import PAGEVIEW_SCHEMA

START = datetime(2026, 2, 14, tzinfo=UTC)
EVIL = "x'); DROP TABLE t; --"


def session(user, views, *, country="FR", device=1, city="Paris", custom=None, dynamic=None, revenue=0, minute=0):
    """`views` pageviews; custom/dynamic: {view_number: [...]}, set on that view only."""
    out = []
    t0 = START + timedelta(hours=9, minutes=minute)
    for n in range(1, views + 1):
        row = {name: None for name in PAGEVIEW_SCHEMA.names}
        row.update(
            project_id=7,
            user_id_unhashed=user,
            user_id=int(user[1:]),
            session_number=1,
            session_id=1,
            session_time=t0,
            view_number=n,
            view_time=t0 + timedelta(minutes=n),
            device_id=device,
            country_code=country,
            city=city,
            view_duration_msec=1000,
            is_excludable=0,
            custom_vars=[
                {"position": p, "key": f"k{p}", "value": v, "scope": "page"} for p, v in (custom or {}).get(n, [])
            ],
            dynamic_vars=[
                {
                    "key": k,
                    "string_value": v if isinstance(v, str) else None,
                    "number_value": v if isinstance(v, int) else None,
                }
                for k, v in (dynamic or {}).get(n, [])
            ],
            transactions=[{"id": "T", "revenue_cents": revenue, "transaction_time": t0}] if revenue and n == 1 else [],
        )
        out.append(row)
    return out


ROWS = (
    session("s1", 3, custom={2: [(3, "checkout")]}, dynamic={1: [("AB Test", "B"), (EVIL, "yes")]}, revenue=500)
    + session(
        "s2",
        1,
        country="DE",
        device=2,
        custom={1: [(3, "home")]},
        dynamic={1: [("AB Test", "A"), ("score", 10)]},
        minute=1,
    )
    + session("s3", 4, device=4, city=None, dynamic={3: [("score", 50)]}, minute=2)
    + session("s4", 2, country=None, custom={2: [(3, "checkout step 2")]}, minute=3)
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = partition_dir(tmp_path_factory.mktemp("wh"), 7, date(2026, 2, 14))
    d.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(ROWS, schema=PAGEVIEW_SCHEMA), d / "p.parquet")
    return [str(d / "p.parquet")]


@pytest.fixture(scope="module")
def con():
    c = duckdb.connect()
    yield c
    c.close()


def export(con, files, raw_filter, scope=Scope.SESSIONS, field="user_id_unhashed", device_ids=None):
    q = build_export_query(
        source=parquet_source(files),
        project_id=7,
        scope=scope,
        fields=[FieldSpec(field)],
        window_start=START,
        window_end=START + timedelta(days=1),
        timezone="UTC",
        device_ids=device_ids,
        segment_filter=parse_segment_filter(raw_filter) if raw_filter else None,
        output="typed",
    )
    return con.sql(q.sql, params=q.params).to_arrow_table().column(0).to_pylist()


CASES = [
    ({"field": "country_code", "op": "eq", "value": "FR"}, ["s1", "s3"]),
    ({"field": "country_code", "op": "neq", "value": "FR"}, ["s2", "s4"]),  # unknown country matches neq
    ({"field": "country_code", "op": "in", "value": ["DE", "XX"]}, ["s2"]),
    ({"field": "country_code", "op": "not_in", "value": ["DE"]}, ["s1", "s3", "s4"]),
    ({"field": "country_code", "op": "exists"}, ["s1", "s2", "s3"]),
    ({"field": "city", "op": "exists", "value": False}, ["s3"]),
    ({"field": "city", "op": "contains", "value": "ari"}, ["s1", "s2", "s4"]),
    ({"field": "device_id", "op": "in", "value": [2, 4]}, ["s2", "s3"]),
    ({"field": "session_number_of_views", "op": "gte", "value": 3}, ["s1", "s3"]),
    ({"field": "session_number_of_views", "op": "lt", "value": 2}, ["s2"]),
    ({"field": "session_transactions_revenue_cents", "op": "gt", "value": 0}, ["s1"]),
    ({"field": "session_duration_msec", "op": "lte", "value": 61_000}, ["s2"]),
    ({"customVar": 3, "op": "eq", "value": "checkout"}, ["s1"]),
    ({"customVar": 3, "op": "neq", "value": "checkout"}, ["s2", "s3", "s4"]),
    ({"customVar": 3, "op": "contains", "value": "checkout"}, ["s1", "s4"]),
    ({"customVar": 3, "op": "exists"}, ["s1", "s2", "s4"]),
    ({"customVar": 4, "op": "exists"}, []),
    ({"customVar": 3, "op": "in", "value": ["home", "checkout"]}, ["s1", "s2"]),
    ({"dynamicVar": "AB Test", "op": "eq", "value": "B"}, ["s1"]),
    ({"dynamicVar": "score", "op": "gt", "value": 20}, ["s3"]),
    ({"dynamicVar": "score", "op": "in", "value": [10, 50]}, ["s2", "s3"]),
    ({"dynamicVar": "score", "op": "exists", "value": False}, ["s1", "s4"]),
    ({"dynamicVar": EVIL, "op": "eq", "value": "yes"}, ["s1"]),
    ({"field": "city", "op": "eq", "value": EVIL}, []),
    (
        {
            "all": [
                {"field": "country_code", "op": "eq", "value": "FR"},
                {
                    "any": [
                        {"field": "device_id", "op": "in", "value": [2, 4]},
                        {"customVar": 3, "op": "eq", "value": "checkout"},
                    ]
                },
                {"field": "session_number_of_views", "op": "gte", "value": 3},
            ]
        },
        ["s1", "s3"],
    ),
    (
        {"not": {"any": [{"dynamicVar": "AB Test", "op": "exists"}, {"field": "device_id", "op": "eq", "value": 4}]}},
        ["s4"],
    ),
]


@pytest.mark.parametrize(("raw", "expected"), CASES)
def test_segment_selects_sessions(con, files, raw, expected):
    assert export(con, files, raw) == expected


@pytest.mark.parametrize(("raw", "expected"), CASES)
def test_views_of_segment_sessions(con, files, raw, expected):
    views = export(con, files, raw, scope=Scope.VIEWS)
    assert sorted(set(views)) == expected
    per_session = export(con, files, raw, field="session_number_of_views")
    assert len(views) == sum(per_session)


def test_segment_and_device_filter_combine(con, files):
    assert export(con, files, {"field": "country_code", "op": "eq", "value": "FR"}, device_ids=(1,)) == ["s1"]
    assert export(con, files, None) == ["s1", "s2", "s3", "s4"]
