"""The demo shop over a real uvicorn: its pages, its API, and what each page pushes to `_uxa`.

The pages' scripts also run in node, against a small fake browser (below), so the pushes are checked as values
the tag would receive, not only as text; those tests are skipped where node is missing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from urllib.parse import urlsplit

import httpx
import pytest

from dataexport.demo.shop import PRODUCTS, create_shop_app
from support import ThreadedServer

TAG_SRC = "http://127.0.0.1:8000/tag/demo-tag-id.js"
SKUS = ["SKU-MUG", "SKU-TEE", "SKU-CAP", "SKU-BAG"]
PAGES = [
    "/",
    *(f"/product/{sku}" for sku in SKUS),
    "/cart",
    "/checkout",
    "/order/ORD-1764670000000",
    "/app",
    "/app/step-2",
    "/deals",
    "/broken",
]
BOOTSTRAP = "window._uxa = window._uxa || [];"
needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")


@pytest.fixture(scope="module")
def shop():
    with ThreadedServer(create_shop_app(TAG_SRC)) as server, httpx.Client(base_url=server.url) as http:
        yield http


class Page(HTMLParser):
    """What the tests read in a page: ids, labels, inputs, links and the scripts in document order."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.labels: set[str] = set()
        self.inputs: list[str | None] = []
        self.urls: list[str] = []
        self.scripts: list[tuple[str | None, str]] = []  # (src, inline code)
        self._in_script = False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "label":
            self.labels.add(a.get("for"))
        if tag in ("input", "select", "textarea"):
            self.inputs.append(a.get("id"))
        self.urls += [a[k] for k in ("href", "src", "action") if a.get(k)]
        if tag == "script":
            self.scripts.append((a.get("src"), ""))
            self._in_script = True

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            src, code = self.scripts[-1]
            self.scripts[-1] = (src, code + data)


# --- pages ---


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders_and_loads_the_tag_once_after_its_pushes(shop, path):
    response = shop.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert html.count(TAG_SRC) == 1
    assert html.count(BOOTSTRAP) == 1
    scripts = Page(html).scripts
    # The tag comes last, async: every push the page makes at load is queued before it.
    assert scripts[-1] == (TAG_SRC, "")
    assert f'<script src="{TAG_SRC}" async></script>' in html
    # The queue exists before any script of the page pushes to it.
    assert next(code for _, code in scripts if "_uxa" in code).strip() == BOOTSTRAP
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html


@pytest.mark.parametrize("path", [*PAGES, "/product/SKU-NOPE"])
def test_ids_are_unique_and_every_input_has_a_label(shop, path):
    page = Page(shop.get(path).text)
    assert len(page.ids) == len(set(page.ids))
    assert {"nav-home", "nav-cart", "nav-app", "nav-deals", "nav-broken", "footer"} <= set(page.ids)
    assert all(input_id and input_id in page.labels for input_id in page.inputs)


@pytest.mark.parametrize(
    ("path", "ids"),
    [
        ("/", {"about", "footer", *(f"product-link-{sku}" for sku in SKUS)}),
        ("/product/SKU-MUG", {"add-to-cart", "notify-me", "cart-message"}),
        ("/cart", {"cart-lines", "cart-total", "cart-empty", "checkout"}),
        ("/checkout", {"checkout-form", "name", "email", "place-order"}),
        ("/order/ORD-1", {"order-confirmed", "order-id"}),
        ("/app", {"app-next", "app-back", "app-step"}),
        ("/deals", {"load-deals", "deals-error"}),
        ("/broken", {"throw"}),
    ],
)
def test_pages_have_their_stable_ids(shop, path, ids):
    assert ids <= set(Page(shop.get(path).text).ids)


def test_home_lists_the_four_products_and_is_long_enough_to_scroll(shop):
    html = shop.get("/").text
    for sku, price in zip(SKUS, ["12.50", "19.90", "15.00", "34.95"], strict=True):
        assert f'href="/product/{sku}"' in html
        assert f"€{price}" in html
    assert "min-height: 2500px" in shop.get("/static/shop.css").text
    assert "window._uxa.push(['setCustomVariable', 1, 'visitor_type', 'new', 2]);" in html


