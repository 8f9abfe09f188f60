"""Silences: windows of time in which notifications of a rule and/or symbol are muted.

A silence is stored in the database (``oraculo-trio silence add``) and matched by the
dispatcher against each notification; the alert itself is still evaluated and stored, only
its delivery is suppressed (and counted). Pure: the caller passes ``now``.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs


@attrs.frozen(slots=True)
class Silence:
    """Mutes notifications of ``rule_id`` on ``symbol`` during ``[starts_at, ends_at)``.

    Attributes:
        id: the database id.
        rule_id: the rule muted, or None for every rule.
        symbol: the symbol muted (upper case), or None for every symbol.
        starts_at, ends_at: Unix seconds; active while ``starts_at <= now < ends_at``.
        comment: why (shown by ``silence list``).
        created_by: who.
    """

    id: int
    rule_id: str | None
    symbol: str | None
    starts_at: float
    ends_at: float
    comment: str = ""
    created_by: str = ""

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(self, rule_id: str, symbol: str, now: float) -> bool:
        """True when the silence is active at ``now`` and covers (rule_id, symbol)."""
        return (
            self.starts_at <= now < self.ends_at
            and (self.rule_id is None or self.rule_id == rule_id)
            and (self.symbol is None or self.symbol == symbol)
        )


@attrs.define(eq=False)
class SilenceSet:
    """The silences the dispatcher knows, refreshed from the store now and then."""

    silences: tuple[Silence, ...] = ()

    def replace(self, silences: Iterable[Silence]) -> None:
        self.silences = tuple(silences)

    def match(self, rule_id: str, symbol: str, now: float) -> Silence | None:
        """The first silence covering (rule_id, symbol) at ``now``, or None."""
        for silence in self.silences:
            if silence.matches(rule_id, symbol, now):
                return silence
        return None

    def active(self, now: float) -> int:
        """How many silences are active at ``now``."""
        return sum(1 for silence in self.silences if silence.active(now))
