"""Futures kinds: funding rate, mark/index basis (``@markPrice@1s``) and liquidations
(``@forceOrder``), on USD-M and COIN-M symbols (``feed.futures_streams``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from oraculo_trio.core.events import LIQUIDATION, MARK
from oraculo_trio.core.rules.base import RuleBase, RuleState, Signal
from oraculo_trio.core.rules.params import (
    choice_param,
    duration_param,
    no_extra_params,
    number_param,
)
from oraculo_trio.core.windows import RollingSum

BASIS_SIDES = ("any", "premium", "discount")
LIQUIDATION_SIDES = ("any", "long", "short")


class FundingRateAbove(RuleBase):
    """Holds while a perpetual's funding rate is above ``level`` (a rate: 0.0005 is 0.05 %
    per funding interval). With ``hysteresis`` h, once holding it holds until the rate is at
    or below level - h. Delivery contracts have no funding rate: never judged."""

    kind: ClassVar[str] = "funding_rate_above"
    streams: ClassVar[frozenset[str]] = frozenset({MARK})
    sign: ClassVar[float] = 1.0

    def __init__(self, params: Mapping[str, Any]) -> None:
        no_extra_params(params, "level", "hysteresis")
        self.level = number_param(params, "level")
        self.hysteresis = number_param(params, "hysteresis", minimum=0, default=0.0)

    def initial_data(self) -> Any:
        return False

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        rate = event.funding_rate
        if rate is None:
            return None
        # sign flips the comparison for funding_rate_below: -rate > -level.
        threshold = self.level - self.hysteresis * self.sign if state.data else self.level
        active = rate * self.sign > threshold * self.sign
        state.data = active
        return Signal(active, rate)


class FundingRateBelow(FundingRateAbove):
    """Holds while a perpetual's funding rate is below ``level`` (negative: shorts pay);
    ``hysteresis`` as for ``funding_rate_above``."""

    kind: ClassVar[str] = "funding_rate_below"
    sign: ClassVar[float] = -1.0


class BasisBps(RuleBase):
    """Holds while the mark price is ``bps`` basis points or more away from the index price:
    ``side = "premium"`` (mark above index), ``"discount"`` (below) or ``"any"`` (default).
    Value: the basis (mark - index) / index in bps, signed."""

    kind: ClassVar[str] = "basis_bps"
    streams: ClassVar[frozenset[str]] = frozenset({MARK})

    def __init__(self, params: Mapping[str, Any]) -> None:
        no_extra_params(params, "bps", "side")
        self.bps = number_param(params, "bps", above=0)
        self.side = choice_param(params, "side", BASIS_SIDES, "any")

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        basis = event.basis_bps
        side = self.side
        if side == "premium":
            active = basis >= self.bps
        elif side == "discount":
            active = -basis >= self.bps
        else:
            active = abs(basis) >= self.bps
        return Signal(active, basis)


class LiquidationNotional(RuleBase):
    """Holds while the notional liquidated over the last ``window`` seconds is >= ``notional``
    (quote currency on USD-M, USD on COIN-M). ``side``: ``long`` (long positions closed by a
    forced sell), ``short`` (forced buys) or ``any`` (default). Value: that notional.

    Binance sends at most one liquidation per symbol and second (the latest), so the sum is
    a lower bound of what was liquidated."""

    kind: ClassVar[str] = "liquidation_notional"
    streams: ClassVar[frozenset[str]] = frozenset({LIQUIDATION})
    stateful: ClassVar[bool] = True

    def __init__(self, params: Mapping[str, Any]) -> None:
        no_extra_params(params, "notional", "window", "side")
        self.notional = number_param(params, "notional", above=0)
        self.window = duration_param(params, "window")
        self.side = choice_param(params, "side", LIQUIDATION_SIDES, "any")

    def initial_data(self) -> Any:
        return RollingSum(self.window)

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        window: RollingSum = state.data
        side = self.side
        if side == "any" or (side == "long") == (event.side == "SELL"):
            window.expire(now)
            window.add(now, event.notional)
        return self.tick(state, now)

    def tick(self, state: RuleState, now: float) -> Signal | None:
        window: RollingSum = state.data
        window.expire(now)
        total = window.total
        return Signal(total >= self.notional, total)


KINDS = (FundingRateAbove, FundingRateBelow, BasisBps, LiquidationNotional)
"""The kinds of this family, in the order ``RULE_KINDS`` lists them."""
