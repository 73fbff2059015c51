"""A tag's beacon (docs/tag-protocol.md) -> pageview hits of the ingest path. Pure: no I/O.

The body is decoded with msgspec, whose errors name the offending key (`$.views[0].view_time`), and the views are
turned into hits in the shape `POST /ingest/v1/pageviews` takes, so that they go through the same validation and
the same durable, idempotent store. What the browser cannot know is added here from the request: the device from
the user agent, the place from the address, the bot flag.

Lengths are cut rather than refused (the tag cuts them too, and a cut title is better than a lost pageview); types
and required keys are refused. Browser clocks drift: when a beacon's `sent_at` is a minute or more away from the
server's clock, every time in it is shifted by that difference rounded to whole minutes, so the views of one
session keep the same shift (and the same session_time) from one beacon to the next.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Annotated

import msgspec
from msgspec import Meta

from dataexport.collect.useragent import Device
from dataexport.errors import FieldError, ValidationFailed
from dataexport.ingest.hits_rules import (
    MAX_CUSTOM_VAR_KEY,
    MAX_DYNAMIC_KEY,
    MAX_DYNAMIC_KEYS,
    MAX_DYNAMIC_NUMBER,
    MAX_TEXT,
    MAX_USER_ID,
    MAX_VAR_VALUE,
)

PROTOCOL_VERSION = 1
MAX_BODY = 64 * 1024  # keepalive requests and beacons are capped near this by browsers
MAX_VIEWS = 20
MAX_ENTRIES = 100  # errors, API errors, cart adds... of one view
MAX_CUSTOM_VARS = 20
MAX_ERROR_MESSAGE = 300
SKEW_STEP_MS = 60_000

_Ms = Annotated[int, Meta(ge=0, le=253402300799999)]
_Size = tuple[Annotated[int, Meta(ge=0)], Annotated[int, Meta(ge=0)]]


class Timings(msgspec.Struct, omit_defaults=True):
    dom_interactive: Annotated[int, Meta(ge=0)] | None = None
    start_render: Annotated[int, Meta(ge=0)] | None = None
    fully_loaded: Annotated[int, Meta(ge=0)] | None = None


class JsError(msgspec.Struct):
    message: str = ""
    time: _Ms | None = None
    filename: str = ""
    line: Annotated[int, Meta(ge=0)] | None = None
    col: Annotated[int, Meta(ge=0)] | None = None
    type: str = ""


class ApiError(msgspec.Struct):
    url: str = ""
    method: str = ""
    status: int = 0
    time: _Ms | None = None
    after_click: bool = False


class CustomVar(msgspec.Struct):
    index: int
    name: str
    value: str
    scope: str = "session"


class DynamicVar(msgspec.Struct):
    key: str
    value: str | int


class Item(msgspec.Struct):
    id: str | None = None
    sku: str = ""
    name: str = ""
    price: str | float | int | None = None
    quantity: Annotated[int, Meta(ge=0)] = 1
    merchant: str = ""


class Transaction(msgspec.Struct):
    id: str
    revenue: str | float | int | None = None
    currency: str = ""
    time: _Ms | None = None
    items: Annotated[list[Item], Meta(max_length=MAX_ENTRIES)] = []


class CartAdd(msgspec.Struct):
    sku: str = ""
    merchant: str = ""
    time: _Ms | None = None


class View(msgspec.Struct):
    view_number: Annotated[int, Meta(ge=1, le=65535)]
    view_time: _Ms
    url: Annotated[str, Meta(min_length=1)]
    title: str = ""
    referrer: str = ""
    artificial: bool = False
    language: str = ""
    screen: _Size | None = None
    window: _Size | None = None
    document: _Size | None = None
    timings: Timings | None = None
    duration_ms: Annotated[int, Meta(ge=0)] | None = None
    interaction_ms: Annotated[int, Meta(ge=0)] | None = None
    scroll_rate: Annotated[float, Meta(ge=0)] | None = None
    rage_click: bool = False
    multiple_button: bool = False
    errors: Annotated[list[JsError], Meta(max_length=MAX_ENTRIES)] = []
    api_errors: Annotated[list[ApiError], Meta(max_length=MAX_ENTRIES)] = []
    custom_vars: Annotated[list[CustomVar], Meta(max_length=MAX_ENTRIES)] = []
    dynamic_vars: Annotated[list[DynamicVar], Meta(max_length=MAX_ENTRIES)] = []
    transactions: Annotated[list[Transaction], Meta(max_length=MAX_ENTRIES)] = []
    cart_adds: Annotated[list[CartAdd], Meta(max_length=MAX_ENTRIES)] = []


class Beacon(msgspec.Struct):
    v: int
    batch: Annotated[str, Meta(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    sent_at: _Ms
    user: Annotated[str, Meta(min_length=1, max_length=MAX_USER_ID)]
    session_number: Annotated[int, Meta(ge=1, le=65535)]
    session_start: _Ms
    views: Annotated[list[View], Meta(min_length=1, max_length=MAX_VIEWS)]


_DECODER = msgspec.json.Decoder(Beacon)


def decode_beacon(body: bytes) -> Beacon:
    """The beacon in `body`, or a ValidationFailed that names the offending key."""
    if len(body) > MAX_BODY:
        raise ValidationFailed("The beacon is too large.", [FieldError("body", f"must be at most {MAX_BODY} bytes")])
    try:
        beacon = _DECODER.decode(body)
    except msgspec.ValidationError as exc:
        message = str(exc)
        where = message.rsplit(" - at `$", 1)[1].rstrip("`").lstrip(".") if " - at `$" in message else "body"
        raise ValidationFailed("The beacon is not valid.", [FieldError(where or "body", message)]) from None
    except msgspec.DecodeError as exc:
        raise ValidationFailed("The beacon is not valid JSON.", [FieldError("body", str(exc))]) from None
    if beacon.v != PROTOCOL_VERSION:
        raise ValidationFailed("Unknown beacon version.", [FieldError("v", f"must be {PROTOCOL_VERSION}")])
    return beacon


@dataclass(frozen=True, slots=True)
class Client:
    """What the server knows of the sender: its device (from the user agent) and place (from the address)."""

    device: Device
    city: str
    country_code: str


def clock_shift(sent_at_ms: int, received_at_ms: int) -> int:
    """Milliseconds to add to the beacon's times: 0 for a sane clock, else whole minutes (see the module doc)."""
    offset = received_at_ms - sent_at_ms
    if abs(offset) < SKEW_STEP_MS:
        return 0
    return round(offset / SKEW_STEP_MS) * SKEW_STEP_MS


