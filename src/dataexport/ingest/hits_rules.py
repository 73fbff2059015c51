"""The rules of a hit, as data: which keys, which types and ranges, and the two checks they use. Pure.

`hits` (per hit, with messages) and `hits_columnar` (whole batches, fast) both read these tables, so a
rule changes in one place.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

MAX_TEXT = 8192  # free text (URLs, titles, messages): generous, but bounded so one hit cannot be huge
MAX_USER_ID = 128
MAX_LIST = 1000  # entries per nested list of one pageview
MAX_CUSTOM_VAR_KEY = 512
MAX_VAR_VALUE = 255
MAX_DYNAMIC_KEY = 512
MAX_DYNAMIC_NUMBER = 4294967296
MAX_DYNAMIC_KEYS = 40
MAX_EPOCH_MS = 253402300799999  # 9999-12-31T23:59:59.999Z

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)

# Value kinds of the checks table.
STR, INT, FLOAT, TS = 0, 1, 2, 3

# column -> (kind, lower, upper); for strings `upper` is the maximum length.
SCALARS: dict[str, tuple[int, float, float]] = {
    "user_id_unhashed": (STR, 1, MAX_USER_ID),
    "session_number": (INT, 1, 65535),
    "session_id": (INT, 0, 2**64 - 1),
    "session_time": (TS, 0, 0),
    "view_number": (INT, 1, 65535),
    "view_time": (TS, 0, 0),
    "device_id": (INT, 0, 5),
    "url": (STR, 1, MAX_TEXT),
    **{
        name: (STR, 0, MAX_TEXT)
        for name in (
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
            "referer_url",
            "title",
            "screen_name",
        )
    },
    "density": (FLOAT, 0, 100),
    **{name: (INT, 0, 65535) for name in ("screen_height", "screen_width", "window_height", "window_width")},
    **{
        name: (INT, 0, 2**32 - 1)
        for name in (
            "document_height",
            "document_width",
            "view_duration_msec",
            "page_interaction_time_msec",
            "dom_interactive_after_msec",
            "fully_loaded",
            "start_render",
        )
    },
    "scroll_rate": (FLOAT, 0, 100),
    "frustration_score": (INT, 0, 100),
    **{
        name: (INT, 0, 1)
        for name in (
            "rage_click_all_targets_ind",
            "multiple_button_interaction_ind",
            "any_api_error_ind",
            "api_error_after_click_ind",
            "is_excludable",
        )
    },
}
REQUIRED = ("user_id_unhashed", "session_number", "session_time", "view_number", "view_time", "device_id", "url")
DERIVED = ("project_id", "user_id", "ingested_at")

_U32 = (INT, 0, 2**32 - 1)
_U64 = (INT, 0, 2**64 - 1)
_TEXT = (STR, 0, MAX_TEXT)
_TIME = (TS, 0, 0)
# nested list column -> {sub-field: check}, and which sub-fields are required
NESTED: dict[str, dict[str, tuple[int, float, float]]] = {
    "errors": {
        "message": _TEXT,
        "error_time": _TIME,
        "filename": _TEXT,
        "error_type": _TEXT,
        "line_number": _U32,
        "col_number": _U32,
    },
    "transactions": {"id": (STR, 1, MAX_TEXT), "revenue_cents": _U64, "transaction_time": _TIME},
    "transaction_items": {
        "id": (STR, 1, MAX_TEXT),
        "sku": _TEXT,
        "catalog_id": _TEXT,
        "product_id_hashed": _U64,
        "revenue_cents": _U64,
        "quantity": _U32,
        "transaction_time": _TIME,
    },
    "add_to_cart_items": {"sku": _TEXT, "catalog_id": _TEXT, "product_id_hashed": _U64, "add_to_cart_time": _TIME},
    "app_events": {"event_name": (STR, 1, MAX_TEXT), "event_time": _TIME, "event_type": (INT, 0, 2)},
}
NESTED_REQUIRED = {"transactions": ("id",), "transaction_items": ("id",), "app_events": ("event_name",)}
LIST_COLUMNS = (*NESTED, "custom_vars", "dynamic_vars")
CUSTOM_VAR_SCOPES = ("page", "session")
OTHER_LISTS = ("custom_vars", "dynamic_vars")


def to_epoch_ms(value: object) -> int | str:
    """Epoch milliseconds of an ISO 8601 string with offset, an aware datetime, or epoch ms; else a message."""
    if type(value) is int:
        if 0 <= value <= MAX_EPOCH_MS:
            return value
        return "must be epoch milliseconds between 0 and 253402300799999"
    if type(value) is str:
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            return "must be an ISO 8601 timestamp with offset or epoch milliseconds"
    elif isinstance(value, datetime):  # Parquet inputs
        dt = value
    else:
        return "must be an ISO 8601 timestamp with offset or epoch milliseconds"
    if dt.tzinfo is None:
        return "must carry a UTC offset or Z"
    ms = (dt - EPOCH) // ONE_MS
    if 0 <= ms <= MAX_EPOCH_MS:
        return ms
    return "must be after 1970-01-01T00:00:00Z"


def check_value(value: object, check: tuple[int, float, float]) -> tuple[object, str | None]:
    """(converted value, None) or (None, message)."""
    kind, lo, hi = check
    if kind == STR:
        if type(value) is not str:
            return None, "must be a string"
        n = len(value)
        if n > hi:
            return None, f"must be at most {hi} characters"
        if n < lo:
            return None, "must not be empty"
        return value, None
    if kind == INT:
        if type(value) is not int:  # bool is not int here, on purpose
            return None, "must be an integer"
        if lo <= value <= hi:
            return value, None
        return None, f"must be between {lo} and {hi}"
    if kind == TS:
        ms = to_epoch_ms(value)
        if type(ms) is int:
            return ms, None
        return None, ms  # type: ignore[return-value]
    # float
    t = type(value)
    if t is not float and t is not int:
        return None, "must be a number"
    if not math.isfinite(value) or not lo <= value <= hi:  # type: ignore[arg-type]
        return None, f"must be between {lo} and {hi}"
    return float(value), None  # type: ignore[arg-type]
