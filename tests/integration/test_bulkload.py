"""Bulk load of JSONL, CSV and Parquet files with some bad rows, into a real store."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataexport.errors import ValidationFailed
from dataexport.ingest import bulkload, load_workers
from dataexport.ingest.bulkload import load_files
from dataexport.warehouse.embedded import EmbeddedWarehouse
from dataexport.warehouse.schema import PAGEVIEW_SCHEMA, PARTITION_ROOT


def hit(i: int, **kw) -> dict:
    base = {
        "user_id_unhashed": f"user-{i // 3}",
        "session_number": 1,
        "session_time": "2026-03-01T10:00:00Z",
        "view_number": i % 3 + 1,
        "view_time": 1772359200000 + i,
        "device_id": 1 + i % 5,
        "url": f"https://shop.example/p/{i}",
        "scroll_rate": 12.5,
        "custom_vars": [{"position": 3, "key": "pageType", "value": "product"}],
        "dynamic_vars": {"AB Test": "A", "cart_value": i},
    }
    base.update(kw)
    return base


def stored(root: Path, project: int) -> pa.Table:
    files = sorted(str(p) for p in (root / PARTITION_ROOT / f"project_id={project}").glob("*/*.parquet"))
    sql = f"SELECT * FROM read_parquet({files!r}, hive_partitioning = false) ORDER BY view_time"
    return duckdb.connect().sql(sql).to_arrow_table().cast(PAGEVIEW_SCHEMA)


@pytest.fixture
def store(tmp_path):
    with EmbeddedWarehouse(tmp_path / "wh") as s:
        yield s


@pytest.mark.parametrize("chunk_bytes", [bulkload.JSONL_CHUNK_BYTES, 150], ids=["one chunk", "many chunks"])
def test_jsonl_good_and_bad_lines(tmp_path, store, monkeypatch, chunk_bytes):
    monkeypatch.setattr(bulkload, "JSONL_CHUNK_BYTES", chunk_bytes)  # line numbers must follow the file's anyway
    lines = [json.dumps(hit(i)) for i in range(30)]
    lines[4] = json.dumps(hit(4, device_id=9))
    lines[7] = "{not json"
    lines[9] = json.dumps(hit(9, dynamic_vars={"k": 1.5}, veiw=1))
    lines.insert(12, "")  # blank line: skipped, numbering still follows the file's lines
    path = tmp_path / "hits.jsonl"
    path.write_text("\n".join(lines) + "\n")
    progress: list[tuple[int, int]] = []
    summary = load_files(store, 1, [path], progress=lambda done, total: progress.append((done, total)))
    assert (summary.rows_stored, summary.rows_rejected) == (27, 3)
    assert summary.reasons == {
        ("device_id", "must be between 0 and 5"): 1,
        ("record", "is not valid JSON"): 1,
        ("dynamic_vars.value", "must be a string or an integer"): 1,
        ("veiw", "unknown field"): 1,
    }
    assert [(s.index, s.field) for s in summary.samples] == [
        (5, "device_id"),
        (8, "record"),
        (10, "dynamic_vars[0].value"),
        (10, "veiw"),
    ]
    assert progress[-1] == (path.stat().st_size, path.stat().st_size)
    table = stored(store.root, 1)
    assert table.num_rows == 27
    assert table.column("dynamic_vars")[0].as_py() == [
        {"key": "AB Test", "string_value": "A", "number_value": None},
        {"key": "cart_value", "string_value": None, "number_value": 0},
    ]


def _over_two_lines(i: int) -> list[str]:
    """A hit whose custom vars run on into the next line, cut where a comma would join the two back."""
    two = [{"position": 3, "key": "pageType", "value": "product"}, {"position": 4, "key": "k", "value": "v"}]
    text = json.dumps({**hit(i, dynamic_vars=None), "custom_vars": two})
    cut = text.index(', {"position": 4')
    return [text[:cut], text[cut + 2 :]]


@pytest.mark.parametrize(
    "odd_lines",
    [
        [json.dumps(hit(0)) + "," + json.dumps(hit(1))],
        _over_two_lines(0),
        [json.dumps(hit(0)) + "," + _over_two_lines(1)[0], _over_two_lines(1)[1]],  # as many hits as lines
        [json.dumps(hit(0)) + "],[" + json.dumps(hit(1))],
    ],
    ids=["two on a line", "one over two lines", "both", "two arrays on a line"],
)
def test_a_line_must_hold_exactly_one_record(tmp_path, store, odd_lines):
    # The fast path reads the lines as one JSON array, joined with commas: these would pass for valid hits.
    # Line by line, they are not JSON records.
    path = tmp_path / "hits.jsonl"
    path.write_text("\n".join([*odd_lines, *(json.dumps(hit(i)) for i in range(3, 10))]) + "\n")
    summary = load_files(store, 1, [path])
    assert (summary.rows_stored, summary.rows_rejected) == (7, len(odd_lines))
    assert summary.reasons == {("record", "is not valid JSON"): len(odd_lines)}
    assert stored(store.root, 1).num_rows == 7


def test_loading_the_same_file_again_stores_nothing_twice(tmp_path, store, monkeypatch):
    monkeypatch.setattr(bulkload, "JSONL_CHUNK_BYTES", 1000)  # several chunks, several batches
    path = tmp_path / "hits.jsonl"
    path.write_text("".join(json.dumps(hit(i)) + "\n" for i in range(30)))
    first = load_files(store, 1, [path])
    again = load_files(store, 1, [path])
    assert (first.rows_stored, again.rows_stored, again.rows_already_stored) == (30, 0, 30)
    assert stored(store.root, 1).num_rows == 30


def test_csv_with_nested_columns_as_json_text(tmp_path, store):
    path = tmp_path / "hits.csv"
    columns = [
        "user_id_unhashed",
        "session_number",
        "session_time",
        "view_number",
        "view_time",
        "device_id",
        "url",
        "scroll_rate",
        "city",
        "custom_vars",
        "dynamic_vars",
    ]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for i in range(10):
            h = hit(i)
            w.writerow(
                [
                    h["user_id_unhashed"],
                    h["session_number"],
                    h["session_time"],
                    h["view_number"],
                    h["view_time"],
                    h["device_id"],
                    h["url"],
                    h["scroll_rate"],
                    "" if i % 2 else "Paris",
                    json.dumps(h["custom_vars"]),
                    json.dumps(h["dynamic_vars"]),
                ]
            )
        w.writerow(["u", "x", "2026-03-01T10:00:00Z", 1, "2026-03-01T10:00:00Z", 1, "https://x/", "", "", "", ""])
        w.writerow(["u", 1, "2026-03-01T10:00:00Z", 1, "2026-03-01T10:00:00Z", 1, "https://x/", "", "", "[", ""])
        w.writerow(["short", "row"])
    summary = load_files(store, 1, [path])
    assert (summary.rows_stored, summary.rows_rejected) == (10, 3)
    assert summary.reasons == {
        ("session_number", "must be an integer"): 1,
        ("custom_vars", "must be a list"): 1,
        ("record", "has not as many cells as the header"): 1,
    }
    table = stored(store.root, 1)
    assert table.column("city").to_pylist()[:2] == ["Paris", None]
    assert table.column("custom_vars")[0].as_py() == [
        {"position": 3, "key": "pageType", "value": "product", "scope": "page"}
    ]
    assert table.column("view_time")[3].as_py() == datetime(2026, 3, 1, 10, 0, 0, 3000, tzinfo=UTC)


def test_parquet_exported_from_a_warehouse_reloads_identically(tmp_path, store):
    src = tmp_path / "hits.jsonl"
    src.write_text("".join(json.dumps(hit(i)) + "\n" for i in range(20)))
    load_files(store, 1, [src])
    original = stored(store.root, 1)
    export = tmp_path / "export.parquet"
    pq.write_table(original, export)  # carries project_id, user_id, ingested_at and stored dynamic vars
    summary = load_files(store, 2, [export])
    assert (summary.rows_stored, summary.rows_rejected) == (20, 0)
    reloaded = stored(store.root, 2)
    keep = [n for n in PAGEVIEW_SCHEMA.names if n not in ("project_id", "ingested_at")]
    assert reloaded.select(keep).to_pylist() == original.select(keep).to_pylist()


def test_parquet_with_bad_rows(tmp_path, store):
    rows = [hit(i) for i in range(6)]
    rows[2]["device_id"] = 77
    for r in rows:
        r["dynamic_vars"] = [{"key": k, "value": str(v)} for k, v in r["dynamic_vars"].items()]
    path = tmp_path / "hits.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    summary = load_files(store, 1, [path])
    assert (summary.rows_stored, summary.rows_rejected) == (5, 1)
    assert [(s.index, s.field) for s in summary.samples] == [(3, "device_id")]


def test_unsupported_or_missing_files_are_validation_errors(tmp_path, store):
    with pytest.raises(ValidationFailed) as e:
        load_files(store, 1, [tmp_path / "x.xml"])
    assert e.value.errors[0].field == "paths"
    with pytest.raises(ValidationFailed):
        load_files(store, 1, [tmp_path / "missing.jsonl"])


def test_worker_processes_give_the_same_result(tmp_path, store, monkeypatch):
    monkeypatch.setattr(bulkload, "JSONL_CHUNK_BYTES", 1500)  # cut in this process: several chunks per worker
    path = tmp_path / "hits.jsonl"
    lines = [json.dumps(hit(i)) for i in range(45)]
    lines[17] = json.dumps(hit(17, device_id=-1))
    path.write_text("\n".join(lines))
    with EmbeddedWarehouse(tmp_path / "serial") as serial_store:
        serial = load_files(serial_store, 1, [path], workers=1)
    parallel = load_files(store, 1, [path], workers=2)
    assert (parallel.rows_stored, parallel.rows_rejected, parallel.samples) == (44, 1, serial.samples)
    assert [(r.index, r.field) for r in parallel.samples] == [(18, "device_id")]
    assert list(store.store.staging.glob("*.parquet")) == []  # every staged file was committed
    same = [n for n in PAGEVIEW_SCHEMA.names if n != "ingested_at"]
    assert stored(store.root, 1).select(same).to_pylist() == stored(tmp_path / "serial", 1).select(same).to_pylist()


def test_the_worker_server_starts_early_only_for_loads_that_use_workers(tmp_path):
    small = tmp_path / "small.jsonl"
    small.write_text(json.dumps(hit(0)) + "\n")
    big = tmp_path / "big.jsonl"
    with open(big, "wb") as f:
        f.truncate(load_workers.PARALLEL_MIN_BYTES)  # sparse: only its size counts here
    code = (
        "import sys; from pathlib import Path; from multiprocessing import forkserver; "
        "from dataexport.ingest.load_workers import start_worker_server; "
        "start_worker_server([Path(sys.argv[1])], preload=('json',)); "
        "print(forkserver._forkserver._forkserver_pid is not None)"
    )
    for path, started in ((small, "False"), (big, "True")):
        out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == started, out.stderr
