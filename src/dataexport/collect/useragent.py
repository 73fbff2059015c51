"""User agent -> browser, platform, device type and bot flag, with ua-parser (uap-core's rules).

ua-parser names browsers and systems but does not say whether a device is a phone or a tablet; that is decided
here by the markers browsers put in their user agents for it ("Mobi" for phones, as MDN recommends sniffing, and
iPad or Android without "Mobile" for tablets).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from ua_parser import parse

# device_id values of the field catalog (fields.md): 1 desktop, 2 mobile web, 3 tablet web.
DESKTOP, MOBILE, TABLET = 1, 2, 3

_TABLET = re.compile(r"iPad|Tablet|PlayBook|Silk|Kindle|(Android(?!.*Mobile))", re.IGNORECASE)
_MOBILE = re.compile(r"Mobi|iPhone|iPod|Windows Phone|Opera Mini", re.IGNORECASE)
# Automation and crawlers that uap-core does not already call a "Spider".
_BOT = re.compile(r"bot\b|crawl|spider|slurp|HeadlessChrome|PhantomJS|python-requests|curl/|wget/", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Device:
    browser_name: str
    browser_version: str
    platform_name: str
    platform_version: str
    device_id: int
    is_bot: bool


def _version(*parts: str | None) -> str:
    return ".".join(p for p in parts if p)


@lru_cache(maxsize=4096)  # a site's visitors share a few hundred user agents; parsing one costs ~0.1 ms
def describe(user_agent: str) -> Device:
    result = parse(user_agent)
    ua, os_, device = result.user_agent, result.os, result.device
    is_bot = bool((device is not None and device.family == "Spider") or _BOT.search(user_agent))
    if _TABLET.search(user_agent):
        device_id = TABLET
    elif _MOBILE.search(user_agent):
        device_id = MOBILE
    else:
        device_id = DESKTOP
    return Device(
        browser_name=ua.family if ua is not None else "",
        browser_version=_version(ua.major, ua.minor, ua.patch) if ua is not None else "",
        platform_name=os_.family if os_ is not None else "",
        platform_version=_version(os_.major, os_.minor, os_.patch) if os_ is not None else "",
        device_id=device_id,
        is_bot=is_bot,
    )
