"""The validation matrix: bad requests get 400 naming the field, and nothing is stored."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest

from examples import example_once


def _ts(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.000Z")


NOW = datetime.now(UTC)


def mutate(path: str, value) -> dict:
    """The reference's once example with one value replaced (value DELETE removes the key)."""
    body = copy.deepcopy(example_once())
    keys = path.replace("]", "").replace("[", ".").split(".")
    target = body
    for key in keys[:-1]:
        target = target[int(key)] if key.isdigit() else target[key]
    last = keys[-1]
    if value is DELETE:
        del target[int(last) if last.isdigit() else last]
    elif last.isdigit():
        target[int(last)] = value
    else:
        target[last] = value
    return body


DELETE = object()
HUGE = "x" * 100_000

CASES = [
    # name
    ("name", DELETE, "name"),
    ("name", "", "name"),
    ("name", "   ", "name"),
    ("name", None, "name"),
    ("name", 42, "name"),
    ("name", HUGE, "name"),
    # format
    ("format", DELETE, "format"),
    ("format", "XML", "format"),
    ("format", ["CSV"], "format"),
    # scope
    ("scope", "users", "scope"),
    ("scope", "s" * 256, "scope"),
    ("scope", 1, "scope"),
    # frequency
    ("frequency", DELETE, "frequency"),
    ("frequency", "daily", "frequency"),
    ("frequency.value", "weekly", "frequency.value"),
    ("frequency.value", DELETE, "frequency.value"),
    ("frequency.dateRange", DELETE, "frequency.dateRange"),
    ("frequency.dateRange", "last week", "frequency.dateRange"),
    ("frequency.dateRange.from", DELETE, "frequency.dateRange.from"),
    ("frequency.dateRange.to", DELETE, "frequency.dateRange.to"),
    ("frequency.dateRange.from", "yesterday", "frequency.dateRange.from"),
    ("frequency.dateRange.from", "2023-02-30", "frequency.dateRange.from"),
    ("frequency.dateRange.from", 1676332800000, "frequency.dateRange.from"),
    ("frequency.dateRange.to", _ts(NOW - timedelta(days=10)), "frequency.dateRange.to"),  # to before from
    ("frequency.dateRange.from", _ts(NOW - timedelta(days=20)), "frequency.dateRange.to"),  # longer than 7 days
    (
        "frequency.dateRange",
        {"from": _ts(NOW - timedelta(days=400)), "to": _ts(NOW - timedelta(days=399))},
        "frequency.dateRange.from",
    ),  # before retention
    ("frequency.unknown", 1, "frequency.unknown"),
    # fields
    ("fields", DELETE, "fields"),
    ("fields", [], "fields"),
    ("fields", "session_id", "fields"),
    ("fields", [{"fieldName": "session_id"}] * 201, "fields"),
    ("fields.0", "session_id", "fields[0]"),
    ("fields.0.fieldName", DELETE, "fields[0].fieldName"),
    ("fields.0.fieldName", "no_such_field", "fields[0].fieldName"),
    ("fields.0.fieldName", None, "fields[0].fieldName"),
    ("fields.0.fieldName", 7, "fields[0].fieldName"),
    ("fields.1.fieldName", "session_id", "fields[1].fieldName"),  # same field twice
    ("fields.0.aliasName", "View number in session", "fields[1].aliasName"),  # duplicate output name
    ("fields.0.aliasName", "", "fields[0].aliasName"),
    ("fields.0.aliasName", 12, "fields[0].aliasName"),
    ("fields.0.aliasName", HUGE, "fields[0].aliasName"),
    ("fields.0.colour", "red", "fields[0].colour"),
    ("fields.2.customVarPosition", DELETE, "fields[2].customVarPosition"),
    ("fields.2.customVarPosition", 0, "fields[2].customVarPosition"),
    ("fields.2.customVarPosition", 21, "fields[2].customVarPosition"),
    ("fields.2.customVarPosition", "two", "fields[2].customVarPosition"),
    ("fields.2.customVarPosition", True, "fields[2].customVarPosition"),
    ("fields.2.customVarPosition", 2.5, "fields[2].customVarPosition"),
    ("fields.3.dynamicVarKey", DELETE, "fields[3].dynamicVarKey"),
    ("fields.3.dynamicVarKey", "", "fields[3].dynamicVarKey"),
    ("fields.3.dynamicVarKey", "k" * 513, "fields[3].dynamicVarKey"),
    ("fields.3.dynamicVarKey", {"key": "x"}, "fields[3].dynamicVarKey"),
    ("fields.0.customVarPosition", 3, "fields[0].customVarPosition"),  # not a custom_var
    ("fields.1.fieldName", "session_transaction_items.sku", None),  # sessions-only field on views: checked below
    # deviceLabel
    ("deviceLabel", DELETE, "deviceLabel"),
    ("deviceLabel", "phone", "deviceLabel"),
    ("deviceLabel", None, "deviceLabel"),
    # segmentId
    ("segmentId", "abc", "segmentId"),
    ("segmentId", -3, "segmentId"),
    ("segmentId", 987654, "segmentId"),  # not a segment of this project
    ("segmentId", True, "segmentId"),
    # unknown top-level field, unicode
    ("colour", "red", "colour"),
    ("format", "ＣＳＶ", "format"),
]


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [c for c in CASES if c[2] is not None],
    ids=[f"{i}-{c[0]}" for i, c in enumerate(CASES) if c[2] is not None],
)
def test_bad_create_request_names_the_field_and_stores_nothing(http, tenant, path, value, field):
    answer = http.post("/v1/exports", json=mutate(path, value), headers=tenant.headers)
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["success"] is False and body["errorCode"] and body["errorMessage"]
    assert field in [e["field"] for e in body["errors"]], body["errors"]
    assert HUGE not in answer.text  # errors never echo huge input back
    assert http.get("/v1/exports?state=ACTIVE", headers=tenant.headers).json()["payload"] == []


