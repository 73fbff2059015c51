"""The tag in a real browser: a visitor browses the demo shop that `dataexport demo` serves, and every fact of the
visit comes back out of the public export API, in both scopes.

One visit, as a shopper would make it, in Debian's Chromium: the home page scrolled to its end, a product page with
a rage click, two products added to the cart, a purchase, an SPA with two route changes, a failed API call after a
click, a page that throws twice; then 31 minutes without activity (the page's clock fast-forwarded) and a second
visit. The shop and the API are two origins, as on a real site, so CORS and the allowed origin are exercised too.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from processes import Service, service_env, wait_until
from support import ThreadedServer, free_ports

pytestmark = pytest.mark.acceptance

DESKTOP_CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36"
SEARCH = "https://search.example/?q=enamel+mug"
LONDON = "81.2.69.142"  # an address DB-IP places in London
GEOIP_DIR = Path(__file__).resolve().parents[2] / ".cache" / "geoip"


def _forwarding_proxy(upstream: str, client_address: str):
    """A reverse proxy in front of the API, as a load balancer is: it names the visitor's address in
    X-Forwarded-For (here one of London's, since the browser runs on loopback)."""
    proxy = FastAPI()
    forward = httpx.AsyncClient(base_url=upstream, timeout=30)

    @proxy.api_route("/{path:path}", methods=["GET", "POST", "OPTIONS"])
    async def relay(path: str, request: Request) -> Response:
        headers = {k: v for k, v in request.headers.items() if k not in ("host", "content-length")}
        answer = await forward.request(
            request.method,
            f"/{path}",
            params=request.query_params,
            content=await request.body(),
            headers=headers | {"x-forwarded-for": client_address},
        )
        relayed = Response(answer.content, status_code=answer.status_code)
        for name, value in answer.headers.multi_items():  # each Set-Cookie on its own
            if name not in ("content-length", "content-encoding", "transfer-encoding"):
                relayed.headers.append(name, value)
        return relayed

    return ThreadedServer(proxy)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`dataexport demo` as a newcomer runs it: the API (here behind a proxy), and the shop on the next port."""
    root = tmp_path_factory.mktemp("demo")
    api_port, shop_port = free_ports(2)
    proxy = _forwarding_proxy(f"http://127.0.0.1:{api_port}", LONDON).__enter__()
    env = service_env(
        {
            "DATAEXPORT_PUBLIC_BASE_URL": proxy.url,
            "DATAEXPORT_DATA_DIR": str(root / "data"),
            "DATAEXPORT_JWT_SECRET": "browser-test-secret-" + "x" * 32,
            "DATAEXPORT_TRUSTED_PROXIES": '["127.0.0.1"]',  # as behind a load balancer: the visitor's address
            "DATAEXPORT_GEOIP_DIR": str(GEOIP_DIR),
            "DATAEXPORT_LOG_JSON": "false",
            "DATAEXPORT_SESSION_TIMEOUT_MINUTES": "0",  # a range that ends now is exported now
        }
    )
    # Two days: yesterday is a closed window of the demo's daily job.
    args = ("demo", "--days", "2", "--sessions-per-day", "40", "--port", str(api_port), "--shop-port", str(shop_port))
    service = Service("demo", args, env, root, port=api_port).start()
    shop = f"http://127.0.0.1:{shop_port}"

    def up() -> bool:
        try:
            return (
                httpx.get(f"{service.url}/healthz", timeout=2).status_code == 200
                and httpx.get(shop, timeout=2).status_code == 200
            )
        except httpx.TransportError:
            return False

    wait_until(up, [service], "the demo API and shop")
    printed = service.log_path.read_text()
    client = {k: re.search(rf"^{k}\s+(\S+)", printed, re.M).group(1) for k in ("client_id", "client_secret")}
    login = re.search(r"Console: (\S+/console)\s+sign in as (\S+) / (\S+)", printed)
    assert login, printed
    yield proxy.url, shop, client, login.groups(), printed
    service.stop()
    proxy.__exit__(None, None, None)


def test_the_demo_prints_a_console_login_that_works(demo):
    api, _, _, (console_url, email, password), _ = demo
    assert console_url == f"{api}/console"
    with httpx.Client(base_url=api, timeout=10) as browser:
        form = browser.get("/console/login")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
        signed_in = browser.post("/console/login", data={"csrf": token, "email": email, "password": password})
        assert signed_in.status_code == 303, signed_in.text
        projects = browser.get("/console/projects")
    assert projects.status_code == 200 and "Demo shop" in projects.text


def test_the_demo_prints_a_pull_command_that_delivers_its_daily_job(demo, tmp_path):
    api, _, client, _, printed_walkthrough = demo
    printed = re.search(
        r"^(DATAEXPORT_CLIENT_ID=\S+) (DATAEXPORT_CLIENT_SECRET=\S+) (\S+) (pull .+)$", printed_walkthrough, re.M
    )
    assert printed, printed_walkthrough
    env = dict(e.split("=", 1) for e in printed.groups()[:2])
    assert env == {"DATAEXPORT_CLIENT_ID": client["client_id"], "DATAEXPORT_CLIENT_SECRET": client["client_secret"]}
    args = printed.group(4).split()
    job = int(args[args.index("--job") + 1])
    headers = _token(api, client)

    def settled() -> list[dict]:
        runs = httpx.get(f"{api}/v1/exports/{job}/runs", headers=headers, timeout=10).json()["payload"]
        return [r for r in runs if r["state"] not in ("SUCCESS", "FAILURE")]

    # The job began yesterday: once that day closed and waited the 2-hour lag, the scheduler runs it.
    expect_runs = datetime.now(UTC).hour >= 3
    wait_until(lambda: not settled() and (not expect_runs or _successful(api, headers, job)), [], "the daily run")
    args[args.index("--to") + 1] = str(tmp_path / "demo.duckdb")
    args[args.index("--server") + 1] = api  # the demo's public address here is the test proxy
    done = subprocess.run(
        [sys.executable, "-m", "dataexport.cli", *args, "--json"],
        env={**service_env({}), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(done.stdout.splitlines()[-1])
    runs = _successful(api, headers, job)
    assert summary["runsDelivered"] == len(runs) and (len(runs) >= 1 or not expect_runs)
    assert summary["rows"] > 0 or not runs


def _successful(api: str, headers: dict, job: int) -> list[dict]:
    runs = httpx.get(f"{api}/v1/exports/successful-runs", headers=headers, timeout=10).json()["payload"]
    return [r for r in runs if r["jobId"] == job]


def _token(api: str, client: dict) -> dict:
    answer = httpx.post(
        f"{api}/v1/oauth/token",
        data={**client, "grant_type": "client_credentials", "scope": "data-export"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def _export(api: str, headers: dict, scope: str, fields: list[dict]) -> list[dict]:
    """A once job over the last day up to now, run to SUCCESS, its JSONL parts read back."""
    now = datetime.now(UTC)
    body = {
        "name": f"browser {scope}",
        "format": "JSONL",
        "scope": scope,
        "deviceLabel": "all",
        "frequency": {
            "value": "once",
            "dateRange": {
                "from": (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                "to": (now + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            },
        },
        "fields": fields,
    }
    created = httpx.post(f"{api}/v1/exports", json=body, headers=headers, timeout=30)
    assert created.status_code == 200, created.text
    job = created.json()["payload"]["jobId"]
    deadline = time.monotonic() + 90
    while True:
        runs = httpx.get(f"{api}/v1/exports/{job}/runs", headers=headers, timeout=30).json()["payload"]
        if runs and runs[0]["state"] == "SUCCESS":
            break
        assert not runs or runs[0]["state"] not in ("FAILURE", "ERROR"), runs
        assert time.monotonic() < deadline, f"the {scope} export did not finish: {runs}"
        time.sleep(0.5)
    run = httpx.get(f"{api}/v1/exports/{job}/runs/{runs[0]['jobRunId']}", headers=headers, timeout=30).json()["payload"]
    rows = []
    for part in run["files"]:
        content = httpx.get(part["url"], timeout=30).content
        rows += [json.loads(line) for line in gzip.decompress(content).decode().splitlines() if line]
    return rows


def _browse(page, shop: str) -> None:
    """The first visit, as a shopper clicks through it."""
    page.goto(f"{shop}/", referer=SEARCH)  # the visitor comes from a search engine
    page.mouse.wheel(0, 1200)
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
    page.wait_for_timeout(300)
    page.click("#product-link-SKU-MUG")
    page.wait_for_selector("#add-to-cart")
    for _ in range(4):  # a button that does nothing, clicked again and again: a rage click
        page.click("#notify-me", delay=10)
    page.click("#add-to-cart")
    page.goto(f"{shop}/product/SKU-TEE")
    page.click("#add-to-cart")
    page.click("#nav-cart")
    page.click("#checkout")
    page.fill("#name", "Ada Lovelace")
    page.fill("#email", "ada@example.com")
    page.click("#place-order")
    page.wait_for_selector("#order-confirmed")
    page.click("#nav-app")
    page.click("#app-next")
    page.click("#app-next")
    page.wait_for_function("document.getElementById('app-step').textContent.trim() === 'step-3'")
    page.click("#nav-deals")
    page.click("#load-deals")
    page.wait_for_selector("#deals-error", state="visible")
    page.click("#nav-broken")
    page.wait_for_load_state("load")
    page.click("#throw")
    page.click("#nav-home")
    page.wait_for_load_state("load")


VIEW_FIELDS = [
    {"fieldName": name}
    for name in (
        "user_id_unhashed",
        "session_number",
        "view_number",
        "url",
        "title",
        "referer_url",
        "scroll_rate",
        "view_duration_msec",
        "rage_click_all_targets_ind",
        "multiple_button_interaction_ind",
        "any_js_error_ind",
        "errors.error_type",
        "errors.message",
        "any_api_error_ind",
        "api_error_after_click_ind",
        "browser_name",
        "device_id",
        "language",
        "city",
        "country_code",
        "screen_width",
        "window_width",
        "document_height",
        "fully_loaded",
        "is_excludable",
    )
] + [
    {"fieldName": "custom_var", "customVarPosition": 1},
    {"fieldName": "custom_var", "customVarPosition": 2},
    {"fieldName": "dynamic_var", "dynamicVarKey": "product_price"},
    {"fieldName": "dynamic_var", "dynamicVarKey": "product_color"},
]
SESSION_FIELDS = [
    {"fieldName": name}
    for name in (
        "user_id_unhashed",
        "session_number",
        "session_number_of_views",
        "session_number_of_transactions",
        "session_transactions_revenue_cents",
        "session_transaction_items.sku",
        "session_transaction_items.quantity",
        "session_add_to_cart_items.sku",
        "country_code",
        "is_excludable",
    )
] + [{"fieldName": "custom_var", "customVarPosition": 1}]


def test_a_visit_in_chromium_comes_back_out_of_both_export_scopes(demo, launch_chromium):
    api, shop, client, _, _ = demo
    browser = launch_chromium(f"--user-agent={DESKTOP_CHROME}")
    context = browser.new_context(locale="fr-FR", viewport={"width": 1280, "height": 800})
    page = context.new_page()
    failed_beacons: list[str] = []
    page.on("requestfailed", lambda r: "/collect/" in r.url and failed_beacons.append(r.url))
    _browse(page, shop)
    page.goto("about:blank")  # the home view ends and is sent before the pause
    # Only now: the fake clock also stands in for `performance`, whose load timings the first visit reports.
    page.clock.install()
    page.clock.fast_forward("31:00")
    page.goto(f"{shop}/")
    page.wait_for_load_state("load")
    page.goto("about:blank")
    user = next(c["value"] for c in context.cookies(shop) if c["name"] == "_cs_id").split(".")[0]
    context.close()
    assert failed_beacons == []

    headers = _token(api, client)
    deadline = time.monotonic() + 30
    while True:  # beacons sent as pages unload arrive a moment later
        views = [r for r in _export(api, headers, "views", VIEW_FIELDS) if r["user_id_unhashed"] == user]
        if len(views) >= 13 or time.monotonic() > deadline:
            break
    by_url: dict[str, list[dict]] = {}
    for view in sorted(views, key=lambda v: (v["session_number"], v["view_number"])):
        by_url.setdefault(view["url"].removeprefix(shop), []).append(view)
    first = [v for v in views if v["session_number"] == 1]
    assert sorted(v["view_number"] for v in first) == list(range(1, len(first) + 1))
    expected_pages = ["/", "/product/SKU-MUG", "/product/SKU-TEE", "/cart", "/checkout", "/app", "/app/step-2",
                      "/app/step-3", "/deals", "/broken"]  # fmt: skip
    assert all(p in by_url for p in expected_pages), sorted(by_url)
    assert any(u.startswith("/order/ORD-") for u in by_url)

    home = by_url["/"][0]
    assert home["scroll_rate"] >= 95 and home["view_duration_msec"] > 0
    assert {v["referer_url"] for v in first} == {SEARCH}  # the session's referrer: its first view's
    assert (home["browser_name"], home["device_id"], home["language"]) == ("Chrome", 1, "fr")
    if GEOIP_DIR.exists() or os.environ.get("CI"):  # `make geoip` needs npm: without it places stay empty
        assert (home["city"], home["country_code"]) == ("London", "GB")
    assert home["screen_width"] > 0 and home["window_width"] == 1280 and home["document_height"] > 2500
    assert home["fully_loaded"] is not None and home["is_excludable"] == 0
    assert home["custom_var_1"] == "new"  # visit scope: on every view of the session

    mug = by_url["/product/SKU-MUG"][0]
    assert mug["rage_click_all_targets_ind"] == 1 and mug["multiple_button_interaction_ind"] == 1
    assert mug["custom_var_2"] == "kitchen" and mug["custom_var_1"] == "new"
    assert (mug["dynamic_var_product_price"], mug["dynamic_var_product_color"]) in ((1250, "white"), ("1250", "white"))
    assert by_url["/product/SKU-TEE"][0]["custom_var_2"] == "apparel"
    assert by_url["/cart"][0]["custom_var_2"] in (None, "")  # page scope: gone on the next page

    step2 = by_url["/app/step-2"][0]
    assert step2["view_number"] == by_url["/app"][0]["view_number"] + 1

    deals = by_url["/deals"][0]
    assert deals["any_api_error_ind"] == 1 and deals["api_error_after_click_ind"] == 1
    broken = by_url["/broken"][0]
    assert broken["any_js_error_ind"] == 1
    assert {"TypeError", "RangeError"} <= set(broken["errors.error_type"])
    assert any("demo range error" in m for m in broken["errors.message"])
    assert all(v["any_js_error_ind"] == 0 for v in first if v["url"].removeprefix(shop) != "/broken")

    second = [v for v in views if v["session_number"] == 2]
    assert [v["view_number"] for v in second] == [1] and second[0]["url"] == f"{shop}/"
    assert second[0]["custom_var_1"] == "new"  # set again by the home page for the new visit

    sessions = {s["session_number"]: s for s in _export(api, headers, "sessions", SESSION_FIELDS)
                if s["user_id_unhashed"] == user}  # fmt: skip
    assert sorted(sessions) == [1, 2]
    visit = sessions[1]
    assert visit["session_number_of_views"] == len(first)
    assert visit["session_number_of_transactions"] == 1
    assert visit["session_transactions_revenue_cents"] == 1250 + 1990
    assert sorted(visit["session_transaction_items.sku"]) == ["SKU-MUG", "SKU-TEE"]
    assert visit["session_transaction_items.quantity"] == [1, 1]
    assert sorted(visit["session_add_to_cart_items.sku"]) == ["SKU-MUG", "SKU-TEE"]
    assert visit["custom_var_1"] == "new" and visit["country_code"] == home["country_code"]
    assert visit["is_excludable"] == 0
    assert sessions[2]["session_number_of_views"] == 1


def test_a_headless_browser_is_collected_but_flagged_excludable(demo, launch_chromium):
    api, shop, client, _, _ = demo
    context = launch_chromium().new_context()  # Chromium's own headless user agent
    page = context.new_page()
    page.goto(f"{shop}/cart")
    page.goto("about:blank")
    user = next(c["value"] for c in context.cookies(shop) if c["name"] == "_cs_id").split(".")[0]
    context.close()
    headers = _token(api, client)
    fields = [{"fieldName": "user_id_unhashed"}, {"fieldName": "is_excludable"}, {"fieldName": "browser_name"}]
    deadline = time.monotonic() + 30
    while not (rows := [r for r in _export(api, headers, "views", fields) if r["user_id_unhashed"] == user]):
        assert time.monotonic() < deadline, "the headless visit was not collected"
    assert rows == [{"user_id_unhashed": user, "is_excludable": 1, "browser_name": "HeadlessChrome"}]
