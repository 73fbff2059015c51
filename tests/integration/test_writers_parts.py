"""write_parts on real DuckDB batches into real gzip files, read back by gzip -d, Python's gzip and DuckDB."""

import csv
import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tempfile
import zlib
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataexport.domain.enums import Format
from dataexport.errors import StorageError
from dataexport.writers import PartInfo, write_parts

SOURCE_SQL = """
select i::BIGINT as user_id,
  strftime(TIMESTAMP '2024-01-01' + to_milliseconds(i * 1000), '%Y-%m-%dT%H:%M:%S.%gZ') as view_time,
  'https://example.com/p?id=' || i || '&x=1' as url,
  case when i % 7 = 0 then 'comma, "quote" ' || i when i % 11 = 0 then 'line' || chr(10) || 'break'
       when i % 13 = 0 then '' else 'title ' || i end as title,
  case when i % 3 = 0 then NULL else (i % 5) end as device_id,
  '["a","b"]' as tags
from range({rows}) t(i) order by i
"""
COLUMNS = ["user_id", "view_time", "url", "title", "device_id", "tags"]


@pytest.fixture
def con():
    connection = duckdb.connect()
    yield connection
    connection.close()


def batches(con, sql: str, rows_per_batch: int = 1000):
    return con.sql(sql).to_arrow_reader(rows_per_batch)


def read_part(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes())


def gzip_members(path: Path) -> int:
    data, members = path.read_bytes(), 0
    while data:
        stream = zlib.decompressobj(31)
        stream.decompress(data)
        data = stream.unused_data
        members += 1
    return members


