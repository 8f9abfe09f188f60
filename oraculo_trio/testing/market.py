"""A market a test drives by hand, published by the mock exchange on its next tick."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs
import trio

from oraculo_trio.mockexchange import Frame, format_units, to_units, trade_payload

__all__ = ["MarketScript"]

Level = tuple[float, float]


def _price(value: float) -> str:
    return format_units(to_units(value))


@attrs.define(eq=False)
class MarketScript:
    """A market a test drives by hand: what it queues goes out on the exchange's next tick.

    Trades are ``@trade`` frames; books are ``@depth20@100ms`` partial books (what the
    fixtures' service subscribes to). Exchange times (``E``, ``T``) are the tick's, so
    every message is fresh.

    Attributes:
        symbols: upper-case symbols, subscribed by the service.
        published: frames handed to the exchange so far.
    """

    symbols: tuple[str, ...] = attrs.field(converter=lambda s: tuple(x.upper() for x in s))
    published: int = 0
    _queued: list[Callable[[int], Frame]] = attrs.field(factory=list)
    _ids: dict[str, int] = attrs.field(factory=dict)
    _changed: trio.Event = attrs.field(factory=trio.Event)

    def trade(self, symbol: str, price: float, qty: float = 1.0, *, side: str = "buy") -> None:
        """Queue one trade; ``side`` is the aggressor's (``buy`` or ``sell``)."""
        if side not in ("buy", "sell"):
            raise ValueError(f"side={side!r}: expected 'buy' or 'sell'")
        symbol = symbol.upper()
        trade_id = self._next_id(symbol)

        def frame(now_ms: int) -> Frame:
            payload = trade_payload(
                symbol, trade_id, _price(price), _price(qty), now_ms, side == "sell"
            )
            return f"{symbol.lower()}@trade", payload

        self._queued.append(frame)

    def book(self, symbol: str, bids: Sequence[Level], asks: Sequence[Level]) -> None:
        """Queue a partial book: ``(price, quantity)`` levels, best first (up to 20 a side)."""
        symbol = symbol.upper()
        update_id = self._next_id(symbol)
        payload = {
            "lastUpdateId": update_id,
            "bids": [[_price(p), _price(q)] for p, q in bids[:20]],
            "asks": [[_price(p), _price(q)] for p, q in asks[:20]],
        }
        self._queued.append(lambda now_ms: (f"{symbol.lower()}@depth20@100ms", payload))

    def quote(
        self,
        symbol: str,
        bid: float,
        ask: float,
        *,
        bid_qty: float = 1.0,
        ask_qty: float = 1.0,
        levels: int = 5,
        step: float | None = None,
    ) -> None:
        """Queue a book of ``levels`` equal levels a side, ``step`` apart (default: a tenth
        of the spread), starting at ``bid`` and ``ask``."""
        step = step if step is not None else (ask - bid) / 10 or 0.01
        self.book(
            symbol,
            [(bid - i * step, bid_qty) for i in range(levels)],
            [(ask + i * step, ask_qty) for i in range(levels)],
        )

    async def sent(self) -> None:
        """Wait until everything queued so far has been handed to the exchange.

        Cancellation: stops waiting (the frames still go out on the next tick).
        """
        while self._queued:
            await self._changed.wait()

    @property
    def pending(self) -> int:
        """Frames queued and not yet published."""
        return len(self._queued)

    def tick(self, now: float, dt: float) -> list[Frame]:
        """Every queued frame, stamped now (the mock exchange's ``Market`` protocol)."""
        now_ms = int(now * 1000)
        frames = [build(now_ms) for build in self._queued]
        self._queued = []
        self.published += len(frames)
        self._changed.set()
        self._changed = trio.Event()
        return frames

    def _next_id(self, symbol: str) -> int:
        self._ids[symbol] = self._ids.get(symbol, 0) + 1
        return self._ids[symbol]
