"""Pure tests of rendering Arrow batches to CSV/JSONL bytes (in memory, no files)."""

import csv
import io

import pyarrow as pa
import pytest

from dataexport.writers.render import CsvRenderer, JsonlRenderer, csv_header, csv_quote


def _parse_csv(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


@pytest.mark.parametrize(
    "value, expected",
    [
        ("plain", "plain"),
        ("a,b", '"a,b"'),
        ('say "hi"', '"say ""hi"""'),
        ("l1\nl2", '"l1\nl2"'),
        ("cr\r", '"cr\r"'),
        ("", '""'),
    ],
)
def test_csv_quote_only_when_needed(value, expected):
    assert csv_quote(value) == expected


def test_header_is_minimally_quoted_and_newline_terminated():
    assert csv_header(["user_id", "my,alias", 'q"']) == b'user_id,"my,alias","q"""\n'


def test_csv_body_round_trips_special_characters_and_nulls():
    batch = pa.record_batch(
        {
            "title": ["plain", "a,b", 'say "hi"', "multi\nline", "", None, "ünïcødé"],
            "n": pa.array([1, None, -3, 4, 5, 6, 7], pa.int64()),
            "ratio": [0.5, 1.25, None, 2.0, 0.0, -1.5, 3.0],
        }
    )
    rendered = CsvRenderer(["title", "n", "ratio"]).render(batch)
    data = bytes(rendered.data)
    assert rendered.rows == 7
    assert not data.startswith(b"title")  # the body has no header: the part writer adds it once per part
    assert b"\r\n" not in data and data.endswith(b"\n")
    rows = _parse_csv(data)
    assert [r[0] for r in rows] == ["plain", "a,b", 'say "hi"', "multi\nline", "", "", "ünïcødé"]
    assert [r[1] for r in rows] == ["1", "", "-3", "4", "5", "6", "7"]
    assert [r[2] for r in rows] == ["0.5", "1.25", "", "2", "0", "-1.5", "3"]
    # null is an empty cell, an empty string is "" (kept apart); numbers are never quoted
    assert b'\n"",5,0\n,6,-1.5\n' in data


def test_csv_selects_and_orders_columns_by_name_and_reads_string_view():
    batch = pa.record_batch({"b": pa.array(["x", "y"], pa.string_view()), "extra": [1, 2], "a": [10, 20]})
    data = bytes(CsvRenderer(["a", "b"]).render(batch).data)
    assert _parse_csv(data) == [["10", "x"], ["20", "y"]]


def test_csv_missing_column_is_an_error():
    with pytest.raises(ValueError, match="missing"):
        CsvRenderer(["a", "missing"]).render(pa.record_batch({"a": [1]}))


def test_jsonl_writes_the_lines_as_they_are_and_skips_null_lines():
    lines = ['{"a":1}\n', '{"b":"x\\ny"}\n', None, "{}\n"]
    rendered = JsonlRenderer().render(pa.record_batch({"line": lines}))
    assert bytes(rendered.data) == b'{"a":1}\n{"b":"x\\ny"}\n{}\n'
    assert rendered.rows == 3


def test_jsonl_reads_sliced_and_large_string_batches():
    batch = pa.record_batch({"line": pa.array([f'{{"i":{i}}}\n' for i in range(10)], pa.large_string())})
    rendered = JsonlRenderer().render(batch.slice(3, 4))
    assert bytes(rendered.data) == b'{"i":3}\n{"i":4}\n{"i":5}\n{"i":6}\n'


def test_jsonl_empty_batch_renders_nothing():
    rendered = JsonlRenderer().render(pa.record_batch({"line": pa.array([], pa.string())}))
    assert bytes(rendered.data) == b"" and rendered.rows == 0


def test_jsonl_needs_line_column():
    with pytest.raises(ValueError, match="line"):
        JsonlRenderer().render(pa.record_batch({"other": ["{}"]}))
