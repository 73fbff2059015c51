"""Helpers of the warehouse contract suite (tests/integration/test_warehouse_contract.py): opening each backend
through `open_warehouse` on real parts, building pageview tables, and reading a warehouse back through nothing
but the `Warehouse` protocol."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from dataexport.catalog import fields_for
from dataexport.config import Settings
from dataexport.domain.enums import Scope
from dataexport.domain.fieldspec import FieldSpec
from dataexport.ingest.hits import session_id_of, user_id_of
from dataexport.query.export_read import ExportRequest, open_export
from dataexport.warehouse.backend import ReadLimits, Warehouse, open_warehouse
from dataexport.warehouse.schema import NATURAL_KEY, PAGEVIEW_SCHEMA
from support import S3Server

BACKENDS = ("embedded", "ducklake", "ducklake-s3")
TESTS = Path(__file__).resolve().parent
MS = timedelta(milliseconds=1)


# ---------------------------------------------------------------- opening a backend


@dataclass(frozen=True)
class Lake:
    """Where the DuckLake variants of one test module keep their catalogs and files: one PostgreSQL database
    (each warehouse in a schema of its own) and, for S3, one bucket (each warehouse under a prefix of its own).
    Separate prefixes matter: a lake's orphaned-file cleanup would delete another lake's files in a shared one."""

    catalog_url: str
    s3: S3Server | None = None
    bucket: str | None = None


def open_backend(kind: str, data_dir: Path, lake: Lake | None = None) -> Warehouse:
    """A fresh, empty warehouse of `kind` (one of BACKENDS), opened the way the application opens one."""
    if kind == "embedded":
        return open_warehouse(Settings(warehouse="embedded", data_dir=data_dir))
    if kind not in BACKENDS or lake is None:
        raise ValueError(f"unknown backend {kind!r}, or no Lake given for it")
    own = uuid.uuid4().hex[:10]
    settings = dict(
        warehouse="ducklake",
        data_dir=data_dir,
        lake_catalog_url=lake.catalog_url,
        lake_schema=f"lake_{own}",
        lake_data_path=str(data_dir / "lake"),
    )
    if kind == "ducklake-s3":
        if lake.s3 is None or lake.bucket is None:
            raise ValueError("ducklake-s3 needs a Lake with an S3 server and a bucket")
        settings |= dict(
            lake_data_path=f"s3://{lake.bucket}/{own}/lake/",
            s3_endpoint_url=lake.s3.endpoint_url,
            s3_region=lake.s3.region,
            s3_access_key_id=lake.s3.access_key_id,
            s3_secret_access_key=lake.s3.secret_access_key,
        )
    return open_warehouse(Settings(**settings))


def read_limits(spill_dir: Path, rows_per_slice: int | None = None) -> ReadLimits:
    """Small limits: one thread (the machine is shared), room enough for these small data sets."""
    return ReadLimits(threads=1, memory_limit=500_000_000, spill_dir=spill_dir, rows_per_slice=rows_per_slice)


# ---------------------------------------------------------------- building pageviews


def at(day: date, hours: float = 12) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(hours=hours)


def pageview(user: str, session_number: int, view_number: int, session_time: datetime, **columns) -> dict:
    """A stored row (every PAGEVIEW_SCHEMA column, the unset ones null): ids derived as ingest derives them, the
    view `view_number` seconds into its session."""
    row = dict.fromkeys(PAGEVIEW_SCHEMA.names)
    row.update(
        user_id_unhashed=user,
        user_id=user_id_of(user),
        session_number=session_number,
        session_id=session_id_of(user, session_number),
        session_time=session_time,
        view_number=view_number,
        view_time=session_time + timedelta(seconds=view_number),
        device_id=1,
        url=f"https://shop.example/{user}/{session_number}/{view_number}",
        errors=[],
        custom_vars=[],
        dynamic_vars=[],
        transactions=[],
        transaction_items=[],
        add_to_cart_items=[],
        app_events=[],
    )
    row.update(columns)
    return row


def views_on(days: list[date], users: int = 3, views: int = 2, prefix: str = "u") -> list[dict]:
    """`users` sessions of `views` pageviews on each day (user names carry the day, so keys never collide)."""
    return [
        pageview(f"{prefix}-{day}-{u}", 1, v, at(day, 8 + u))
        for day in days
        for u in range(users)
        for v in range(1, views + 1)
    ]


def every_column_rows(day: date) -> list[dict]:
    """Rows with every column set, at the edges of their types, a row of nulls and one of empty lists, on `day`,
    and a plain row on the next day: what a backend must store and give back unchanged."""
    start = at(day, 23.5)  # a session crossing midnight: its second view is on the next UTC day
    later = datetime(2099, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC)
    full = pageview(
        "visitor 'one' \"quoted\" é 🛒",
        65535,
        1,
        start,
        user_id=2**64 - 1,
        session_id=2**63 + 12345,
        view_time=start + timedelta(milliseconds=1),
        device_id=-128,
        city="Zürich",
        country_code="CH",
        language="de-CH",
        browser_name="Chrome",
        browser_version="120.0.6099.224",
        platform_name="Android",
        platform_version="14",
        os_version="14.1",
        app_version="3.2.1",
        model="Pixel 8",
        manufacturer="Google",
        density=2.625,
        screen_height=65535,
        screen_width=1080,
        window_height=2200,
        window_width=1080,
        document_height=4294967295,
        document_width=1080,
        referer_url="https://www.google.com/search?q=a%20b&x=1",
        url="https://shop.example/p/1?utm_source=x&line=a\nb\tc",
        title="Ünïcødé, \"quotes\", commas; and 'apostrophes'",
        screen_name="ProductScreen",
        view_duration_msec=4294967295,
        page_interaction_time_msec=2000,
        scroll_rate=42.5,
        dom_interactive_after_msec=800,
        fully_loaded=1500,
        start_render=0,
        frustration_score=255,
        rage_click_all_targets_ind=1,
        multiple_button_interaction_ind=0,
        any_api_error_ind=1,
        api_error_after_click_ind=0,
        is_excludable=1,
        errors=[
            {
                "message": "TypeError: x is undefined",
                "error_time": later,
                "filename": "app.js",
                "error_type": "js",
                "line_number": 4294967295,
                "col_number": 0,
            },
            {
                "message": None,
                "error_time": None,
                "filename": None,
                "error_type": None,
                "line_number": None,
                "col_number": None,
            },
        ],
        custom_vars=[
            {"position": 1, "key": "Goal achieved", "value": "true", "scope": "session"},
            {"position": 255, "key": "pageType", "value": None, "scope": "page"},
        ],
        dynamic_vars=[
            {"key": "AB Test", "string_value": "B", "number_value": None},
            {"key": "cart_value", "string_value": None, "number_value": 4294967296},
            {"key": "negative", "string_value": None, "number_value": -(2**63)},
        ],
        transactions=[{"id": "T1", "revenue_cents": 2**64 - 1, "transaction_time": start}],
        transaction_items=[
            {
                "id": "T1",
                "sku": "SKU-1",
                "catalog_id": "C",
                "product_id_hashed": 2**64 - 1,
                "revenue_cents": 12999,
                "quantity": 4294967295,
                "transaction_time": start,
            }
        ],
        add_to_cart_items=[{"sku": "SKU-1", "catalog_id": "C", "product_id_hashed": 0, "add_to_cart_time": start + MS}],
        app_events=[{"event_name": "app_start", "event_time": start, "event_type": 255}],
    )
    next_view = dict(full, view_number=2, view_time=start + timedelta(hours=1), url="https://shop.example/next")
    nulls = {name: None for name in PAGEVIEW_SCHEMA.names}  # every column null, natural key aside
    nulls.update(user_id_unhashed="visitor-nulls", session_number=1, view_number=1, session_time=at(day, 1))
    empty = pageview("visitor-empty", 0, 0, at(day, 2), user_id=0, session_id=0, device_id=0, density=0.0)
    next_day = pageview("visitor-next-day", 1, 1, at(day + timedelta(days=1), 3))
    return [full, next_view, nulls, empty, next_day]


def table_of(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=PAGEVIEW_SCHEMA)


# ---------------------------------------------------------------- reading back, through the protocol only


def key_of(row: dict) -> tuple:
    return tuple(row[name] for name in NATURAL_KEY)


def in_key_order(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: (key_of(r), json.dumps(r, sort_keys=True, default=str)))


def scanned(warehouse: Warehouse, project_id: int) -> list[dict]:
    """Every stored row of the project, by `days` and `scan`, in natural-key order."""
    rows = []
    for day in warehouse.days(project_id):
        for batch in warehouse.scan(project_id, day):
            rows.extend(batch.to_pylist())
    return in_key_order(rows)


def relation_rows(
    warehouse: Warehouse, project_id: int, start: datetime, end: datetime, limits: ReadLimits
) -> list[dict]:
    """The project's rows of sessions started in [start, end), read by `read` and its relation, as stored types."""
    with warehouse.read(project_id, start, end, limits) as source:
        return in_key_order(select_window(source, source.days, project_id, start, end).to_pylist())


