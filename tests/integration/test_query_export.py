"""The extraction query on real Parquet files and real DuckDB: every catalog field, both scopes, all outputs."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataexport.catalog import fields_for
from dataexport.domain.enums import Scope
from dataexport.domain.fieldspec import FieldSpec
from dataexport.query.export_sql import build_export_query
from dataexport.warehouse.embedded.layout import partition_dir, partition_files
from dataexport.warehouse.relations import parquet_source
from dataexport.warehouse.schema import PAGEVIEW_SCHEMA

PROJECT = 7
TZ = "Europe/Paris"
DAY = datetime(2026, 2, 14, tzinfo=UTC)
WINDOW = (DAY, DAY + timedelta(days=1))
EVIL_KEY = "x'); DROP TABLE t; --"


def ts(hh: int, mm: int, ss: int, ms: int = 0, day: int = 14) -> datetime:
    return datetime(2026, 2, day, hh, mm, ss, ms * 1000, tzinfo=UTC)


def pageview(**over) -> dict:
    """A fully populated pageview; tests override what they look at."""
    row = {name: None for name in PAGEVIEW_SCHEMA.names}
    row.update(
        project_id=PROJECT,
        user_id=1001,
        session_id=5001,
        device_id=1,
        city="Paris",
        country_code="FR",
        language="fr",
        browser_name="Chrome",
        browser_version="121.0.6167.160",
        platform_name="Windows",
        platform_version="10",
        os_version="17.2",
        app_version="5.1.0",
        model="iPhone15,2",
        manufacturer="Apple",
        density=2.5,
        screen_height=1080,
        screen_width=1920,
        window_height=937,
        window_width=1903,
        document_height=4120,
        document_width=1903,
        title="Home",
        screen_name="HomeScreen",
        view_duration_msec=1000,
        page_interaction_time_msec=400,
        scroll_rate=62.5,
        dom_interactive_after_msec=840,
        fully_loaded=2310,
        start_render=650,
        frustration_score=12,
        rage_click_all_targets_ind=1,
        multiple_button_interaction_ind=1,
        any_api_error_ind=1,
        api_error_after_click_ind=1,
        is_excludable=0,
        errors=[],
        custom_vars=[],
        dynamic_vars=[],
        transactions=[],
        transaction_items=[],
        add_to_cart_items=[],
        app_events=[],
        ingested_at=ts(23, 0, 0),
    )
    row.update(over)
    return row


def cv(position, key, value, scope="page"):
    return {"position": position, "key": key, "value": value, "scope": scope}


def dv(key, value):
    if isinstance(value, int):
        return {"key": key, "string_value": None, "number_value": value}
    return {"key": key, "string_value": value, "number_value": None}


SESSION_A = dict(
    user_id_unhashed="u-a", user_id=1001, session_number=1, session_id=5001, session_time=ts(10, 0, 0, 250), device_id=1
)
SESSION_B = dict(
    user_id_unhashed="u-b", user_id=1002, session_number=3, session_id=5003, session_time=ts(23, 59, 30), device_id=4
)

ROWS_DAY1 = [
    # Session A: three views, stored out of order on purpose.
    pageview(
        **SESSION_A,
        view_number=3,
        view_time=ts(10, 2, 0),
        view_duration_msec=5000,
        url="https://shop.example.com/checkout/done?utm_source=a+b&utm_campaign=spring&utm_source=second",
        referer_url="https://shop.example.com/cart",
        title="Done",
        custom_vars=[cv(2, "abtest", "B", "session")],
        dynamic_vars=[dv("AB Test", "C"), dv(EVIL_KEY, "boom")],
        transactions=[
            {"id": "T1", "revenue_cents": 12999, "transaction_time": ts(10, 2, 1)},
            {"id": "T2", "revenue_cents": 1, "transaction_time": ts(10, 2, 3)},
        ],
        transaction_items=[
            {
                "id": "T1",
                "sku": "SKU1",
                "catalog_id": "fr",
                "product_id_hashed": 111,
                "revenue_cents": 12999,
                "quantity": 1,
                "transaction_time": ts(10, 2, 1),
            }
        ],
    ),
    pageview(
        **SESSION_A,
        view_number=1,
        view_time=ts(10, 0, 0, 250),
        view_duration_msec=30000,
        url="https://shop.example.com/home?utm_source=news%20letter&utm_medium=email&x=1#top",
        referer_url="https://www.google.com/",
        city=None,
        custom_vars=[cv(1, "pageType", "home"), cv(2, "abtest", "A", "session")],
        dynamic_vars=[dv("AB Test", "B"), dv("score", 4294967296)],
        app_events=[{"event_name": "app_start", "event_time": ts(10, 0, 1, 5), "event_type": 0}],
    ),
    pageview(
        **SESSION_A,
        view_number=2,
        view_time=ts(10, 1, 0),
        view_duration_msec=20000,
        city="Lyon",
        url="http://shop.example.com/cart",
        referer_url="https://shop.example.com/home",
        custom_vars=[cv(1, "pageType", "cart")],
        errors=[
            {
                "message": "TypeError: x is undefined",
                "error_time": ts(10, 1, 5, 120),
                "filename": "app.js",
                "error_type": "TypeError",
                "line_number": 12,
                "col_number": 5,
            },
            {
                "message": "boom",
                "error_time": ts(10, 1, 6),
                "filename": "lib.js",
                "error_type": "Error",
                "line_number": 1,
                "col_number": 2,
            },
        ],
        add_to_cart_items=[
            {"sku": "SKU1", "catalog_id": "fr", "product_id_hashed": 111, "add_to_cart_time": ts(10, 1, 10)},
            {"sku": "SKU2", "catalog_id": "fr", "product_id_hashed": 222, "add_to_cart_time": ts(10, 1, 20)},
        ],
        app_events=[
            {"event_name": "add_to_cart", "event_time": ts(10, 1, 10), "event_type": 1},
            {"event_name": "hide", "event_time": ts(10, 1, 30), "event_type": 2},
        ],
    ),
    # Session B starts one minute before midnight and crosses it: it belongs to day 1.
    pageview(
        **SESSION_B,
        view_number=1,
        view_time=ts(23, 59, 30),
        referer_url=None,
        country_code="DE",
        city="Berlin",
        browser_version="17",
        url="app://screen/home",
        view_duration_msec=None,
        dom_interactive_after_msec=None,
        is_excludable=1,
    ),
    pageview(
        **SESSION_B,
        view_number=2,
        view_time=ts(0, 0, 10, day=15),
        view_duration_msec=2500,
        referer_url="app://screen/home",
        country_code="DE",
        city="Berlin",
        url="app://screen/cart?utm_term=x&utm_content=top%2Bbanner",
    ),
    # Another project in the same file: never exported.
    pageview(
        project_id=8,
        user_id_unhashed="u-other",
        session_number=1,
        session_time=ts(12, 0, 0),
        view_number=1,
        view_time=ts(12, 0, 0),
        url="https://other.example.com/",
    ),
]
# Session C starts exactly at the window end: it belongs to day 2.
ROWS_DAY2 = [
    pageview(
        user_id_unhashed="u-c",
        user_id=1003,
        session_number=1,
        session_id=5101,
        session_time=ts(0, 0, 0, day=15),
        view_number=1,
        view_time=ts(0, 0, 0, day=15),
        url="https://shop.example.com/",
        device_id=3,
    ),
]


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    root = tmp_path_factory.mktemp("warehouse")
    for day, rows in ((date(2026, 2, 14), ROWS_DAY1), (date(2026, 2, 15), ROWS_DAY2)):
        d = partition_dir(root, PROJECT, day)
        d.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=PAGEVIEW_SCHEMA), d / "part-0.parquet")
    return root


@pytest.fixture(scope="module")
def con():
    c = duckdb.connect()
    c.execute("SET TimeZone = 'America/New_York'")  # results must not depend on the session time zone
    yield c
    c.close()


def run(con, root, scope, specs, *, output="typed", window=WINDOW, device_ids=None, segment=None, files=None):
    if files is None:
        files = partition_files(root, PROJECT, *window)
    q = build_export_query(
        source=parquet_source(files),
        project_id=PROJECT,
        scope=scope,
        fields=specs,
        window_start=window[0],
        window_end=window[1],
        timezone=TZ,
        device_ids=device_ids,
        segment_filter=segment,
        output=output,
    )
    assert q.sql.count("?") >= len(q.params)
    table = con.sql(q.sql, params=q.params).to_arrow_table()
    return q, table


def rows(con, root, scope, names, **kw):
    q, table = run(con, root, scope, [FieldSpec(n) for n in names], **kw)
    assert table.column_names == names
    return table.to_pylist()


def column(con, root, scope, name, **kw):
    return [r[name] for r in rows(con, root, scope, [name], **kw)]


# ------------------------------------------------------------------ whole catalog, both scopes


def _spec(f) -> FieldSpec:
    if f.name == "custom_var":
        return FieldSpec("custom_var", custom_var_position=1)
    if f.name == "dynamic_var":
        return FieldSpec("dynamic_var", dynamic_var_key="AB Test")
    return FieldSpec(f.name)


@pytest.mark.parametrize("scope", list(Scope))
def test_every_catalog_field_is_computed_with_data_in_all_outputs(con, warehouse, scope):
    specs = [_spec(f) for f in fields_for(scope)]
    expected_rows = 2 if scope is Scope.SESSIONS else 5
    _, typed = run(con, warehouse, scope, specs)
    assert typed.num_rows == expected_rows
    for spec in specs:
        values = typed.column(spec.output_name).to_pylist()
        assert any(v not in (None, []) for v in values), f"{spec.output_name} has no value on {scope}"
    _, as_csv = run(con, warehouse, scope, specs, output="csv")
    assert as_csv.column_names == [s.output_name for s in specs]
    assert as_csv.num_rows == expected_rows
    _, as_jsonl = run(con, warehouse, scope, specs, output="jsonl")
    assert as_jsonl.column_names == ["line"]
    objects = [json.loads(line) for line in as_jsonl.column("line").to_pylist()]
    assert [list(o) for o in objects] == [[s.output_name for s in specs]] * expected_rows


# ------------------------------------------------------------------ sessions: exact values


def test_session_identity_and_time_fields(con, warehouse):
    got = rows(
        con,
        warehouse,
        Scope.SESSIONS,
        [
            "project_id",
            "user_id",
            "user_id_unhashed",
            "session_id",
            "session_number",
            "session_date",
            "session_time",
            "device_id",
        ],
    )
    assert got == [
        {
            "project_id": PROJECT,
            "user_id": 1001,
            "user_id_unhashed": "u-a",
            "session_id": 5001,
            "session_number": 1,
            "session_date": date(2026, 2, 14),
            "session_time": ts(10, 0, 0),
            "device_id": 1,
        },
        # 23:59:30 UTC is already the 15th in Paris.
        {
            "project_id": PROJECT,
            "user_id": 1002,
            "user_id_unhashed": "u-b",
            "session_id": 5003,
            "session_number": 3,
            "session_date": date(2026, 2, 15),
            "session_time": ts(23, 59, 30),
            "device_id": 4,
        },
    ]


def test_session_aggregates(con, warehouse):
    got = rows(
        con,
        warehouse,
        Scope.SESSIONS,
        [
            "session_number_of_views",
            "session_duration_msec",
            "session_number_of_transactions",
            "session_transactions_revenue_cents",
            "is_excludable",
            "referer_url",
            "city",
            "browser_major_version",
        ],
    )
    a, b = got
    # A: last-ending view is view 3 (10:02:00 + 5 s); start 10:00:00.250.
    assert a == {
        "session_number_of_views": 3,
        "session_duration_msec": 124_750,
        "session_number_of_transactions": 2,
        "session_transactions_revenue_cents": 13_000,
        "is_excludable": 0,
        "referer_url": "https://www.google.com/",
        "city": "Lyon",
        "browser_major_version": 121,
    }
    # B: the first view's referrer is NULL (direct entry) and stays NULL; view 2 ends at 00:00:12.5.
    assert b == {
        "session_number_of_views": 2,
        "session_duration_msec": 42_500,
        "session_number_of_transactions": 0,
        "session_transactions_revenue_cents": 0,
        "is_excludable": 1,
        "referer_url": None,
        "city": "Berlin",
        "browser_major_version": 17,
    }


def test_session_arrays_are_parallel_and_in_view_order(con, warehouse):
    names = [
        "app_events.event_name",
        "app_events.event_time",
        "app_events.event_type",
        "app_events.view_number",
        "session_transaction_items.id",
        "session_transaction_items.sku",
        "session_transaction_items.catalog_id",
        "session_transaction_items.product_id_hashed",
        "session_transaction_items.revenue_cents",
        "session_transaction_items.quantity",
        "session_transaction_items.transaction_time",
        "session_transaction_items.transaction_view_number",
        "session_add_to_cart_items.sku",
        "session_add_to_cart_items.catalog_id",
        "session_add_to_cart_items.product_id_hashed",
        "session_add_to_cart_items.is_in_transaction",
        "session_add_to_cart_items.add_to_cart_time",
        "session_add_to_cart_items.add_to_cart_view_number",
        "errors.message",
        "errors.line_number",
    ]
    a = rows(con, warehouse, Scope.SESSIONS, names)[0]
    assert a["app_events.event_name"] == ["app_start", "add_to_cart", "hide"]
    assert a["app_events.event_time"] == [ts(10, 0, 1, 5), ts(10, 1, 10), ts(10, 1, 30)]
    assert a["app_events.event_type"] == [0, 1, 2]
    assert a["app_events.view_number"] == [1, 2, 2]
    assert a["session_transaction_items.id"] == ["T1"]
    assert a["session_transaction_items.sku"] == ["SKU1"]
    assert a["session_transaction_items.catalog_id"] == ["fr"]
    assert a["session_transaction_items.product_id_hashed"] == [111]
    assert a["session_transaction_items.revenue_cents"] == [12999]
    assert a["session_transaction_items.quantity"] == [1]
    assert a["session_transaction_items.transaction_time"] == [ts(10, 2, 1)]
    assert a["session_transaction_items.transaction_view_number"] == [3]
    assert a["session_add_to_cart_items.sku"] == ["SKU1", "SKU2"]
    assert a["session_add_to_cart_items.catalog_id"] == ["fr", "fr"]
    assert a["session_add_to_cart_items.product_id_hashed"] == [111, 222]
    assert a["session_add_to_cart_items.is_in_transaction"] == [1, 0]
    assert a["session_add_to_cart_items.add_to_cart_time"] == [ts(10, 1, 10), ts(10, 1, 20)]
    assert a["session_add_to_cart_items.add_to_cart_view_number"] == [2, 2]
    assert a["errors.message"] == ["TypeError: x is undefined", "boom"]
    assert a["errors.line_number"] == [12, 1]


def test_session_variables(con, warehouse):
    specs = [
        FieldSpec("custom_var", custom_var_position=1),
        FieldSpec("custom_var", custom_var_position=2),
        FieldSpec("custom_var", custom_var_position=9),
        FieldSpec("dynamic_var", dynamic_var_key="AB Test"),
        FieldSpec("dynamic_var", dynamic_var_key="score"),
        FieldSpec("dynamic_var", dynamic_var_key=EVIL_KEY),
    ]
    _, typed = run(con, warehouse, Scope.SESSIONS, specs)
    a = typed.to_pylist()[0]
    # Last value set in the session, in view order (view 3 is stored first in the file).
    assert a == {
        "custom_var_1": "cart",
        "custom_var_2": "B",
        "custom_var_9": None,
        "dynamic_var_AB Test": "C",
        "dynamic_var_score": "4294967296",
        f"dynamic_var_{EVIL_KEY}": "boom",
    }
    _, lines = run(con, warehouse, Scope.SESSIONS, specs, output="jsonl")
    first = json.loads(lines.column("line")[0].as_py())
    assert first["dynamic_var_score"] == 4294967296  # numbers stay numbers
    assert first["custom_var_9"] is None
    assert first[f"dynamic_var_{EVIL_KEY}"] == "boom"


# ------------------------------------------------------------------ views: exact values


def test_view_rows_order_and_session_columns(con, warehouse):
    got = rows(
        con,
        warehouse,
        Scope.VIEWS,
        [
            "user_id_unhashed",
            "view_number",
            "is_first",
            "is_last",
            "session_number_of_views",
            "session_duration_msec",
            "referer_url",
            "session_transactions_revenue_cents",
            "is_excludable",
            "city",
        ],
    )
    assert [(r["user_id_unhashed"], r["view_number"], r["is_first"], r["is_last"]) for r in got] == [
        ("u-a", 1, 1, 0),
        ("u-a", 2, 0, 0),
        ("u-a", 3, 0, 1),
        ("u-b", 1, 1, 0),
        ("u-b", 2, 0, 1),
    ]
    assert [r["session_number_of_views"] for r in got] == [3, 3, 3, 2, 2]
    assert [r["session_duration_msec"] for r in got] == [124_750] * 3 + [42_500] * 2
    assert [r["referer_url"] for r in got] == ["https://www.google.com/"] * 3 + [None] * 2
    assert [r["session_transactions_revenue_cents"] for r in got] == [13_000] * 3 + [0] * 2
    assert [r["is_excludable"] for r in got] == [0, 0, 0, 1, 1]
    assert [r["city"] for r in got] == [None, "Lyon", "Paris", "Berlin", "Berlin"]  # the view's own


def test_view_url_parts_and_utm(con, warehouse):
    names = [
        "url_no_query_param",
        "scheme",
        "prefix",
        "path",
        "query",
        "hash",
        "utm_source",
        "utm_medium",
        "utm_campaign",
        "utm_content",
        "utm_term",
    ]
    got = rows(con, warehouse, Scope.VIEWS, names)
    assert got[0] == {
        "url_no_query_param": "https://shop.example.com/home",
        "scheme": "https",
        "prefix": "https://shop.example.com",
        "path": "/home",
        "query": "utm_source=news%20letter&utm_medium=email&x=1",
        "hash": "top",
        "utm_source": "news letter",
        "utm_medium": "email",
        "utm_campaign": None,
        "utm_content": None,
        "utm_term": None,
    }
    assert got[1] == {
        "url_no_query_param": "http://shop.example.com/cart",
        "scheme": "http",
        "prefix": "http://shop.example.com",
        "path": "/cart",
        "query": "",
        "hash": "",
        "utm_source": None,
        "utm_medium": None,
        "utm_campaign": None,
        "utm_content": None,
        "utm_term": None,
    }
    # '+' decodes to a space; the first utm_source wins.
    assert got[2]["utm_source"] == "a b"
    assert got[2]["utm_campaign"] == "spring"
    assert got[4]["utm_term"] == "x"
    assert got[4]["utm_content"] == "top+banner"
    assert got[4]["scheme"] == "app"


def test_view_errors_events_and_indicators(con, warehouse):
    names = [
        "errors.message",
        "errors.error_time",
        "errors.filename",
        "errors.error_type",
        "errors.line_number",
        "errors.col_number",
        "any_js_error_ind",
        "app_events.event_name",
        "app_events.view_number",
    ]
    got = rows(con, warehouse, Scope.VIEWS, names)
    assert got[1] == {
        "errors.message": ["TypeError: x is undefined", "boom"],
        "errors.error_time": [ts(10, 1, 5, 120), ts(10, 1, 6)],
        "errors.filename": ["app.js", "lib.js"],
        "errors.error_type": ["TypeError", "Error"],
        "errors.line_number": [12, 1],
        "errors.col_number": [5, 2],
        "any_js_error_ind": 1,
        "app_events.event_name": ["add_to_cart", "hide"],
        "app_events.view_number": [2, 2],
    }
    assert got[0]["any_js_error_ind"] == 0
    assert got[0]["errors.message"] == []


def test_view_custom_vars_fall_back_to_the_session_scoped_value(con, warehouse):
    specs = [
        FieldSpec("custom_var", custom_var_position=1),
        FieldSpec("custom_var", custom_var_position=2),
        FieldSpec("dynamic_var", dynamic_var_key="AB Test"),
    ]
    _, typed = run(con, warehouse, Scope.VIEWS, specs)
    got = [tuple(r.values()) for r in typed.to_pylist()][:3]
    # Position 1 is page-scoped (view 3 has none). Position 2 is session-scoped, A on view 1 and B on view 3:
    # view 1 keeps its own A, view 2 (none of its own) carries the session's last one, B.
    assert got == [("home", "A", "B"), ("cart", "B", None), (None, "B", "C")]


# ------------------------------------------------------------------ output formats


def test_csv_output_is_preformatted(con, warehouse):
    names = [
        "session_time",
        "session_date",
        "view_time",
        "errors.message",
        "errors.error_time",
        "scroll_rate",
        "view_number",
        "dom_interactive_after_msec",
    ]
    q, table = run(con, warehouse, Scope.VIEWS, [FieldSpec(n) for n in names], output="csv")
    got = table.to_pylist()
    assert got[0]["session_time"] == "2026-02-14T10:00:00.000Z"
    assert got[0]["session_date"] == "2026-02-14"
    assert got[0]["view_time"] == "2026-02-14T10:00:00.250Z"
    assert got[1]["errors.message"] == '["TypeError: x is undefined","boom"]'
    assert got[1]["errors.error_time"] == '["2026-02-14T10:01:05.120Z","2026-02-14T10:01:06.000Z"]'
    assert got[0]["scroll_rate"] == 62.5
    assert got[0]["view_number"] == 1  # numbers stay numbers
    assert got[3]["dom_interactive_after_msec"] is None  # the writer makes it an empty cell
    assert got[3]["session_date"] == "2026-02-15"
    buf = io.StringIO()
    csv.writer(buf).writerows([[c for c in q.columns]] + [[r[c] for c in q.columns] for r in got])
    assert buf.getvalue().splitlines()[0] == ",".join(names)


def test_jsonl_output_objects(con, warehouse):
    names = [
        "session_time",
        "session_date",
        "errors.error_time",
        "errors.line_number",
        "density",
        "title",
        "dom_interactive_after_msec",
    ]
    q, table = run(con, warehouse, Scope.VIEWS, [FieldSpec(n) for n in names], output="jsonl")
    assert q.columns == names
    objects = [json.loads(line) for line in table.column("line").to_pylist()]
    assert objects[1] == {
        "session_time": "2026-02-14T10:00:00.000Z",
        "session_date": "2026-02-14",
        "errors.error_time": ["2026-02-14T10:01:05.120Z", "2026-02-14T10:01:06.000Z"],
        "errors.line_number": [12, 1],
        "density": 2.5,
        "title": "Home",
        "dom_interactive_after_msec": 840,
    }
    assert objects[3]["dom_interactive_after_msec"] is None


def test_float_text_is_the_shortest_form(con, warehouse, tmp_path):
    d = partition_dir(tmp_path, PROJECT, date(2026, 2, 14))
    d.mkdir(parents=True)
    row = pageview(
        user_id_unhashed="f",
        session_number=1,
        session_time=ts(9, 0, 0),
        view_number=1,
        view_time=ts(9, 0, 0),
        url="https://x/",
        scroll_rate=0.1,
    )
    pq.write_table(pa.Table.from_pylist([row], schema=PAGEVIEW_SCHEMA), d / "p.parquet")
    _, table = run(con, tmp_path, Scope.VIEWS, [FieldSpec("scroll_rate")], output="jsonl")
    assert table.column("line").to_pylist() == ['{"scroll_rate":0.1}\n']


# ------------------------------------------------------------------ aliases, windows, devices


def test_aliases_are_output_verbatim(con, warehouse):
    aliases = ['a "quoted" name', "été 📈", "x); DROP TABLE t; --", "session_time", "view_number"]
    specs = [
        FieldSpec("url", alias_name=aliases[0]),
        FieldSpec("city", alias_name=aliases[1]),
        FieldSpec("title", alias_name=aliases[2]),
        FieldSpec("url", alias_name=aliases[3]),
        FieldSpec("session_time", alias_name=aliases[4]),
    ]
    _, typed = run(con, warehouse, Scope.VIEWS, specs)
    assert typed.column_names == aliases
    first = typed.to_pylist()[0]
    # An alias named like another column neither captures nor reorders it.
    assert first["session_time"].startswith("https://shop.example.com/home")
    assert first["view_number"] == ts(10, 0, 0)
    _, as_csv = run(con, warehouse, Scope.VIEWS, specs, output="csv")
    assert as_csv.column_names == aliases
    _, lines = run(con, warehouse, Scope.VIEWS, specs, output="jsonl")
    assert list(json.loads(lines.column("line")[0].as_py())) == aliases


def test_window_end_is_exclusive_and_sessions_keep_their_day(con, warehouse):
    day2 = (WINDOW[1], WINDOW[1] + timedelta(days=1))
    assert column(con, warehouse, Scope.SESSIONS, "user_id_unhashed") == ["u-a", "u-b"]
    assert column(con, warehouse, Scope.SESSIONS, "user_id_unhashed", window=day2) == ["u-c"]
    # Session B's view after midnight is exported with day 1, never with day 2.
    assert column(con, warehouse, Scope.VIEWS, "user_id_unhashed", window=day2) == ["u-c"]
    one_hour = (ts(10, 0, 0, 250), ts(23, 59, 30))  # A starts exactly at the start, B exactly at the end
    assert column(con, warehouse, Scope.SESSIONS, "user_id_unhashed", window=one_hour) == ["u-a"]


def test_views_and_sessions_agree(con, warehouse):
    for window in (WINDOW, (WINDOW[1], WINDOW[1] + timedelta(days=1)), (DAY - timedelta(days=1), DAY + timedelta(2))):
        views = column(con, warehouse, Scope.VIEWS, "view_number", window=window)
        per_session = column(con, warehouse, Scope.SESSIONS, "session_number_of_views", window=window)
        assert sum(per_session) == len(views) > 0


def test_device_filter(con, warehouse):
    assert column(con, warehouse, Scope.SESSIONS, "device_id", device_ids=(2, 4)) == [4]
    assert column(con, warehouse, Scope.VIEWS, "device_id", device_ids=(1,)) == [1, 1, 1]
    assert column(con, warehouse, Scope.VIEWS, "device_id", device_ids=()) == []


@pytest.mark.parametrize("output", ["typed", "csv", "jsonl"])
@pytest.mark.parametrize("scope", list(Scope))
def test_no_files_yields_zero_rows_with_the_columns(con, scope, output):
    specs = [_spec(f) for f in fields_for(scope)]
    _, table = run(con, None, scope, specs, output=output, files=[])
    assert table.num_rows == 0
    assert table.column_names == (["line"] if output == "jsonl" else [s.output_name for s in specs])


def test_evil_dynamic_key_is_data_and_table_survives(con, warehouse):
    con.execute("CREATE TABLE IF NOT EXISTS t AS SELECT 1 AS x")
    spec = FieldSpec("dynamic_var", dynamic_var_key=EVIL_KEY, alias_name=EVIL_KEY)
    _, table = run(con, warehouse, Scope.VIEWS, [spec])
    assert table.column(EVIL_KEY).to_pylist() == [None, None, "boom", None, None]
    assert con.execute("SELECT x FROM t").fetchall() == [(1,)]
