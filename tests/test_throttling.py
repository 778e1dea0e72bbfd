"""Rate limits: a configured pace per IdP, and 429 storms that slow a run down
instead of failing it."""

from __future__ import annotations

import time

import pytest

from idprov.connectors.http import RateLimiter
from tests.outbound_helpers import FakeScim, idp_yaml, make_service


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept += seconds
        self.now += seconds


def test_the_limiter_spaces_requests_and_halves_when_throttled():
    clock = Clock()
    limiter = RateLimiter(10.0, clock=clock, sleep=clock.sleep)
    for _ in range(5):
        limiter.acquire()
    assert clock.slept == pytest.approx(0.4)
    limiter.throttled()
    assert limiter.rate == 5.0
    limiter.throttled()  # the same burst, seen by another thread: halved once
    assert limiter.rate == 5.0
    clock.now += 0.5
    assert 5.0 < limiter.rate < 10.0
    clock.now += 0.6
    assert limiter.rate == 10.0  # back within a second, never above the configured limit


def test_without_a_limit_throttling_sets_one_from_the_observed_pace_then_lifts_it():
    clock = Clock()
    limiter = RateLimiter(None, clock=clock, sleep=clock.sleep)
    for _ in range(8):
        limiter.acquire()
    limiter.throttled()
    assert limiter.rate == 4.0
    clock.now += 9.0  # 4 * 2**9 > 1000: unlimited again
    assert limiter.rate is None


def test_after_a_storm_of_throttling_the_pace_recovers_within_seconds():
    """The issue's case: 40 updates after 429s must not go at 1 request/s."""
    clock = Clock()
    limiter = RateLimiter(40.0, clock=clock, sleep=clock.sleep)
    for _ in range(20):  # 20 throttled replies, 0.3 s apart: halved each time
        limiter.throttled()
        clock.now += 0.3
    start = clock.now
    for _ in range(40):
        limiter.acquire()
    assert clock.now - start < 8.0  # at the floor for the rest: 80 s


def test_rate_limit_is_respected_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("SCIM_TOKEN", "secret-token")
    fake = FakeScim("secret-token")
    idps = idp_yaml("target", "https://scim.test/v2", extra="    rate_limit: 40\n")
    with make_service(tmp_path, idps, ["target"], http_transport=fake.transport()) as svc:
        start = time.monotonic()
        for i in range(6):
            svc.add_user(f"user{i}", {"email": f"u{i}@example.com"})
        elapsed = time.monotonic() - start
    # 6 creates and 1 ServiceProviderConfig read at 40/s: at least 6 intervals of 25 ms
    assert elapsed >= 0.14
    assert len(fake.users) == 6


def test_a_429_storm_slows_the_run_but_does_not_fail_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SCIM_TOKEN", "secret-token")
    fake = FakeScim("secret-token")
    fake.fail("POST", 429, times=6)  # more 429s than retry.max_attempts (3)
    sleeps: list[float] = []
    idps = idp_yaml("target", "https://scim.test/v2")
    with make_service(
        tmp_path, idps, ["target"], http_transport=fake.transport(), sleep=sleeps.append
    ) as svc:
        result = svc.add_user("alice", {"email": "a@example.com"})
        assert result.outbound.ok
        assert len([s for s in sleeps if s > 0]) >= 6  # backoffs, and the slower pace
        assert svc.connector("target").limiter.slowdowns >= 1
        assert svc.connector("target").client is not None
    assert len(fake.users) == 1