def select_window(source, days: list[date], project_id: int, start: datetime, end: datetime) -> pa.Table:
    """The rows of the source's relation for `days`, filtered as callers filter it (by project and session_time)."""
    relation = source.relation(days)
    sql = f"SELECT * FROM {relation.text} WHERE project_id = ? AND session_time >= ? AND session_time < ?"
    table = source.conn.execute(sql, [*relation.params, project_id, start, end]).to_arrow_table()
    return table.cast(PAGEVIEW_SCHEMA)  # DuckDB gives microsecond timestamps back: the stored values, wider


def count_window(source, days: list[date], project_id: int, start: datetime, end: datetime) -> int:
    relation = source.relation(days)
    sql = f"SELECT count(*) FROM {relation.text} WHERE project_id = ? AND session_time >= ? AND session_time < ?"
    return source.conn.execute(sql, [*relation.params, project_id, start, end]).fetchone()[0]


# ---------------------------------------------------------------- exports


# Parameterised fields and an alias, on top of the catalog's plain fields.
EXTRA_FIELDS = [
    FieldSpec("custom_var", custom_var_position=1),
    FieldSpec("custom_var", custom_var_position=3),
    FieldSpec("dynamic_var", dynamic_var_key="AB Test"),
    FieldSpec("dynamic_var", dynamic_var_key="cart_value"),
    FieldSpec("user_id_unhashed", alias_name='visitor, "quoted"'),
]


