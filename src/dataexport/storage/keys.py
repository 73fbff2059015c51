"""Object keys: relative, slash-separated, a restricted charset, so no key can leave the storage root."""

from __future__ import annotations

import re

from dataexport.errors import validation_error

MAX_KEY_LENGTH = 1024
_SEGMENT = re.compile(r"[A-Za-z0-9_=\-][A-Za-z0-9._=\-]*")


def validate_key(key: str, field: str = "key") -> str:
    """Return `key` unchanged if it is a safe object key, else raise ValidationFailed naming `field`."""
    _check(key, field, allow_trailing_slash=False)
    return key


def validate_prefix(prefix: str, field: str = "prefix") -> str:
    """A key prefix: same rules as a key, may end with `/`; never empty (that would be everything)."""
    _check(prefix, field, allow_trailing_slash=True)
    return prefix


def _check(key: str, field: str, *, allow_trailing_slash: bool) -> None:
    if not isinstance(key, str) or not key:
        raise validation_error(field, "must be a non-empty string")
    if len(key) > MAX_KEY_LENGTH:
        raise validation_error(field, f"must be at most {MAX_KEY_LENGTH} characters")
    body = key[:-1] if allow_trailing_slash and key.endswith("/") else key
    # Every segment must match the charset and may not start with a dot: this refuses "", ".", "..",
    # leading "/", "//", backslashes, NUL, percent-escapes and anything outside ASCII in one rule.
    if not body or not all(_SEGMENT.fullmatch(segment) for segment in body.split("/")):
        raise validation_error(field, "must be a relative path of [A-Za-z0-9._=-] segments not starting with '.'")
