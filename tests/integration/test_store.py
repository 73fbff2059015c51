"""PageviewStore on real files: round trip through DuckDB, atomicity, idempotence, crashes, concurrency."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from dataexport.ingest.hits import validate_hits
from dataexport.warehouse.embedded.store import PageviewStore
from dataexport.warehouse.schema import PAGEVIEW_SCHEMA, PARTITION_ROOT

SRC = str(Path(__file__).resolve().parents[2] / "src")
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def full_hit(user: str, view: int, session_time: str = "2026-03-01T23:50:00Z") -> dict:
    """A hit with every column of the schema set (nested ones too)."""
    return {
        "user_id_unhashed": user,
        "session_number": 2,
        "session_time": session_time,
        "view_number": view,
        "view_time": 1772409000000 + view * 1000,
        "device_id": 4,
        "city": "Paris",
        "country_code": "FR",
        "language": "fr",
        "browser_name": "Chrome",
        "browser_version": "120.0.1",
        "platform_name": "Android",
        "platform_version": "14",
        "os_version": "14.1",
        "app_version": "3.2.1",
        "model": "Pixel 8",
        "manufacturer": "Google",
        "density": 2.5,
        "screen_height": 2400,
        "screen_width": 1080,
        "window_height": 2200,
        "window_width": 1080,
        "document_height": 5000,
        "document_width": 1080,
        "referer_url": "https://www.google.com/",
        "url": f"https://shop.example/p/{view}?utm_source=x",
        "title": "Product",
        "screen_name": "ProductScreen",
        "view_duration_msec": 12345,
        "page_interaction_time_msec": 2000,
        "scroll_rate": 42.5,
        "dom_interactive_after_msec": 800,
        "fully_loaded": 1500,
        "start_render": 400,
        "frustration_score": 12,
        "rage_click_all_targets_ind": 1,
        "multiple_button_interaction_ind": 0,
        "any_api_error_ind": 1,
        "api_error_after_click_ind": 0,
        "is_excludable": 0,
        "errors": [
            {
                "message": "TypeError: x",
                "error_time": "2026-03-02T00:01:00Z",
                "filename": "app.js",
                "error_type": "js",
                "line_number": 10,
                "col_number": 4,
            }
        ],
        "custom_vars": [
            {"position": 1, "key": "Goal achieved", "value": "true", "scope": "session"},
            {"position": 3, "key": "pageType", "value": "product"},
        ],
        "dynamic_vars": [{"key": "AB Test", "value": "B"}, {"key": "cart_value", "value": 4294967296}],
        "transactions": [{"id": "T1", "revenue_cents": 12999, "transaction_time": 1772409100000}],
        "transaction_items": [
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
        "add_to_cart_items": [
            {"sku": "SKU-1", "catalog_id": "C", "product_id_hashed": 7, "add_to_cart_time": "2026-03-01T23:59:00+01:00"}
        ],
        "app_events": [{"event_name": "app_start", "event_time": 1772409000000, "event_type": 0}],
    }


def read_all(root: Path, project_id: int) -> pa.Table:
    files = sorted(str(p) for p in (root / PARTITION_ROOT / f"project_id={project_id}").glob("*/*.parquet"))
    if not files:
        return PAGEVIEW_SCHEMA.empty_table()
    sql = f"SELECT * FROM read_parquet({files!r}, hive_partitioning = false)"
    return duckdb.connect().sql(sql).to_arrow_table().cast(PAGEVIEW_SCHEMA)


def visible_files(root: Path) -> list[Path]:
    return sorted((root / PARTITION_ROOT).glob("*/*/*.parquet"))


def test_round_trip_every_column_through_duckdb(tmp_path):
    hits = [full_hit("visitor-1", v) for v in range(1, 4)] + [full_hit("visitor-2", 1, "2026-03-01T10:00:00Z")]
    batch = validate_hits(hits)
    assert batch.errors == []
    with PageviewStore(tmp_path) as store:
        stored = store.append(7, batch.rows, now=NOW)
    assert stored.rows == 4 and not stored.duplicate
    expected = [dict(r, project_id=7, ingested_at=NOW) for r in batch.rows]
    expected = pa.Table.from_pylist(expected, schema=PAGEVIEW_SCHEMA).sort_by("view_time").to_pylist()
    got = read_all(tmp_path, 7).sort_by("view_time").to_pylist()
    assert got == expected
    assert got[0]["dynamic_vars"][1] == {"key": "cart_value", "string_value": None, "number_value": 4294967296}
    assert got[0]["add_to_cart_items"][0]["add_to_cart_time"] == datetime(2026, 3, 1, 22, 59, tzinfo=UTC)


def test_partitioned_by_session_day(tmp_path):
    rows = validate_hits([full_hit("a", 1, "2026-03-01T23:50:00Z"), full_hit("b", 1, "2026-02-28T08:00:00Z")]).rows
    rows[0]["view_time"] = 1772409600000 + 60_000  # 2026-03-02T00:01Z: after midnight, same session
    with PageviewStore(tmp_path) as store:
        stored = store.append(3, rows, now=NOW)
    assert stored.partitions == 2
    days = sorted(p.parent.name for p in (tmp_path / PARTITION_ROOT).rglob("*.parquet"))
    assert days == ["session_day=2026-02-28", "session_day=2026-03-01"]


def test_same_batch_twice_is_stored_once(tmp_path):
    rows = validate_hits([full_hit("u", v) for v in range(1, 6)]).rows
    with PageviewStore(tmp_path) as store:
        first = store.append(1, rows, now=NOW)
        second = store.append(1, rows, now=NOW)
    with PageviewStore(tmp_path) as other_process:  # the record survives a restart
        third = other_process.append(1, rows, now=NOW)
        keyed = [other_process.append(1, rows[:2], batch_key="req-42") for _ in range(2)]
    assert not first.duplicate and second.duplicate and third.duplicate
    assert [k.duplicate for k in keyed] == [False, True]
    assert first.batch_id == second.batch_id == third.batch_id
    assert read_all(tmp_path, 1).num_rows == 5 + 2


def test_same_rows_for_another_project_are_another_batch(tmp_path):
    rows = validate_hits([full_hit("u", 1)]).rows
    with PageviewStore(tmp_path) as store:
        assert not store.append(1, rows).duplicate
        assert not store.append(2, rows).duplicate


def _run_child(root: Path, body: str) -> subprocess.CompletedProcess:
    code = textwrap.dedent(body)
    env = dict(os.environ, PYTHONPATH=SRC)
    return subprocess.run([sys.executable, "-c", code, str(root)], env=env, capture_output=True, text=True)


CHILD_PRELUDE = """
import os, sys
from pathlib import Path
sys.path.insert(0, {src!r})
from dataexport.ingest.hits import validate_hits
from dataexport.warehouse.embedded import store as store_module
from dataexport.warehouse.embedded.store import PageviewStore
root = Path(sys.argv[1])
def hit(user, view, day):
    return {{"user_id_unhashed": user, "session_number": 1, "session_time": f"2026-03-{{day:02d}}T10:00:00Z",
            "view_number": view, "view_time": f"2026-03-{{day:02d}}T10:00:00Z", "device_id": 1, "url": "https://x/"}}