def check_part_files(parts: list[PartInfo], limit: int) -> None:
    for expected_id, part in enumerate(parts):
        assert part.part_id == expected_id
        assert part.path.name == f"part-{expected_id:05d}.{'csv' if part.path.name.endswith('csv.gz') else 'jsonl'}.gz"
        blob = part.path.read_bytes()
        assert part.size == len(blob)
        assert part.sha256 == hashlib.sha256(blob).hexdigest()
        assert part.uncompressed_bytes == len(gzip.decompress(blob))
        assert part.uncompressed_bytes <= limit or part.rows <= 1  # 0: a header longer than the limit
    leftovers = [p.name for p in parts[0].path.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_csv_parts_split_under_limit_each_with_header_and_read_back_by_three_readers(con, tmp_path):
    limit = 40_000
    sql = SOURCE_SQL.format(rows=5000)
    parts = write_parts(
        batches(con, sql), fmt=Format.CSV, columns=COLUMNS, work_dir=tmp_path, part_max_bytes=limit, threads=2
    )
    assert len(parts) > 5
    check_part_files(parts, limit)
    assert sum(p.rows for p in parts) == 5000
    assert max(gzip_members(p.path) for p in parts) > 1  # chunks compressed in parallel, concatenated

    header = ",".join(COLUMNS) + "\n"
    rows: list[list[str]] = []
    for part in parts:
        text = read_part(part.path).decode("utf-8")
        assert text.startswith(header) and text.endswith("\n") and "\r\n" not in text
        part_rows = list(csv.reader(io.StringIO(text, newline="")))
        assert part_rows[0] == COLUMNS
        assert len(part_rows) - 1 == part.rows
        rows.extend(part_rows[1:])
    expected = con.sql(sql).fetchall()
    assert [int(r[0]) for r in rows] == [e[0] for e in expected]  # order kept across threads and parts
    assert [r[3] for r in rows] == [e[3] for e in expected]  # commas, quotes, line breaks round-trip
    assert [r[4] for r in rows] == ["" if e[4] is None else str(e[4]) for e in expected]  # null: empty cell
    assert all(r[5] == '["a","b"]' for r in rows)

    # gzip(1) decompresses the multi-member file to the same bytes
    gunzip = subprocess.run(["gzip", "-dc", str(parts[0].path)], capture_output=True, check=True)
    assert gunzip.stdout == read_part(parts[0].path)
    # DuckDB reads every part directly
    files = [str(p.path) for p in parts]
    got = con.execute(
        "select count(*), sum(user_id), count(device_id) from read_csv(?, header=true)", [files]
    ).fetchone()
    assert got == con.execute(f"select count(*), sum(user_id), count(device_id) from ({sql})").fetchone()


def test_jsonl_parts_hold_one_object_per_line(con, tmp_path):
    limit = 30_000
    sql = f"select to_json(s)::VARCHAR || chr(10) as line from ({SOURCE_SQL.format(rows=3000)}) s"
    parts = write_parts(
        batches(con, sql, 700), fmt=Format.JSONL, columns=["line"], work_dir=tmp_path, part_max_bytes=limit
    )
    assert len(parts) > 3
    check_part_files(parts, limit)
    objects = []
    for part in parts:
        text = read_part(part.path).decode()
        assert text.endswith("\n") and "\n\n" not in text
        lines = text.split("\n")[:-1]
        assert len(lines) == part.rows
        objects.extend(json.loads(line) for line in lines)
    assert [o["user_id"] for o in objects] == list(range(3000))
    assert objects[3]["device_id"] is None and objects[7]["title"] == 'comma, "quote" 7'
    got = con.execute(
        "select count(*), sum(user_id) from read_json(?, format='newline_delimited')", [[str(p.path) for p in parts]]
    ).fetchone()
    assert got == (3000, sum(range(3000)))


@pytest.mark.parametrize("fmt, expected", [(Format.CSV, b"user_id,title\n"), (Format.JSONL, b"")])
def test_empty_input_yields_one_valid_part(con, tmp_path, fmt, expected):
    sql = "select 1::BIGINT as user_id, 'x' as title where false"
    if fmt == Format.JSONL:
        sql = "select '{}' as line where false"
    parts = write_parts(
        batches(con, sql), fmt=fmt, columns=["user_id", "title"], work_dir=tmp_path, part_max_bytes=1000
    )
    assert len(parts) == 1 and parts[0].rows == 0
    assert read_part(parts[0].path) == expected
    assert parts[0].uncompressed_bytes == len(expected)
    subprocess.run(["gzip", "-t", str(parts[0].path)], check=True)
    if fmt == Format.CSV:
        assert con.execute("select count(*) from read_csv(?, header=true)", [str(parts[0].path)]).fetchone() == (0,)


def test_a_row_larger_than_a_part_goes_alone(con, tmp_path):
    sql = "select i as n, case when i = 5 then repeat('x', 5000) else 'small' end as body from range(12) t(i)"
    parts = write_parts(batches(con, sql), fmt=Format.CSV, columns=["n", "body"], work_dir=tmp_path, part_max_bytes=200)
    check_part_files(parts, 200)
    big = [p for p in parts if p.uncompressed_bytes > 200]
    assert len(big) == 1 and big[0].rows == 1
    assert b"x" * 5000 in read_part(big[0].path)
    assert sum(p.rows for p in parts) == 12


def test_progress_reports_running_total(con, tmp_path):
    seen: list[int] = []
    write_parts(
        batches(con, SOURCE_SQL.format(rows=2000), 300),
        fmt=Format.CSV,
        columns=COLUMNS,
        work_dir=tmp_path,
        part_max_bytes=20_000,
        on_progress=seen.append,
    )
    assert seen == sorted(seen) and seen[-1] == 2000 and len(seen) > 1


def test_failure_mid_stream_leaves_no_files(con, tmp_path):
    def failing():
        yield from batches(con, SOURCE_SQL.format(rows=3000), 500).read_all().to_batches(500)[:4]
        raise RuntimeError("warehouse went away")

    with pytest.raises(RuntimeError, match="went away"):
        write_parts(failing(), fmt=Format.CSV, columns=COLUMNS, work_dir=tmp_path, part_max_bytes=5_000)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_work_dir_is_a_storage_error(con, tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(StorageError):
        write_parts(
            batches(con, SOURCE_SQL.format(rows=10)),
            fmt=Format.CSV,
            columns=COLUMNS,
            work_dir=not_a_dir,
            part_max_bytes=1000,
        )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=300), max_size=60),
    limit=st.integers(min_value=1, max_value=2000),
    batch_rows=st.integers(min_value=1, max_value=25),
)
def test_any_split_keeps_every_row_in_order_and_parts_within_limit(sizes, limit, batch_rows):
    table = pa.table({"i": list(range(len(sizes))), "s": ["y" * n for n in sizes]})
    work = Path(tempfile.mkdtemp())
    try:
        parts = write_parts(
            table.to_batches(batch_rows), fmt=Format.CSV, columns=["i", "s"], work_dir=work, part_max_bytes=limit
        )
        check_part_files(parts, limit)
        ids = []
        for part in parts:
            rows = list(csv.reader(io.StringIO(read_part(part.path).decode(), newline="")))
            assert rows[0] == ["i", "s"]
            # a part exceeds the limit only when it holds a single row
            ids.extend(int(r[0]) for r in rows[1:])
        assert ids == list(range(len(sizes)))
    finally:
        shutil.rmtree(work)


def test_a_full_disk_raises_storage_error_and_leaves_nothing(con, tmp_path):
    """The part's temporary file is /dev/full (a real device that answers ENOSPC to every write)."""
    work = tmp_path / "work"
    work.mkdir()
    (work / ".part-00000.csv.gz.tmp").symlink_to("/dev/full")
    with pytest.raises(StorageError):
        write_parts(
            batches(con, SOURCE_SQL.format(rows=50_000)),
            fmt=Format.CSV,
            columns=COLUMNS,
            work_dir=work,
            part_max_bytes=1 << 20,
        )
    assert list(work.iterdir()) == []
