"""Pure parts of collection: origins, the beacon -> hits mapping, user agents, the per-client rate."""

from __future__ import annotations

import orjson
import pytest

from dataexport.collect.beacon import Client, cents_of, clock_shift, decode_beacon, hits_of, language_of
from dataexport.collect.origins import is_allowed, normalise_origin, origin_of_referer, with_origin, without_origin
from dataexport.collect.useragent import DESKTOP, MOBILE, TABLET, Device, describe
from dataexport.errors import ValidationFailed
from dataexport.ingest.hits import validate_hit
from dataexport.security.throttle import RequestRate

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Mobile/15E148 Safari/604.1"
)
IPAD = (
    "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 "
    "Mobile/15E148 Safari/604.1"
)
ANDROID_TABLET = (
    "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
HEADLESS = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36"
)


@pytest.mark.parametrize(
    ("text", "origin"),
    [
        ("https://Shop.Example.com/", "https://shop.example.com"),
        ("shop.example.com", "https://shop.example.com"),
        ("https://shop.example:443", "https://shop.example"),
        ("http://127.0.0.1:8001", "http://127.0.0.1:8001"),
        ("http://[::1]:8001", "http://[::1]:8001"),
    ],
)
def test_origins_are_normalised_as_browsers_send_them(text, origin):
    assert normalise_origin(text) == origin


@pytest.mark.parametrize(
    "text", ["ftp://shop.example", "https://shop.example/path", "https://u:p@shop.example", "https://"]
)
def test_origins_that_are_no_origins_are_refused_naming_the_field(text):
    with pytest.raises(ValidationFailed) as raised:
        normalise_origin(text, "origin")
    assert raised.value.errors[0].field == "origin"


def test_allowed_origins_match_exactly_and_a_missing_origin_is_refused():
    allowed = with_origin([], "https://shop.example")
    assert with_origin(allowed, "https://SHOP.example/") == allowed  # no duplicate
    assert is_allowed("https://shop.example", allowed)
    assert not is_allowed("https://evil.example", allowed)
    assert not is_allowed("https://shop.example.evil.example", allowed)
    assert not is_allowed("http://shop.example", allowed)  # another scheme is another origin
    assert not is_allowed(None, allowed) and not is_allowed("null", allowed)
    assert origin_of_referer("https://shop.example/cart?x=1") == "https://shop.example"
    assert without_origin(allowed, "https://shop.example") == []
    with pytest.raises(ValidationFailed):
        without_origin([], "https://shop.example")


def test_user_agents_give_browser_platform_device_and_bots():
    chrome = describe(CHROME)
    assert (chrome.browser_name, chrome.browser_version.split(".")[0], chrome.platform_name) == (
        "Chrome",
        "131",
        "Windows",
    )
    assert chrome.device_id == DESKTOP and not chrome.is_bot
    assert describe(IPHONE).device_id == MOBILE and describe(IPHONE).platform_name == "iOS"
    assert describe(IPAD).device_id == TABLET
    assert describe(ANDROID_TABLET).device_id == TABLET
    assert describe(GOOGLEBOT).is_bot and describe(HEADLESS).is_bot
    assert describe("").device_id == DESKTOP


@pytest.mark.parametrize(
    ("amount", "cents"),
    [
        ("9.99", 999),
        ("9.999", 999),
        (9.999, 999),
        (12, 1200),
        ("59.9", 5990),
        ("12345678901234.999", 345678901234 * 100 + 99),
        ("x", 0),
        (None, 0),
    ],
)
def test_money_keeps_twelve_digits_and_cuts_extra_decimals(amount, cents):
    assert cents_of(amount) == cents


def test_clock_shift_ignores_sane_clocks_and_rounds_to_minutes():
    assert clock_shift(1_000_000, 1_000_000 + 59_000) == 0
    assert clock_shift(1_000_000 + 31 * 60_000 + 2_500, 1_000_000) == -31 * 60_000
    assert language_of("fr-FR") == "fr" and language_of("EN_us") == "en"


def _beacon(**view) -> dict:
    base = {"view_number": 1, "view_time": 1_764_670_000_000, "url": "https://shop.example/p?x=1#top"}
    base.update(view)
    return {
        "v": 1,
        "batch": "b-123456789",
        "sent_at": 1_764_670_060_000,
        "user": "8f14e45f-ceea-467f-a8d5-0f1a2b3c4d5e",
        "session_number": 2,
        "session_start": 1_764_669_000_000,
        "views": [base],
    }


CLIENT = Client(Device("Chrome", "131.0.0", "Windows", "10", DESKTOP, False), "Paris", "FR")