rows = validate_hits([hit("u", v, 1 + v % 3) for v in range(1, 31)]).rows
"""


def test_crash_before_commit_leaves_nothing_and_is_cleaned_up(tmp_path):
    child = _run_child(
        tmp_path,
        CHILD_PRELUDE.format(src=SRC)
        + """
store = PageviewStore(root)
store_module.PageviewStore._log_commit = lambda *a: os._exit(9)   # die at the commit point
store.append(1, rows)
""",
    )
    assert child.returncode == 9, child.stderr
    staged = list((tmp_path / "_store" / "staging").glob("*/*.parquet"))
    assert len(staged) == 3  # three session days were staged...
    assert visible_files(tmp_path) == []  # ...and none is visible
    with PageviewStore(tmp_path):
        assert list((tmp_path / "_store" / "staging").glob("*/*.parquet")) == []


def test_crash_after_commit_point_is_rolled_forward(tmp_path):
    child = _run_child(
        tmp_path,
        CHILD_PRELUDE.format(src=SRC)
        + """
store = PageviewStore(root)
store_module.PageviewStore._move_into_place = lambda *a, **k: os._exit(9)   # die right after committing
store.append(1, rows)
""",
    )
    assert child.returncode == 9, child.stderr
    assert visible_files(tmp_path) == []
    with PageviewStore(tmp_path) as store:  # recovery finishes the batch, whole
        assert len(visible_files(tmp_path)) == 3
        assert read_all(tmp_path, 1).num_rows == 30
        same_rows = validate_hits(
            [
                {
                    "user_id_unhashed": "u",
                    "session_number": 1,
                    "session_time": f"2026-03-{1 + v % 3:02d}T10:00:00Z",
                    "view_number": v,
                    "view_time": f"2026-03-{1 + v % 3:02d}T10:00:00Z",
                    "device_id": 1,
                    "url": "https://x/",
                }
                for v in range(1, 31)
            ]
        ).rows
        assert store.append(1, same_rows).duplicate  # the client's retry is recognised
        assert read_all(tmp_path, 1).num_rows == 30
    assert list((tmp_path / "_store" / "staging").glob("*/*.parquet")) == []


def test_a_torn_commit_line_of_a_dead_writer_is_dropped(tmp_path):
    rows = validate_hits([full_hit("u", v) for v in range(1, 3)]).rows
    with PageviewStore(tmp_path) as store:
        first = store.append(1, rows)
        log = tmp_path / "_store" / "batches" / "project_id=1" / f"{datetime.now(UTC).date().isoformat()}.log"
        with open(log, "ab") as f:
            f.write(b'deadbeef\t[["_store/sta')  # a writer killed in the middle of its line
        second = store.append(1, validate_hits([full_hit("v", 1)]).rows)
        assert log.read_bytes().count(b"\n") == 2 and b"deadbeef" not in log.read_bytes()
    with PageviewStore(tmp_path) as reopened:
        assert reopened.append(1, rows).duplicate
        assert reopened.append(1, validate_hits([full_hit("v", 1)]).rows).batch_id == second.batch_id
    assert first.batch_id != second.batch_id
    assert read_all(tmp_path, 1).num_rows == 3


CRASH_CHILD = (
    CHILD_PRELUDE
    + """
