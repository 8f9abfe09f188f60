"""A custom rule kind, as a user's package would ship it (``rules_under_test:BigJump``)."""

from typing import Any, ClassVar

from oraculo_trio.core.rules import RuleBase, RuleState, Signal


class BigJump(RuleBase):
    """Fires when one trade moves the price by ``pct`` % or more from the previous one."""

    kind: ClassVar[str] = "big_jump"
    streams: ClassVar[frozenset[str]] = frozenset({"trade"})

    def __init__(self, params: dict[str, Any]) -> None:
        pct = params.get("pct")
        if not isinstance(pct, int | float) or pct <= 0:
            raise ValueError(f"params.pct = {pct!r}: expected a number > 0")
        self.pct = float(pct)

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        previous = state.market.previous_price
        if previous is None:
            return None
        move = abs(event.price - previous) / previous * 100.0
        return Signal(move >= self.pct, move)
