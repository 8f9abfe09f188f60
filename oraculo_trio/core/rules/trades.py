"""Trade-flow kinds: single large trades, volume, trade rate and buy/sell imbalance."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any, ClassVar

from oraculo_trio.core.events import TRADE, Trade
from oraculo_trio.core.rules.base import RuleBase, RuleState, Signal, TradeEventKind
from oraculo_trio.core.rules.params import (
    choice_param,
    duration_param,
    no_extra_params,
    number_param,
)
from oraculo_trio.core.windows import RollingSum, SplitSum

SIDES_ANY = ("any", "buy", "sell")


def _is_buy(trade: Trade) -> bool:
    # The buyer is the taker (aggressor) when the maker was the seller.
    return not trade.buyer_is_maker


class LargeTrade(TradeEventKind):
    """Fires on a trade whose notional (price x quantity) is >= ``notional``.

    ``side``: ``any`` (default), ``buy`` or ``sell`` (the aggressor's side).
    """

    kind: ClassVar[str] = "large_trade"

    def __init__(self, params: Mapping[str, Any]) -> None:
        no_extra_params(params, "notional", "side")
        self.notional = number_param(params, "notional", above=0)
        self.side = choice_param(params, "side", SIDES_ANY, "any")

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        notional = event.price * event.quantity
        side = self.side
        if side != "any" and (side == "buy") != _is_buy(event):
            return Signal(False, notional)
        return Signal(notional >= self.notional, notional)


class VolumeSpike(RuleBase):
    """Holds while the traded quantity per second of the last ``window`` seconds is at least
    ``factor`` times that of the ``baseline`` seconds before it (value: the ratio).

    Nothing is judged until ``window + baseline`` seconds of history exist; a recent volume
    below ``min_volume`` never holds. A zero baseline with recent volume is an infinite ratio.
    """

    kind: ClassVar[str] = "volume_spike"
    streams: ClassVar[frozenset[str]] = frozenset({TRADE})
    stateful: ClassVar[bool] = True
    # The baseline ages out on its own: time alone can make the ratio hold.
    ticks_when_inactive: ClassVar[bool] = True

    def __init__(self, params: Mapping[str, Any]) -> None:
        no_extra_params(params, "window", "baseline", "factor", "min_volume")
        self.window = duration_param(params, "window")
        self.baseline = duration_param(params, "baseline")
        self.factor = number_param(params, "factor", above=0)
        self.min_volume = number_param(params, "min_volume", minimum=0, default=0.0)

    def initial_data(self) -> Any:
        return [SplitSum(self.window, self.baseline), None]  # windows, first seen

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        data = state.data
        if data[1] is None:
            data[1] = now
        windows: SplitSum = data[0]
        windows.expire(now)
        windows.add(now, event.quantity)
        return self._judge(data, now)

    def tick(self, state: RuleState, now: float) -> Signal | None:
        data = state.data
        if data[1] is None:
            return None
        data[0].expire(now)
        return self._judge(data, now)

    def _judge(self, data: list, now: float) -> Signal | None:
        if now - data[1] < self.window + self.baseline:
            return None  # warming up: the baseline is not known yet
        windows: SplitSum = data[0]
        recent = windows.recent.total
        recent_rate = recent / self.window
        base_rate = windows.base.total / self.baseline
        # A zero baseline with recent volume is an infinite ratio: a market waking up.
        ratio = recent_rate / base_rate if base_rate > 0 else (math.inf if recent > 0 else 0.0)
        return Signal(ratio >= self.factor and recent >= self.min_volume and recent > 0, ratio)


class TradeRate(RuleBase):
    """Holds while trades per second over the last ``window`` seconds are above ``rate``."""

    kind: ClassVar[str] = "trade_rate"
    streams: ClassVar[frozenset[str]] = frozenset({TRADE})
    stateful: ClassVar[bool] = True

    def __init__(self, params: Mapping[str, Any]) -> None:
        no_extra_params(params, "rate", "window")
        self.rate = number_param(params, "rate", minimum=0)
        self.window = duration_param(params, "window")

    def initial_data(self) -> Any:
        return deque()

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        times: deque[float] = state.data
        times.append(now)
        return self.tick(state, now)

    def tick(self, state: RuleState, now: float) -> Signal | None:
        times: deque[float] = state.data
        cutoff = now - self.window
        while times and times[0] < cutoff:
            times.popleft()
        rate = len(times) / self.window
        return Signal(rate > self.rate, rate)


class BuySellImbalance(RuleBase):
    """Holds while ``(buy - sell) / (buy + sell)`` of the quantity traded in the last
    ``window`` seconds is >= ``threshold`` (``side = "buy"``), <= -threshold (``"sell"``),
    or either (``"any"``, default). Value: the imbalance, -1 to 1.

    A window with less than ``min_volume`` traded never holds.
    """

    kind: ClassVar[str] = "buy_sell_imbalance"
    streams: ClassVar[frozenset[str]] = frozenset({TRADE})
    stateful: ClassVar[bool] = True
    # Old trades of one side leaving the window can tip the balance with no new trade.
    ticks_when_inactive: ClassVar[bool] = True

    def __init__(self, params: Mapping[str, Any]) -> None:
        no_extra_params(params, "threshold", "window", "side", "min_volume")
        self.threshold = number_param(params, "threshold", above=0, maximum=1)
        self.window = duration_param(params, "window")
        self.side = choice_param(params, "side", SIDES_ANY, "any")
        self.min_volume = number_param(params, "min_volume", minimum=0, default=0.0)

    def initial_data(self) -> Any:
        return RollingSum(self.window), RollingSum(self.window)  # buys, sells

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        buys, sells = state.data
        (buys if _is_buy(event) else sells).add(now, event.quantity)
        return self.tick(state, now)

    def tick(self, state: RuleState, now: float) -> Signal | None:
        buys, sells = state.data
        buys.expire(now)
        sells.expire(now)
        total = buys.total + sells.total
        if total <= 0:
            return Signal(False, 0.0)
        imbalance = (buys.total - sells.total) / total
        side = self.side
        if side == "buy":
            active = imbalance >= self.threshold
        elif side == "sell":
            active = -imbalance >= self.threshold
        else:
            active = abs(imbalance) >= self.threshold
        return Signal(active and total >= self.min_volume, imbalance)


KINDS = (LargeTrade, VolumeSpike, TradeRate, BuySellImbalance)
"""The kinds of this family, in the order ``RULE_KINDS`` lists them."""
