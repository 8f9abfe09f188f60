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
    (Binance ``U``) and ``final_update_id`` (``u``)."""

    symbol: str
    first_update_id: int
    final_update_id: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    event_time_ms: int | None
    received_at: float
    received_wall: float

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


MarketEvent = Trade | DepthSnapshot | DepthDiff | BookTicker
