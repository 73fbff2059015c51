"""Throughput of the part writers on a synthetic pageview-shaped table (8 fields: ints, ISO timestamps, URLs).

    PYTHONPATH=src .venv/bin/python bench/writers.py [rows]

Prints MB/s of uncompressed output for: pyarrow write_csv to memory (no compression), zlib gzip level 6
single-threaded over that CSV, DuckDB's own uncompressed COPY TO csv, and write_parts (CSV and JSONL).
"""

from __future__ import annotations

import sys
import tempfile
import time
import zlib
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from dataexport.domain.enums import Format
from dataexport.writers import write_parts

QUERY = """
select i::BIGINT as user_id, (i * 7) % 65000 as session_number,
  strftime(TIMESTAMP '2024-01-01' + to_milliseconds(i * 1000), '%Y-%m-%dT%H:%M:%S.%gZ') as view_time,
  'https://www.example.com/shop/category-' || (i % 977) || '/product?id=' || i || '&ref=home' as url,
  case when i % 10 = 0 then 'Title, with comma "q" ' || i else 'Plain title ' || i end as title,
  (i % 5)::INT as device_id, ((i % 1000) * 31)::INTEGER as view_duration_msec,
  case when i % 3 = 0 then NULL else 'FR' end as country_code
from range({rows}) t(i)
"""


def timed(label: str, nbytes: int, fn) -> float:
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    print(f"{label:<44} {elapsed:7.2f} s  {nbytes / 1e6 / elapsed:8.0f} MB/s")
    return elapsed


def main(rows: int) -> None:
    con = duckdb.connect()
    con.execute(f"create table pv as {QUERY.format(rows=rows)}")
    table = con.sql("select * from pv").to_arrow_table()
    columns = table.schema.names
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink)
    csv_bytes = sink.getvalue()
    size = csv_bytes.size
    print(f"rows={rows:,}  CSV={size / 1e6:.0f} MB")

    timed("pyarrow write_csv to memory (no gzip)", size, lambda: pacsv.write_csv(table, pa.BufferOutputStream()))
    timed("zlib gzip level 6, one thread", size, lambda: zlib.compress(memoryview(csv_bytes), 6))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "duck.csv"
        timed("duckdb COPY TO csv (uncompressed, table)", size, lambda: con.execute(f"COPY pv TO '{out}'"))
        for threads in (1, 2):
            work = Path(tmp) / f"csv{threads}"
            work.mkdir()
            timed(
                f"write_parts CSV gzip1 threads={threads} (arrow in)",
                size,
                lambda w=work, t=threads: write_parts(
                    table.to_batches(), fmt=Format.CSV, columns=columns, work_dir=w, part_max_bytes=256 << 20, threads=t
                ),
            )
        work = Path(tmp) / "e2e"
        work.mkdir()
        timed(
            "DuckDB query -> write_parts CSV (end to end)",
            size,
            lambda: write_parts(
                con.sql("select * from pv").to_arrow_reader(),
                fmt=Format.CSV,
                columns=columns,
                work_dir=work,
                part_max_bytes=256 << 20,
            ),
        )
        lines = con.sql("select to_json(pv)::VARCHAR as line from pv").to_arrow_table()
        jsonl_size = int(pc.sum(pc.binary_length(lines.column(0))).as_py()) + lines.num_rows
        work = Path(tmp) / "jsonl"
        work.mkdir()
        timed(
            "write_parts JSONL gzip1 threads=2",
            jsonl_size,
            lambda: write_parts(
                lines.to_batches(), fmt=Format.JSONL, columns=["line"], work_dir=work, part_max_bytes=256 << 20
            ),
        )
        parts = sorted(work.iterdir())
        print(f"JSONL parts={len(parts)} compressed={sum(p.stat().st_size for p in parts) / 1e6:.0f} MB")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
