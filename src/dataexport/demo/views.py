"""Expand demo sessions into pageview rows, column by column (numpy), nested columns built as Arrow lists."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from dataexport.demo import data as D
from dataexport.warehouse.schema import (
    ADD_TO_CART_ITEM,
    APP_EVENT,
    CUSTOM_VAR,
    DYNAMIC_VAR,
    ERROR,
    PAGEVIEW_SCHEMA,
    TRANSACTION,
    TRANSACTION_ITEM,
)

if TYPE_CHECKING:
    from dataexport.demo.generate import Sessions

PAGE_NAMES = [p[0] for p in D.PAGE_TYPES] + ["checkout", "confirmation"]
DATA_TYPES = [p[1] for p in D.PAGE_TYPES] + ["checkout", "checkout"]
PT = {name: i for i, name in enumerate(PAGE_NAMES)}
SCREEN_NAMES = np.array([name.title() + "Screen" for name in PAGE_NAMES], dtype=object)
TITLES = {
    "home": "Shop Example | Fashion online",
    "category": "{cat} | Shop Example",
    "product": "Product {pid} | Shop Example",
    "search": "Search results | Shop Example",
    "blog": "Journal | Shop Example",
    "cart": "Your cart | Shop Example",
    "account": "My account | Shop Example",
    "checkout": "Checkout | Shop Example",
    "confirmation": "Thank you for your order | Shop Example",
}


def build_views(rng: np.random.Generator, s: Sessions, chosen: np.ndarray, now_ms: int) -> pa.Table:
    counts = s.views[chosen]
    sess = np.repeat(chosen, counts)  # session index of each view
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    view_number = np.arange(len(sess)) - starts + 1
    n_in_session = np.repeat(counts, counts)

    duration = np.clip(rng.exponential(42_000, size=len(sess)), 1_500, 1_800_000).astype(np.int64)
    gap = rng.integers(200, 3_000, size=len(sess))
    elapsed = np.cumsum(duration + gap) - duration - gap  # time before each view, within the session
    elapsed -= np.repeat(elapsed[np.cumsum(counts) - counts], counts)
    view_time = s.start_ms[sess] + elapsed
    keep = view_time <= now_ms  # today's sessions stop at `now`
    if not keep.all():
        sess, view_number, duration, view_time = sess[keep], view_number[keep], duration[keep], view_time[keep]
        n_in_session = np.minimum(n_in_session[keep], _kept_counts(sess))
    n = len(sess)
    first, last = view_number == 1, view_number == n_in_session
    user = s.user[sess]
    device = s.users["device_id"][user]
    is_app = device >= 4

    page = _page_types(rng, s, sess, view_number, n_in_session, first)
    pid = rng.integers(1000, 1000 + D.PRODUCTS, size=n)
    cat = rng.integers(0, len(D.CATEGORIES), size=n)
    url, title = _urls(rng, s, sess, page, pid, cat, first)
    app_url = np.array([u.replace(D.SITE, "app://shop") for u in url[is_app]], dtype=object)
    url[is_app] = app_url
    referer = np.empty(n, dtype=object)
    referer[1:] = url[:-1]
    referer[first] = np.array([src[2] for src in D.TRAFFIC_SOURCES], dtype=object)[s.source[sess[first]]]

    cols: dict[str, object] = {
        name: s.users[name][user]
        for name in (
            "user_id_unhashed",
            "user_id",
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
    }
    web = ~is_app
    interaction = (duration * rng.uniform(0.05, 0.7, size=n)).astype(np.int64)
    cols.update(
        {
            "session_number": s.session_number[sess],
            "session_id": s.session_id[sess],
            "session_time": _ts(s.start_ms[sess]),
            "view_number": view_number.astype(np.uint16),
            "view_time": _ts(view_time),
            "url": url,
            "title": title,
            "referer_url": referer,
            "screen_name": np.where(is_app, SCREEN_NAMES[page], None),
            "window_height": _web(web, (cols["screen_height"] * 0.88).astype(np.int64)),
            "window_width": _web(web, cols["screen_width"]),
            "document_height": _web(web, rng.integers(1_200, 9_000, size=n)),
            "document_width": _web(web, cols["screen_width"]),
            "view_duration_msec": duration,
            "page_interaction_time_msec": interaction,
            "scroll_rate": (rng.beta(2, 2, size=n) * 100).astype(np.float32),
            "dom_interactive_after_msec": _web(web, rng.gamma(3, 300, size=n).astype(np.int64)),
            "fully_loaded": _web(web, rng.gamma(4, 600, size=n).astype(np.int64)),
            "start_render": _web(web, rng.gamma(3, 200, size=n).astype(np.int64)),
            "frustration_score": np.minimum(rng.exponential(8, size=n), 100).astype(np.uint8),
            "rage_click_all_targets_ind": (rng.random(n) < 0.03).astype(np.uint8),
            "multiple_button_interaction_ind": (rng.random(n) < 0.02).astype(np.uint8),
            "is_excludable": s.excludable[sess].astype(np.uint8),
        }
    )
    api_error = rng.random(n) < 0.02
    cols["any_api_error_ind"] = api_error.astype(np.uint8)
    cols["api_error_after_click_ind"] = (api_error & (rng.random(n) < 0.5)).astype(np.uint8)
    cols["errors"] = _errors(rng, view_time, web)
    cols["custom_vars"] = _custom_vars(s, sess, page, last)
    cols["dynamic_vars"] = _dynamic_vars(rng, s, sess, user, page, first)
    cols.update(_commerce(rng, s, sess, page, pid, view_time))
    cols["app_events"] = _app_events(is_app, first, last, view_time, duration)
    return to_table(cols, PAGEVIEW_SCHEMA)


def to_table(columns: dict[str, object], schema: pa.Schema) -> pa.Table:
    """Columns by name (numpy arrays or Arrow arrays) -> a table of `schema` (missing ones null)."""
    n = len(next(iter(columns.values())))
    return pa.Table.from_arrays(_arrays(schema, columns, n), schema=schema)


def _kept_counts(sess: np.ndarray) -> np.ndarray:
    _, inverse, counts = np.unique(sess, return_inverse=True, return_counts=True)
    return counts[inverse]


def _ts(ms: np.ndarray) -> pa.Array:
    return pa.array(ms.astype(np.int64)).cast(pa.timestamp("ms", tz="UTC"))


def _web(web: np.ndarray, values: np.ndarray) -> pa.Array:
    return pa.array(values, mask=~web)


def _page_types(rng, s, sess, view_number, n_in_session, first) -> np.ndarray:
    weights = np.array([p[2] for p in D.PAGE_TYPES], dtype=float)
    page = rng.choice(len(D.PAGE_TYPES), size=len(sess), p=weights / weights.sum())
    landing = np.array([PT[src[4]] for src in D.TRAFFIC_SOURCES])[s.source[sess]]
    page = np.where(first, landing, page)
    # Converting sessions end in the funnel: cart, checkout, confirmation.
    from_end = n_in_session - view_number  # 0 on the last view
    converting = s.converts[sess] & (from_end < 3) & (n_in_session == s.views[sess])
    funnel = np.array([PT["confirmation"], PT["checkout"], PT["cart"]])
    return np.where(converting, funnel[np.minimum(from_end, 2)], page)


def _urls(rng, s, sess, page, pid, cat, first) -> tuple[np.ndarray, np.ndarray]:
    """URLs with query strings (and utm parameters on campaign landings) and titles, page type by type."""
    n = len(sess)
    choice = {
        "product": [
            f"/p/{p}?color={c}"
            for p, c in zip(pid, np.array(["black", "white", "navy", "red"])[rng.integers(0, 4, size=n)], strict=True)
        ],
        "category": [f"/c/{c}?page=1" for c in np.array(D.CATEGORIES)[cat]],
        "search": [f"/search?q={t}" for t in np.array(D.SEARCH_TERMS)[rng.integers(0, len(D.SEARCH_TERMS), size=n)]],
        "blog": [f"/journal/{b}" for b in np.array(D.BLOG_POSTS)[rng.integers(0, len(D.BLOG_POSTS), size=n)]],
    }
    urls = np.empty(n, dtype=object)
    titles = np.empty(n, dtype=object)
    for t, name in enumerate(PAGE_NAMES):
        idx = np.nonzero(page == t)[0]
        if name in choice:
            paths = choice[name]
            urls[idx] = [D.SITE + paths[i] for i in idx]
        elif name == "confirmation":
            urls[idx] = [f"{D.SITE}/checkout/confirmation?order=O{s.session_id[sess[i]] % 10**8}" for i in idx]
        else:
            urls[idx] = D.SITE + ("/" if name == "home" else f"/{name}")
        if name == "product":
            titles[idx] = [TITLES[name].format(pid=pid[i]) for i in idx]
        elif name == "category":
            titles[idx] = [TITLES[name].format(cat=D.CATEGORIES[cat[i]].title()) for i in idx]
        else:
            titles[idx] = TITLES[name]
    campaigns = [src[3] for src in D.TRAFFIC_SOURCES]
    utm = np.array(
        [None if c is None else "utm_source={}&utm_medium={}&utm_campaign={}".format(*c) for c in campaigns],
        dtype=object,
    )[s.source[sess]]
    landing = np.nonzero(first & (utm != None))[0]  # noqa: E711 - elementwise on an object array
    urls[landing] = [urls[i] + ("&" if "?" in urls[i] else "?") + utm[i] for i in landing]
    return urls, titles


def _one_chunk(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    """pyarrow may return a large numpy string array as a ChunkedArray; struct children must be plain arrays."""
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def _arrays(fields, columns: dict[str, object], n: int) -> list[pa.Array]:
    """One array per field, in field order, cast to its type; a field without a column is all null."""
    arrays = []
    for f in fields:
        col = columns.get(f.name)
        if col is None:
            arrays.append(pa.nulls(n, f.type))
        elif isinstance(col, pa.Array):
            arrays.append(col.cast(f.type))
        else:
            arrays.append(_one_chunk(pa.array(col, from_pandas=True).cast(f.type)))
    return arrays


def _lists(counts: np.ndarray, struct_type: pa.StructType, children: dict[str, object]) -> pa.Array:
    """A list<struct> column: `counts[i]` entries for row i, children given flat in row order."""
    offsets = np.zeros(len(counts) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    arrays = _arrays(struct_type, children, int(offsets[-1]))
    return pa.ListArray.from_arrays(pa.array(offsets), pa.StructArray.from_arrays(arrays, fields=list(struct_type)))


def _errors(rng, view_time, web) -> pa.Array:
    counts = np.where(web & (rng.random(len(web)) < 0.05), rng.integers(1, 3, size=len(web)), 0)
    owner = np.repeat(np.arange(len(web)), counts)
    which = rng.integers(0, len(D.JS_ERRORS), size=len(owner))
    return _lists(
        counts,
        ERROR,
        {
            "message": np.array([e[0] for e in D.JS_ERRORS], dtype=object)[which],
            "filename": np.array([e[1] for e in D.JS_ERRORS], dtype=object)[which],
            "error_type": np.full(len(owner), "js", dtype=object),
            "error_time": _ts(view_time[owner] + rng.integers(100, 5_000, size=len(owner))),
            "line_number": rng.integers(1, 4_000, size=len(owner)),
            "col_number": rng.integers(1, 120, size=len(owner)),
        },
    )


def _custom_vars(s, sess, page, last) -> pa.Array:
    # Every view: 2 dataType, 3 pageType (page scope); the last view: 1 "Goal achieved" (session scope).
    counts = 2 + last.astype(np.int64)
    owner = np.repeat(np.arange(len(sess)), counts)
    rank = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
    goal = np.where(s.converts[sess[owner]], "true", "false")
    value = np.where(
        rank == 0,
        np.array(DATA_TYPES, dtype=object)[page[owner]],
        np.where(rank == 1, np.array(PAGE_NAMES, dtype=object)[page[owner]], goal),
    )
    return _lists(
        counts,
        CUSTOM_VAR,
        {
            "position": np.array([2, 3, 1])[rank],
            "key": np.array(["dataType", "pageType", "Goal achieved"])[rank],
            "value": value.astype(object),
            "scope": np.where(rank == 2, "session", "page").astype(object),
        },
    )


def _dynamic_vars(rng, s, sess, user, page, first) -> pa.Array:
    # First view: "AB Test" and "Traffic Source" (strings); cart and checkout views: "cart_value" (number).
    in_cart = (page == PT["cart"]) | (page == PT["checkout"])
    counts = 2 * first.astype(np.int64) + in_cart
    owner = np.repeat(np.arange(len(sess)), counts)
    rank = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
    is_number = ~first[owner] | (rank == 2)
    key = np.where(is_number, "cart_value", np.where(rank == 0, "AB Test", "Traffic Source")).astype(object)
    text = np.where(
        rank == 0,
        s.users["ab_variant"][user[owner]],
        np.array([t[0] for t in D.TRAFFIC_SOURCES], dtype=object)[s.source[sess[owner]]],
    )
    return _lists(
        counts,
        DYNAMIC_VAR,
        {
            "key": key,
            "string_value": pa.array(text.astype(object), mask=is_number),
            "number_value": pa.array(rng.integers(1_500, 60_000, size=len(owner)), mask=~is_number),
        },
    )


def _commerce(rng, s, sess, page, pid, view_time) -> dict[str, pa.Array]:
    n = len(sess)
    adds = ((page == PT["product"]) & (rng.random(n) < 0.15)).astype(np.int64)
    add_owner = np.repeat(np.arange(n), adds)
    sku = np.array([f"SKU-{p}" for p in pid[add_owner]], dtype=object)
    paid = (page == PT["confirmation"]).astype(np.int64)
    tx_owner = np.repeat(np.arange(n), paid)
    tx_id = np.array([f"O{s.session_id[sess[i]] % 10**8}" for i in tx_owner], dtype=object)
    items = np.where(paid == 1, rng.integers(1, 4, size=n), 0)
    item_owner = np.repeat(np.arange(n), items)
    item_pid = rng.integers(1000, 1000 + D.PRODUCTS, size=len(item_owner))
    quantity = rng.integers(1, 3, size=len(item_owner))
    price = rng.integers(1_500, 15_000, size=len(item_owner)) * quantity
    item_tx = np.array([f"O{s.session_id[sess[i]] % 10**8}" for i in item_owner], dtype=object)
    revenue = np.zeros(n, dtype=np.int64)
    np.add.at(revenue, item_owner, price)
    return {
        "add_to_cart_items": _lists(
            adds,
            ADD_TO_CART_ITEM,
            {
                "sku": sku,
                "catalog_id": np.full(len(add_owner), "main", dtype=object),
                "product_id_hashed": (pid[add_owner].astype(np.uint64) * np.uint64(2654435761)),
                "add_to_cart_time": _ts(view_time[add_owner] + 5_000),
            },
        ),
        "transactions": _lists(
            paid,
            TRANSACTION,
            {
                "id": tx_id,
                "revenue_cents": revenue[tx_owner],
                "transaction_time": _ts(view_time[tx_owner]),
            },
        ),
        "transaction_items": _lists(
            items,
            TRANSACTION_ITEM,
            {
                "id": item_tx,
                "sku": np.array([f"SKU-{p}" for p in item_pid], dtype=object),
                "catalog_id": np.full(len(item_owner), "main", dtype=object),
                "product_id_hashed": item_pid.astype(np.uint64) * np.uint64(2654435761),
                "revenue_cents": price,
                "quantity": quantity,
                "transaction_time": _ts(view_time[item_owner]),
            },
        ),
    }


def _app_events(is_app, first, last, view_time, duration) -> pa.Array:
    # Apps: "app_start" on the first screen, "app_show" on each screen, "app_hide" after the last one.
    counts = np.where(is_app, 1 + first.astype(np.int64) + last, 0).astype(np.int64)
    owner = np.repeat(np.arange(len(is_app)), counts)
    rank = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
    shifted = rank - first[owner]  # -1 start, 0 show, 1 hide
    event_type = np.where(shifted < 0, 0, np.where(shifted == 0, 1, 2))
    event_time = view_time[owner] + np.where(event_type == 2, duration[owner], 0)
    return _lists(
        counts,
        APP_EVENT,
        {
            "event_name": np.array([D.APP_EVENT_NAMES[t] for t in range(3)], dtype=object)[event_type],
            "event_time": _ts(event_time),
            "event_type": event_type,
        },
    )