@pytest.mark.parametrize("sku", SKUS)
def test_product_page_pushes_its_category_price_and_color(shop, sku):
    product = PRODUCTS[sku]
    html = shop.get(f"/product/{sku}").text
    assert f"window._uxa.push(['setCustomVariable', 2, 'product_category', \"{product.category}\", 3]);" in html
    assert (
        f"window._uxa.push(['trackDynamicVariable', {{key: 'product_price', value: {product.price_cents}}}]);" in html
    )
    assert f"window._uxa.push(['trackDynamicVariable', {{key: 'product_color', value: \"{product.color}\"}}]);" in html
    assert "window._uxa.push(['ec:cart:add', {sku: product.sku, merchant: window.location.hostname}]);" in html
    assert "window._uxa.push(['trackPageEvent', 'addToCart']);" in html


def test_order_and_app_pages_carry_their_pushes(shop):
    order = shop.get("/order/ORD-1").text
    for command in ("ec:transaction:create", "ec:transaction:items:add", "ec:transaction:send"):
        assert f"window._uxa.push(['{command}'" in order
    assert "window._uxa.push(['trackPageview', '/app/step-' + step]);" in shop.get("/app").text
    assert "history.pushState(" in shop.get("/app").text


@pytest.mark.parametrize("path", ["/product/SKU-NOPE", "/app/step-9", "/app/nope", "/order/bad%20id", "/nowhere"])
def test_unknown_pages_are_a_404_page_with_the_tag(shop, path):
    response = shop.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert 'id="not-found"' in response.text
    assert response.text.count(TAG_SRC) == 1


def test_the_api(shop):
    deals = shop.get("/api/deals")
    assert deals.status_code == 503
    assert deals.json() == {"error": "deals service unavailable"}
    assert shop.get("/api/stock/SKU-TEE").json() == {"sku": "SKU-TEE", "in_stock": True}
    unknown = shop.get("/api/stock/SKU-NOPE")
    assert unknown.status_code == 404 and unknown.headers["content-type"] == "application/json"


def test_static_files_are_served(shop):
    assert shop.get("/static/shop.css").headers["content-type"].startswith("text/css")
    assert "javascript" in shop.get("/static/shop.js").headers["content-type"]


def test_no_page_references_an_external_host_but_the_tags(shop):
    texts = [shop.get(path).text for path in [*PAGES, "/nowhere"]]
    texts += [shop.get(f"/static/{name}").text for name in ("shop.css", "shop.js")]
    hosts = set()
    for text in texts:
        hosts |= {urlsplit(url).netloc for url in re.findall(r"[a-z][a-z0-9+.-]*://[^\s\"'<>)]+", text)}
        hosts |= {urlsplit(url).netloc for url in re.findall(r"(?:src|href|action)=\"(//[^\"]+)\"", text)}
        hosts |= {urlsplit(url).netloc for url in re.findall(r"url\(\s*['\"]?(//[^)'\"]+)", text)}
        assert "@import" not in text
    assert hosts == {urlsplit(TAG_SRC).netloc}


def test_local_links_and_assets_resolve(shop):
    urls = {url for path in PAGES for url in Page(shop.get(path).text).urls if url.startswith("/")}
    assert {"/", "/cart", "/app", "/deals", "/broken", "/checkout", "/static/shop.css", "/static/shop.js"} <= urls
    for url in urls:
        assert shop.get(url).status_code == 200, url


# --- the pages' scripts, run in node against a fake browser ---

