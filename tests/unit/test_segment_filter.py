"""Parsing and validating segment filters (pure)."""

from __future__ import annotations

import json

import pytest

from dataexport.domain.segment_filter import (
    MAX_DEPTH,
    AllOf,
    AnyOf,
    CustomVarCondition,
    DynamicVarCondition,
    FieldCondition,
    NotOf,
    parse_segment_filter,
    to_json,
)
from dataexport.errors import ValidationFailed
from dataexport.query.segments_sql import compile_segment_filter

EXAMPLE = {
    "all": [
        {"field": "country_code", "op": "eq", "value": "FR"},
        {
            "any": [
                {"field": "device_id", "op": "in", "value": [2, 4]},
                {"customVar": 3, "op": "eq", "value": "checkout"},
            ]
        },
        {"dynamicVar": "AB Test", "op": "eq", "value": "B"},
        {"field": "session_number_of_views", "op": "gte", "value": 3},
        {"not": {"field": "city", "op": "exists"}},
    ]
}


def test_parses_the_documented_example():
    f = parse_segment_filter(EXAMPLE)
    assert f.root == AllOf(
        (
            FieldCondition("country_code", "eq", "FR"),
            AnyOf((FieldCondition("device_id", "in", (2, 4)), CustomVarCondition(3, "eq", "checkout"))),
            DynamicVarCondition("AB Test", "eq", "B"),
            FieldCondition("session_number_of_views", "gte", 3),
            NotOf(FieldCondition("city", "exists", True)),
        )
    )


def test_json_text_and_round_trip():
    f = parse_segment_filter(json.dumps(EXAMPLE))
    assert parse_segment_filter(to_json(f)) == f
    assert to_json(f)["all"][1]["any"][0] == {"field": "device_id", "op": "in", "value": [2, 4]}


def test_dynamic_var_values_may_be_numbers_or_strings():
    assert parse_segment_filter({"dynamicVar": "score", "op": "gt", "value": 4294967296}).root.value == 4294967296
    assert parse_segment_filter({"dynamicVar": "k", "op": "in", "value": ["a", "b"]}).root.value == ("a", "b")


def _nest(depth):
    node = {"field": "city", "op": "exists"}
    for _ in range(depth - 1):
        node = {"not": node}
    return node


BAD = [
    ("not json {", "filter"),
    ([], "filter"),
    ({}, "filter"),
    ({"all": []}, "filter.all"),
    ({"all": {"field": "city"}}, "filter.all"),
    ({"all": [{"field": "city", "op": "eq", "value": "x"}], "any": []}, "filter.any"),
    ({"all": [{"field": "city", "op": "eq", "value": "x"}, 3]}, "filter.all[1]"),
    ({"field": "nope", "op": "eq", "value": 1}, "filter.field"),
    ({"field": "url", "op": "eq", "value": "x"}, "filter.field"),  # a views-only field
    ({"field": "session_time", "op": "eq", "value": "x"}, "filter.field"),  # time fields are not filterable
    ({"field": "errors.message", "op": "eq", "value": "x"}, "filter.field"),  # arrays are not filterable
    ({"field": 3, "op": "eq", "value": 1}, "filter.field"),
    ({"field": "city", "op": "like", "value": "x"}, "filter.op"),
    ({"field": "city", "value": "x"}, "filter.op"),
    ({"field": "city", "op": "eq"}, "filter.value"),
    ({"field": "city", "op": "eq", "value": 3}, "filter.value"),
    ({"field": "city", "op": "eq", "value": None}, "filter.value"),
    ({"field": "city", "op": "eq", "value": ["x"]}, "filter.value"),
    ({"field": "city", "op": "eq", "value": "x" * 1025}, "filter.value"),
    ({"field": "city", "op": "gt", "value": "a"}, "filter.op"),
    ({"field": "device_id", "op": "contains", "value": 1}, "filter.op"),
    ({"field": "device_id", "op": "eq", "value": "2"}, "filter.value"),
    ({"field": "device_id", "op": "eq", "value": True}, "filter.value"),
    ({"field": "device_id", "op": "eq", "value": float("nan")}, "filter.value"),
    ({"field": "device_id", "op": "in", "value": []}, "filter.value"),
    ({"field": "device_id", "op": "in", "value": 2}, "filter.value"),
    ({"field": "device_id", "op": "in", "value": [2, "4"]}, "filter.value[1]"),
    ({"field": "device_id", "op": "in", "value": list(range(1001))}, "filter.value"),
    ({"field": "city", "op": "exists", "value": "yes"}, "filter.value"),
    ({"field": "city", "op": "eq", "value": "x", "extra": 1}, "filter.extra"),
    ({"field": "city", "customVar": 1, "op": "eq", "value": "x"}, "filter"),
    ({"customVar": 0, "op": "eq", "value": "x"}, "filter.customVar"),
    ({"customVar": 21, "op": "eq", "value": "x"}, "filter.customVar"),
    ({"customVar": "3", "op": "eq", "value": "x"}, "filter.customVar"),
    ({"customVar": 3, "op": "eq", "value": 3}, "filter.value"),
    ({"customVar": 3, "op": "gt", "value": "a"}, "filter.op"),
    ({"dynamicVar": "", "op": "eq", "value": "x"}, "filter.dynamicVar"),
    ({"dynamicVar": "k" * 513, "op": "eq", "value": "x"}, "filter.dynamicVar"),
    ({"dynamicVar": "k", "op": "gt", "value": "a"}, "filter.value"),
    ({"dynamicVar": "k", "op": "contains", "value": 3}, "filter.value"),
    ({"dynamicVar": "k", "op": "in", "value": ["a", 1]}, "filter.value"),
    ({"dynamicVar": "k", "op": "eq", "value": {"a": 1}}, "filter.value"),
    (
        {
            "all": [
                {"field": "city", "op": "eq", "value": "x"},
                {"any": [{"field": "device_id", "op": "eq", "value": 1}, {"customVar": 3, "op": "eq", "value": 9}]},
            ]
        },
        "filter.all[1].any[1].value",
    ),
    ({"not": {"field": "city", "op": "eq", "value": 1}}, "filter.not.value"),
    ({"not": {"field": "city", "op": "exists"}, "x": 1}, "filter.x"),
    (_nest(MAX_DEPTH + 1), "filter" + ".not" * MAX_DEPTH),
    ({"any": [{"field": "city", "op": "exists"}] * 51}, "filter.any"),
    ({"any": [{"all": [{"field": "city", "op": "exists"}] * 50}] * 4}, None),  # 205 nodes
]


