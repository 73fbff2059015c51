"""Browser tests: Debian's Chromium driven by Playwright (never Playwright's own browser download)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator

import pytest

CHROMIUM = os.environ.get("DATAEXPORT_TEST_CHROMIUM", "/usr/bin/chromium")


# Module-scoped: while Playwright's sync API is open, the main thread has a running event loop, and the tests of
# other modules that call asyncio.run() would fail.
@pytest.fixture(scope="module")
def launch_chromium() -> Iterator[Callable[..., object]]:
    """Starts a headless Chromium with extra command-line switches; every one started is closed at the end.

    A user agent is set with `--user-agent`, not Playwright's per-context override: the override does not reach
    the beacons a page sends while it unloads, which are exactly the tag's.
    """
    if not shutil.which(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium package")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        started = []

        def launch(*switches: str):
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", *switches])
            started.append(browser)
            return browser

        yield launch
        for browser in started:
            browser.close()
