"""Timing kinds, judged by time alone: silence of a symbol's streams."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from oraculo_trio.core.events import DEPTH, TRADE
from oraculo_trio.core.rules.base import RuleBase, RuleState, Signal
from oraculo_trio.core.rules.params import choice_param, duration_param, no_extra_params


class NoData(RuleBase):
    """Holds while the symbol has sent no message (``stream``: ``any``, ``depth`` or
    ``trade``) for ``seconds`` or more. Value: the silence so far, seconds.

    Judged by time alone (``tick``); a message ends the silence at the next tick.
    """

    kind: ClassVar[str] = "no_data"
    streams: ClassVar[frozenset[str]] = frozenset({DEPTH, TRADE})
    ticks_when_inactive: ClassVar[bool] = True

    def __init__(self, params: Mapping[str, Any]) -> None:
        no_extra_params(params, "seconds", "stream")
        self.seconds = duration_param(params, "seconds")
        self.stream = choice_param(params, "stream", ("any", DEPTH, TRADE), "any")

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        return None

    def tick(self, state: RuleState, now: float) -> Signal | None:
        market = state.market
        stream = self.stream
        if stream == TRADE:
            last = market.last_trade_wall
        elif stream == DEPTH:
            last = market.last_depth_wall
        else:
            last = market.last_event_wall
        if last is None:
            last = market.watch_since
            if last is None:
                return None
        silence = now - last
        return Signal(silence >= self.seconds, silence)


KINDS = (NoData,)
"""The kinds of this family, in the order ``RULE_KINDS`` lists them."""