def test_a_view_becomes_a_hit_that_the_ingest_rules_accept():
    body = _beacon(
        title="Product",
        referrer="https://shop.example/",
        language="fr-FR",
        screen=[1920, 1080],
        window=[1280, 720],
        document=[1280, 4000],
        timings={"dom_interactive": 840, "fully_loaded": 2310},
        duration_ms=38120,
        interaction_ms=12400,
        scroll_rate=62.5,
        rage_click=True,
        errors=[
            {
                "message": "x is undefined",
                "time": 1_764_670_001_000,
                "filename": "app.js",
                "line": 3,
                "col": 9,
                "type": "TypeError",
            }
        ],
        api_errors=[{"url": "/api/deals", "method": "GET", "status": 503, "after_click": True}],
        custom_vars=[
            {"index": 1, "name": "plan", "value": "gold", "scope": "session"},
            {"index": 21, "name": "x", "value": "y"},
        ],
        dynamic_vars=[
            {"key": "price", "value": 1995},
            {"key": "price", "value": 2095},
            {"key": "too_big", "value": 2**33},
        ],
        transactions=[
            {
                "id": "T-1",
                "revenue": "59.90",
                "currency": "EUR",
                "items": [{"sku": "SKU-1", "price": "19.95", "quantity": 2}],
            }
        ],
        cart_adds=[{"sku": "SKU-1", "merchant": "shop.example"}],
    )
    (hit,) = hits_of(decode_beacon(orjson.dumps(body)), CLIENT, received_at_ms=1_764_670_060_500)
    row, errors = validate_hit(hit, 0)
    assert errors == [] and row is not None
    assert row["url"] == "https://shop.example/p?x=1"  # the hash is never stored
    assert (row["city"], row["country_code"], row["language"], row["browser_name"]) == ("Paris", "FR", "fr", "Chrome")
    assert (row["screen_width"], row["window_height"], row["document_height"]) == (1920, 720, 4000)
    assert row["start_render"] is None and row["fully_loaded"] == 2310
    assert (
        row["rage_click_all_targets_ind"] == 1
        and row["any_api_error_ind"] == 1
        and row["api_error_after_click_ind"] == 1
    )
    assert row["frustration_score"] == 75  # rage click, JS error, API error
    assert [(v["position"], v["scope"]) for v in row["custom_vars"]] == [(1, "session")]  # index 21 is not sent
    assert [(v["key"], v["number_value"]) for v in row["dynamic_vars"]] == [("price", 2095)]
    assert row["transactions"] == [{"id": "T-1", "revenue_cents": 5990, "transaction_time": 1_764_670_000_000}]
    assert row["transaction_items"][0]["revenue_cents"] == 3990 and row["transaction_items"][0]["id"] == "T-1"
    assert row["add_to_cart_items"][0]["catalog_id"] == "shop.example"
    assert row["errors"][0]["error_type"] == "TypeError" and row["is_excludable"] == 0


def test_a_skewed_clock_shifts_every_time_of_the_beacon():
    (hit,) = hits_of(decode_beacon(orjson.dumps(_beacon())), CLIENT, received_at_ms=1_764_670_060_000 - 31 * 60_000)
    assert hit["view_time"] == 1_764_670_000_000 - 31 * 60_000
    assert hit["session_time"] == 1_764_669_000_000 - 31 * 60_000


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda b: b.pop("user"), "body"),
        (lambda b: b["views"][0].update(view_number="1"), "views[0].view_number"),
        (lambda b: b.update(views=[]), "views"),
        (lambda b: b.update(batch="../../etc"), "batch"),
        (lambda b: b.update(v=2), "v"),
    ],
)
def test_bad_beacons_are_refused_naming_the_key(change, field):
    body = _beacon()
    change(body)
    with pytest.raises(ValidationFailed) as raised:
        decode_beacon(orjson.dumps(body))
    assert raised.value.errors[0].field == field or field == "body"
    with pytest.raises(ValidationFailed):
        decode_beacon(b"{not json")
    with pytest.raises(ValidationFailed):
        decode_beacon(b" " * (65 * 1024))


def test_the_request_rate_allows_a_burst_then_the_average():
    rate = RequestRate(per_minute=60, burst=3)
    assert all(rate.take("a", 0.0).allowed for _ in range(3))
    refused = rate.take("a", 0.0)
    assert not refused.allowed and refused.retry_after == 1
    assert rate.take("b", 0.0).allowed  # another client is not slowed
    assert rate.take("a", 1.0).allowed and not rate.take("a", 1.0).allowed
    small = RequestRate(per_minute=60, burst=1, max_keys=10)
    for i in range(50):
        small.take(i, 0.0)
    assert len(small) <= 10


def test_a_groups_errors_go_back_to_their_beacons_reindexed():
    from dataexport.collect.combiner import split_errors
    from dataexport.ingest.hits import HitError

    errors = [HitError(0, "url", "is required"), HitError(3, "view_time", "x"), HitError(4, "title", "y")]
    per = split_errors([0, 1, 3], errors)  # beacons of 1, 2 and 2 hits
    assert per == [[HitError(0, "url", "is required")], [], [HitError(0, "view_time", "x"), HitError(1, "title", "y")]]