@pytest.mark.parametrize(("raw", "path"), BAD)
def test_bad_filters_name_the_culprit(raw, path):
    with pytest.raises(ValidationFailed) as err:
        parse_segment_filter(raw)
    assert len(err.value.errors) == 1
    if path is not None:
        assert err.value.errors[0].field == path
    else:
        assert "too many" in err.value.errors[0].message


def test_depth_limit_is_inclusive():
    assert parse_segment_filter(_nest(MAX_DEPTH))


def test_custom_path_prefix():
    with pytest.raises(ValidationFailed) as err:
        parse_segment_filter({"field": "nope", "op": "eq", "value": 1}, path="segment.filter")
    assert err.value.errors[0].field == "segment.filter.field"


def test_compiled_sql_binds_every_value():
    compiled = compile_segment_filter(parse_segment_filter(EXAMPLE))
    assert compiled.params == ["FR", 2, 4, 3, "checkout", "AB Test", "B", 3]
    assert compiled.text.count("?") == len(compiled.params)
    assert "FR" not in compiled.text and "checkout" not in compiled.text


# ---------------------------------------------------------------- maxima and unstorable text (issue 11)


def test_list_values_are_bounded_over_the_whole_filter():
    many = {"all": [{"field": "city", "op": "in", "value": [f"c{i}" for i in range(1000)]}] * 10}
    assert parse_segment_filter(many)  # 10,000 in all: the limit
    with pytest.raises(ValidationFailed) as err:
        parse_segment_filter({"all": many["all"] + [{"field": "city", "op": "in", "value": ["one too many"]}]})
    assert err.value.errors[0].field == "filter.all[10].value" and "10000" in err.value.errors[0].message


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({"field": "city", "op": "eq", "value": "Paris\x00"}, "filter.value"),
        ({"field": "city", "op": "in", "value": ["ok", "\ud800"]}, "filter.value[1]"),
        ({"dynamicVar": "k\x00", "op": "exists"}, "filter.dynamicVar"),
        ({"customVar": 1, "op": "contains", "value": "\udfff"}, "filter.value"),
    ],
)
def test_text_no_column_can_hold_is_refused(raw, path):
    with pytest.raises(ValidationFailed) as err:
        parse_segment_filter(raw)
    assert err.value.errors[0].field == path and "NUL" in err.value.errors[0].message
