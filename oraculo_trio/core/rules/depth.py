"""Book kinds: spread, imbalance and liquidity near the mid, read from the symbol's book."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from oraculo_trio.core.book import ASK, BID
from oraculo_trio.core.events import DEPTH
from oraculo_trio.core.rules.base import RuleBase, RuleState, Signal
from oraculo_trio.core.rules.params import (
    choice_param,
    integer_param,
    no_extra_params,
    number_param,
)


class SpreadAboveBps(RuleBase):
    """Holds while the best bid/ask spread is above ``params.bps`` basis points.

    With ``hysteresis`` h (bps), once holding it holds until the spread is <= bps - h.
    """

    kind: ClassVar[str] = "spread_above_bps"
    streams: ClassVar[frozenset[str]] = frozenset({DEPTH})

    def __init__(self, params: Mapping[str, Any]) -> None:
        no_extra_params(params, "bps", "hysteresis")
        self.bps = number_param(params, "bps", minimum=0)
        self.hysteresis = number_param(params, "hysteresis", minimum=0, default=0.0)

    def initial_data(self) -> Any:
        return False

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        spread = state.market.spread_bps()
        if spread is None:
            return None
        threshold = self.bps - self.hysteresis if state.data else self.bps
        active = spread > threshold
        state.data = active
        return Signal(active, spread)


SIDES_BOOK = ("any", BID, ASK)


class BookImbalance(RuleBase):
    """Holds while top-``levels`` bid quantity over ask quantity is >= ``ratio`` (``side =
    "bid"``), <= 1 / ratio (``"ask"``), or either (``"any"``, default). Value: the ratio.

    Evaluated once per micro-batch and symbol (``per_batch``).
    """

    kind: ClassVar[str] = "book_imbalance"
    streams: ClassVar[frozenset[str]] = frozenset({DEPTH})
    per_batch: ClassVar[bool] = True

    def __init__(self, params: Mapping[str, Any]) -> None:
        no_extra_params(params, "ratio", "levels", "side")
        self.ratio = number_param(params, "ratio", above=1)
        self.levels = integer_param(params, "levels", minimum=1, maximum=5000, default=10)
        self.side = choice_param(params, "side", SIDES_BOOK, "any")

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        book = state.market.book
        if book is None:
            return None
        ratio = book.bid_ask_ratio(self.levels)
        if ratio is None:
            return None
        bid_heavy = ratio >= self.ratio
        ask_heavy = ratio * self.ratio <= 1.0
        side = self.side
        active = bid_heavy if side == BID else ask_heavy if side == ASK else bid_heavy or ask_heavy
        return Signal(active, ratio)


class _NotionalNearMid(RuleBase):
    """A kind comparing the notional within ``bps`` of the mid (``side``: ``any``, ``bid``
    or ``ask``) with ``notional``, once per micro-batch and symbol (``per_batch``): the
    query costs per level."""

    streams: ClassVar[frozenset[str]] = frozenset({DEPTH})
    per_batch: ClassVar[bool] = True

    def __init__(self, params: Mapping[str, Any]) -> None:
        no_extra_params(params, "notional", "bps", "side")
        self.notional = number_param(params, "notional", above=0)
        self.bps = number_param(params, "bps", above=0)
        self.side = choice_param(params, "side", SIDES_BOOK, "any")


class LiquidityWall(_NotionalNearMid):
    """Holds while one book level within ``bps`` of the mid has a notional >= ``notional``
    (``side``: ``any``, ``bid`` or ``ask``). Value: the largest such level's notional.

    Evaluated once per micro-batch and symbol (``per_batch``): the query costs per level.
    """

    kind: ClassVar[str] = "liquidity_wall"

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        book = state.market.book
        if book is None or book.mid is None:
            return None
        wall = book.largest_level_within_bps(self.bps, None if self.side == "any" else self.side)
        if wall is None:
            return Signal(False, 0.0)
        return Signal(wall.notional >= self.notional, wall.notional)


class ThinBook(_NotionalNearMid):
    """Holds while the notional resting within ``bps`` of the mid is below ``notional``
    (``side``: ``any`` for both sides together, ``bid`` or ``ask``). Value: that notional.

    Evaluated once per micro-batch and symbol (``per_batch``): the query costs per level.
    """

    kind: ClassVar[str] = "thin_book"

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        book = state.market.book
        if book is None:
            return None
        within = book.notional_within_bps(self.bps)
        if within is None:
            return None
        side = self.side
        value = within.bid if side == BID else within.ask if side == ASK else within.total
        return Signal(value < self.notional, value)


KINDS = (SpreadAboveBps, BookImbalance, LiquidityWall, ThinBook)
"""The kinds of this family, in the order ``RULE_KINDS`` lists them."""
