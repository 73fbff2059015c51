"""The field catalog: every field of the spec, with what the API and the SQL need (pure)."""

from __future__ import annotations

import re

import pytest

from dataexport.catalog import CATALOG, fields_for, lookup
from dataexport.catalog.fields import segment_fields
from dataexport.catalog.primitives import PRIMITIVES
from dataexport.catalog.sql import render
from dataexport.domain.enums import Scope


def _words(text: str) -> list[str]:
    """Field names as listed in fields.md, whitespace-separated."""
    return text.split()


BOTH = _words("""project_id user_id user_id_unhashed session_id session_number session_date session_time device_id city
country_code language browser_name browser_version browser_major_version platform_name platform_version
screen_height screen_width referer_url session_number_of_views session_duration_msec session_number_of_transactions
session_transactions_revenue_cents is_excludable custom_var dynamic_var""")
SESSIONS = _words("""os_version app_version model manufacturer density app_events.event_name app_events.event_time
app_events.event_type app_events.view_number session_transaction_items.id session_transaction_items.sku
session_transaction_items.catalog_id session_transaction_items.product_id_hashed session_transaction_items.revenue_cents
session_transaction_items.quantity session_transaction_items.transaction_time
session_transaction_items.transaction_view_number session_add_to_cart_items.sku session_add_to_cart_items.catalog_id
session_add_to_cart_items.product_id_hashed session_add_to_cart_items.is_in_transaction
session_add_to_cart_items.add_to_cart_time session_add_to_cart_items.add_to_cart_view_number""")
VIEWS = _words("""view_number view_time url url_no_query_param scheme prefix path query hash title screen_name
is_first is_last
view_duration_msec page_interaction_time_msec scroll_rate window_height window_width document_height document_width
dom_interactive_after_msec fully_loaded start_render frustration_score rage_click_all_targets_ind
multiple_button_interaction_ind any_js_error_ind any_api_error_ind api_error_after_click_ind errors.message
errors.error_time errors.filename errors.error_type errors.line_number errors.col_number utm_source utm_medium
utm_campaign utm_content utm_term""")


@pytest.mark.parametrize(
    ("names", "scopes"), [(BOTH, list(Scope)), (SESSIONS, [Scope.SESSIONS]), (VIEWS, [Scope.VIEWS])]
)
def test_every_spec_field_is_on_its_scopes(names, scopes):
    for scope in scopes:
        missing = [n for n in names if lookup(scope, n) is None]
        assert missing == [], f"{scope}: {missing}"


def test_names_are_unique_and_listing_is_complete():
    assert len({f.name for f in CATALOG}) == len(CATALOG)
    assert {f.name for f in CATALOG} >= set(BOTH + SESSIONS + VIEWS)
    assert {f.name for f in fields_for(Scope.VIEWS)} >= set(BOTH + VIEWS)
    assert lookup(Scope.SESSIONS, "view_number") is None
    assert lookup(Scope.VIEWS, "session_transaction_items.sku") is None


@pytest.mark.parametrize("field", CATALOG, ids=lambda f: f.name)
def test_field_is_documented_and_computable(field):
    api = field.as_api()
    assert set(api) == {"name", "description", "example", "aliases", "parameters", "type"}
    assert api["type"] == field.type
    assert api["description"].endswith(".") and len(api["description"]) > 10
    assert api["example"].strip()
    assert re.fullmatch(r"(Array\()?(U?Int(8|16|32|64)|Integer|String|Float32|Date|DateTime)\)?", field.type)
    for scope in field.scopes:
        template = field.sql_for(scope)
        if field.parameters:
            assert template is None  # built by the query builder with the bound parameter
            continue
        assert template
        for name in re.findall(r"\{p:([a-z_]+)\}", template):
            assert name in PRIMITIVES
        needed: set[str] = set()
        rendered = render(template, tz="UTC", needed=needed)
        assert "{" not in rendered.text
        assert rendered.params == ["UTC"] * template.count("{tz}")


def test_parameterised_fields():
    assert lookup(Scope.SESSIONS, "custom_var").as_api()["parameters"] == ["customVarPosition"]
    assert lookup(Scope.VIEWS, "dynamic_var").as_api()["parameters"] == ["dynamicVarKey"]


def test_segment_fields_are_session_scalars():
    fields = segment_fields()
    assert fields["country_code"] == "string"
    assert fields["device_id"] == "number"
    assert fields["session_number_of_views"] == "number"
    assert fields["referer_url"] == "string"
    for excluded in ("session_time", "session_date", "custom_var", "app_events.event_name", "url"):
        assert excluded not in fields


def test_inline_render_is_an_aggregate():
    text = render(lookup(Scope.SESSIONS, "session_number_of_views").session_sql).text
    assert text == "CAST((count(*)) AS UINTEGER)"
