"""Pure tests: URL signing, key validation, Range parsing."""

from datetime import UTC, datetime

import pytest

from dataexport.errors import ValidationFailed
from dataexport.storage.http import Unsatisfiable, parse_range
from dataexport.storage.keys import validate_key, validate_prefix
from dataexport.storage.signing import Verdict, sign, verify

SECRET = b"test-secret"
KEY = "exports/42/7/3/part-00000.csv.gz"
EXPIRES = 1_700_000_000


def test_sign_is_hmac_sha256_hex_and_deterministic():
    sig = sign(SECRET, KEY, EXPIRES)
    assert len(sig) == 64 and int(sig, 16) >= 0
    assert sig == sign(SECRET, KEY, EXPIRES)
    assert sig != sign(SECRET, KEY, EXPIRES + 1)
    assert sig != sign(b"other", KEY, EXPIRES)
    assert sig != sign(SECRET, KEY.replace("00000", "00001"), EXPIRES)


def test_verify_ok_before_expiry_and_expired_at_or_after():
    sig = sign(SECRET, KEY, EXPIRES)
    assert verify(SECRET, KEY, EXPIRES, sig, EXPIRES - 1) is Verdict.OK
    assert verify(SECRET, KEY, str(EXPIRES), sig, datetime.fromtimestamp(EXPIRES - 60, UTC)) is Verdict.OK
    assert verify(SECRET, KEY, EXPIRES, sig, EXPIRES) is Verdict.EXPIRED
    assert verify(SECRET, KEY, EXPIRES, sig.upper(), EXPIRES + 3600) is Verdict.EXPIRED


@pytest.mark.parametrize(
    "key, expires, sig",
    [
        (KEY, EXPIRES + 1, None),  # expiry pushed later
        ("exports/42/7/3/part-00001.csv.gz", EXPIRES, None),  # another file
        (KEY, EXPIRES, "0" * 64),
        (KEY, EXPIRES, ""),
        (KEY, EXPIRES, "é" * 64),  # non-ASCII must not crash compare_digest
        (KEY, "soon", None),
        (KEY, "", None),
    ],
)
def test_verify_refuses_tampered_urls(key, expires, sig):
    good = sign(SECRET, KEY, EXPIRES)
    # Signature checked first: a forged URL is refused even when long expired.
    assert verify(SECRET, key, expires, good if sig is None else sig, EXPIRES - 10) is Verdict.BAD_SIGNATURE


@pytest.mark.parametrize(
    "key",
    ["exports/1/2/3/part-00000.csv.gz", "a", "project_id=1/session_day=2024-01-01/x.parquet", "a-b/c_d/e.f.g"],
)
def test_valid_keys_pass(key):
    assert validate_key(key) == key


@pytest.mark.parametrize(
    "key",
    [
        "",
        "../x",
        "a/../../b",
        "/etc/passwd",
        "%2e%2e/x",
        "a//b",
        "a/./b",
        "a/",
        ".hidden",
        "a\\b",
        "a\x00b",
        "a b",
        "é",
        "a/..",
        "..",
        "x" * 1025,
    ],
)
def test_unsafe_keys_raise_validation_failed_naming_the_field(key):
    with pytest.raises(ValidationFailed) as info:
        validate_key(key)
    assert info.value.errors[0].field == "key"


def test_prefix_may_end_with_slash_but_not_be_empty():
    assert validate_prefix("exports/1/") == "exports/1/"
    for bad in ("", "/", "../", "a/../"):
        with pytest.raises(ValidationFailed):
            validate_prefix(bad)


@pytest.mark.parametrize(
    "header, expected",
    [
        (None, None),
        ("bytes=0-99", (0, 99)),
        ("bytes=10-", (10, 999)),
        ("bytes=-100", (900, 999)),
        ("bytes=-5000", (0, 999)),
        ("bytes=990-5000", (990, 999)),
        ("BYTES = 5 - 6", (5, 6)),
        ("bytes=0-1,5-6", None),  # multi-range: served whole
        ("items=0-1", None),
        ("bytes=9-3", None),
        ("bytes=-", None),
    ],
)
def test_parse_range(header, expected):
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize("header, size", [("bytes=1000-", 1000), ("bytes=-0", 1000), ("bytes=0-", 0)])
def test_unsatisfiable_ranges(header, size):
    with pytest.raises(Unsatisfiable):
        parse_range(header, size)
