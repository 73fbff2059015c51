"""The exportable-field catalog: ONE definition per field drives both the API listing and the export SQL.

Each field carries, per scope, a DuckDB expression template:
- `session_sql` (scope sessions) is evaluated once per session, over the session primitives
  (`{p:name}`, see primitives.py) and the session key columns (user_id_unhashed, session_number);
- `view_sql` (scope views) is evaluated per pageview row, over the stored pageview columns
  (warehouse/schema.py) and, for the session's columns a view row carries, the same primitives
  computed as window aggregates over the view's session.
`{tz}` stands for the project time zone (a bound parameter). `custom_var` and `dynamic_var` take a
user parameter and are built by the query builder itself (their templates are None).
`kind` tells the output formatter how to render the value (timestamps, dates, arrays, floats).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dataexport.domain.enums import Scope

BOTH = frozenset({Scope.SESSIONS, Scope.VIEWS})
SESSIONS = frozenset({Scope.SESSIONS})
VIEWS = frozenset({Scope.VIEWS})

# Output kinds (how csv/jsonl render a value).
SCALAR = "scalar"
FLOAT = "float"
TIMESTAMP = "timestamp"
DATE = "date"
LIST = "list"
LIST_TIMESTAMP = "list_timestamp"
DYNAMIC = "dynamic"


@dataclass(frozen=True)
class CatalogField:
    name: str
    scopes: frozenset[Scope]
    type: str
    description: str
    example: str
    aliases: tuple[str, ...] = ()
    parameters: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict, compare=False, hash=False)
    session_sql: str | None = None
    view_sql: str | None = None
    kind: str = SCALAR

    def as_api(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "example": self.example,
            "aliases": list(self.aliases),
            "parameters": list(self.parameters),
            # Extension: the vendor's type name (fields.md), so clients can type their columns.
            "type": self.type,
        }

    def sql_for(self, scope: Scope) -> str | None:
        return self.session_sql if scope is Scope.SESSIONS else self.view_sql

    @property
    def is_array(self) -> bool:
        return self.type.startswith("Array(")

    @property
    def is_numeric(self) -> bool:
        return self.type.startswith(("Int", "UInt", "Float"))


def _f(name, scopes, type_, description, example, *, s=None, v=None, kind=SCALAR, parameters=()):
    return CatalogField(
        name=name,
        scopes=scopes,
        type=type_,
        description=description,
        example=example,
        parameters=parameters,
        session_sql=s if Scope.SESSIONS in scopes else None,
        view_sql=v if Scope.VIEWS in scopes else None,
        kind=kind,
    )


def _session_attr(name, type_, description, example, *, kind=SCALAR):
    """A device/environment attribute: the session's first known value, the view's own value on views."""
    return _f(name, BOTH, type_, description, example, s=f"{{p:first_{name}}}", v=name, kind=kind)


def _view_col(name, type_, description, example, *, kind=SCALAR):
    """A pageview column exported as stored."""
    return _f(name, VIEWS, type_, description, example, v=name, kind=kind)


def _array(prefix, member, scopes, type_, description, example, *, elem=None, kind=LIST, view_list=None):
    """One member of a parallel array: item i of every `prefix.*` field describes the same element.

    On sessions the elements are gathered over the session's views in view order; on views they are
    the view's own (`view_list` = the stored list column).
    """
    elem = elem or f"_x.{member}"
    s = f"list_transform({{p:{prefix}}}, lambda _x: {elem})"
    v = f"list_transform({view_list}, lambda _x: {elem})" if view_list else None
    return _f(f"{_ARRAY_NAMES.get(prefix, prefix)}.{member}", scopes, type_, description, example, s=s, v=v, kind=kind)


_ARRAY_NAMES = {"transaction_items": "session_transaction_items", "add_to_cart_items": "session_add_to_cart_items"}

# URL parts, RFC 3986 style; absent parts are '' (NULL only when the url itself is NULL).
_SCHEME_RE = r"^([A-Za-z][A-Za-z0-9+.-]*):"
_PREFIX_RE = r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*"
_PATH_RE = r"^(?:[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*)?([^?#]*)"
_QUERY_RE = r"^[^?#]*\?([^#]*)"
_HASH_RE = r"#(.*)$"


_UTM_EXAMPLES = {
    "utm_source": "newsletter",
    "utm_medium": "email",
    "utm_campaign": "spring_sale",
    "utm_content": "banner_top",
    "utm_term": "running shoes",
}


def _utm(param: str) -> CatalogField:
    # First occurrence of the parameter in the query string, '+' and %XX decoded; NULL when absent.
    # The contains() guard skips the regex (the costly part) for the many URLs without the parameter.
    raw = f"regexp_extract(url, '^[^?#]*\\?(?:[^#]*?&)??{param}=([^&#]*)', 1)"
    value = f"CASE WHEN contains(url, '{param}=') THEN url_decode(replace(NULLIF({raw}, ''), '+', ' ')) END"
    return _f(
        param,
        VIEWS,
        "String",
        f"The {param} campaign parameter of the page URL (decoded), NULL if absent.",
        _UTM_EXAMPLES[param],
        v=value,
    )


_DURATION = "CAST(least(greatest({p:end_ms} - epoch_ms(%s), 0), 4294967295) AS UINTEGER)"
_MAJOR = r"TRY_CAST(regexp_extract(%s, '^\s*(\d+)', 1) AS USMALLINT)"

CATALOG: tuple[CatalogField, ...] = (
    # --- identity and time (both scopes) ---
    _f(
        "project_id", BOTH, "Integer", "The project the session belongs to.", "4242", s="{p:project_id}", v="project_id"
    ),
    _f(
        "user_id",
        BOTH,
        "UInt64",
        "Hash of the visitor id (user_id_unhashed).",
        "9138127742510812375",
        s="{p:user_id}",
        v="user_id",
    ),
    _f(
        "user_id_unhashed",
        BOTH,
        "String",
        "Visitor id from the tag's cookie (13-month life).",
        "3b0e2c49-7bd1-4a7e-a0f5-5a1f2b7e9c11",
        s="user_id_unhashed",
        v="user_id_unhashed",
    ),
    _f(
        "session_id",
        BOTH,
        "UInt64",
        "Session id, unique per user.",
        "1707905000123",
        s="{p:session_id}",
        v="session_id",
    ),
    _f(
        "session_number",
        BOTH,
        "UInt16",
        "Ordinal of this session for the user (1 = first visit).",
        "3",
        s="session_number",
        v="session_number",
    ),
    _f(
        "session_date",
        BOTH,
        "Date",
        "Day the session started, in the project time zone.",
        "2026-02-14",
        s="CAST(timezone({tz}, {p:session_time}) AS DATE)",
        v="CAST(timezone({tz}, session_time) AS DATE)",
        kind=DATE,
    ),
    _f(
        "session_time",
        BOTH,
        "DateTime",
        "Session start (UTC), to the second.",
        "2026-02-14T10:03:07.000Z",
        s="date_trunc('second', {p:session_time})",
        v="date_trunc('second', session_time)",
        kind=TIMESTAMP,
    ),
    # --- device and environment ---
    _session_attr(
        "device_id",
        "Int8",
        "Device: 0 unknown, 1 desktop, 2 mobile web, 3 tablet web, 4 mobile app, 5 tablet app.",
        "1",
    ),
    _session_attr("city", "String", "City of the visitor, from the IP address.", "Paris"),
    _session_attr("country_code", "String", "ISO 3166-1 alpha-2 country of the visitor.", "FR"),
    _session_attr("language", "String", "Browser or device language.", "fr"),
    _session_attr("browser_name", "String", "Browser name (web).", "Chrome"),
    _session_attr("browser_version", "String", "Full browser version (web).", "121.0.6167.160"),
    _f(
        "browser_major_version",
        BOTH,
        "UInt16",
        "Leading integer of the browser version (web).",
        "121",
        s=_MAJOR % "{p:first_browser_version}",
        v=_MAJOR % "browser_version",
    ),
    _session_attr("platform_name", "String", "Operating system name (web).", "Windows"),
    _session_attr("platform_version", "String", "Operating system version (web).", "10"),
    _session_attr("screen_height", "UInt16", "Screen height in pixels.", "1080"),
    _session_attr("screen_width", "UInt16", "Screen width in pixels.", "1920"),
    _session_attr("os_version", "String", "Operating system version of the app's device.", "17.2.1"),
    _session_attr("app_version", "String", "Version of the mobile app.", "5.12.0"),
    _session_attr("model", "String", "Device model (apps).", "iPhone15,2"),
    _session_attr("manufacturer", "String", "Device maker (apps).", "Apple"),
    _session_attr("density", "Float32", "Screen pixel density (apps).", "3", kind=FLOAT),
    # --- session aggregates (a views row carries its session's value) ---
    _f(
        "referer_url",
        BOTH,
        "String",
        "Referrer of the session: the referrer of its first view.",
        "https://www.google.com/",
        s="{p:referer_url}",
        v="{p:referer_url}",
    ),
    _f(
        "session_number_of_views",
        BOTH,
        "UInt16",
        "Number of pageviews in the session.",
        "7",
        s="CAST({p:views} AS UINTEGER)",
        v="CAST({p:views} AS UINTEGER)",
    ),
    _f(
        "session_duration_msec",
        BOTH,
        "UInt32",
        "Session duration: end of its last-ending view (start + time on page) minus session start.",
        "452310",
        s=_DURATION % "{p:session_time}",
        v=_DURATION % "session_time",
    ),
    _f(
        "session_number_of_transactions",
        BOTH,
        "UInt16",
        "Number of transactions in the session.",
        "1",
        s="CAST(coalesce({p:transactions}, 0) AS UINTEGER)",
        v="CAST(coalesce({p:transactions}, 0) AS UINTEGER)",
    ),
    _f(
        "session_transactions_revenue_cents",
        BOTH,
        "UInt64",
        "Total revenue of the session's transactions, in cents.",
        "12999",
        s="CAST(coalesce({p:revenue}, 0) AS UBIGINT)",
        v="CAST(coalesce({p:revenue}, 0) AS UBIGINT)",
    ),
    _f(
        "is_excludable",
        BOTH,
        "UInt8",
        "1 if any view flagged the session excludable (bot, internal traffic).",
        "0",
        s="coalesce({p:is_excludable}, 0)",
        v="coalesce({p:is_excludable}, 0)",
    ),
    _f(
        "custom_var",
        BOTH,
        "String",
        "Custom variable at customVarPosition. Sessions: the last value set in the session. Views: the view's "
        "own value, else the last session-scoped value of its session.",
        "checkout",
        parameters=("customVarPosition",),
    ),
    _f(
        "dynamic_var",
        BOTH,
        "String",
        "Dynamic variable dynamicVarKey (numbers stay numbers in JSONL). Sessions: the last value set in the "
        "session. Views: the view's own value.",
        "B",
        parameters=("dynamicVarKey",),
        kind=DYNAMIC,
    ),
    # --- arrays: app events (sessions: gathered over the views; views: the view's own) ---
    _array(
        "app_events",
        "event_name",
        BOTH,
        "Array(String)",
        "Names of the app events.",
        '["app_start","add_to_cart"]',
        view_list="app_events",
    ),
    _array(
        "app_events",
        "event_time",
        BOTH,
        "Array(String)",
        "UTC time of each app event.",
        '["2026-02-14T10:03:07.120Z"]',
        view_list="app_events",
        kind=LIST_TIMESTAMP,
    ),
    _array(
        "app_events",
        "event_type",
        BOTH,
        "Array(UInt8)",
        "Type of each app event: 0 app start, 1 show, 2 hide.",
        "[0,1]",
        view_list="app_events",
    ),
    _f(
        "app_events.view_number",
        BOTH,
        "Array(UInt32)",
        "Screen (view) number holding each app event.",
        "[1,3]",
        s="list_transform({p:app_events_view_numbers}, lambda _x: CAST(_x AS UINTEGER))",
        v="list_transform(app_events, lambda _x: CAST(view_number AS UINTEGER))",
        kind=LIST,
    ),
    # --- arrays: purchased items (sessions) ---
    _array(
        "transaction_items", "id", SESSIONS, "Array(String)", "Transaction id of each purchased item.", '["T-10023"]'
    ),
    _array("transaction_items", "sku", SESSIONS, "Array(String)", "SKU of each purchased item.", '["SKU-4411"]'),
    _array("transaction_items", "catalog_id", SESSIONS, "Array(String)", "Catalog of each purchased item.", '["fr"]'),
    _array(
        "transaction_items",
        "product_id_hashed",
        SESSIONS,
        "Array(UInt64)",
        "Hashed product id of each item.",
        "[1839201993]",
    ),
    _array(
        "transaction_items", "revenue_cents", SESSIONS, "Array(UInt64)", "Revenue of each item, in cents.", "[4999]"
    ),
    _array("transaction_items", "quantity", SESSIONS, "Array(UInt32)", "Quantity of each purchased item.", "[2]"),
    _array(
        "transaction_items",
        "transaction_time",
        SESSIONS,
        "Array(DateTime)",
        "UTC time of each item's purchase.",
        '["2026-02-14T10:09:41.000Z"]',
        kind=LIST_TIMESTAMP,
    ),
    _f(
        "session_transaction_items.transaction_view_number",
        SESSIONS,
        "Array(UInt32)",
        "View number of the pageview holding each purchased item.",
        "[6]",
        s="list_transform({p:transaction_items_view_numbers}, lambda _x: CAST(_x AS UINTEGER))",
        kind=LIST,
    ),
    # --- arrays: items added to cart (sessions) ---
    _array(
        "add_to_cart_items",
        "sku",
        SESSIONS,
        "Array(String)",
        "SKU of each item added to the cart.",
        '["SKU-4411","SKU-0093"]',
    ),
    _array(
        "add_to_cart_items",
        "catalog_id",
        SESSIONS,
        "Array(String)",
        "Catalog of each item added to the cart.",
        '["fr","fr"]',
    ),
    _array(
        "add_to_cart_items",
        "product_id_hashed",
        SESSIONS,
        "Array(UInt64)",
        "Hashed product id of each item.",
        "[1839201993,77120044]",
    ),
    _f(
        "session_add_to_cart_items.is_in_transaction",
        SESSIONS,
        "Array(UInt8)",
        "1 if the item's SKU was bought in a transaction of the same session.",
        "[1,0]",
        s="list_transform({p:add_to_cart_items}, lambda _c: CAST(coalesce(list_contains("
        "list_transform({p:transaction_items}, lambda _t: _t.sku), _c.sku), false) AS UTINYINT))",
        kind=LIST,
    ),
    _array(
        "add_to_cart_items",
        "add_to_cart_time",
        SESSIONS,
        "Array(DateTime)",
        "UTC time of each add to cart.",
        '["2026-02-14T10:05:12.500Z"]',
        kind=LIST_TIMESTAMP,
    ),
    _f(
        "session_add_to_cart_items.add_to_cart_view_number",
        SESSIONS,
        "Array(UInt32)",
        "View number of the pageview holding each add to cart.",
        "[3,4]",
        s="list_transform({p:add_to_cart_items_view_numbers}, lambda _x: CAST(_x AS UINTEGER))",
        kind=LIST,
    ),
    # --- pageview facts (views) ---
    _view_col("view_number", "UInt16", "Rank of the pageview in its session (1 = landing page).", "2"),
    _view_col("view_time", "DateTime", "UTC time of the pageview.", "2026-02-14T10:04:51.320Z", kind=TIMESTAMP),
    _view_col("url", "String", "Full URL of the page.", "https://shop.example.com/cart?step=2&utm_source=mail#summary"),
    _f(
        "url_no_query_param",
        VIEWS,
        "String",
        "Page URL without its query string and fragment.",
        "https://shop.example.com/cart",
        v=r"regexp_replace(url, '[?#].*$', '')",
    ),
    _f("scheme", VIEWS, "String", "URL scheme.", "https", v=f"regexp_extract(url, '{_SCHEME_RE}', 1)"),
    _f(
        "prefix",
        VIEWS,
        "String",
        "URL scheme and host (scheme://host[:port]).",
        "https://shop.example.com",
        v=f"regexp_extract(url, '{_PREFIX_RE}')",
    ),
    _f("path", VIEWS, "String", "Path of the page URL.", "/cart", v=f"regexp_extract(url, '{_PATH_RE}', 1)"),
    _f(
        "query",
        VIEWS,
        "String",
        "URL query string, without the '?'.",
        "step=2&utm_source=mail",
        v=f"regexp_extract(url, '{_QUERY_RE}', 1)",
    ),
    _f("hash", VIEWS, "String", "URL fragment, without the '#'.", "summary", v=f"regexp_extract(url, '{_HASH_RE}', 1)"),
    _view_col("title", "String", "Page title.", "Your cart - Example Shop"),
    _view_col("screen_name", "String", "App screen name.", "ProductDetail"),
    _f(
        "is_first",
        VIEWS,
        "UInt8",
        "1 if this is the first view of the session.",
        "1",
        v="CAST(view_number = {p:first_view_number} AS UTINYINT)",
    ),
    _f(
        "is_last",
        VIEWS,
        "UInt8",
        "1 if this is the last view of the session.",
        "0",
        v="CAST(view_number = {p:last_view_number} AS UTINYINT)",
    ),
    _view_col("view_duration_msec", "UInt32", "Time spent on the page, in milliseconds.", "38120"),
    _view_col("page_interaction_time_msec", "UInt32", "Active interaction time on the page, in milliseconds.", "12400"),
    _view_col("scroll_rate", "Float32", "Share of the page scrolled, 0..100.", "62.5", kind=FLOAT),
    _view_col("window_height", "UInt16", "Viewport height in pixels.", "937"),
    _view_col("window_width", "UInt16", "Viewport width in pixels.", "1903"),
    _view_col("document_height", "UInt32", "Page height in pixels.", "4120"),
    _view_col("document_width", "UInt32", "Page width in pixels.", "1903"),
    _view_col(
        "dom_interactive_after_msec", "UInt32", "DOM interactive time, in milliseconds (NULL if unknown).", "840"
    ),
    _view_col("fully_loaded", "UInt32", "Full load time, in milliseconds (NULL if unknown).", "2310"),
    _view_col("start_render", "UInt32", "Start render time, in milliseconds (NULL if unknown).", "650"),
    _view_col("frustration_score", "UInt8", "Frustration score of the view, 0..100.", "12"),
    _view_col("rage_click_all_targets_ind", "UInt8", "1 if the visitor rage-clicked on the view.", "0"),
    _view_col("multiple_button_interaction_ind", "UInt8", "1 if a button was clicked repeatedly.", "0"),
    _f(
        "any_js_error_ind",
        VIEWS,
        "UInt8",
        "1 if the view had at least one JavaScript error.",
        "1",
        v="CAST(coalesce(len(errors), 0) > 0 AS UTINYINT)",
    ),
    _view_col("any_api_error_ind", "UInt8", "1 if an API call of the view failed.", "0"),
    _view_col("api_error_after_click_ind", "UInt8", "1 if an API call failed right after a click.", "0"),
    # --- arrays: JS errors (views: the view's own; sessions: gathered over the session) ---
    _array(
        "errors",
        "message",
        BOTH,
        "Array(String)",
        "Message of each JavaScript error.",
        '["TypeError: x is undefined"]',
        view_list="errors",
    ),
    _array(
        "errors",
        "error_time",
        BOTH,
        "Array(DateTime)",
        "UTC time of each error.",
        '["2026-02-14T10:04:55.001Z"]',
        view_list="errors",
        kind=LIST_TIMESTAMP,
    ),
    _array(
        "errors",
        "filename",
        BOTH,
        "Array(String)",
        "Script file of each error.",
        '["https://shop.example.com/app.js"]',
        view_list="errors",
    ),
    _array("errors", "error_type", BOTH, "Array(String)", "Type of each error.", '["TypeError"]', view_list="errors"),
    _array("errors", "line_number", BOTH, "Array(UInt32)", "Line of each error.", "[120]", view_list="errors"),
    _array("errors", "col_number", BOTH, "Array(UInt32)", "Column of each error.", "[17]", view_list="errors"),
    # --- campaign parameters of the page URL (views) ---
    _utm("utm_source"),
    _utm("utm_medium"),
    _utm("utm_campaign"),
    _utm("utm_content"),
    _utm("utm_term"),
)

_BY_SCOPE: dict[Scope, dict[str, CatalogField]] = {
    scope: {f.name: f for f in CATALOG if scope in f.scopes} for scope in Scope
}


def fields_for(scope: Scope) -> list[CatalogField]:
    return list(_BY_SCOPE[scope].values())


def lookup(scope: Scope, name: str) -> CatalogField | None:
    return _BY_SCOPE[scope].get(name)


def segment_fields() -> dict[str, str]:
    """Session-level scalar fields a segment may filter on: name -> "number" | "string".

    Time fields are left out (session_date depends on the time zone; windows already bound the time),
    and so are parameterised fields (segments have their own customVar / dynamicVar conditions).
    """
    out: dict[str, str] = {}
    for f in fields_for(Scope.SESSIONS):
        if f.is_array or f.parameters or f.kind in (TIMESTAMP, DATE):
            continue
        out[f.name] = "number" if f.is_numeric else "string"
    return out
