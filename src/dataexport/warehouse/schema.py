"""The stored unit: one pageview row, carrying its session and user identifiers.

Sessions are not stored: their fields are computed from their pageviews at query time. Every pageview
carries `session_time` (the session's start, known to the tag), and files are partitioned by the UTC
day of `session_time`, so all pageviews of a session sit in the partition of its first pageview: a
session that crosses midnight belongs to the first day, and a window's sessions and views agree.

Layout (object-store compatible, hive style):
    {warehouse}/pageviews/project_id={P}/session_day={YYYY-MM-DD}/{part}.parquet
"""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("ms", tz="UTC")

# Files written by an append live until compaction merges them, so they are written for speed: lz4, no
# dictionaries, statistics only on the columns exports filter files on. Half the CPU of the zstd defaults (the
# biggest share of an append), for files about 40% larger until their partition is compacted.
FRESH_FILE_STATISTICS = ("session_time", "view_time", "device_id")
FRESH_FILE_OPTIONS = {"compression": "lz4", "use_dictionary": False, "write_statistics": list(FRESH_FILE_STATISTICS)}

ERROR = pa.struct(
    [
        ("message", pa.string()),
        ("error_time", TS),
        ("filename", pa.string()),
        ("error_type", pa.string()),
        ("line_number", pa.uint32()),
        ("col_number", pa.uint32()),
    ]
)
# scope: "page" (applies to this view) or "session" (applies to the whole session; last value wins).
CUSTOM_VAR = pa.struct([("position", pa.uint8()), ("key", pa.string()), ("value", pa.string()), ("scope", pa.string())])
# Exactly one of string_value / number_value is set; numbers go up to 4294967296, beyond uint32.
DYNAMIC_VAR = pa.struct([("key", pa.string()), ("string_value", pa.string()), ("number_value", pa.int64())])
TRANSACTION = pa.struct([("id", pa.string()), ("revenue_cents", pa.uint64()), ("transaction_time", TS)])
TRANSACTION_ITEM = pa.struct(
    [
        ("id", pa.string()),  # the transaction id the item belongs to
        ("sku", pa.string()),
        ("catalog_id", pa.string()),
        ("product_id_hashed", pa.uint64()),
        ("revenue_cents", pa.uint64()),
        ("quantity", pa.uint32()),
        ("transaction_time", TS),
    ]
)
ADD_TO_CART_ITEM = pa.struct(
    [
        ("sku", pa.string()),
        ("catalog_id", pa.string()),
        ("product_id_hashed", pa.uint64()),
        ("add_to_cart_time", TS),
    ]
)
APP_EVENT = pa.struct([("event_name", pa.string()), ("event_time", TS), ("event_type", pa.uint8())])

PAGEVIEW_SCHEMA = pa.schema(
    [
        ("project_id", pa.int32()),
        # identity; (project_id, user_id_unhashed, session_number, view_number) is the natural key
        ("user_id_unhashed", pa.string()),
        ("user_id", pa.uint64()),
        ("session_number", pa.uint16()),
        ("session_id", pa.uint64()),
        ("session_time", TS),
        ("view_number", pa.uint16()),
        ("view_time", TS),
        # device and environment
        ("device_id", pa.int8()),
        ("city", pa.string()),
        ("country_code", pa.string()),
        ("language", pa.string()),
        ("browser_name", pa.string()),
        ("browser_version", pa.string()),
        ("platform_name", pa.string()),
        ("platform_version", pa.string()),
        ("os_version", pa.string()),
        ("app_version", pa.string()),
        ("model", pa.string()),
        ("manufacturer", pa.string()),
        ("density", pa.float32()),
        ("screen_height", pa.uint16()),
        ("screen_width", pa.uint16()),
        ("window_height", pa.uint16()),
        ("window_width", pa.uint16()),
        ("document_height", pa.uint32()),
        ("document_width", pa.uint32()),
        # page
        ("referer_url", pa.string()),
        ("url", pa.string()),
        ("title", pa.string()),
        ("screen_name", pa.string()),
        # behaviour and timings
        ("view_duration_msec", pa.uint32()),
        ("page_interaction_time_msec", pa.uint32()),
        ("scroll_rate", pa.float32()),
        ("dom_interactive_after_msec", pa.uint32()),
        ("fully_loaded", pa.uint32()),
        ("start_render", pa.uint32()),
        ("frustration_score", pa.uint8()),
        ("rage_click_all_targets_ind", pa.uint8()),
        ("multiple_button_interaction_ind", pa.uint8()),
        ("any_api_error_ind", pa.uint8()),
        ("api_error_after_click_ind", pa.uint8()),
        ("is_excludable", pa.uint8()),
        # nested
        ("errors", pa.list_(ERROR)),
        ("custom_vars", pa.list_(CUSTOM_VAR)),
        ("dynamic_vars", pa.list_(DYNAMIC_VAR)),
        ("transactions", pa.list_(TRANSACTION)),
        ("transaction_items", pa.list_(TRANSACTION_ITEM)),
        ("add_to_cart_items", pa.list_(ADD_TO_CART_ITEM)),
        ("app_events", pa.list_(APP_EVENT)),
        # bookkeeping
        ("ingested_at", TS),
    ]
)

NATURAL_KEY = ("project_id", "user_id_unhashed", "session_number", "view_number")
PARTITION_ROOT = "pageviews"