def test_the_matrix_has_at_least_forty_cases():
    assert len([c for c in CASES if c[2] is not None]) >= 40


def test_a_sessions_only_field_is_refused_on_views(http, tenant):
    body = mutate("fields.1.fieldName", "session_add_to_cart_items.sku")
    answer = http.post("/v1/exports", json=body, headers=tenant.headers)
    assert answer.status_code == 400 and answer.json()["errors"][0]["field"] == "fields[1].fieldName"


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"[]", b"null", b'"text"', b'{"name": "a",}', b'{"name": "\xff"}'],
)
def test_malformed_bodies_get_400(http, tenant, raw):
    answer = http.post("/v1/exports", content=raw, headers={**tenant.headers, "Content-Type": "application/json"})
    assert answer.status_code == 400 and answer.json()["success"] is False


def test_every_problem_is_reported_at_once(http, tenant):
    body = {"name": "", "format": "XML", "frequency": {"value": "weekly"}, "fields": [], "deviceLabel": "phone"}
    answer = http.post("/v1/exports", json=body, headers=tenant.headers)
    fields = {e["field"] for e in answer.json()["errors"]}
    assert fields == {"name", "format", "frequency.value", "fields", "deviceLabel"}


def test_lenient_forms_real_clients_send_are_accepted(http, tenant):
    body = example_once()
    body["fields"][2]["customVarPosition"] = "2"
    body["format"] = "csv"
    body["frequency"]["dateRange"] = {
        "from": body["frequency"]["dateRange"]["from"][:10],
        "to": body["frequency"]["dateRange"]["to"][:10],
    }
    del body["scope"]  # defaults to sessions
    body["fields"] = [f for f in body["fields"] if f["fieldName"] != "view_number"]
    answer = http.post("/v1/exports", json=body, headers=tenant.headers)
    assert answer.status_code == 200, answer.text
    job = http.get(f"/v1/exports/{answer.json()['payload']['jobId']}", headers=tenant.headers).json()["payload"]
    assert job["scope"] == "sessions" and job["format"] == "CSV"
    assert job["fields"][1]["customVarPosition"] == 2


def test_sql_looking_and_unicode_text_is_stored_verbatim(http, tenant):
    body = example_once()
    body["name"] = "Robert'); DROP TABLE export_jobs; -- 📦 éè"
    body["fields"][0]["aliasName"] = 'a "quoted", alias; --'
    answer = http.post("/v1/exports", json=body, headers=tenant.headers)
    assert answer.status_code == 200
    job = http.get(f"/v1/exports/{answer.json()['payload']['jobId']}", headers=tenant.headers).json()["payload"]
    assert job["name"] == body["name"] and job["fields"][0]["aliasName"] == 'a "quoted", alias; --'
