"""stream_arrow streams on the pinned DuckDB: the first batch comes before the query has run to its end.

DuckDB 1.5 materialises a relation made with bound parameters (the whole result before the first batch)
and streams a prepared statement's result; 2.0 does the opposite. An export or a compaction that
materialises holds the whole window in memory, so this is checked, not assumed.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from dataexport.warehouse.arrow_stream import stream_arrow

# Only a run to the end of the result reaches the error: a materialised result raises before any batch.
LATE_ERROR = "SELECT CASE WHEN i < ? THEN i ELSE error('ran to the end') END AS i FROM range(?) t(i)"


@pytest.fixture
def conn():
    # One thread, so rows are produced in order and the first batch holds the first rows.
    connection = duckdb.connect(config={"threads": 1})
    yield connection
    connection.close()


def test_the_first_batch_comes_before_the_query_ends(conn):
    reader = stream_arrow(conn, LATE_ERROR, [10_000_000, 20_000_000], 1000)
    first = reader.read_next_batch()
    assert first.column("i").to_pylist() == list(range(1000))
    # A failure after the first batch reaches Python through pyarrow's reader, as an OSError.
    with pytest.raises(OSError, match="ran to the end"):
        reader.read_all()


def test_a_stream_yields_every_row_in_batches_of_the_size_asked(conn):
    reader = stream_arrow(conn, "SELECT i FROM range(?) t(i)", [2500], 1000)
    sizes = [batch.num_rows for batch in reader]
    assert sizes == [1000, 1000, 500]


def test_the_relation_with_parameters_is_what_materialises_on_this_duckdb(conn):
    # The idiom stream_arrow avoids: if this starts streaming (a new DuckDB), the pin moved and
    # stream_arrow's choice should be measured again.
    with pytest.raises(duckdb.Error, match="ran to the end"):
        conn.sql(LATE_ERROR, params=[10_000_000, 20_000_000]).to_arrow_reader(1000)


def test_a_failure_after_the_first_batch_keeps_its_verdict(conn):
    """The export's error translation (export_read._translated) sees through pyarrow's OSError: a query error
    that the same data repeats is permanent, not retried as an unknown failure."""
    from dataexport.errors import PermanentExtractionError
    from dataexport.query.export_read import _translated
    from dataexport.warehouse.backend import ReadLimits

    reader = stream_arrow(conn, LATE_ERROR, [10_000_000, 20_000_000], 1000)
    reader.read_next_batch()
    limits = ReadLimits(threads=1, memory_limit=64_000_000, spill_dir=Path("unused"))
    with pytest.raises(PermanentExtractionError, match="ran to the end"), _translated(limits):
        reader.read_all()