store = PageviewStore(root)
for b in range(10_000):   # a client that retries every batch from the start after each crash
    batch = validate_hits([hit(f"user-{{b}}", v, 1 + (b + v) % 2) for v in range(1, 21)]).rows
    store.append(1, batch)
    print(b, flush=True)
"""
)


@pytest.mark.parametrize("round_", range(3))
def test_kill_9_at_random_moments_loses_and_duplicates_nothing(tmp_path, round_):
    rng = random.Random(round_)
    acknowledged: set[int] = set()
    for _ in range(2):
        child = subprocess.Popen(
            [sys.executable, "-c", CRASH_CHILD.format(src=SRC), str(tmp_path)],
            stdout=subprocess.PIPE,
            text=True,
            env=dict(os.environ, PYTHONPATH=SRC),
        )
        first = child.stdout.readline()  # wait for the child's first acknowledgement, whatever the load
        time.sleep(rng.uniform(0.0, 0.4))  # then kill it at a random moment of its work
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate()
        acknowledged.update(int(line) for line in (first + out).split())
    assert acknowledged, "the child acknowledged no batch before being killed"
    with PageviewStore(tmp_path):
        table = read_all(tmp_path, 1)
    keys = list(zip(table.column("user_id_unhashed").to_pylist(), table.column("view_number").to_pylist(), strict=True))
    assert len(keys) == len(set(keys)), "a pageview is stored twice"
    users = {u for u, _ in keys}
    for b in acknowledged:
        assert f"user-{b}" in users
    per_user: dict[str, int] = {}
    for u, _ in keys:
        per_user[u] = per_user.get(u, 0) + 1
    assert set(per_user.values()) == {20}, "a batch is stored in part"


APPENDER = (
    CHILD_PRELUDE
    + """
