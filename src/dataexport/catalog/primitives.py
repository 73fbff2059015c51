"""Per-session aggregates that session-level fields are computed from.

Sessions are not stored: a session is the group of its pageviews sharing (user_id_unhashed,
session_number) within one project. Each primitive below is ONE aggregate over that group, computed in
a GROUP BY session for both scopes (scope `views` joins the session row back to each of its views).
The query builder computes only the primitives that the selected fields name. Field templates
(fields.py) refer to a primitive as `{p:name}`.

No primitive is an ordered aggregate (`list(x ORDER BY view_number)`, `first(x ORDER BY ...)`): DuckDB
buffers every input row of an ordered aggregate per group, in memory, which is what made wide session
exports run out of memory. View order comes from `arg_min`/`arg_max` by view_number, and lists are
gathered unordered as (view_number, list) pairs of the views that have elements, then sorted per session.
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


def _by_view(list_column: str) -> str:
    # The (view_number, list) pairs of the views whose list has elements, in view order. Most views have
    # none, so the FILTER keeps the aggregate state small.
    pairs = f"list({{'v': view_number, 'e': {list_column}}}) FILTER (WHERE len({list_column}) > 0)"
    return f"list_sort({pairs})"


def _gathered(list_column: str) -> str:
    """The elements of the session's views, in view order ([] when none has any)."""
    return f"coalesce(flatten(list_transform({_by_view(list_column)}, lambda _z: _z.e)), [])"


def _view_numbers_of(list_column: str) -> str:
    """One view_number per element of `_gathered(list_column)`, index-aligned with it."""
    numbers = f"list_transform({_by_view(list_column)}, lambda _z: list_transform(_z.e, lambda _q: _z.v))"
    return f"coalesce(flatten({numbers}), [])"


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
    "referer_url": "arg_min_null(referer_url, view_number)",
    "errors": _gathered("errors"),
    "app_events": _gathered("app_events"),
    "app_events_view_numbers": _view_numbers_of("app_events"),
    "transaction_items": _gathered("transaction_items"),
    "transaction_items_view_numbers": _view_numbers_of("transaction_items"),
    "add_to_cart_items": _gathered("add_to_cart_items"),
    "add_to_cart_items_view_numbers": _view_numbers_of("add_to_cart_items"),
    **{f"first_{c}": f"arg_min({c}, view_number)" for c in FIRST_KNOWN_COLUMNS},
}


def primitive_sql(name: str) -> str:
    """The aggregate text of a primitive."""
    return PRIMITIVES[name]


def column_name(name: str) -> str:
    """Internal column holding a computed primitive (never user text)."""
    return f"_p_{name}"
