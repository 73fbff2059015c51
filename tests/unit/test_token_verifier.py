"""The verified-token memory: it must answer exactly as a fresh verification would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest

from dataexport.errors import AuthError, TokenExpired
from dataexport.security.tokens import TokenClaims, TokenVerifier, decode_token, issue_token

KEY = "k" * 48
NOW = datetime(2026, 3, 18, 12, 0, tzinfo=UTC)
CLAIMS = TokenClaims(client_pk=7, account_id=3, project_id=5, scopes=frozenset({"data-export"}))


def token(ttl: timedelta = timedelta(hours=1), key: str = KEY) -> str:
    return issue_token(key, CLAIMS, now=NOW, ttl=ttl)


def test_a_remembered_token_gives_the_claims_of_a_fresh_verification():
    verifier, t = TokenVerifier(KEY), token()
    first = verifier.verify(t, now=NOW)
    assert first == decode_token(KEY, t, now=NOW) == CLAIMS
    assert verifier.verify(t, now=NOW + timedelta(minutes=59)) is first


def test_a_remembered_token_expires_on_time():
    verifier, t = TokenVerifier(KEY), token(ttl=timedelta(minutes=10))
    verifier.verify(t, now=NOW)
    verifier.verify(t, now=NOW + timedelta(minutes=9, seconds=59))
    with pytest.raises(TokenExpired):
        verifier.verify(t, now=NOW + timedelta(minutes=10))


def test_altered_or_foreign_tokens_are_refused_even_after_a_good_one_was_remembered():
    verifier, t = TokenVerifier(KEY), token()
    verifier.verify(t, now=NOW)
    header, payload, signature = t.split(".")
    forged_payload = jwt.encode(
        {**jwt.decode(t, options={"verify_signature": False}), "pid": 6}, "other-" + KEY, algorithm="HS256"
    ).split(".")[1]
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    for bad in (f"{header}.{forged_payload}.{signature}", f"{header}.{payload}.{flipped}", token(key="other-" + KEY)):
        with pytest.raises(AuthError) as caught:
            verifier.verify(bad, now=NOW)
        assert caught.value.error_code == "JWT_INVALID"


def test_an_expired_token_is_refused_before_it_is_ever_remembered():
    verifier = TokenVerifier(KEY)
    with pytest.raises(TokenExpired):
        verifier.verify(token(ttl=timedelta(seconds=1)), now=NOW + timedelta(seconds=1))


def test_the_memory_stays_bounded_and_forgets_expired_tokens_first():
    verifier = TokenVerifier(KEY, max_entries=3)
    short = [issue_token(KEY, TokenClaims(i, 3, 5, frozenset()), now=NOW, ttl=timedelta(seconds=5)) for i in range(2)]
    long = issue_token(KEY, CLAIMS, now=NOW, ttl=timedelta(hours=1))
    for t in (*short, long):
        verifier.verify(t, now=NOW)
    later, fresh = NOW + timedelta(seconds=30), token()
    verifier.verify(fresh, now=later)  # full: the two expired entries go, the live one stays
    assert set(verifier._verified) == {long, fresh}  # noqa: SLF001 - the bound is the point of the test
    for i in range(10):
        verifier.verify(
            issue_token(KEY, TokenClaims(100 + i, 3, 5, frozenset()), now=NOW, ttl=timedelta(hours=1)), now=later
        )
        assert len(verifier._verified) <= 3  # noqa: SLF001
