"""The console's pure parts: the job form <-> API body mapping, and the charts' layout."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dataexport.console import charts
from dataexport.console.accounts import check_email, check_password, normalize_email, parse_role
from dataexport.console.jobform import body_from_form, input_id, new_form, posted_form
from dataexport.domain.jobspec import parse_job_spec
from dataexport.errors import FieldError, ValidationFailed

NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


def test_the_form_becomes_the_api_body_its_names_describe():
    form = [
        ("name", " Weekly "),
        ("format", "CSV"),
        ("scope", "views"),
        ("frequency.value", "once"),
        ("frequency.dateRange.from", "2026-12-01T00:00:00.000Z"),
        ("frequency.dateRange.to", "2026-12-01T23:59:59.999Z"),
        ("deviceLabel", "all"),
        ("segmentId", "7"),
        ("fields[1].fieldName", "custom_var"),
        ("fields[1].customVarPosition", "2"),
        ("fields[0].fieldName", "session_id"),
        ("fields[0].aliasName", "sid"),
        ("fields[0].customVarPosition", ""),  # empty optional inputs are left out
        ("fields[2].fieldName", "dynamic_var"),
        ("fields[2].dynamicVarKey", "AB Test"),
    ]
    assert body_from_form(form) == {
        "name": "Weekly",
        "format": "CSV",
        "scope": "views",
        "deviceLabel": "all",
        "frequency": {
            "value": "once",
            "dateRange": {"from": "2026-12-01T00:00:00.000Z", "to": "2026-12-01T23:59:59.999Z"},
        },
        "fields": [
            {"fieldName": "session_id", "aliasName": "sid"},
            {"fieldName": "custom_var", "customVarPosition": 2},
            {"fieldName": "dynamic_var", "dynamicVarKey": "AB Test"},
        ],
        "segmentId": 7,
    }


def test_a_recurring_job_sends_no_date_range_and_odd_values_go_as_typed():
    body = body_from_form(
        [
            ("frequency.value", "daily"),
            ("frequency.dateRange.from", "2026-12-01"),
            ("segmentId", "seven"),
            ("fields[0].fieldName", "custom_var"),
            ("fields[0].customVarPosition", "²"),
        ]
    )
    assert body["frequency"] == {"value": "daily"}
    assert body["segmentId"] == "seven" and body["fields"][0]["customVarPosition"] == "²"
    with pytest.raises(ValidationFailed) as failed:
        parse_job_spec(body, now=NOW, retention_days=30)
    fields = {e.field for e in failed.value.errors}
    assert {"segmentId", "fields[0].customVarPosition", "name", "format"} <= fields


def test_every_error_path_of_the_validator_is_an_input_of_the_form():
    form = new_form(NOW)
    with pytest.raises(ValidationFailed) as failed:
        parse_job_spec(
            {
                "name": "",
                "format": "XML",
                "scope": "pages",
                "frequency": {"value": "once", "dateRange": {"from": "x", "to": "y"}},
                "fields": [{"fieldName": "custom_var", "customVarPosition": 99, "aliasName": "a\nb"}],
                "deviceLabel": "fridge",
                "segmentId": -1,
            },
            now=NOW,
            retention_days=30,
        )
    state = posted_form({"fields": [{"fieldName": "custom_var"}]}, [], failed.value.errors)
    assert state.general_errors == []  # each one lands beside an input
    assert set(state.errors) <= set(form.values) | {"fields[0].customVarPosition", "fields[0].aliasName"}
    assert input_id("fields[0].customVarPosition") == "fields-0-customVarPosition"
    assert input_id("frequency.dateRange.from") == "frequency-dateRange-from"


def test_errors_naming_no_input_are_shown_above_the_form():
    state = posted_form({"fields": []}, [("name", "x")], [FieldError("fields", "must have at least 1 item")])
    assert state.general_errors == [("fields", "must have at least 1 item")]
    assert state.values["name"] == "x"


def test_a_new_form_proposes_yesterday_for_a_once_job():
    values = new_form(NOW).values
    assert values["frequency.dateRange.from"] == "2026-12-02T00:00:00.000Z"
    assert values["frequency.dateRange.to"] == "2026-12-02T23:59:59.999Z"
    assert new_form(NOW, "bogus").values["scope"] == "sessions"


def test_charts_scale_to_a_round_top_and_keep_every_bar():
    chart = charts.bar_chart("Pageviews", [("a", 0), ("b", 130), ("c", 65)])
    assert [t.text for t in chart.ticks] == ["0", "50", "100", "150", "200"]
    tallest = max(chart.bars, key=lambda b: b.height)
    assert tallest.label == "b" and tallest.y + tallest.height == chart.baseline
    assert chart.bars[0].height == 0 and not chart.empty
    assert all(b.x + b.width <= chart.width for b in chart.bars)
    assert charts.bar_chart("Nothing", [("a", 0)]).empty and charts.bar_chart("Nothing", []).empty


def test_a_few_bars_keep_a_bars_width():
    chart = charts.bar_chart("Runs", [("#1", 3.0)])
    assert chart.bars[0].width <= charts.MAX_SLOT


def test_chart_labels_are_thinned_to_fit():
    chart = charts.bar_chart("Hours", [(str(h), h) for h in range(48)])
    assert len(chart.x_labels) <= charts.MAX_X_LABELS and chart.x_labels[0][1] == "0"


@pytest.mark.parametrize(
    ("value", "top"), [(0, 1), (1, 1), (3, 5), (7, 10), (10, 10), (11, 20), (0.3, 0.5), (1_234_567, 2_000_000)]
)
def test_nice_ceiling(value, top):
    assert charts.nice_ceiling(value) == pytest.approx(top)


def test_value_texts():
    assert [charts.count_text(v) for v in (0, 999, 1500, 12_000, 2_500_000)] == ["0", "999", "1.5k", "12k", "2.5M"]
    assert [charts.seconds_text(v) for v in (0.045, 2.5, 42, 90, 7200)] == [
        "45 ms",
        "2.5 s",
        "42 s",
        "1.5 min",
        "2.0 h",
    ]


def test_account_rules():
    assert normalize_email("  Ana@Example.COM ") == "ana@example.com"
    for bad in ("ana", "ana@", "@example.com", "ana@localhost", "a b@example.com", "a@" + "x" * 320 + ".com"):
        with pytest.raises(ValidationFailed):
            check_email(bad)
    with pytest.raises(ValidationFailed):
        check_password("short")
    with pytest.raises(ValidationFailed):
        parse_role("root")
    assert parse_role(" Viewer ").value == "viewer"
