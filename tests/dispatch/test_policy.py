"""The circuit breaker's states and the retry backoff, with ``now`` injected."""

import random

import pytest

from oraculo_trio.dispatch.policy import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, SinkPolicy


def test_breaker_opens_after_consecutive_failures_only() -> None:
    breaker = CircuitBreaker(failures_to_open=3, cooldown=10.0)
    for ok in (False, False, True, False, False):
        assert breaker.allow(0.0)
        breaker.record(ok, 0.0)
    assert breaker.state == CLOSED  # the success in between reset the count
    assert breaker.allow(0.0)
    breaker.record(False, 1.0)
    assert (breaker.state, breaker.is_open) == (OPEN, True)


def test_open_breaker_refuses_until_cooldown_then_lets_one_trial() -> None:
    breaker = CircuitBreaker(failures_to_open=1, cooldown=10.0)
    breaker.allow(0.0)
    breaker.record(False, 5.0)
    assert not breaker.allow(14.99)
    assert breaker.allow(15.0)
    assert breaker.state == HALF_OPEN
    assert not breaker.allow(15.0)  # one trial at a time
    breaker.record(False, 16.0)
    assert breaker.state == OPEN and not breaker.allow(25.99)
    assert breaker.allow(26.0)
    breaker.record(True, 26.5)
    assert (breaker.state, breaker.failures, breaker.is_open) == (CLOSED, 0, False)
    assert breaker.allow(26.6) and breaker.allow(26.6)


def test_a_breaker_with_zero_failures_never_opens() -> None:
    breaker = CircuitBreaker(failures_to_open=0, cooldown=1.0)
    for _ in range(100):
        assert breaker.allow(0.0)
        breaker.record(False, 0.0)
    assert breaker.state == CLOSED


@pytest.mark.parametrize(("retry", "low", "high"), [(1, 0.25, 0.5), (2, 0.5, 1.0), (5, 1.5, 3.0)])
def test_backoff_doubles_with_equal_jitter_up_to_the_maximum(
    retry: int, low: float, high: float
) -> None:
    policy = SinkPolicy(backoff_initial=0.5, backoff_max=3.0)
    rng = random.Random(1)
    delays = [policy.backoff(retry, rng) for _ in range(200)]
    assert low <= min(delays) and max(delays) <= high


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        SinkPolicy(concurrency=0)