name = sys.argv[2]
store = PageviewStore(root)
for b in range(25):
    store.append(1, validate_hits([hit(f"{{name}}-{{b}}", v, 1 + v % 2) for v in range(1, 41)]).rows)
"""
)


def test_two_processes_append_while_a_reader_reads(tmp_path):
    PageviewStore(tmp_path).close()
    env = dict(os.environ, PYTHONPATH=SRC)
    procs = [
        subprocess.Popen([sys.executable, "-c", APPENDER.format(src=SRC), str(tmp_path), name], env=env)
        for name in ("a", "b")
    ]
    counts: list[int] = []
    failures: list[BaseException] = []

    def reader() -> None:
        con = duckdb.connect()
        while any(p.poll() is None for p in procs):
            try:
                files = [str(f) for f in visible_files(tmp_path)]
                if files:
                    sql = f"SELECT count(*) FROM read_parquet({files!r}, hive_partitioning = false)"
                    counts.append(con.execute(sql).fetchone()[0])
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    thread.join()
    assert failures == []
    assert counts == sorted(counts), "a reader saw rows disappear"
    assert all(c % 20 == 0 for c in counts), "a reader saw half a partition of a batch"
    assert read_all(tmp_path, 1).num_rows == 2 * 25 * 40


def test_io_error_after_the_commit_point_is_finished_by_the_next_store(tmp_path, monkeypatch):
    rows = validate_hits([full_hit("u", v) for v in range(1, 4)]).rows

    def disk_trouble(*args, **kwargs):
        raise OSError("no space left on device")

    with PageviewStore(tmp_path) as store:
        monkeypatch.setattr(PageviewStore, "_move_into_place", disk_trouble)
        with pytest.raises(OSError):
            store.append(1, rows)
        monkeypatch.undo()
    assert visible_files(tmp_path) == []  # not acknowledged, not visible yet, but committed
    with PageviewStore(tmp_path) as store:
        assert read_all(tmp_path, 1).num_rows == 3
        assert store.append(1, rows).duplicate


def test_retries_are_recognised_for_two_log_days_and_memory_keeps_only_those(tmp_path, monkeypatch):
    from datetime import date

    from dataexport.warehouse.embedded import store as store_module

    day = {"today": date(2026, 3, 1)}
    monkeypatch.setattr(store_module, "_today", lambda: day["today"])
    rows = validate_hits([full_hit("u", v) for v in range(1, 3)]).rows
    with PageviewStore(tmp_path) as store:
        assert not store.append(1, rows).duplicate
        day["today"] = date(2026, 3, 2)  # the next day: yesterday's segment still counts
        assert store.append(1, rows).duplicate
        day["today"] = date(2026, 3, 3)  # two days later: a new batch as far as the log knows
        assert not store.append(1, rows).duplicate
        segments = {p.name for p in store._seen}  # noqa: SLF001 - the bound is the point of the test
        assert "2026-03-01.log" not in segments and segments <= {"2026-03-03.log", "2026-03-02.log"}
    logs = sorted(p.name for p in (tmp_path / "_store" / "batches" / "project_id=1").iterdir())
    assert logs == ["2026-03-01.log", "2026-03-03.log"]
    # Stored twice, one copy per natural key is what readers get once compacted.
    assert read_all(tmp_path, 1).num_rows == 4


def test_old_batch_log_segments_are_pruned(tmp_path, monkeypatch):
    from datetime import date

    from dataexport.warehouse.embedded import store as store_module

    batches = tmp_path / "_store" / "batches"
    for i, day in enumerate((date(2026, 2, 1), date(2026, 2, 20), date(2026, 2, 25), date(2026, 3, 1))):
        monkeypatch.setattr(store_module, "_today", lambda day=day: day)
        with PageviewStore(tmp_path) as store:
            store.append(1, validate_hits([full_hit(f"u{i}", 1)]).rows)
    (batches / "project_id=1.log").write_bytes(b"")  # the single log of the previous layout
    with PageviewStore(tmp_path) as store:
        assert store.prune_batch_logs(keep_days=7) == 3  # 02-01 and 02-20 are past the week, and the old log
    assert sorted(p.name for p in batches.rglob("*.log")) == ["2026-02-25.log", "2026-03-01.log"]
    assert read_all(tmp_path, 1).num_rows == 4  # pruning logs never touches data


def test_a_key_sent_again_with_other_rows_is_refused_across_restarts_and_processes(tmp_path):
    from dataexport.warehouse.batches import IdempotencyKeyReused

    rows = validate_hits([full_hit("u", v) for v in range(1, 4)]).rows
    other = validate_hits([full_hit("u", v) for v in range(1, 5)]).rows
    with PageviewStore(tmp_path) as store:
        assert not store.append(1, rows, batch_key="order-7", now=NOW).duplicate
        with pytest.raises(IdempotencyKeyReused):
            store.append(1, other, batch_key="order-7", now=NOW)
        assert store.append(1, rows, batch_key="order-7").duplicate  # a retry, later: ingested_at is not content
        assert not store.append(2, other, batch_key="order-7").duplicate  # keys are per project
    with PageviewStore(tmp_path) as reopened, pytest.raises(IdempotencyKeyReused):
        reopened.append(1, other, batch_key="order-7")
    child = _run_child(
        tmp_path,
        CHILD_PRELUDE.format(src=SRC)
        + """
