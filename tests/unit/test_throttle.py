"""The token endpoint's pure protections: the failure throttle, the verified-secret memory, the revoked set."""

from __future__ import annotations

import pytest

from dataexport.security.secrets import VerifiedSecrets
from dataexport.security.throttle import FailureThrottle, source_of
from dataexport.security.tokens import RevokedClients

VICTIM = ("victim-client", "203.0.113.7")
T0 = 1_800_000_000.0  # a whole minute: T0 % 60 == 0


def throttle(**overrides) -> FailureThrottle:
    options = {"free_failures": 5, "max_delay": 300.0, "global_per_minute": 600}
    return FailureThrottle(**{**options, **overrides})


def fail_n(t: FailureThrottle, key, n: int, now: float) -> None:
    for _ in range(n):
        assert t.check(key, now).allowed
        t.failed(key, now)


def test_successes_never_count():
    t = throttle(free_failures=0)
    for i in range(10_000):
        assert t.check(VICTIM, T0 + i / 100).allowed
        t.succeeded(VICTIM)
    assert len(t) == 0


def test_after_the_free_failures_each_attempt_waits_twice_as_long_up_to_the_cap():
    t = throttle(max_delay=16.0)
    fail_n(t, VICTIM, 5, T0)
    now, waits = T0, []
    for _ in range(7):
        verdict = t.check(VICTIM, now)
        assert not verdict.allowed
        waits.append(verdict.retry_after)
        now += verdict.retry_after - 0.001
        assert not t.check(VICTIM, now).allowed  # still inside the wait, a millisecond before its end
        now += 0.001
        assert t.check(VICTIM, now).allowed
        t.failed(VICTIM, now)
    assert waits == [1, 2, 4, 8, 16, 16, 16]


def test_a_refused_attempt_does_not_lengthen_the_wait():
    t = throttle()
    fail_n(t, VICTIM, 5, T0)
    fail_n(t, VICTIM, 1, T0 + 1)  # the sixth failure, after its 1 s wait: the seventh attempt waits 2 s
    assert [t.check(VICTIM, T0 + 1.5).retry_after for _ in range(100)] == [2] * 100
    assert t.check(VICTIM, T0 + 3).allowed


def test_another_address_or_another_client_is_never_affected():
    t = throttle()
    fail_n(t, VICTIM, 5, T0)
    t.failed(VICTIM, T0)
    assert not t.check(VICTIM, T0).allowed
    assert t.check(("victim-client", "198.51.100.1"), T0).allowed
    assert t.check(("other-client", "203.0.113.7"), T0).allowed


def test_a_success_clears_the_key():
    t = throttle()
    fail_n(t, VICTIM, 5, T0)
    t.failed(VICTIM, T0)
    assert t.check(VICTIM, T0 + 2).allowed
    t.succeeded(VICTIM)
    fail_n(t, VICTIM, 5, T0 + 2)  # five free failures again, all at once
    assert not t.check(VICTIM, T0 + 2).allowed


def test_a_key_is_forgotten_long_after_its_last_failure():
    t = throttle(forget_after=900.0)
    fail_n(t, VICTIM, 5, T0)
    for n in range(4):
        t.failed(VICTIM, T0 + 300 * n + 300)  # keeps failing every 300 s: remembered
    assert t.check(VICTIM, T0 + 1200 + 10).retry_after == 6  # nine failures: 16 s after the last
    assert t.check(VICTIM, T0 + 1200 + 900).allowed and len(t) == 0


def test_over_the_global_rate_keys_that_failed_are_refused_and_fresh_keys_proceed():
    t = throttle(global_per_minute=100)
    spray = [(f"client-{i}", "192.0.2.9") for i in range(101)]
    for key in spray:  # one failure each: no key reaches its own limit
        fail_n(t, key, 1, T0 + 10)
    assert t.global_rate(T0 + 10) == 101
    refused = t.check(spray[0], T0 + 10)
    assert not refused.allowed and refused.retry_after == 50  # to the end of the minute at least
    assert t.check(("legit-client", "192.0.2.9"), T0 + 10).allowed
    # The sliding minute: half of the last minute still counts 30 s into the next one.
    assert t.global_rate(T0 + 90) == pytest.approx(50.5)
    assert t.check(spray[0], T0 + 90).allowed
    assert t.global_rate(T0 + 200) == 0


