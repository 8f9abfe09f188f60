"""Statistical kinds: CPU-heavy, evaluated per batch in a worker (``offload``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from oraculo_trio.core.events import TRADE
from oraculo_trio.core.rules.base import RuleBase, RuleState, Signal
from oraculo_trio.core.rules.params import (
    duration_param,
    integer_param,
    no_extra_params,
    number_param,
)
from oraculo_trio.core.windows import RingBuffer


class ZScore(RuleBase):
    """Holds while the z-score of the last trade price against the prices of the last
    ``window`` seconds (including it) is >= ``threshold`` in absolute value. Value: z.

    Needs ``min_samples`` prices (default 20); keeps at most ``max_samples`` (default
    10,000). CPU-heavy by design (numpy over the window): evaluated per batch in a worker
    thread (``offload = "thread"``), never per message.
    """

    kind: ClassVar[str] = "zscore"
    streams: ClassVar[frozenset[str]] = frozenset({TRADE})
    stateful: ClassVar[bool] = True
    offload: ClassVar[str | None] = "thread"

    def __init__(self, params: Mapping[str, Any]) -> None:
        no_extra_params(params, "window", "threshold", "min_samples", "max_samples")
        self.window = duration_param(params, "window")
        self.threshold = number_param(params, "threshold", above=0)
        self.min_samples = integer_param(
            params, "min_samples", minimum=3, maximum=10**6, default=20
        )
        self.max_samples = integer_param(
            params, "max_samples", minimum=self.min_samples, maximum=10**7, default=10_000
        )

    def initial_data(self) -> Any:
        return RingBuffer(self.window, self.max_samples)

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        state.data.add(now, event.price)
        return None

    def snapshot(self, state: RuleState, now: float) -> Any:
        """The window's prices (a copy), or None when there are too few to judge."""
        buffer: RingBuffer = state.data
        buffer.expire(now)
        if len(buffer) < self.min_samples:
            return None
        return buffer.values()

    def compute(self, prices: Any) -> Signal | None:
        """The z-score of the last price; runs in a worker thread."""
        if prices is None:
            return None
        mean = float(np.mean(prices))
        std = float(np.std(prices))
        if std == 0.0:
            return Signal(False, 0.0)
        z = (float(prices[-1]) - mean) / std
        return Signal(abs(z) >= self.threshold, z)


KINDS = (ZScore,)
"""The kinds of this family, in the order ``RULE_KINDS`` lists them."""