from dataexport.warehouse.batches import IdempotencyKeyReused
with PageviewStore(root) as store:
    try:
        store.append(1, rows, batch_key="order-7")
    except IdempotencyKeyReused as exc:
        print(exc.error_code, exc.status)
""",
    )
    assert child.stdout.split() == ["IDEMPOTENCY_KEY_REUSED", "422"], child.stderr
    assert read_all(tmp_path, 1).num_rows == 3
    assert list((tmp_path / "_store" / "staging").glob("*/*.parquet")) == []


def test_two_batches_racing_under_one_key_store_one_and_refuse_the_other(tmp_path):
    # Both pass the check before staging (neither is committed yet); the commit lock decides.
    from dataexport.warehouse.batches import IdempotencyKeyReused
    from dataexport.warehouse.embedded.store import stage

    with PageviewStore(tmp_path) as store:
        first = stage(1, validate_hits([full_hit("a", 1)]).rows, store.staging, batch_key="k", now=NOW)
        second = stage(1, validate_hits([full_hit("b", 1)]).rows, store.staging, batch_key="k", now=NOW)
        assert first.batch_id == second.batch_id and first.fingerprint != second.fingerprint
        assert not store.commit(1, first).duplicate
        with pytest.raises(IdempotencyKeyReused):
            store.commit(1, second)
        assert list(store.staging.glob("*.parquet")) == []  # the refused batch's files are gone
    assert read_all(tmp_path, 1).column("user_id_unhashed").to_pylist() == ["a"]


def test_log_lines_of_earlier_versions_still_recognise_their_batches(tmp_path):
    # Lines written before fingerprints were kept ("{id}\t{renames}"): a keyed batch is taken as a retry, as then.
    rows = validate_hits([full_hit("u", 1)]).rows
    with PageviewStore(tmp_path) as store:
        stored = store.append(1, rows, batch_key="old", now=NOW)
    log = next((tmp_path / "_store" / "batches" / "project_id=1").glob("*.log"))
    batch_id, renames, fingerprint = log.read_text().rstrip("\n").split("\t")
    assert batch_id == stored.batch_id and fingerprint
    log.write_text(f"{batch_id}\t{renames}\n")
    with PageviewStore(tmp_path) as store:
        assert store.append(1, validate_hits([full_hit("v", 1)]).rows, batch_key="old").duplicate
    assert read_all(tmp_path, 1).num_rows == 1