def every_field(scope: Scope) -> list[FieldSpec]:
    names = [f.name for f in fields_for(scope) if not f.parameters and f.name != "user_id_unhashed"]
    return [FieldSpec(n) for n in names] + EXTRA_FIELDS


def export_rows(
    warehouse: Warehouse, project_id: int, scope: Scope, window: tuple[datetime, datetime], limits: ReadLimits
) -> tuple[list[dict], int]:
    """Every field of the scope's export of the window (JSONL lines, parsed), in a fixed order; how many slices."""
    request = ExportRequest(
        project_id=project_id,
        scope=scope,
        fields=every_field(scope),
        window_start=window[0],
        window_end=window[1],
        timezone="Europe/Paris",
        device_ids=None,
        segment_filter=None,
        output="jsonl",
    )
    with open_export(warehouse, request, limits) as stream:
        lines = [json.loads(row["line"]) for batch in stream for row in batch.to_pylist()]
        assert stream.progress == 1.0
        return sorted(lines, key=lambda o: json.dumps(o, sort_keys=True)), len(stream.slices)


# ---------------------------------------------------------------- another process


def in_child(function: str, *args: object) -> object:
    """`function` of this module called in a new Python process (arguments and result pickled through its
    stdin and stdout), which then ends at once, without closing anything: as a worker killed right after."""
    code = "import warehouse_backends; warehouse_backends.child_main()"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), str(TESTS.parent / "src")]))
    done = subprocess.run(
        [sys.executable, "-c", code], input=pickle.dumps((function, args)), capture_output=True, env=env, timeout=120
    )
    if done.returncode != 0:
        raise AssertionError(f"{function} failed in the child ({done.returncode}): {done.stderr.decode()[-3000:]}")
    return pickle.loads(done.stdout)


def child_main() -> None:
    function, args = pickle.loads(sys.stdin.buffer.read())
    result = globals()[function](*args)
    sys.stdout.buffer.write(pickle.dumps(result))
    sys.stdout.flush()
    os._exit(0)  # no close, no atexit: whatever the call left behind is what a killed process leaves


def append_in_child(spec, project_id: int, rows: list[dict], batch_key: str, now: datetime):
    return spec.open().append(project_id, rows, batch_key=batch_key, now=now)


def prepare_in_child(stager, project_id: int, rows: list[dict], batch_key: str, now: datetime):
    return stager.prepare(project_id, table_of(rows), batch_key=batch_key, now=now)