def _cut(text: str | None, limit: int = MAX_TEXT) -> str:
    return (text or "")[:limit]


def _u16(value: int) -> int:
    return min(value, 65535)


def _u32(value: int | None) -> int | None:
    return None if value is None else min(value, 2**32 - 1)


def cents_of(amount: str | float | int | None) -> int:
    """Money as integer cents: at most 12 integer digits and 2 decimals, extra decimals cut (the vendor's rule)."""
    if amount is None:
        return 0
    text = f"{amount:.6f}" if isinstance(amount, float) else str(amount).strip().replace(",", ".")
    whole, _, decimals = text.partition(".")
    whole = whole.lstrip("+")
    if not whole.isdigit() and whole != "":
        return 0
    if decimals and not decimals.isdigit():
        return 0
    return int((whole or "0")[-12:]) * 100 + int((decimals + "00")[:2])


def product_hash(sku: str) -> int:
    """A stable 64-bit id of a product, from its sku (the catalog's product_id_hashed)."""
    return int.from_bytes(hashlib.sha256(sku.encode()).digest()[:8], "big")


def language_of(tag: str) -> str:
    """The primary subtag of a BCP 47 language tag, lower case ("fr-FR" -> "fr"), as the catalog's examples show."""
    return tag.split("-", 1)[0].split("_", 1)[0].lower()[:16]


def _url_without_hash(url: str) -> str:
    return url.split("#", 1)[0]


def frustration_of(view: View, has_js_error: bool) -> int:
    """0..100: a quarter for each kind of frustration seen on the view."""
    signs = (view.rage_click, view.multiple_button, has_js_error, bool(view.api_errors))
    return 25 * sum(signs)


def _custom_vars(view: View) -> list[dict]:
    kept: dict[int, dict] = {}
    for var in view.custom_vars:
        if not 1 <= var.index <= 20 or not var.name:
            continue  # the vendor's tag does not send these
        if var.index not in kept and len(kept) >= MAX_CUSTOM_VARS:
            continue
        scope = "page" if var.scope == "page" else "session"
        kept[var.index] = {
            "position": var.index,
            "key": var.name[:MAX_CUSTOM_VAR_KEY],
            "value": var.value[:MAX_VAR_VALUE],
            "scope": scope,
        }
    return list(kept.values())