def test_memory_is_bounded_by_forgetting_the_least_recently_failed():
    t = throttle(max_keys=1_000, global_per_minute=10**6)
    fail_n(t, VICTIM, 5, T0)
    t.failed(VICTIM, T0)
    assert not t.check(VICTIM, T0 + 1).allowed
    for i in range(5_000):
        t.failed((f"spray-{i}", "192.0.2.1"), T0 + 1 + i / 1000)
    assert len(t) <= 1_000
    assert t.check(("spray-4999", "192.0.2.1"), T0 + 6).allowed  # one failure: free
    assert t.check(VICTIM, T0 + 6).allowed  # the oldest entry went first


def test_delay_does_not_overflow_after_very_many_failures():
    t = throttle(max_delay=300.0)
    assert t.delay(4) == 0 and t.delay(5) == 1 and t.delay(13) == 256 and t.delay(14) == 300
    assert t.delay(10**6) == 300


@pytest.mark.parametrize(
    ("host", "source"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        (None, "unknown"),
        ("testclient", "testclient"),
    ],
)
def test_the_address_of_a_key(host, source):
    assert source_of(host) == source


def test_a_verified_secret_is_remembered_for_its_pair_only():
    memory = VerifiedSecrets("k" * 48, ttl=300)
    memory.put("client", "secret", 7, "$argon2id$hash", T0)
    assert memory.get("client", "secret", T0 + 299) == (7, "$argon2id$hash")
    assert memory.get("client", "Secret", T0) is None
    assert memory.get("clien", "tsecret", T0) is None
    assert memory.get("client", "secret", T0 + 300) is None  # expired, and dropped
    assert len(memory) == 0
    assert VerifiedSecrets("another-key" * 4).get("client", "secret", T0) is None


def test_the_verified_secret_memory_is_bounded_and_forgets_revoked_clients():
    memory = VerifiedSecrets("k" * 48, ttl=300, max_entries=100)
    for i in range(250):
        memory.put(f"client-{i}", "s", i, "h", T0)
    assert len(memory) <= 100
    memory.put("a", "s", 1_000, "h", T0)
    memory.put("b", "s", 1_001, "h", T0)
    memory.forget_client(1_000)
    assert memory.get("a", "s", T0) is None and memory.get("b", "s", T0) == (1_001, "h")


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_revoked_set_is_refreshed_at_most_every_interval():
    ticks = Ticks()
    revoked = RevokedClients(refresh_seconds=1.0, monotonic=ticks)
    assert revoked.refresh_due()
    started = revoked.start_refresh()
    assert not revoked.refresh_due()  # one refresh at a time
    assert revoked.finish_refresh([3, 4], started) == {3, 4}
    assert 3 in revoked and 5 not in revoked
    ticks.now += 0.999
    assert not revoked.refresh_due()
    ticks.now += 0.001
    assert revoked.refresh_due()
    assert revoked.finish_refresh([4, 5], revoked.start_refresh()) == {5}
    assert revoked.pks == {4, 5}  # the DB is the truth: 3 is gone


def test_a_local_revocation_counts_at_once_and_survives_a_refresh_that_began_before_it():
    ticks = Ticks()
    revoked = RevokedClients(refresh_seconds=1.0, monotonic=ticks)
    started = revoked.start_refresh()
    ticks.now += 0.01
    revoked.add(9)
    assert 9 in revoked
    revoked.finish_refresh([], started)  # read before the revocation was committed
    assert 9 in revoked
    ticks.now += 1
    revoked.finish_refresh([], revoked.start_refresh())  # read after: the DB would say so by now
    assert 9 not in revoked


def test_a_failed_refresh_is_retried_by_the_next_request():
    revoked = RevokedClients(refresh_seconds=1.0, monotonic=Ticks())
    revoked.start_refresh()
    revoked.abort_refresh()
    assert revoked.refresh_due()


def test_a_client_shown_live_leaves_the_revoked_set():
    revoked = RevokedClients(monotonic=Ticks())
    revoked.add(2)
    revoked.discard(2)
    assert 2 not in revoked
