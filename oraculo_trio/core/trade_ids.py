"""Trade ids per symbol: which trade comes next, which was seen already, what is missing.

Binance numbers each symbol's trades (``t`` of ``@trade``) and aggregated trades (``a`` of
``@aggTrade``) one after another, with no gap. A feed connection keeps the last id it handed
on per symbol and kind, across its reconnects, so that:

- a trade at or below that id is a duplicate (the overlap of two connections during a
  make-before-break switch, or one a backfill already fetched) and is dropped;
- a trade beyond the next id reveals a gap (trades sent while no connection was reading),
  which is filled from REST before that trade goes on (``pipeline/backfill.py``);
- a jump of more than :data:`RENUMBER_JUMP` ids either way restarts the sequence.

The first trade of a symbol after start-up has nothing to compare with: nothing before it
is asked for.
"""

from __future__ import annotations

import attrs

DUPLICATE = -1
"""What :meth:`TradeIds.take` answers for a trade at or below the last id handed on."""

RENUMBERED = -2
"""What :meth:`TradeIds.take` answers for a jump of more than :data:`RENUMBER_JUMP` ids."""

RENUMBER_JUMP = 1_000_000
"""Ids a symbol may jump, either way, and still be the numbering followed: a gap beyond it is
not a gap nor a duplicate, but ids that are not the ones followed so far (a recording
replayed in a loop, an exchange reset, a hand-made frame), and the sequence starts again
there. Binance's busiest symbols trade about that much in several hours, far beyond what a
reconnect leaves out or its REST history answers in one go."""


@attrs.define(eq=False)
class TradeIds:
    """The last trade id handed on, per kind (``trade``, ``aggTrade``) and symbol."""

    _last: dict[str, dict[str, int]] = attrs.field(factory=dict)

    def take(self, kind: str, symbol: str, trade_id: int) -> int:
        """Record ``trade_id`` of ``symbol`` as handed on; return how many trades are missing
        before it (0: the next one, or the first seen), or :data:`DUPLICATE` (not recorded:
        at or below the last one), or :data:`RENUMBERED` (recorded: the sequence restarts)."""
        last = self._last.get(kind)
        if last is None:
            last = self._last[kind] = {}
        previous = last.get(symbol)
        if previous is None:
            last[symbol] = trade_id
            return 0
        missing = trade_id - previous - 1
        if missing == 0:
            last[symbol] = trade_id
            return 0
        if missing < 0 and previous - trade_id < RENUMBER_JUMP:
            return DUPLICATE
        last[symbol] = trade_id
        return missing if 0 < missing < RENUMBER_JUMP else RENUMBERED

    def last(self, kind: str, symbol: str) -> int | None:
        """The last id handed on, or None before the first."""
        last = self._last.get(kind)
        return None if last is None else last.get(symbol)
