"""Custom rule kinds for the e2e tests (loaded as ``tests.e2e.flappy:EveryTenthTrade`` and
``tests.e2e.flappy:EveryTenthBook``): each fires on every trade (partial book) whose id is a
multiple of ten and resolves on the next one, so a service under load raises a steady stream
of transitions from both streams."""

from __future__ import annotations

from typing import Any, ClassVar

from oraculo_trio.core.rules import RuleState, Signal


class ParameterlessRule:
    """A custom kind that takes no parameters and keeps no per-symbol data."""

    def __init__(self, params: dict[str, Any]) -> None:
        if params:
            raise ValueError(f"params.{next(iter(params))} is not a parameter of this kind")

    def initial_data(self) -> Any:
        return None


class EveryTenthTrade(ParameterlessRule):
    kind: ClassVar[str] = "every_tenth_trade"
    streams: ClassVar[frozenset[str]] = frozenset({"trade"})

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        return Signal(event.trade_id % 10 == 0, event.price)


class EveryTenthBook(ParameterlessRule):
    kind: ClassVar[str] = "every_tenth_book"
    streams: ClassVar[frozenset[str]] = frozenset({"depth"})

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        return Signal(event.last_update_id % 10 == 0, float(event.last_update_id))


def every_tenth_book_rule(rule_id: str = "tenth-book") -> dict[str, Any]:
    """A rule-file entry of this kind: alerts on every tenth partial book of any symbol."""
    return {
        "id": rule_id,
        "kind": "tests.e2e.flappy:EveryTenthBook",
        "symbols": "*",
        "trigger": "every_time",
    }


def every_tenth_trade_rule(rule_id: str = "tenth", **fields: Any) -> dict[str, Any]:
    """A rule-file entry of this kind: alerts on every tenth trade of any symbol."""
    return {
        "id": rule_id,
        "kind": "tests.e2e.flappy:EveryTenthTrade",
        "symbols": "*",
        "trigger": "every_time",
        **fields,
    }
