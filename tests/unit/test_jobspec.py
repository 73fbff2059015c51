"""Pure validation of create-job bodies: no I/O, fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataexport.domain.enums import DeviceLabel, Format, Frequency, Scope
from dataexport.domain.fieldspec import FieldSpec
from dataexport.domain.jobspec import parse_int_like, parse_job_spec
from dataexport.errors import ValidationFailed

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def body(**overrides):
    base = {
        "name": "Nightly",
        "format": "CSV",
        "scope": "views",
        "frequency": {
            "value": "once",
            "dateRange": {"from": "2026-11-20T00:00:00.000Z", "to": "2026-11-21T23:59:59.999Z"},
        },
        "fields": [
            {"fieldName": "session_id"},
            {"fieldName": "custom_var", "customVarPosition": "3"},
            {"fieldName": "dynamic_var", "dynamicVarKey": "AB Test"},
        ],
        "deviceLabel": "mobile",
    }
    base.update(overrides)
    return base


def test_a_valid_once_body_becomes_a_spec():
    spec = parse_job_spec(body(segmentId="12"), now=NOW, retention_days=395)
    assert spec.format is Format.CSV and spec.scope is Scope.VIEWS and spec.frequency is Frequency.ONCE
    assert spec.device_label is DeviceLabel.MOBILE and spec.segment_id == 12
    assert spec.range_from == datetime(2026, 11, 20, tzinfo=UTC)
    assert spec.range_to == datetime(2026, 11, 21, 23, 59, 59, 999000, tzinfo=UTC)
    assert [f.output_name for f in spec.fields] == ["session_id", "custom_var_3", "dynamic_var_AB Test"]


def test_recurring_jobs_ignore_a_date_range():
    spec = parse_job_spec(body(frequency={"value": "hourly", "dateRange": {"from": "x"}}), now=NOW, retention_days=1)
    assert spec.frequency is Frequency.HOURLY and spec.range_from is None


def test_scope_defaults_to_sessions():
    raw = body(fields=[{"fieldName": "session_id"}])
    del raw["scope"]
    assert parse_job_spec(raw, now=NOW, retention_days=395).scope is Scope.SESSIONS


def test_two_custom_vars_at_different_positions_are_fine_but_same_output_name_is_not():
    ok = body(
        fields=[
            {"fieldName": "custom_var", "customVarPosition": 1},
            {"fieldName": "custom_var", "customVarPosition": 2},
        ]
    )
    assert len(parse_job_spec(ok, now=NOW, retention_days=395).fields) == 2
    clash = body(
        fields=[
            {"fieldName": "custom_var", "customVarPosition": 1},
            {"fieldName": "custom_var", "customVarPosition": 1},
        ]
    )
    with pytest.raises(ValidationFailed) as caught:
        parse_job_spec(clash, now=NOW, retention_days=395)
    assert caught.value.errors[0].field == "fields[1].fieldName"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (3, 3),
        ("3", 3),
        (" 7 ", 7),
        (3.0, 3),
        (True, None),
        ("3.5", None),
        (2.5, None),
        ("", None),
        (None, None),
        ("9" * 30, None),
    ],
)
def test_int_like(raw, expected):
    assert parse_int_like(raw) == expected


def test_field_spec_round_trips_through_json():
    spec = FieldSpec("dynamic_var", alias_name="Exp", dynamic_var_key="AB Test")
    assert FieldSpec.from_json(spec.to_json()) == spec


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["name", "format", "scope", "frequency", "fields", "deviceLabel", "segmentId", "other"]),
        json_values,
        max_size=8,
    )
)
def test_any_json_gives_a_spec_or_a_validation_error(raw):
    try:
        parse_job_spec(raw, now=NOW, retention_days=395)
    except ValidationFailed as exc:
        assert exc.errors and all(e.field and e.message for e in exc.errors)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {"fieldName": st.sampled_from(["custom_var", "dynamic_var", "session_id"])},
            optional={"customVarPosition": json_values, "dynamicVarKey": json_values, "aliasName": json_values},
        ),
        max_size=5,
    )
)
def test_any_fields_list_gives_a_spec_or_a_validation_error(fields):
    try:
        spec = parse_job_spec(body(fields=fields), now=NOW, retention_days=395)
    except ValidationFailed as exc:
        assert exc.errors
    else:
        names = [f.output_name for f in spec.fields]
        assert len(names) == len(set(names))


# ---------------------------------------------------------------- maxima and unstorable text (issue 11)


def _errors(raw) -> list:
    with pytest.raises(ValidationFailed) as err:
        parse_job_spec(raw, now=NOW, retention_days=395)
    return err.value.errors


def _with_field(i: int, **changes):
    fields = body()["fields"]
    fields[i] = {**fields[i], **changes}
    return body(fields=fields)


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        (body(name="x" * 255 + "y"), "name", "at most 255"),
        (body(name="two\nlines"), "name", "control characters"),
        (body(name="bell\x07"), "name", "control characters"),
        (body(name="c1 \x85 next line"), "name", "control characters"),
        (body(name="nul \x00"), "name", "NUL"),
        (body(name="half \ud83d of an emoji"), "name", "surrogate"),
        (_with_field(0, aliasName="tab\there"), "fields[0].aliasName", "control characters"),
        (_with_field(0, aliasName="\udc00"), "fields[0].aliasName", "surrogate"),
        (_with_field(0, aliasName="a" * 256), "fields[0].aliasName", "at most 255"),
        (_with_field(2, dynamicVarKey="k\x00"), "fields[2].dynamicVarKey", "NUL"),
        (_with_field(2, dynamicVarKey="k" * 513), "fields[2].dynamicVarKey", "at most 512"),
        (_with_field(1, customVarPosition=10**30), "fields[1].customVarPosition", "between 1 and 20"),
        (body(fields=[{"fieldName": "session_id", "aliasName": f"c{i}"} for i in range(201)]), "fields", "at most 200"),
    ],
)
def test_each_maximum_names_its_field(raw, field, message):
    errors = _errors(raw)
    assert [(e.field, message in e.message) for e in errors] == [(field, True)]


def test_text_at_the_limits_and_printable_unicode_is_accepted():
    spec = parse_job_spec(
        _with_field(0, aliasName='Ünïcödé 📦 "quoted", semi; -- ' + "a" * 200)
        | {"name": "n" * 255, "fields": [{"fieldName": "dynamic_var", "dynamicVarKey": "tab\tin key" + "k" * 500}]},
        now=NOW,
        retention_days=395,
    )
    assert spec.name == "n" * 255
    assert spec.fields[0].dynamic_var_key.startswith("tab\tin key")  # keys match ingested data, whatever they hold


def test_a_flood_of_problems_is_cut_at_fifty_and_says_so():
    errors = _errors(body(**{f"unknown{i}": 1 for i in range(10_000)}))
    assert len(errors) == 51
    assert all(e.message == "is not a known field" for e in errors[:50])
    assert errors[-1].field == "body" and "first 50" in errors[-1].message
