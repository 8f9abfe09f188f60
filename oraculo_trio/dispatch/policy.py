"""How the dispatcher treats one sink: retries with backoff, concurrency, circuit breaker.

Pure: the caller passes ``now`` (wall-clock or monotonic seconds, consistently).
"""

from __future__ import annotations

import math
import random

import attrs

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


@attrs.frozen
class SinkPolicy:
    """Delivery policy of one sink.

    Attributes:
        retries: extra attempts after a failed one (0: a single attempt).
        backoff_initial, backoff_max: delay before the first retry, doubling up to the
            maximum, seconds (each delay drawn between half and all of it: equal jitter).
        concurrency: deliveries in flight at once.
        queue: notifications that may wait for this sink; beyond it they are dropped and
            counted (``sink_overflow``).
        breaker_failures: consecutive failed attempts that open the circuit (0: never).
        breaker_cooldown: seconds the circuit stays open before one trial attempt.
    """

    retries: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    backoff_initial: float = attrs.field(default=0.5, validator=attrs.validators.gt(0))
    backoff_max: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    concurrency: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    queue: int = attrs.field(default=1000, validator=attrs.validators.ge(1))
    breaker_failures: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    breaker_cooldown: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``retry`` (1, 2, ...)."""
        delay = min(self.backoff_max, self.backoff_initial * 2.0 ** (retry - 1))
        return rng.uniform(delay / 2.0, delay)


@attrs.define
class CircuitBreaker:
    """Stops calling a sink that keeps failing, then tries it again now and then.

    ``closed``: every attempt goes through; ``failures`` consecutive failures open it.
    ``open``: attempts are refused until ``cooldown`` seconds have passed, then one trial
    goes through (``half_open``): its success closes the circuit, its failure opens it again.
    """

    failures_to_open: int
    cooldown: float
    state: str = CLOSED
    failures: int = 0
    opened_at: float = -math.inf
    trial_pending: bool = False

    def allow(self, now: float) -> bool:
        """May an attempt start at ``now``? (A True in ``half_open`` starts the one trial.)"""
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            if now - self.opened_at < self.cooldown:
                return False
            self.state = HALF_OPEN
        if self.trial_pending:
            return False
        self.trial_pending = True
        return True

    def record(self, ok: bool, now: float) -> None:
        """Report how an allowed attempt ended."""
        self.trial_pending = False
        if ok:
            self.state = CLOSED
            self.failures = 0
            return
        self.failures += 1
        if self.state == HALF_OPEN or (
            self.failures_to_open and self.failures >= self.failures_to_open
        ):
            self.state = OPEN
            self.opened_at = now

    @property
    def is_open(self) -> bool:
        """True while attempts are refused or only a trial may pass."""
        return self.state != CLOSED