# A window with just what the pages use: elements by id (created on demand), storages, history, fetch (the real
# one, to the shop under test) and listeners. Errors thrown by scripts and handlers are collected as uncaught.
FAKE_BROWSER = r"""
const vm = require('node:vm');
const input = JSON.parse(require('node:fs').readFileSync(0, 'utf8'));
const uncaught = [], pushedUrls = [];
function guard(fn) {
  try { fn(); } catch (e) { uncaught.push({name: e.name, message: e.message}); }
}
function storage(init) {
  const m = new Map(Object.entries(init || {}));
  return {getItem: (k) => (m.has(k) ? m.get(k) : null), setItem: (k, v) => m.set(k, String(v)),
          removeItem: (k) => m.delete(k), dump: () => Object.fromEntries(m)};
}
function element(id) {
  return {id, hidden: false, disabled: false, textContent: '', children: [], listeners: {},
          addEventListener(type, fn) { (this.listeners[type] ||= []).push(fn); },
          appendChild(child) { this.children.push(child); return child; }};
}
const elements = {};
const url = new URL(input.url);
const win = {
  location: {href: url.href, hostname: url.hostname, pathname: url.pathname, assign(u) { win.navigated = u; }},
  localStorage: storage(input.local), sessionStorage: storage(input.session),
  history: {pushState(state, title, u) { pushedUrls.push(u); }, replaceState() {}},
  listeners: {},
  addEventListener(type, fn) { (this.listeners[type] ||= []).push(fn); },
  fetch: (path) => fetch(new URL(path, url)),
  document: {title: '', getElementById: (id) => (elements[id] ||= element(id)),
             createElement: (tag) => element(null)},
};
win.window = win;
const context = vm.createContext(win);
function fire(listeners, event) {
  for (const fn of listeners || []) guard(() => fn(event));
}
const settle = () => new Promise((resolve) => setTimeout(resolve, 50));
(async () => {
  for (const code of input.scripts) guard(() => vm.runInContext(code, context));
  for (const [kind, target] of input.actions) {
    const event = {preventDefault() {}, state: null};
    if (kind === 'load') fire(win.listeners.load, event);
    else fire(elements[target] && elements[target].listeners[kind], event);
    await settle();
  }
  await settle();
  const shown = {};
  for (const [id, el] of Object.entries(elements)) {
    shown[id] = {text: el.textContent, hidden: el.hidden, disabled: el.disabled, children: el.children.length};
  }
  process.stdout.write(JSON.stringify({
    uxa: JSON.parse(JSON.stringify(win._uxa)), elements: shown, local: win.localStorage.dump(),
    session: win.sessionStorage.dump(), navigated: win.navigated || null, pushedUrls, uncaught,
    title: win.document.title,
  }));
})();
"""


