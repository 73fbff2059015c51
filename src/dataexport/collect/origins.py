"""Web origins of the pages allowed to send a project's beacons. Pure.

An origin is scheme://host[:port] as browsers send it in the `Origin` header: lower case, no path, the default port
left out. Operators type them less strictly ("Shop.example.com/", "https://shop.example:443"), so every origin is
normalised the same way before it is stored or compared.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from dataexport.errors import ValidationFailed, validation_error

_DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_ORIGINS = 50


def normalise_origin(text: str, field: str = "origin") -> str:
    """`text` as a browser would send it in `Origin`, or a ValidationFailed naming `field`."""
    raw = text.strip()
    parts = urlsplit(raw if "://" in raw else f"https://{raw}")
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise validation_error(field, "must be an http:// or https:// origin")
    try:
        port = parts.port
    except ValueError:
        raise validation_error(field, "has a port that is not a number between 0 and 65535") from None
    host = (parts.hostname or "").lower()
    if not host or parts.username is not None or parts.password is not None:
        raise validation_error(field, "must be scheme://host[:port], like https://shop.example.com")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise validation_error(field, "must be an origin without a path, query or fragment")
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def origin_of_referer(referer: str | None) -> str | None:
    """The origin of a Referer URL (a beacon without `Origin` still names its page there), or None."""
    if not referer:
        return None
    parts = urlsplit(referer)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    try:
        return normalise_origin(f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}")
    except ValidationFailed:
        return None


def is_allowed(origin: str | None, allowed: list[str]) -> bool:
    """Whether a request's origin is one of the project's. A request that names no origin is not allowed."""
    if not origin or origin == "null":
        return False
    try:
        return normalise_origin(origin) in allowed
    except ValidationFailed:
        return False


def with_origin(allowed: list[str], text: str) -> list[str]:
    origin = normalise_origin(text)
    if origin in allowed:
        return list(allowed)
    if len(allowed) >= MAX_ORIGINS:
        raise validation_error("origin", f"a project has at most {MAX_ORIGINS} allowed origins")
    return [*allowed, origin]


def without_origin(allowed: list[str], text: str) -> list[str]:
    origin = normalise_origin(text)
    if origin not in allowed:
        raise validation_error("origin", f"{origin} is not an allowed origin of the project")
    return [o for o in allowed if o != origin]
