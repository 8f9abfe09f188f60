"""The trades an exchange published, kept for REST: ``aggTrades`` and ``historicalTrades``
with ``fromId``, so a client can fetch what it missed while it was disconnected.

The exchange records every ``@aggTrade`` and ``@trade`` payload it makes, subscribed or not
(a trade made while nobody listened is exactly what a backfill asks for), up to
``capacity`` of each symbol and kind (the oldest go first, as an exchange's history has a
horizon of its own).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable
from typing import Any

import attrs

AGG_TRADE = "aggTrade"
TRADE = "trade"


@attrs.define(eq=False)
class TradeTape:
    """Published trades by (upper-case symbol, kind), in id order.

    Attributes:
        capacity: trades kept per symbol and kind.
    """

    capacity: int = 100_000
    _tapes: dict[tuple[str, str], deque[dict[str, Any]]] = attrs.field(factory=dict)

    def record(self, stream: str, payload: Any) -> None:
        """Keep ``payload`` when ``stream`` is a trade or aggTrade stream (else nothing)."""
        symbol, _, kind = stream.partition("@")
        if kind not in (AGG_TRADE, TRADE) or not isinstance(payload, dict):
            return
        key = (symbol.upper(), kind)
        tape = self._tapes.get(key)
        if tape is None:
            tape = self._tapes[key] = deque(maxlen=self.capacity)
        tape.append(payload)

    def query(
        self, symbol: str, kind: str, from_id: int | None, limit: int
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` trades of ``symbol`` from id ``from_id`` on (the latest without
        one), in Binance's REST shape (aggTrades keep their stream keys, trades are spelled
        out)."""
        tape = self._tapes.get((symbol, kind), ())
        key = "a" if kind == AGG_TRADE else "t"
        if from_id is None:
            found: Iterable[dict[str, Any]] = list(tape)[-limit:]
        else:
            found = [p for p in tape if p.get(key, -1) >= from_id][:limit]
        return [_rest_shape(kind, payload) for payload in found]

    def published(self) -> set[tuple[str, int]]:
        """Every (symbol, id) kept, trades and aggTrades alike: what a client could have
        evaluated, from the streams or from REST."""
        return {
            (symbol, payload.get("a" if kind == AGG_TRADE else "t", -1))
            for (symbol, kind), tape in self._tapes.items()
            for payload in tape
        }

    def last_id(self, symbol: str, kind: str = AGG_TRADE) -> int | None:
        """The id of the latest trade of ``symbol`` kept, or None."""
        tape = self._tapes.get((symbol, kind))
        if not tape:
            return None
        return tape[-1].get("a" if kind == AGG_TRADE else "t")


def _rest_shape(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    if kind == AGG_TRADE:
        return {
            key: payload[key] for key in ("a", "p", "q", "f", "l", "T", "m") if key in payload
        } | {"M": True}
    return {
        "id": payload.get("t"),
        "price": payload.get("p"),
        "qty": payload.get("q"),
        "time": payload.get("T"),
        "isBuyerMaker": payload.get("m"),
        "isBestMatch": True,
    }


@attrs.frozen
class WrittenTrade:
    """One ``@trade`` or ``@aggTrade`` frame written to a connection's socket, at ``at``
    (trio time); ``trade_id`` is the trade's ``t``, or the aggTrade's ``a``."""

    connection: int
    at: float
    symbol: str
    trade_id: int


@attrs.define(eq=False)
class WrittenTrades:
    """The trade frames an exchange wrote to each connection's socket, in order, and
    when each connection closed: what a client can have read (a frame written just before a
    connection broke may still be lost in flight)."""

    _frames: list[tuple[int, float, bytes]] = attrs.field(factory=list)
    closed_at: dict[int, float] = attrs.field(factory=dict)

    def record(self, connection: int, stream: str, data: bytes, at: float) -> None:
        """Keep ``data`` when ``stream`` is a trade or aggTrade stream (parsed later, off the
        hot path)."""
        if stream.endswith(("@trade", "@aggTrade")):
            self._frames.append((connection, at, data))

    def close(self, connection: int, at: float) -> None:
        """Connection ``connection`` closed at ``at``."""
        self.closed_at[connection] = at

    def trades(self) -> list[WrittenTrade]:
        """Every trade frame written, in the order written."""
        trades = []
        for connection, at, data in self._frames:
            message = json.loads(data)
            payload = message.get("data", message)
            trade_id = payload["t"] if "t" in payload else payload["a"]
            trades.append(WrittenTrade(connection, at, payload["s"], trade_id))
        return trades
