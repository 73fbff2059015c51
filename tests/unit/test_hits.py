"""Hit validation rules, one by one, at their boundaries."""

from __future__ import annotations

import hashlib

import pytest

from dataexport.ingest.hits import HitError, session_id_of, user_id_of, validate_hit, validate_hits
from dataexport.ingest.hits_rules import MAX_DYNAMIC_KEYS


def hit(**overrides) -> dict:
    base = {
        "user_id_unhashed": "visitor-1",
        "session_number": 1,
        "session_time": "2026-03-01T10:00:00Z",
        "view_number": 1,
        "view_time": "2026-03-01T10:00:05.250+00:00",
        "device_id": 1,
        "url": "https://x.example/",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def errors_of(raw) -> list[tuple[str, str]]:
    row, errors = validate_hit(raw, 0)
    assert (row is None) == bool(errors)
    return [(e.field, e.message) for e in errors]


def test_minimal_hit_derives_ids_and_converts_times():
    row, errors = validate_hit(hit(), 3)
    assert errors == []
    assert row["user_id"] == int.from_bytes(hashlib.sha256(b"visitor-1").digest()[:8], "big")
    assert row["session_id"] == session_id_of("visitor-1", 1)
    assert row["session_time"] == 1772359200000
    assert row["view_time"] == 1772359205250
    assert row["errors"] == [] and row["dynamic_vars"] == [] and row["custom_vars"] == []


def test_ids_are_stable_and_distinct():
    assert user_id_of("a") == user_id_of("a") != user_id_of("b")
    assert session_id_of("a", 1) != session_id_of("a", 2)
    assert 0 <= user_id_of("a") < 2**64


def test_given_session_id_is_kept():
    row, _ = validate_hit(hit(session_id=2**64 - 1), 0)
    assert row["session_id"] == 2**64 - 1
    assert errors_of(hit(session_id=2**64)) == [("session_id", "must be between 0 and 18446744073709551615")]


@pytest.mark.parametrize(
    "field", ["user_id_unhashed", "session_number", "session_time", "view_number", "view_time", "device_id", "url"]
)
def test_each_required_field(field):
    assert errors_of(hit(**{field: ...})) == [(field, "is required")]
    assert errors_of(hit(**{field: None})) == [(field, "is required")]


def test_offsets_and_epoch_milliseconds():
    row, _ = validate_hit(hit(session_time="2026-03-01T11:00:00+01:00", view_time=1772359200001), 0)
    assert row["session_time"] == 1772359200000 and row["view_time"] == 1772359200001


@pytest.mark.parametrize(
    "value, message",
    [
        ("2026-03-01T10:00:00", "must carry a UTC offset or Z"),
        ("2026-03-01", "must carry a UTC offset or Z"),
        ("yesterday", "must be an ISO 8601 timestamp with offset or epoch milliseconds"),
        (-1, "must be epoch milliseconds between 0 and 253402300799999"),
        (253402300800000, "must be epoch milliseconds between 0 and 253402300799999"),
        (1.5e12, "must be an ISO 8601 timestamp with offset or epoch milliseconds"),
        (True, "must be an ISO 8601 timestamp with offset or epoch milliseconds"),
    ],
)
def test_bad_times(value, message):
    assert errors_of(hit(session_time=value, view_time=value)) == [("session_time", message), ("view_time", message)]


def test_view_before_session_start_is_rejected():
    assert errors_of(hit(view_time="2026-03-01T09:59:59.999Z")) == [("view_time", "must not be before session_time")]


@pytest.mark.parametrize(
    "field, good, bad, message",
    [
        ("session_number", [1, 65535], [0, 65536], "must be between 1 and 65535"),
        ("view_number", [1, 65535], [0, 65536], "must be between 1 and 65535"),
        ("device_id", [0, 5], [-1, 6], "must be between 0 and 5"),
        ("screen_height", [0, 65535], [-1, 65536], "must be between 0 and 65535"),
        ("document_width", [0, 2**32 - 1], [-1, 2**32], "must be between 0 and 4294967295"),
        ("view_duration_msec", [0, 2**32 - 1], [-1, 2**32], "must be between 0 and 4294967295"),
        ("frustration_score", [0, 100], [-1, 101], "must be between 0 and 100"),
        ("rage_click_all_targets_ind", [0, 1], [-1, 2], "must be between 0 and 1"),
        ("is_excludable", [0, 1], [2], "must be between 0 and 1"),
    ],
)
def test_integer_ranges(field, good, bad, message):
    for value in good:
        assert errors_of(hit(**{field: value})) == []
    for value in bad:
        assert errors_of(hit(**{field: value})) == [(field, message)]


@pytest.mark.parametrize("field", ["session_number", "device_id", "screen_width", "is_excludable"])
@pytest.mark.parametrize("value", [True, 1.0, "1", [1]])
def test_integers_must_be_integers(field, value):
    assert errors_of(hit(**{field: value})) == [(field, "must be an integer")]


def test_floats():
    row, _ = validate_hit(hit(scroll_rate=100, density=2.75), 0)
    assert row["scroll_rate"] == 100.0 and type(row["scroll_rate"]) is float and row["density"] == 2.75
    assert errors_of(hit(scroll_rate=100.01)) == [("scroll_rate", "must be between 0 and 100")]
    assert errors_of(hit(scroll_rate=float("nan"))) == [("scroll_rate", "must be between 0 and 100")]
    assert errors_of(hit(scroll_rate="50")) == [("scroll_rate", "must be a number")]


def test_strings():
    assert errors_of(hit(user_id_unhashed="u" * 128)) == []
    assert errors_of(hit(user_id_unhashed="u" * 129)) == [("user_id_unhashed", "must be at most 128 characters")]
    assert errors_of(hit(user_id_unhashed="")) == [("user_id_unhashed", "must not be empty")]
    assert errors_of(hit(url="")) == [("url", "must not be empty")]
    assert errors_of(hit(city=42)) == [("city", "must be a string")]
    assert errors_of(hit(title="t" * 8192)) == []
    assert errors_of(hit(title="t" * 8193)) == [("title", "must be at most 8192 characters")]
    row, _ = validate_hit(hit(city=None, title=""), 0)
    assert row["city"] is None and row["title"] == ""


def test_unknown_and_derived_keys_are_rejected_not_dropped():
    assert errors_of(hit(veiw_number=2)) == [("veiw_number", "unknown field")]
    for derived in ("project_id", "user_id", "ingested_at"):
        assert errors_of(hit(**{derived: 1})) == [(derived, "is derived by the server and must not be sent")]


def test_not_an_object():
    assert validate_hit([1], 7) == (None, [HitError(7, "hit", "must be a JSON object")])
    assert validate_hit("x", 0)[1][0].field == "hit"


def test_all_errors_of_a_hit_are_reported():
    assert errors_of(hit(device_id=9, url=..., bogus=1)) == [
        ("device_id", "must be between 0 and 5"),
        ("bogus", "unknown field"),
        ("url", "is required"),
    ]


# -- custom vars ---------------------------------------------------------------------------------------


def cv(**kw):
    return hit(custom_vars=[{"position": 1, "key": "k", "value": "v", **kw}])


def test_custom_var_defaults_to_page_scope_and_keeps_session_scope():
    row, _ = validate_hit(cv(), 0)
    assert row["custom_vars"] == [{"position": 1, "key": "k", "value": "v", "scope": "page"}]
    row, _ = validate_hit(cv(scope="session", position=20), 0)
    assert row["custom_vars"] == [{"position": 20, "key": "k", "value": "v", "scope": "session"}]


@pytest.mark.parametrize(
    "kw, field, message",
    [
        ({"position": 0}, "custom_vars[0].position", "must be an integer between 1 and 20"),
        ({"position": 21}, "custom_vars[0].position", "must be an integer between 1 and 20"),
        ({"position": "1"}, "custom_vars[0].position", "must be an integer between 1 and 20"),
        ({"key": ""}, "custom_vars[0].key", "must not be empty"),
        ({"key": "k" * 513}, "custom_vars[0].key", "must be at most 512 characters"),
        ({"value": "v" * 256}, "custom_vars[0].value", "must be at most 255 characters"),
        ({"value": True}, "custom_vars[0].value", "must be a string"),
        ({"scope": "visit"}, "custom_vars[0].scope", 'must be "page" or "session"'),
        ({"colour": "red"}, "custom_vars[0].colour", "unknown field"),
    ],
)
def test_custom_var_rules(kw, field, message):
    assert errors_of(cv(**kw)) == [(field, message)]


def test_custom_var_limits_are_inclusive():
    assert errors_of(cv(key="k" * 512, value="v" * 255)) == []


def test_custom_var_position_set_twice_keeps_the_last_value():
    row, _ = validate_hit(
        hit(custom_vars=[{"position": 2, "key": "a", "value": "1"}, {"position": 2, "key": "a", "value": "2"}]), 0
    )
    assert [c["value"] for c in row["custom_vars"]] == ["2"]


def test_custom_vars_must_be_a_list_of_objects():
    assert errors_of(hit(custom_vars={"position": 1})) == [("custom_vars", "must be a list")]
    assert errors_of(hit(custom_vars=["x"])) == [("custom_vars[0]", "must be an object")]


# -- dynamic vars --------------------------------------------------------------------------------------


def test_dynamic_vars_as_list_or_object_give_the_same_row():
    as_list, _ = validate_hit(hit(dynamic_vars=[{"key": "AB Test", "value": "B"}, {"key": "n", "value": 3}]), 0)
    as_object, _ = validate_hit(hit(dynamic_vars={"AB Test": "B", "n": 3}), 0)
    assert (
        as_list["dynamic_vars"]
        == as_object["dynamic_vars"]
        == [
            {"key": "AB Test", "string_value": "B", "number_value": None},
            {"key": "n", "string_value": None, "number_value": 3},
        ]
    )


@pytest.mark.parametrize(
    "value, ok",
    [
        ("v" * 255, True),
        ("v" * 256, False),
        (0, True),
        (4294967296, True),
        (4294967297, False),
        (-1, False),
    ],
)
def test_dynamic_var_value_limits(value, ok):
    errors = errors_of(hit(dynamic_vars={"k": value}))
    assert (errors == []) is ok
    if not ok:
        assert errors[0][0] == "dynamic_vars[0].value"


@pytest.mark.parametrize("value", [True, False, 1.5, 2.0, None, [1], {"a": 1}])
def test_dynamic_var_value_types_rejected(value):
    assert errors_of(hit(dynamic_vars={"k": value})) == [("dynamic_vars[0].value", "must be a string or an integer")]


def test_dynamic_var_keys():
    assert errors_of(hit(dynamic_vars={"k" * 512: "v"})) == []
    assert errors_of(hit(dynamic_vars={"k" * 513: "v"})) == [("dynamic_vars[0].key", "must be at most 512 characters")]
    assert errors_of(hit(dynamic_vars={"": "v"})) == [("dynamic_vars[0].key", "must not be empty")]
    assert errors_of(hit(dynamic_vars=[{"key": "a", "value": "b", "extra": 1}])) == [
        ("dynamic_vars[0].extra", "unknown field")
    ]
    assert errors_of(hit(dynamic_vars="a=b")) == [("dynamic_vars", "must be a list")]


def test_first_40_distinct_dynamic_keys_are_kept_the_rest_dropped_silently():
    pairs = [{"key": f"k{i}", "value": i} for i in range(45)]
    pairs.insert(10, {"key": "k3", "value": "again"})  # a repeated key does not count twice
    row, errors = validate_hit(hit(dynamic_vars=pairs), 0)
    assert errors == []
    keys = [d["key"] for d in row["dynamic_vars"]]
    assert len(set(keys)) == MAX_DYNAMIC_KEYS
    assert set(keys) == {f"k{i}" for i in range(40)}
    assert keys.count("k3") == 2


# -- other nested lists --------------------------------------------------------------------------------


def test_nested_lists_are_checked_field_by_field():
    good = hit(
        errors=[{"message": "boom", "error_time": 1772359200000, "line_number": 4294967295}],
        transactions=[{"id": "T1", "revenue_cents": 2**64 - 1}],
        transaction_items=[{"id": "T1", "quantity": 2, "product_id_hashed": 0}],
        add_to_cart_items=[{"sku": "S", "add_to_cart_time": "2026-03-01T10:00:00Z"}],
        app_events=[{"event_name": "app_start", "event_type": 2}],
    )
    row, errors = validate_hit(good, 0)
    assert errors == []
    assert row["errors"] == [{"message": "boom", "error_time": 1772359200000, "line_number": 4294967295}]
    assert row["add_to_cart_items"][0]["add_to_cart_time"] == 1772359200000
    bad = hit(
        errors=[{"message": 1, "line_number": 2**32}],
        transactions=[{"revenue_cents": -1}],
        app_events=[{"event_name": "x", "event_type": 3, "when": 1}],
        transaction_items="T1",
    )
    assert errors_of(bad) == [
        ("errors[0].message", "must be a string"),
        ("errors[0].line_number", "must be between 0 and 4294967295"),
        ("transactions[0].revenue_cents", "must be between 0 and 18446744073709551615"),
        ("transactions[0].id", "is required"),
        ("app_events[0].event_type", "must be between 0 and 2"),
        ("app_events[0].when", "unknown field"),
        ("transaction_items", "must be a list"),
    ]


def test_list_length_is_bounded():
    assert errors_of(hit(errors=[{}] * 1001)) == [("errors", "must have at most 1000 entries")]


def test_batch_keeps_good_rows_and_reports_bad_ones_with_their_index():
    batch = validate_hits([hit(), hit(device_id=7), "nope", hit(view_number=2)], start_index=10)
    assert len(batch.rows) == 2 and batch.rejected == 2
    assert [(e.index, e.field) for e in batch.errors] == [(11, "device_id"), (12, "hit")]


def test_reason_drops_list_indexes_so_rejections_can_be_counted():
    assert HitError(1, "dynamic_vars[12].value", "m").reason == ("dynamic_vars.value", "m")
