"""Per-session aggregates that session-level fields are computed from.

Sessions are not stored: a session is the group of its pageviews sharing (user_id_unhashed,
session_number) within one project. Each primitive below is ONE aggregate over that group. The
query builder computes only the primitives that the selected fields name:
- scope `sessions`: in a GROUP BY, with `{ob}` = ` ORDER BY view_number` (ordered aggregates);
- scope `views`: as window aggregates over a window already ordered by view_number (`{ob}` = '').
Field templates (fields.py) refer to a primitive as `{p:name}`.
"""

from __future__ import annotations

# "First known" session attributes: the value of the earliest view that has one (arg_min skips NULLs,
# so a view whose tag did not report the city does not blank the session's city).
FIRST_KNOWN_COLUMNS = (
    "device_id",
    "city",
    "country_code",
    "language",
    "browser_name",
    "browser_version",
    "platform_name",
    "platform_version",
    "os_version",
    "app_version",
    "model",
    "manufacturer",
    "density",
    "screen_height",
    "screen_width",
)


def _view_numbers_of(list_column: str) -> str:
    # One view_number per element of the view's list, so it stays index-aligned after flattening.
    return f"flatten(list(list_transform({list_column}, lambda _e: view_number){{ob}}))"


PRIMITIVES: dict[str, str] = {
    "project_id": "any_value(project_id)",
    "user_id": "any_value(user_id)",
    "session_id": "any_value(session_id)",
    "session_time": "min(session_time)",
    "views": "count(*)",
    "first_view_number": "min(view_number)",
    "last_view_number": "max(view_number)",
    # End of the session = end of its last-ending view (view start + time spent on it).
    "end_ms": "max(epoch_ms(view_time) + coalesce(view_duration_msec, 0))",
    "transactions": "sum(len(transactions))",
    "revenue": "sum(list_sum(list_transform(transactions, lambda _t: _t.revenue_cents)))",
    "is_excludable": "max(is_excludable)",
    # The session's referrer is the referrer of its first view, even when that one is NULL (direct entry).
    "referer_url": "first(referer_url{ob})",
    "errors": "flatten(list(errors{ob}))",
    "errors_view_numbers": _view_numbers_of("errors"),
    "app_events": "flatten(list(app_events{ob}))",
    "app_events_view_numbers": _view_numbers_of("app_events"),
    "transaction_items": "flatten(list(transaction_items{ob}))",
    "transaction_items_view_numbers": _view_numbers_of("transaction_items"),
    "add_to_cart_items": "flatten(list(add_to_cart_items{ob}))",
    "add_to_cart_items_view_numbers": _view_numbers_of("add_to_cart_items"),
    **{f"first_{c}": f"arg_min({c}, view_number)" for c in FIRST_KNOWN_COLUMNS},
}

SESSION_ORDER = " ORDER BY view_number"


def primitive_sql(name: str, *, ordered: bool) -> str:
    """The aggregate text of a primitive; `ordered` adds ORDER BY view_number inside ordered aggregates."""
    return PRIMITIVES[name].replace("{ob}", SESSION_ORDER if ordered else "")


def column_name(name: str) -> str:
    """Internal column holding a computed primitive (never user text)."""
    return f"_p_{name}"
