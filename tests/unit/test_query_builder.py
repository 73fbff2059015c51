"""The export query builder as pure text: validation, bound parameters, quoting (no database)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dataexport.catalog import fields_for
from dataexport.catalog.sql import quote_ident
from dataexport.domain.enums import Scope
from dataexport.domain.fieldspec import FieldSpec
from dataexport.domain.segment_filter import parse_segment_filter
from dataexport.errors import ValidationFailed
from dataexport.query.export_sql import build_export_query
from dataexport.query.slices import SessionSlice
from dataexport.warehouse.relations import empty_source, parquet_source

START, END = datetime(2026, 2, 14, tzinfo=UTC), datetime(2026, 2, 15, tzinfo=UTC)
EVIL = "x'); DROP TABLE t; --"


def build(**over):
    args = dict(
        source=parquet_source(["/wh/a.parquet"]),
        project_id=7,
        scope=Scope.VIEWS,
        fields=[FieldSpec("url")],
        window_start=START,
        window_end=END,
        timezone="Europe/Paris",
        device_ids=None,
        segment_filter=None,
        output="typed",
    )
    args.update(over)
    return build_export_query(**args)


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"fields": [FieldSpec("nope")]}, "fields[0].fieldName"),
        ({"fields": [FieldSpec("view_number")], "scope": Scope.SESSIONS}, "fields[0].fieldName"),
        (
            {"fields": [FieldSpec("url"), FieldSpec("custom_var", custom_var_position=21)]},
            "fields[1].customVarPosition",
        ),
        ({"fields": [FieldSpec("custom_var", custom_var_position=None)]}, "fields[0].customVarPosition"),
        ({"fields": [FieldSpec("custom_var", custom_var_position=True)]}, "fields[0].customVarPosition"),
        ({"fields": [FieldSpec("dynamic_var", dynamic_var_key="")]}, "fields[0].dynamicVarKey"),
        ({"fields": [FieldSpec("url"), FieldSpec("title", alias_name="url")]}, "fields[1].aliasName"),
        ({"fields": [FieldSpec("url", alias_name="a\x00b")]}, "fields[0].aliasName"),
        ({"fields": []}, "fields"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": "../../etc/passwd"}, "timezone"),
        ({"window_start": datetime(2026, 2, 14)}, "startDate"),
        ({"window_end": datetime(2026, 2, 13, tzinfo=UTC)}, "endDate"),
        ({"device_ids": ("1",)}, "deviceLabel"),
        ({"output": "xml"}, "output"),
        ({"scope": "sessions"}, "scope"),
        ({"project_id": "7"}, "projectId"),
        ({"source": "read_parquet('/etc/passwd')"}, "source"),
    ],
)
def test_bad_input_is_a_validation_error_naming_the_field(over, field):
    with pytest.raises(ValidationFailed) as err:
        build(**over)
    assert err.value.errors[0].field == field


def test_user_text_is_bound_never_pasted():
    seg = parse_segment_filter(
        {
            "all": [
                {"dynamicVar": EVIL, "op": "eq", "value": EVIL},
                {"field": "city", "op": "in", "value": [EVIL, "Paris"]},
            ]
        }
    )
    q = build(
        fields=[FieldSpec("dynamic_var", dynamic_var_key=EVIL), FieldSpec("custom_var", custom_var_position=3)],
        segment_filter=seg,
        output="jsonl",
    )
    assert EVIL not in q.sql
    assert q.params.count(EVIL) == 4  # the field key, the segment key and value, the in-list value
    assert f"dynamic_var_{EVIL}" in q.params  # the JSON key is bound too
    assert q.columns == [f"dynamic_var_{EVIL}", "custom_var_3"]


def test_aliases_are_quoted_identifiers():
    q = build(fields=[FieldSpec("url", alias_name='say "hi"')])
    assert '"say ""hi"""' in q.sql
    assert quote_ident('a"b') == '"a""b"'


def test_session_aggregates_only_when_selected():
    assert "GROUP BY" not in build(fields=[FieldSpec("url"), FieldSpec("session_time")]).sql
    assert "JOIN sess" in build(fields=[FieldSpec("session_number_of_views")]).sql
    plain = build(scope=Scope.SESSIONS, fields=[FieldSpec("city")]).sql
    assert "referer_url" not in plain and "arg_min(city" in plain


def test_no_ordered_aggregates():
    # DuckDB buffers every input row of an ordered aggregate in memory: none may appear, whatever the fields.
    for scope in Scope:
        every = [FieldSpec(f.name) for f in fields_for(scope) if not f.parameters]
        sql = build(scope=scope, fields=every).sql
        assert " ORDER BY view_number" not in sql and " OVER " not in sql


def test_a_slice_narrows_the_pageviews_with_typed_bounds():
    top = SessionSlice("user_id", 1 << 63, None)
    q = build(session_slice=top)
    assert "user_id >= CAST(? AS UBIGINT)" in q.sql and "user_id <" not in q.sql
    assert 1 << 63 in q.params
    q = build(session_slice=SessionSlice("session_time", START, END))
    assert "session_time >= CAST(? AS TIMESTAMPTZ) AND session_time < CAST(? AS TIMESTAMPTZ)" in q.sql


def test_parameters_match_placeholders_in_text_order():
    q = build(fields=[FieldSpec("session_date"), FieldSpec("custom_var", custom_var_position=5)], device_ids=(2, 4))
    assert q.params == [["/wh/a.parquet"], 7, START, END, 2, 4, 5, "Europe/Paris", 5]


def test_no_files_reads_no_file():
    assert parquet_source([]) == empty_source()
    q = build(source=parquet_source([]))
    assert "read_parquet" not in q.sql
    assert q.params[0] == 7


def test_session_aggregates_count_what_a_slice_holds_per_session():
    assert build(fields=[FieldSpec("url"), FieldSpec("view_time")]).session_aggregates == 0  # streams
    keys = [FieldSpec("user_id_unhashed"), FieldSpec("session_number")]
    keys_only = build(scope=Scope.SESSIONS, fields=keys, ordered=False)
    assert keys_only.session_aggregates == 1  # a GROUP BY of keys alone still holds a state per session
    assert build(fields=[FieldSpec("url"), FieldSpec("session_number_of_views")]).session_aggregates == 2
    segment = parse_segment_filter({"field": "country_code", "op": "eq", "value": "FR"})
    assert build(fields=[FieldSpec("url")], segment_filter=segment).session_aggregates == 2