def _dynamic_vars(view: View) -> list[dict]:
    last: dict[str, str | int] = {}
    for var in view.dynamic_vars:
        key = var.key[:MAX_DYNAMIC_KEY]
        if not key or (key not in last and len(last) >= MAX_DYNAMIC_KEYS):
            continue
        value = var.value
        if isinstance(value, int) and not 0 <= value <= MAX_DYNAMIC_NUMBER:
            continue
        last[key] = value[:MAX_VAR_VALUE] if isinstance(value, str) else value
    return [{"key": k, "value": v} for k, v in last.items()]


def hits_of(beacon: Beacon, client: Client, received_at_ms: int) -> list[dict]:
    """One hit per view of the beacon, in the JSON shape of `POST /ingest/v1/pageviews` (times in epoch ms)."""
    shift = clock_shift(beacon.sent_at, received_at_ms)
    device = client.device
    hits = []
    for view in beacon.views:
        view_time = view.view_time + shift
        session_time = min(beacon.session_start + shift, view_time)
        errors = [
            {
                "message": _cut(e.message, MAX_ERROR_MESSAGE),
                "error_time": (e.time if e.time is not None else view.view_time) + shift,
                "filename": _cut(e.filename),
                "error_type": _cut(e.type, 64),
                "line_number": _u32(e.line),
                "col_number": _u32(e.col),
            }
            for e in view.errors
        ]
        transactions, items = [], []
        for t in view.transactions:
            at = (t.time if t.time is not None else view.view_time) + shift
            transactions.append(
                {"id": _cut(t.id, 40) or "-", "revenue_cents": cents_of(t.revenue), "transaction_time": at}
            )
            for item in t.items:
                sku = _cut(item.sku, 255)
                items.append(
                    {
                        "id": _cut(item.id or t.id, 40) or "-",
                        "sku": sku,
                        "catalog_id": _cut(item.merchant, 255),
                        "product_id_hashed": product_hash(sku) if sku else None,
                        "revenue_cents": cents_of(item.price) * item.quantity,
                        "quantity": min(item.quantity, 2**32 - 1),
                        "transaction_time": at,
                    }
                )
        cart = [
            {
                "sku": _cut(c.sku, 255),
                "catalog_id": _cut(c.merchant, 255),
                "product_id_hashed": product_hash(c.sku) if c.sku else None,
                "add_to_cart_time": (c.time if c.time is not None else view.view_time) + shift,
            }
            for c in view.cart_adds
        ]
        timings = view.timings or Timings()
        hit: dict = {
            "user_id_unhashed": beacon.user,
            "session_number": beacon.session_number,
            "session_time": session_time,
            "view_number": view.view_number,
            "view_time": view_time,
            "device_id": device.device_id,
            "url": _cut(_url_without_hash(view.url)),
            "title": _cut(view.title),
            "referer_url": _cut(view.referrer) or None,
            "language": language_of(view.language),
            "browser_name": _cut(device.browser_name, 255),
            "browser_version": _cut(device.browser_version, 255),
            "platform_name": _cut(device.platform_name, 255),
            "platform_version": _cut(device.platform_version, 255),
            "city": client.city,
            "country_code": client.country_code,
            "dom_interactive_after_msec": _u32(timings.dom_interactive),
            "start_render": _u32(timings.start_render),
            "fully_loaded": _u32(timings.fully_loaded),
            "view_duration_msec": _u32(view.duration_ms),
            "page_interaction_time_msec": _u32(view.interaction_ms),
            "scroll_rate": None if view.scroll_rate is None else min(view.scroll_rate, 100.0),
            "rage_click_all_targets_ind": int(view.rage_click),
            "multiple_button_interaction_ind": int(view.multiple_button),
            "any_api_error_ind": int(bool(view.api_errors)),
            "api_error_after_click_ind": int(any(e.after_click for e in view.api_errors)),
            "frustration_score": frustration_of(view, bool(errors)),
            "is_excludable": int(device.is_bot),
            "errors": errors,
            "custom_vars": _custom_vars(view),
            "dynamic_vars": _dynamic_vars(view),
            "transactions": transactions,
            "transaction_items": items,
            "add_to_cart_items": cart,
        }
        for key, size in (("screen", view.screen), ("window", view.window)):
            if size is not None:
                hit[f"{key}_width"], hit[f"{key}_height"] = _u16(size[0]), _u16(size[1])
        if view.document is not None:
            hit["document_width"], hit["document_height"] = _u32(view.document[0]), _u32(view.document[1])
        hits.append(hit)
    return hits
