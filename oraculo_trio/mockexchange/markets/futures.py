"""A scripted USD-M futures market: aggTrades, the mark price stream and liquidations on a
20 s cycle (the demo's second market, beside the scripted spot one).

Per cycle of ``period`` seconds (offsets in seconds), for each symbol:

- ``@aggTrade``: ``trades_per_tick`` trades a tick around the mark price;
- ``@markPrice@1s``, once a second: funding 0.01 % at rest, 0.08 % (2-8 s), -0.06 %
  (10-15 s); the mark 40 bps above the index (4-7 s), 2 bps otherwise;
- ``@forceOrder``: a long liquidated (a forced SELL) of ``liquidation_notional`` once a
  second (12-15 s), as Binance sends at most one per symbol and second.

Payloads are Binance USD-M's (``pu``-free streams: no book here). Pure: ``tick(now, dt)``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import attrs

from oraculo_trio.mockexchange.markets.payloads import (
    Frame,
    Payload,
    RateCarry,
    format_units,
    to_units,
)

FUNDING_AT_REST = 0.0001
FUNDING_HIGH = (2.0, 8.0, 0.0008)
FUNDING_NEGATIVE = (10.0, 15.0, -0.0006)
BASIS_WIDE = (4.0, 7.0, 40.0)
BASIS_AT_REST = 2.0
LIQUIDATIONS = (12.0, 15.0)


@attrs.define(eq=False)
class FuturesScriptMarket:
    """USD-M symbols playing the cycle above.

    Attributes:
        prices: each symbol's index price (upper-case USD-M symbols).
        period: cycle length, seconds.
        trades_per_tick: aggTrades per symbol and tick.
        liquidation_notional: USDT of each liquidation in the liquidation phase.
        seed: seed of the price noise.
    """

    prices: dict[str, float] = attrs.field(factory=lambda: {"BTCUSDT": 60_000.0})
    period: float = 20.0
    trades_per_tick: int = 1
    liquidation_notional: float = 400_000.0
    seed: int = 0
    _start: float | None = attrs.field(init=False, default=None)
    _rng: random.Random = attrs.field(init=False)
    _next_id: dict[str, int] = attrs.field(init=False, factory=dict)
    _last_second: int | None = attrs.field(init=False, default=None)
    _trades: RateCarry = attrs.field(init=False, factory=RateCarry)

    def __attrs_post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._next_id = dict.fromkeys(self.prices, 1)

    @property
    def symbols(self) -> Sequence[str]:
        """The symbols, upper case."""
        return list(self.prices)

    def tick(self, now: float, dt: float) -> list[Frame]:
        """This tick's aggTrades, and on each new second the mark prices and liquidations."""
        if self._start is None:
            self._start = now
        offset = (now - self._start) % self.period
        now_ms = int(now * 1000)
        frames: list[Frame] = []
        for symbol, index in self.prices.items():
            mark = index * (1 + self.basis_bps(offset) / 10_000.0)
            for _ in range(self.trades_per_tick):
                frames.append(self._agg_trade(symbol, mark, now_ms))
        second = int(now)
        if second != self._last_second:
            self._last_second = second
            for symbol, index in self.prices.items():
                frames.append(self._mark_price(symbol, index, offset, now_ms))
                if LIQUIDATIONS[0] <= offset < LIQUIDATIONS[1]:
                    frames.append(self._liquidation(symbol, index, now_ms))
        return frames

    @staticmethod
    def funding_rate(offset: float) -> float:
        """The funding rate at ``offset`` seconds into the cycle."""
        for start, end, rate in (FUNDING_HIGH, FUNDING_NEGATIVE):
            if start <= offset < end:
                return rate
        return FUNDING_AT_REST

    @staticmethod
    def basis_bps(offset: float) -> float:
        """The mark's premium over the index at ``offset``, in basis points."""
        start, end, bps = BASIS_WIDE
        return bps if start <= offset < end else BASIS_AT_REST

    def _agg_trade(self, symbol: str, mark: float, now_ms: int) -> Frame:
        trade_id = self._next_id[symbol]
        self._next_id[symbol] = trade_id + 1
        price = mark * (1 + self._rng.uniform(-0.5, 0.5) / 10_000.0)
        payload: Payload = {
            "e": "aggTrade", "E": now_ms, "a": trade_id, "s": symbol,
            "p": format_units(to_units(price)), "q": format_units(to_units(0.01)),
            "f": trade_id, "l": trade_id, "T": now_ms, "m": self._rng.random() < 0.5,
        }  # fmt: skip
        return f"{symbol.lower()}@aggTrade", payload

    def _mark_price(self, symbol: str, index: float, offset: float, now_ms: int) -> Frame:
        mark = index * (1 + self.basis_bps(offset) / 10_000.0)
        next_funding = (now_ms // 28_800_000 + 1) * 28_800_000  # every 8 h
        payload: Payload = {
            "e": "markPriceUpdate", "E": now_ms, "s": symbol,
            "p": format_units(to_units(mark)), "i": format_units(to_units(index)),
            "P": format_units(to_units(mark)), "r": f"{self.funding_rate(offset):.8f}",
            "T": next_funding,
        }  # fmt: skip
        return f"{symbol.lower()}@markPrice@1s", payload

    def _liquidation(self, symbol: str, index: float, now_ms: int) -> Frame:
        price = index * 0.999
        quantity = self.liquidation_notional / price
        order = {
            "s": symbol, "S": "SELL", "o": "LIMIT", "f": "IOC",
            "q": f"{quantity:.3f}", "p": f"{price:.2f}", "ap": f"{price:.2f}", "X": "FILLED",
            "l": f"{quantity:.3f}", "z": f"{quantity:.3f}", "T": now_ms,
        }  # fmt: skip
        return f"{symbol.lower()}@forceOrder", {"e": "forceOrder", "E": now_ms, "o": order}
