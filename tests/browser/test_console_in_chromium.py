"""The web console in a real browser, against a real `dataexport serve` (its scheduler and worker in-process).

An admin signs in, creates API credentials and reads the secret once, builds a once job with the field picker
(keyboard only: an alias, a custom var, a dynamic var, a segment), watches it reach SUCCESS, downloads a part and
checks its rows; suspends and resumes a daily job; sees a validation error next to the field. A viewer's changes
are refused, another account's project is not reachable by URL, forged forms (CSRF) and planted session cookies
(session fixation) fail. Every page is screenshotted (test-artifacts/console/, git-ignored) and checked at 375 px:
labels on every input, no page wider than the screen.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from processes import Service, bearer_headers, cli_json, service_env, stamp, wait_until
from support import ThreadedServer, free_port

pytestmark = pytest.mark.acceptance

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
PASSWORD = "correct horse battery"
ADMIN, VIEWER, STRANGER = "ana@example.com", "victor@example.com", "sam@example.com"
USERS = 30
PHONE = {"width": 375, "height": 812}


def _hits(day: datetime) -> list[dict]:
    """Two views per visitor; two visitors in three in France; each with a plan (custom var 1) and an A/B arm."""
    hits = []
    for user in range(USERS):
        start = day + timedelta(hours=9, minutes=user)
        for view in (1, 2):
            hits.append(
                {
                    "user_id_unhashed": f"visitor-{user:02d}",
                    "session_number": 1,
                    "view_number": view,
                    "session_time": stamp(start),
                    "view_time": stamp(start + timedelta(seconds=20 * (view - 1))),
                    "device_id": 1,
                    "url": f"https://shop.example/p/{user}/{view}",
                    "country_code": "DE" if user % 3 == 0 else "FR",
                    "custom_vars": [{"position": 1, "key": "plan", "value": "gold" if user % 2 else "silver"}],
                    "dynamic_vars": {"ab_test": "A" if user % 4 < 2 else "B"},
                }
            )
    return hits


def _expected_rows(day: datetime) -> set[tuple[str, ...]]:
    return {
        (h["user_id_unhashed"], h["country_code"], h["custom_vars"][0]["value"], h["dynamic_vars"]["ab_test"])
        for h in _hits(day)
        if h["country_code"] == "FR"
    }


class Console:
    """The served console and what the test seeded: projects, accounts, a segment."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = service_env(
            {
                "DATAEXPORT_DATA_DIR": str(root / "data"),
                "DATAEXPORT_PORT": str(self.port),
                "DATAEXPORT_JWT_SECRET": "console-test-secret-" + "x" * 32,
                "DATAEXPORT_LOG_JSON": "true",
                "DATAEXPORT_SESSION_TIMEOUT_MINUTES": "0",
                "DATAEXPORT_POLL_INTERVAL_SECONDS": "0.2",
            }
        )
        shop = cli_json(self.env, "projects", "create", "--name", "Shop")
        other = cli_json(self.env, "projects", "create", "--name", "Someone else's shop")
        self.project, self.ingest_key, self.other_project = shop["project_id"], shop["ingest_key"], other["project_id"]
        for email, role, project in ((ADMIN, "admin", self.project), (VIEWER, "viewer", self.project)):
            self._user(email, role, project)
        self._user(STRANGER, "admin", self.other_project)
        self.segment = cli_json(
            self.env,
            "segments",
            "create",
            "--project",
            str(self.project),
            "--name",
            "France",
            "--filter",
            '{"field": "country_code", "op": "eq", "value": "FR"}',
        )["segment_id"]
        self.service = Service("serve", ("serve",), self.env, root, port=self.port).start()

    def _user(self, email: str, role: str, project: int) -> None:
        import subprocess
        import sys

        subprocess.run(
            [sys.executable, "-m", "dataexport.cli", "users", "create", "--email", email, "--role", role]
            + ["--project", str(project), "--password-stdin"],
            input=PASSWORD + "\n",
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    served = Console(tmp_path_factory.mktemp("console"))
    try:
        wait_until(lambda: _answers(served.url), [served.service], "the console's server")
        day = (datetime.now(UTC) - timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        served.day = day  # type: ignore[attr-defined]
        answer = httpx.post(
            f"{served.url}/ingest/v1/pageviews", json=_hits(day), headers={"X-Ingest-Key": served.ingest_key}
        )
        assert answer.status_code == 200 and answer.json()["payload"]["stored"] == 2 * USERS, answer.text
        served.api_job = _api_job(served, day)  # type: ignore[attr-defined]
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        yield served
    finally:
        served.service.stop()


def _api_job(console: Console, day: datetime) -> int:
    """A once job made through the API, as a client would: the pages of jobs and runs have one from the start."""
    client = cli_json(console.env, "clients", "create", "--project", str(console.project))
    headers = bearer_headers(console.url, client)
    body = {
        "name": "Sessions yesterday (API)",
        "format": "JSONL",
        "frequency": {"value": "once", "dateRange": {"from": stamp(day), "to": stamp(day + timedelta(hours=23))}},
        "fields": [{"fieldName": "session_id"}, {"fieldName": "country_code"}],
        "deviceLabel": "all",
    }
    answer = httpx.post(f"{console.url}/v1/exports", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()["payload"]["jobId"]


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def browser(launch_chromium):
    return launch_chromium()


def _sign_in(browser, console, email: str, *, viewport=None):
    context = browser.new_context(viewport=viewport or {"width": 1280, "height": 900}, base_url=console.url)
    page = context.new_page()
    page.goto("/console")
    assert "/console/login" in page.url  # no session: the sign-in form, and back afterwards
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/console/projects$"))
    return context, page


def _shot(page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def _labels_everywhere(page) -> None:
    """Every visible form control has a label (its own <label>, a wrapping one, or aria-label)."""
    unlabeled = page.evaluate(
        """() => Array.from(document.querySelectorAll('input, select, textarea'))
              .filter(e => e.type !== 'hidden' && e.offsetParent !== null)
              .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
              .map(e => e.name || e.id)"""
    )
    assert unlabeled == [], f"inputs without a label on {page.url}: {unlabeled}"


def _cookie(context, name: str) -> dict:
    return next(c for c in context.cookies() if c["name"] == name)


def test_sign_in_sets_a_protected_session_cookie(browser, console):
    context = browser.new_context(base_url=console.url)
    page = context.new_page()
    page.goto("/console/projects")
    _labels_everywhere(page)
    _shot(page, "01-sign-in")
    page.fill("#email", ADMIN)
    page.fill("#password", "not the password")
    page.click("button[type=submit]")
    assert page.locator("[role=alert]").inner_text() == "Wrong e-mail or password."
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/console/projects$"))
    cookie = _cookie(context, "dataexport_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["path"] == "/console"
    assert page.evaluate("document.cookie") == ""  # unreadable by scripts
    assert page.locator("table a", has_text="Shop").count() == 1
    assert "Someone else" not in page.content()
    _shot(page, "02-projects")
    page.click("text=Sign out")
    page.wait_for_url(re.compile(r"/console/login"))
    context.close()


def test_the_overview_charts_the_ingest_volume(browser, console):
    context, page = _sign_in(browser, console, ADMIN)
    page.goto(f"/console/projects/{console.project}")
    hourly, daily = page.locator("#hourly-title + svg"), page.locator("#daily-title + svg")
    assert hourly.locator("rect.bar").count() == 48 and daily.locator("rect.bar").count() == 30
    yesterday = console.day.strftime("%b %d")
    assert daily.locator("rect.bar title", has_text=f"{yesterday}: {2 * USERS}").count() == 1
    assert page.locator("dt:has-text('Last pageview') + dd").inner_text().startswith(console.day.strftime("%Y-%m-%d"))
    _shot(page, "03-project-overview")
    context.close()


def test_a_new_client_secret_is_shown_once_and_works(browser, console):
    context, page = _sign_in(browser, console, ADMIN)
    page.goto(f"/console/projects/{console.project}/credentials")
    page.fill("#client-name", "warehouse loader")
    page.click("text=Create client")
    client_id = page.input_value("#new-client-id")
    secret = page.input_value("#new-client-secret")
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.click("button[data-copy=new-client-secret]")
    assert page.evaluate("navigator.clipboard.readText()") == secret
    _shot(page, "04-credentials-secret-once")
    token = httpx.post(
        f"{console.url}/v1/oauth/token",
        json={
            "client_id": client_id,
            "client_secret": secret,
            "grant_type": "client_credentials",
            "scope": "data-export",
        },
    )
    assert token.status_code == 200, token.text
    page.goto(f"/console/projects/{console.project}/credentials")
    assert client_id in page.content() and secret not in page.content()  # never shown again
    context.close()


def _add_field(page, query: str, name: str) -> None:
    """Keyboard only: type in the search box, arrow down to the field, Enter."""
    page.focus("#field-search")
    page.fill("#field-search", query)
    page.keyboard.press("ArrowDown")
    for _ in range(80):
        if page.evaluate("document.activeElement.dataset.name") == name:
            break
        page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.dataset.name") == name
    page.keyboard.press("Enter")


def test_a_once_job_built_with_the_field_picker_exports_the_segment(browser, console):
    context, page = _sign_in(browser, console, ADMIN)
    page.goto(f"/console/projects/{console.project}/jobs/new")
    _labels_everywhere(page)
    page.fill("#name", "French visitors yesterday")
    page.select_option("#frequency-value", "once")
    page.fill("#frequency-dateRange-from", stamp(console.day))
    page.fill("#frequency-dateRange-to", stamp(console.day + timedelta(days=1) - timedelta(milliseconds=1)))
    page.select_option("#segmentId", str(console.segment))

    _add_field(page, "unhashed", "user_id_unhashed")
    assert page.evaluate("document.activeElement.id") == "fields-0-aliasName"  # focus moved to the new row
    page.keyboard.type("visitor")
    _add_field(page, "country", "country_code")
    page.keyboard.type("country")
    _add_field(page, "custom variable", "custom_var")
    assert page.evaluate("document.activeElement.id") == "fields-2-customVarPosition"
    offered = page.eval_on_selector_all("#custom-var-positions option", "os => os.map(o => o.value)")
    assert offered == ["1"]  # the project's data has custom var 1
    page.keyboard.type("1")
    page.fill("#fields-2-aliasName", "plan")
    _add_field(page, "dynamic", "dynamic_var")
    offered = page.eval_on_selector_all("#dynamic-var-keys option", "os => os.map(o => o.value)")
    assert offered == ["ab_test"]
    page.keyboard.type("ab_test")
    page.fill("#fields-3-aliasName", "ab")
    _labels_everywhere(page)
    _shot(page, "05-new-job-field-picker")
    page.click("button:has-text('Create job')")
    page.wait_for_url(re.compile(r"/jobs/\d+$"))
    job_id = int(page.url.rsplit("/", 1)[1])

    # Live progress: the page polls the runs table until the run is over, without a reload.
    page.locator("#runs .state", has_text="SUCCESS").wait_for(timeout=60_000)
    assert page.locator("#durations-title").count() == 1
    _shot(page, "06-job-runs")
    page.click("#runs td a")
    page.wait_for_url(re.compile(r"/runs/\d+$"))
    assert page.locator(".manifest").count() == 1
    _shot(page, "07-run-files")
    with page.expect_download() as download:
        page.click("a.download")
    content = gzip.decompress(Path(download.value.path()).read_bytes()).decode()
    header, *rows = list(csv.reader(io.StringIO(content, newline="")))
    assert header == ["visitor", "country", "plan", "ab"]
    assert {tuple(r) for r in rows} == _expected_rows(console.day) and len(rows) == len(_expected_rows(console.day))

    # The job is the one the API shows: same fields, segment and range.
    api_job = page.evaluate(f"fetch('/console/projects/{console.project}/jobs/{job_id}').then(r => r.text())")
    assert '"segmentId": ' + str(console.segment) in api_job
    context.close()


def test_a_validation_error_shows_next_to_its_field(browser, console):
    context, page = _sign_in(browser, console, ADMIN)
    page.goto(f"/console/projects/{console.project}/jobs/new")
    page.fill("#name", "Broken")
    _add_field(page, "custom variable", "custom_var")
    page.keyboard.type("25")
    page.click("button:has-text('Create job')")
    message = page.locator("#fields-0-customVarPosition").locator("xpath=../following-sibling::p[1]")
    assert "1" in message.inner_text() and "20" in message.inner_text()
    assert page.get_attribute("#fields-0-customVarPosition", "aria-invalid") == "true"
    assert page.input_value("#name") == "Broken"  # what was typed is kept
    _shot(page, "08-job-validation-error")
    context.close()


def test_a_daily_job_is_suspended_and_resumed(browser, console):
    context, page = _sign_in(browser, console, ADMIN)
    page.goto(f"/console/projects/{console.project}/jobs/new")
    page.fill("#name", "Daily sessions")
    _add_field(page, "session_id", "session_id")
    page.click("button:has-text('Create job')")
    page.wait_for_url(re.compile(r"/jobs/\d+$"))
    assert page.locator("h1 .state").inner_text() == "ACTIVE"
    page.click("button:has-text('Suspend')")
    assert page.locator("h1 .state").inner_text() == "SUSPENDED"
    page.click("button:has-text('Resume')")
    assert page.locator("h1 .state").inner_text() == "ACTIVE"
    page.goto(f"/console/projects/{console.project}/jobs?frequency=daily")
    assert page.locator("tbody a", has_text="Daily sessions").count() == 1
    assert page.locator("tbody a", has_text="French visitors").count() == 0  # a once job, filtered out
    _shot(page, "09-jobs")
    context.close()


def test_segments_are_created_with_the_filter_rules_of_the_cli(browser, console):
    context, page = _sign_in(browser, console, ADMIN)
    page.goto(f"/console/projects/{console.project}/segments")
    page.fill("#segment-name", "Gold plan")
    page.fill("#segment-filter", '{"customVar": 1, "op": "eq", "value": ')
    assert "Not JSON yet" in page.inner_text("#segment-filter-status")
    page.fill("#segment-filter", '{"customVar": 21, "op": "eq", "value": "gold"}')
    page.click("button:has-text('Create segment')")
    assert "filter.customVar" in page.inner_text("#segment-filter-error")
    page.fill("#segment-filter", '{"customVar": 1, "op": "eq", "value": "gold"}')
    page.click("button:has-text('Create segment')")
    assert page.locator("td", has_text="Gold plan").count() == 1
    _shot(page, "10-segments")
    context.close()


def test_a_viewer_reads_but_cannot_change_anything(browser, console):
    context, page = _sign_in(browser, console, VIEWER)
    page.goto(f"/console/projects/{console.project}/credentials")
    assert page.locator("text=Create client").count() == 0 and page.locator("text=Revoke").count() == 0
    csrf = page.get_attribute("input[name=csrf]", "value")  # the sign-out form's: a valid token of this session
    base = f"/console/projects/{console.project}"
    for path, form in (
        (f"{base}/credentials", {"name": "sneaky"}),
        (f"{base}/ingest-key", {}),
        (
            f"{base}/jobs",
            {"name": "x", "format": "CSV", "frequency.value": "daily", "fields[0].fieldName": "session_id"},
        ),
        (f"{base}/segments", {"name": "x", "filter": '{"field": "country_code", "op": "exists"}'}),
        (f"{base}/jobs/1/suspend", {}),
    ):
        answer = page.request.post(path, form={"csrf": csrf, **form}, headers={"Origin": console.url})
        assert answer.status == 403, (path, answer.status)
    assert page.goto(f"{base}/jobs/new").status == 403
    page.goto(f"{base}/credentials")
    assert "sneaky" not in page.content()
    context.close()


def test_another_accounts_project_is_not_reachable(browser, console):
    context, page = _sign_in(browser, console, STRANGER)
    for path in ("", "/credentials", "/jobs", "/jobs/1", "/jobs/1/runs/1", "/segments", "/jobs/new"):
        answer = page.goto(f"/console/projects/{console.project}{path}")
        assert answer.status == 404 and "Shop" not in page.locator("main").inner_text(), path
    answer = page.request.post(
        f"/console/projects/{console.project}/credentials",
        form={"csrf": page.get_attribute("input[name=csrf]", "value"), "name": "x"},
        headers={"Origin": console.url},
    )
    assert answer.status == 404
    context.close()


def _attacker_site(target: str) -> ThreadedServer:
    """Another origin whose page posts a form to the console as soon as it loads."""
    site = FastAPI()

    @site.get("/")
    def page() -> HTMLResponse:
        return HTMLResponse(
            f'<form id="f" method="post" action="{target}"><input name="name" value="planted">'
            '<input name="csrf" value="guessed"></form><script>document.getElementById("f").submit()</script>'
        )

    return ThreadedServer(site)


def test_forged_forms_are_refused(browser, console):
    context, page = _sign_in(browser, console, ADMIN)
    target = f"{console.url}/console/projects/{console.project}/credentials"
    with _attacker_site(target) as site:
        page.goto(f"{site.url}/")
        page.wait_for_load_state()
    # Same origin but without this session's token, or with it from another origin: refused too.
    assert page.request.post(target, form={"name": "planted"}).status == 403
    csrf = None
    page.goto(f"/console/projects/{console.project}/credentials")
    csrf = page.get_attribute("input[name=csrf]", "value")
    assert (
        page.request.post(
            target, form={"name": "planted", "csrf": csrf}, headers={"Origin": "http://evil.example"}
        ).status
        == 403
    )
    page.goto(f"/console/projects/{console.project}/credentials")
    assert "planted" not in page.content()
    context.close()


def test_a_planted_session_cookie_never_becomes_signed_in(browser, console):
    context = browser.new_context(base_url=console.url)
    planted = "attacker-chosen-session-token"
    context.add_cookies([{"name": "dataexport_console", "value": planted, "url": f"{console.url}/console"}])
    page = context.new_page()
    page.goto("/console/login")
    page.fill("#email", ADMIN)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/console/projects$"))
    assert _cookie(context, "dataexport_console")["value"] != planted
    # The attacker, holding the planted value, is not signed in.
    other = browser.new_context(base_url=console.url)
    other.add_cookies([{"name": "dataexport_console", "value": planted, "url": f"{console.url}/console"}])
    attacker = other.new_page()
    attacker.goto(f"/console/projects/{console.project}")
    assert "/console/login" in attacker.url
    # Signing out ends the session on the server: its token no longer works anywhere.
    token = _cookie(context, "dataexport_console")["value"]
    page.click("text=Sign out")
    other.add_cookies([{"name": "dataexport_console", "value": token, "url": f"{console.url}/console"}])
    attacker.goto(f"/console/projects/{console.project}")
    assert "/console/login" in attacker.url
    other.close()
    context.close()


def test_repeated_wrong_passwords_are_slowed_down(console):
    with httpx.Client(base_url=console.url) as client:
        form = client.get("/console/login")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
        answers = [
            client.post("/console/login", data={"csrf": token, "email": VIEWER, "password": f"guess {i}"})
            for i in range(8)
        ]
        # While it waits, even the right password is refused, before its hash is checked.
        right = client.post("/console/login", data={"csrf": token, "email": VIEWER, "password": PASSWORD})
    codes = [a.status_code for a in answers]
    assert codes[:5] == [401] * 5 and 429 in codes[5:], codes
    refused = next(a for a in answers if a.status_code == 429)
    assert int(refused.headers["Retry-After"]) >= 1 and 'id="password"' in refused.text  # the form, with the reason
    assert right.status_code == 429


def _first_run(page, base: str, job_id: int) -> int:
    page.goto(f"{base}/jobs/{job_id}")
    link = page.locator("#runs td a").first
    link.wait_for(timeout=60_000)
    return int(link.inner_text().lstrip("#"))


def _overflowing(page) -> list[str]:
    """What sticks out past the screen's right edge (outside the tables, which scroll sideways in their frames)."""
    return page.evaluate(
        """() => Array.from(document.querySelectorAll('body *'))
              .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
              .filter(e => !e.parentElement.closest('.table-wrap'))
              .slice(0, 5).map(e => `${e.tagName}.${e.className} ${(e.textContent || '').trim().slice(0, 30)}`)"""
    )


def test_every_page_is_usable_at_375_px(browser, console):
    context, page = _sign_in(browser, console, ADMIN, viewport=PHONE)
    base = f"/console/projects/{console.project}"
    pages = {
        "projects": "/console/projects",
        "overview": base,
        "credentials": f"{base}/credentials",
        "jobs": f"{base}/jobs",
        "new-job": f"{base}/jobs/new",
        "job": f"{base}/jobs/{console.api_job}",
        "run": f"{base}/jobs/{console.api_job}/runs/{_first_run(page, base, console.api_job)}",
        "segments": f"{base}/segments",
    }
    for name, path in pages.items():
        assert page.goto(path).status == 200, path
        _labels_everywhere(page)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{path} is {width} px wide: {_overflowing(page)}"
        _shot(page, f"phone-{name}")
    context.close()