def run_page(shop, path, actions=(), local=None, session=None):
    """Runs the page's scripts (all but the tag) in order, then the actions; returns what the browser saw."""
    page = Page(shop.get(path).text)
    scripts = [code if src is None else shop.get(src).text for src, code in page.scripts if src != TAG_SRC]
    payload = {
        "url": str(shop.base_url.join(path)),
        "scripts": scripts,
        "actions": [list(a) for a in actions],
        "local": local or {},
        "session": session or {},
    }
    done = subprocess.run(
        ["node", "-e", FAKE_BROWSER], input=json.dumps(payload), capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    # Every page asks for the visit's key for its footer; the tests below look at what a page itself tracks.
    assert seen["uxa"][:1] == [["afterPageView", None]], seen["uxa"]
    seen["uxa"] = seen["uxa"][1:]
    return seen


def cart_of(*lines):
    return {"shop_cart": json.dumps([{"sku": s, "name": n, "price": p, "quantity": q} for s, n, p, q in lines])}


@needs_node
def test_home_pushes_the_visitor_type_for_the_visit(shop):
    seen = run_page(shop, "/")
    assert seen["uxa"] == [["setCustomVariable", 1, "visitor_type", "new", 2]]
    assert seen["uncaught"] == []


@needs_node
@pytest.mark.parametrize("sku", SKUS)
def test_product_page_pushes_and_add_to_cart(shop, sku):
    product = PRODUCTS[sku]
    seen = run_page(shop, f"/product/{sku}", actions=[("click", "add-to-cart"), ("click", "notify-me")])
    assert seen["uxa"] == [
        ["setCustomVariable", 2, "product_category", product.category, 3],
        ["trackDynamicVariable", {"key": "product_price", "value": product.price_cents}],
        ["trackDynamicVariable", {"key": "product_color", "value": product.color}],
        ["ec:cart:add", {"sku": sku, "merchant": "127.0.0.1"}],
        ["trackPageEvent", "addToCart"],
    ]
    assert json.loads(seen["local"]["shop_cart"]) == [
        {"sku": sku, "name": product.name, "price": product.price_cents, "quantity": 1}
    ]
    assert seen["elements"]["cart-count"]["text"] == "1"
    assert seen["elements"]["cart-message"]["hidden"] is False
    assert seen["elements"]["stock"]["text"] == "in stock"  # from /api/stock
    assert seen["uncaught"] == []


@needs_node
def test_adding_twice_counts_two_of_the_same_line(shop):
    seen = run_page(shop, "/product/SKU-CAP", actions=[("click", "add-to-cart"), ("click", "add-to-cart")])
    assert [line["quantity"] for line in json.loads(seen["local"]["shop_cart"])] == [2]
    assert seen["elements"]["cart-count"]["text"] == "2"


@needs_node
def test_cart_lists_lines_and_total(shop):
    local = cart_of(("SKU-MUG", "Enamel mug", 1250, 2), ("SKU-BAG", "Tote bag", 3495, 1))
    seen = run_page(shop, "/cart", local=local)
    assert seen["elements"]["cart-lines"]["children"] == 2
    assert seen["elements"]["cart-total"]["text"] == "€59.95"
    assert seen["elements"]["cart-empty"]["hidden"] is True
    assert seen["elements"]["cart-count"]["text"] == "3"
    assert seen["uxa"] == []
    assert run_page(shop, "/cart")["elements"]["cart-empty"]["hidden"] is False


@needs_node
def test_checkout_then_order_sends_the_transaction_once(shop):
    local = cart_of(("SKU-MUG", "Enamel mug", 1250, 2), ("SKU-TEE", "Organic T-shirt", 1990, 1))
    checkout = run_page(shop, "/checkout", actions=[("submit", "checkout-form")], local=local)
    order = json.loads(checkout["session"]["shop_last_order"])
    assert re.fullmatch(r"ORD-\d{13}", order["id"])
    assert checkout["navigated"] == f"/order/{order['id']}"
    assert checkout["elements"]["checkout-total"]["text"] == "€44.90"

    confirmed = run_page(shop, checkout["navigated"], local=checkout["local"], session=checkout["session"])
    assert confirmed["uxa"] == [
        ["ec:transaction:create", {"id": order["id"], "revenue": "44.90", "currency": "EUR"}],
        [
            "ec:transaction:items:add",
            {"id": order["id"], "sku": "SKU-MUG", "name": "Enamel mug", "price": "12.50", "quantity": 2},
        ],
        [
            "ec:transaction:items:add",
            {"id": order["id"], "sku": "SKU-TEE", "name": "Organic T-shirt", "price": "19.90", "quantity": 1},
        ],
        ["ec:transaction:send"],
    ]
    assert json.loads(confirmed["local"]["shop_cart"]) == []
    assert confirmed["elements"]["cart-count"]["text"] == "0"
    assert confirmed["elements"]["order-total"]["text"] == "€44.90"
    assert confirmed["uncaught"] == []

    # A reload shows the order again but does not count the sale twice.
    reloaded = run_page(shop, checkout["navigated"], local=confirmed["local"], session=confirmed["session"])
    assert reloaded["uxa"] == []
    assert reloaded["elements"]["order-total"]["text"] == "€44.90"


@needs_node
def test_checkout_with_an_empty_cart_places_no_order(shop):
    seen = run_page(shop, "/checkout", actions=[("submit", "checkout-form")])
    assert seen["navigated"] is None and "shop_last_order" not in seen["session"]
    assert seen["elements"]["checkout-error"]["hidden"] is False


@needs_node
def test_app_changes_step_without_reloading_and_tracks_each_route(shop):
    seen = run_page(shop, "/app", actions=[("click", "app-next"), ("click", "app-next"), ("click", "app-back")])
    assert seen["pushedUrls"] == ["/app/step-2", "/app/step-3", "/app/step-2"]
    assert seen["uxa"] == [
        ["trackPageview", "/app/step-2"],
        ["trackPageview", "/app/step-3"],
        ["trackPageview", "/app/step-2"],
    ]
    assert seen["elements"]["app-step"]["text"] == "step-2"
    assert seen["navigated"] is None
    assert seen["uncaught"] == []


@needs_node
def test_app_stays_within_its_steps(shop):
    first = run_page(shop, "/app", actions=[("click", "app-back")])
    assert first["uxa"] == [] and first["elements"]["app-back"]["disabled"] is True
    last = run_page(shop, "/app/step-4", actions=[("click", "app-next")])
    assert last["uxa"] == [] and last["elements"]["app-next"]["disabled"] is True


@needs_node
def test_deals_show_a_friendly_message_when_the_api_fails(shop):
    seen = run_page(shop, "/deals", actions=[("click", "load-deals")])
    assert seen["elements"]["deals-error"]["hidden"] is False
    assert "could not load the deals" in seen["elements"]["deals-error"]["text"]
    assert seen["uncaught"] == []


@needs_node
def test_broken_page_throws_a_type_error_at_load_and_a_range_error_on_click(shop):
    seen = run_page(shop, "/broken", actions=[("load", None), ("click", "throw")])
    assert [e["name"] for e in seen["uncaught"]] == ["TypeError", "RangeError"]
    assert seen["uncaught"][1]["message"] == "demo range error"
