"""Price kinds: levels, channels and moves of the last trade price."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from oraculo_trio.core.events import TRADE
from oraculo_trio.core.rules.base import RuleBase, RuleState, Signal, TradeEventKind
from oraculo_trio.core.rules.params import duration_param, no_extra_params, number_param
from oraculo_trio.core.windows import Extremum


class Crossing(TradeEventKind):
    """Fires when a trade crosses ``params.level`` (either direction).

    Up: previous < level <= price; down: previous > level >= price.
    """

    kind: ClassVar[str] = "crossing"
    direction: ClassVar[int] = 0  # +1 up only, -1 down only, 0 both

    def __init__(self, params: Mapping[str, Any]) -> None:
        no_extra_params(params, "level")
        self.level = number_param(params, "level", minimum=0)

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        previous = state.market.previous_price
        price = event.price
        if previous is None:
            return None
        level = self.level
        up = previous < level <= price
        down = previous > level >= price
        crossed = (up and self.direction >= 0) or (down and self.direction <= 0)
        return Signal(crossed, price)


class CrossingUp(Crossing):
    """Fires when a trade crosses ``params.level`` upward (previous < level <= price)."""

    kind: ClassVar[str] = "crossing_up"
    direction: ClassVar[int] = 1


class CrossingDown(Crossing):
    """Fires when a trade crosses ``params.level`` downward (previous > level >= price)."""

    kind: ClassVar[str] = "crossing_down"
    direction: ClassVar[int] = -1


class GreaterThan(RuleBase):
    """Holds while the last trade price is above ``level`` (strictly).

    With ``hysteresis`` h, once holding it holds until the price is at or below level - h.
    """

    kind: ClassVar[str] = "greater_than"
    streams: ClassVar[frozenset[str]] = frozenset({TRADE})
    sign: ClassVar[float] = 1.0

    def __init__(self, params: Mapping[str, Any]) -> None:
        no_extra_params(params, "level", "hysteresis")
        self.level = number_param(params, "level", minimum=0)
        self.hysteresis = number_param(params, "hysteresis", minimum=0, default=0.0)

    def initial_data(self) -> Any:
        return False

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        price = event.price
        # sign flips the comparison for less_than: -price > -level.
        threshold = self.level - self.hysteresis * self.sign if state.data else self.level
        active = price * self.sign > threshold * self.sign
        state.data = active
        return Signal(active, price)


class LessThan(GreaterThan):
    """Holds while the last trade price is below ``level`` (strictly).

    With ``hysteresis`` h, once holding it holds until the price is at or above level + h.
    """

    kind: ClassVar[str] = "less_than"
    sign: ClassVar[float] = -1.0


def _channel(params: Mapping[str, Any]) -> tuple[float, float]:
    no_extra_params(params, "low", "high")
    low = number_param(params, "low", minimum=0)
    high = number_param(params, "high", minimum=0)
    if high <= low:
        raise ValueError(f"params.high = {high:g}: expected a number > params.low ({low:g})")
    return low, high


class InsideChannel(RuleBase):
    """Holds while the last trade price is inside ``[low, high]`` (bounds included)."""

    kind: ClassVar[str] = "inside_channel"
    streams: ClassVar[frozenset[str]] = frozenset({TRADE})
    inside: ClassVar[bool] = True

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.low, self.high = _channel(params)

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        price = event.price
        return Signal((self.low <= price <= self.high) is self.inside, price)


class OutsideChannel(InsideChannel):
    """Holds while the last trade price is below ``low`` or above ``high``."""

    kind: ClassVar[str] = "outside_channel"
    inside: ClassVar[bool] = False


class EnteringChannel(TradeEventKind):
    """Fires when a trade moves the price from outside ``[low, high]`` to inside it."""

    kind: ClassVar[str] = "entering_channel"
    entering: ClassVar[bool] = True

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.low, self.high = _channel(params)

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        previous = state.market.previous_price
        if previous is None:
            return None
        price = event.price
        was_inside = self.low <= previous <= self.high
        is_inside = self.low <= price <= self.high
        moved = (not was_inside and is_inside) if self.entering else (was_inside and not is_inside)
        return Signal(moved, price)


class ExitingChannel(EnteringChannel):
    """Fires when a trade moves the price from inside ``[low, high]`` to outside it."""

    kind: ClassVar[str] = "exiting_channel"
    entering: ClassVar[bool] = False


class MovingUpPct(RuleBase):
    """Holds while the price is ``pct`` % or more above the lowest trade of the last
    ``window`` seconds (value: the move in %)."""

    kind: ClassVar[str] = "moving_up_pct"
    streams: ClassVar[frozenset[str]] = frozenset({TRADE})
    stateful: ClassVar[bool] = True
    up: ClassVar[bool] = True

    def __init__(self, params: Mapping[str, Any]) -> None:
        no_extra_params(params, "pct", "window")
        self.pct = number_param(params, "pct", above=0)
        self.window = duration_param(params, "window")

    def initial_data(self) -> Any:
        return Extremum(self.window, largest=not self.up)

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        window: Extremum = state.data
        window.expire(now)
        window.add(now, event.price)
        return self._judge(window, event.price)

    def tick(self, state: RuleState, now: float) -> Signal | None:
        price = state.market.last_price
        if price is None:
            return None
        window: Extremum = state.data
        window.expire(now)
        if window.value is None:
            return Signal(False, 0.0)
        return self._judge(window, price)

    def _judge(self, window: Extremum, price: float) -> Signal:
        reference = window.value
        if not reference:
            return Signal(False, 0.0)
        move = (price - reference) / reference * 100.0
        if not self.up:
            move = -move
        return Signal(move >= self.pct, move)


class MovingDownPct(MovingUpPct):
    """Holds while the price is ``pct`` % or more below the highest trade of the last
    ``window`` seconds (value: the fall in %, positive)."""

    kind: ClassVar[str] = "moving_down_pct"
    up: ClassVar[bool] = False


KINDS = (
    Crossing,
    CrossingUp,
    CrossingDown,
    GreaterThan,
    LessThan,
    EnteringChannel,
    ExitingChannel,
    InsideChannel,
    OutsideChannel,
    MovingUpPct,
    MovingDownPct,
)
"""The kinds of this family, in the order ``RULE_KINDS`` lists them."""
