"""Market events, normalised from any exchange's wire format.

Every event carries two read stamps taken once per socket read: ``received_at`` on the
monotonic (trio) clock, for our own queue time, and ``received_wall`` on the wall clock,
for ages measured against the exchange's event time ``E``.
"""

from __future__ import annotations

import attrs

Level = tuple[float, float]
"""One book level: (price, quantity). A quantity of 0 removes the level."""

DEPTH = "depth"
TRADE = "trade"
STREAMS = (DEPTH, TRADE)
"""Pipeline stream names, the ``stream`` label of the metric contract."""

MARK = "mark"
LIQUIDATION = "liquidation"
RULE_STREAMS = (DEPTH, TRADE, MARK, LIQUIDATION)
"""What a rule kind may look at (its ``streams``): the pipeline streams, plus the futures
events that travel on the trade stream (never conflated) but are their own to the rules:
mark prices (``markPrice``) and liquidations (``forceOrder``)."""


@attrs.frozen(slots=True)
class Trade:
    """One trade (``@trade``) or aggregated trade (``@aggTrade``)."""

    symbol: str
    price: float
    quantity: float
    buyer_is_maker: bool
    trade_id: int
    trade_time_ms: int
    event_time_ms: int | None
    received_at: float
    received_wall: float
    kind: str = "trade"

    stream = TRADE

    @property
    def notional(self) -> float:
        return self.price * self.quantity


@attrs.frozen(slots=True)
class DepthSnapshot:
    """A partial book (``@depthN``): the top N levels, replacing what was known before.

    Spot partial books carry neither the symbol (it comes from the stream name) nor an
    event time, so ``event_time_ms`` is usually None and the age runs from the read.
    """

    symbol: str
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    last_update_id: int
    event_time_ms: int | None
    received_at: float
    received_wall: float

    stream = DEPTH


@attrs.frozen(slots=True)
class DepthDiff:
    """An incremental book update (``@depth``): levels changed between ``first_update_id``
    (Binance ``U``) and ``final_update_id`` (``u``).

    Futures diffs also carry ``previous_update_id`` (``pu``, the ``u`` of the symbol's
    previous diff): their update ids are shared by every symbol of the matching engine, so a
    futures book continues when ``pu`` equals its last ``u``. Spot diffs have None there.
    """

    symbol: str
    first_update_id: int
    final_update_id: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    event_time_ms: int | None
    received_at: float
    received_wall: float
    previous_update_id: int | None = None

    stream = DEPTH


@attrs.frozen(slots=True)
class BookTicker:
    """Best bid and ask (``@bookTicker``); Binance sends neither event type nor time."""

    symbol: str
    bid_price: float
    bid_quantity: float
    ask_price: float
    ask_quantity: float
    update_id: int
    received_at: float
    received_wall: float

    stream = DEPTH

    @property
    def event_time_ms(self) -> None:
        return None


@attrs.frozen(slots=True)
class MarkPrice:
    """A futures mark price (``@markPrice@1s``): mark and index price, and for perpetuals the
    funding rate and next funding time (None for delivery contracts)."""

    symbol: str
    mark_price: float
    index_price: float
    funding_rate: float | None
    next_funding_time_ms: int | None
    event_time_ms: int | None
    received_at: float
    received_wall: float

    stream = MARK

    @property
    def basis_bps(self) -> float:
        """(mark - index) / index, in basis points: the premium (> 0) or discount (< 0)."""
        return (self.mark_price - self.index_price) / self.index_price * 10_000.0


@attrs.frozen(slots=True)
class Liquidation:
    """A futures liquidation (``@forceOrder``): Binance sends at most one per symbol and second
    (the latest).

    ``side`` is the forced order's (``SELL`` closes a long position, ``BUY`` a short);
    ``quantity`` is what was filled, at ``price`` on average; ``notional`` is its value in the
    quote currency (USD-M) or in USD (COIN-M, where the quantity counts contracts).
    """

    symbol: str
    side: str
    price: float
    quantity: float
    notional: float
    trade_time_ms: int
    event_time_ms: int | None
    received_at: float
    received_wall: float

    stream = LIQUIDATION


MarketEvent = Trade | DepthSnapshot | DepthDiff | BookTicker | MarkPrice | Liquidation
