"""Frames of the markets other than spot: futures payloads, and events named by market.

:mod:`oraculo_trio.feeds.binance` decodes spot frames on its own fast path. A connection to
another market (Binance.US, USD-M, COIN-M) names its symbols by market
(``usdm:BTCUSDT``, :mod:`oraculo_trio.core.markets`) while the payloads carry the exchange's
name (``BTCUSDT``), so its builders take both: they check the payload against the exchange's
name and build the event under the service's. Binance.US sends spot's payloads; futures
differ (see ``tests/data/binance-futures/README.md``):

- diffs carry ``pu`` (the symbol's previous ``u``) and ``T``; partial books (``@depthN``)
  are diff-shaped (``e``, ``E``, ``T``, ``s``, ``U``, ``u``, ``pu``, ``b``, ``a``);
- ``@markPrice@1s``: mark price ``p``, index price ``i``, funding rate ``r`` (``""`` for a
  delivery contract) and next funding time ``T`` (0 for a delivery contract);
- ``@forceOrder``: a liquidation, the order in ``o`` (side ``S``, average price ``ap``,
  filled quantity ``z``; COIN-M quantities count contracts).

A builder raises :class:`PayloadError` (or ``ValueError`` for a value it cannot use); the
decoder turns either into a bad frame. Nothing here is on spot's path.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated, Any

import msgspec

from oraculo_trio.core.events import (
    BookTicker,
    DepthDiff,
    DepthSnapshot,
    Liquidation,
    MarketEvent,
    MarkPrice,
    Trade,
)
from oraculo_trio.core.markets import COINM, market_of
from oraculo_trio.feeds.binance_markets import (
    KIND_AGG_TRADE,
    KIND_BOOK_TICKER,
    KIND_DEPTH_DIFF,
    KIND_FORCE_ORDER,
    KIND_MARK_PRICE,
    KIND_TRADE,
    PARTIAL_DEPTH_KINDS,
    coinm_contract_size,
)


class PayloadError(ValueError):
    """Raised by a builder when a payload is not what its stream promises (another symbol,
    an impossible update range); the decoder counts it as ``invalid_payload``."""


_FLOAT_MAX = sys.float_info.max
_PRICE = Annotated[float, msgspec.Meta(gt=0.0, le=_FLOAT_MAX)]
_QTY = Annotated[float, msgspec.Meta(ge=0.0, le=_FLOAT_MAX)]


def _fields(price: Any, qty: Any, tag: str) -> dict[str, list[tuple[Any, ...]]]:
    levels = tuple[tuple[price, qty], ...]
    order = msgspec.defstruct(
        f"{tag}_order",
        [("s", str), ("S", str), ("p", qty), ("ap", qty), ("z", qty), ("T", int)],
        gc=False,
    )
    return {
        KIND_DEPTH_DIFF: [
            ("s", str), ("U", int), ("u", int), ("pu", int), ("b", levels), ("a", levels),
            ("E", int | None, None), ("T", int | None, None),
        ],
        "partial": [
            ("s", str), ("U", int), ("u", int), ("pu", int), ("b", levels), ("a", levels),
            ("E", int), ("T", int | None, None),
        ],
        KIND_MARK_PRICE: [
            ("s", str), ("p", price), ("i", price), ("r", str), ("T", int),
            ("E", int | None, None),
        ],
        KIND_FORCE_ORDER: [("o", order), ("E", int | None, None)],
    }  # fmt: skip


def _decoders(price: Any, qty: Any, tag: str) -> dict[str, msgspec.json.Decoder]:
    decoders = {
        KIND_PREFIX + kind: msgspec.json.Decoder(
            msgspec.defstruct(f"{tag}_{kind}", fields, gc=False), strict=False
        )
        for kind, fields in _fields(price, qty, tag).items()
    }
    for kind in PARTIAL_DEPTH_KINDS:
        decoders[KIND_PREFIX + kind] = decoders[KIND_PREFIX + "partial"]
    return decoders


KIND_PREFIX = "futures:"
"""Futures payloads that differ from spot's decode under ``futures:<kind>`` (``@depthN``
under ``futures:partial``); trades, aggTrades and book tickers decode as spot's do."""

FUTURES_DECODERS = _decoders(_PRICE, _QTY, "Futures")
"""The checked decoders (prices > 0, quantities >= 0, finite), by ``futures:<kind>``."""

FUTURES_LAX = _decoders(float, float, "FuturesLax")
"""Plain-float decoders, to tell a bad value from a bad shape after a failure."""


MarketBuilder = Callable[[Any, str, str, str, float, float], MarketEvent]
"""``(payload, service symbol, exchange symbol, kind, read stamp, wall stamp) -> event``."""


def _check(payload_symbol: str, wire: str) -> None:
    if payload_symbol != wire:
        raise PayloadError(f"payload symbol {payload_symbol!r} on a {wire} stream")


def _trade(m: Any, symbol: str, wire: str, kind: str, at: float, wall: float) -> Trade:
    _check(m.s, wire)
    return Trade(symbol, m.p, m.q, m.m, m.t, m.T, m.E, at, wall, kind)


def _agg_trade(m: Any, symbol: str, wire: str, kind: str, at: float, wall: float) -> Trade:
    _check(m.s, wire)
    return Trade(symbol, m.p, m.q, m.m, m.a, m.T, m.E, at, wall, kind)


def _book_ticker(m: Any, symbol: str, wire: str, kind: str, at: float, wall: float) -> BookTicker:
    _check(m.s, wire)
    return BookTicker(symbol, m.b, m.B, m.a, m.A, m.u, at, wall)


def _diff(m: Any, symbol: str, wire: str, kind: str, at: float, wall: float) -> DepthDiff:
    _check(m.s, wire)
    if m.u < m.U:
        raise PayloadError(f"{symbol} diff with U={m.U} > u={m.u}")
    return DepthDiff(symbol, m.U, m.u, m.b, m.a, m.E, at, wall, getattr(m, "pu", None))


def _partial(m: Any, symbol: str, wire: str, kind: str, at: float, wall: float) -> DepthSnapshot:
    if hasattr(m, "pu"):  # futures: diff-shaped, the symbol and E always there
        _check(m.s, wire)
        return DepthSnapshot(symbol, m.b, m.a, m.u, m.E, at, wall)
    bids = m.bids if m.bids is not None else m.b
    asks = m.asks if m.asks is not None else m.a
    last_update_id = m.lastUpdateId if m.lastUpdateId is not None else m.u
    if bids is None or asks is None or last_update_id is None:
        raise PayloadError(f"{symbol} partial book without bids/asks/lastUpdateId")
    if m.s is not None:
        _check(m.s, wire)
    return DepthSnapshot(symbol, bids, asks, last_update_id, m.E, at, wall)


def _mark_price(m: Any, symbol: str, wire: str, kind: str, at: float, wall: float) -> MarkPrice:
    _check(m.s, wire)
    # Delivery contracts: no funding ("" and a next funding time of 0).
    rate = float(m.r) if m.r else None
    if rate is not None and not -1.0 < rate < 1.0:
        raise ValueError(f"{symbol} funding rate {m.r!r} out of range")
    return MarkPrice(symbol, m.p, m.i, rate, m.T or None, m.E, at, wall)


def _force_order(m: Any, symbol: str, wire: str, kind: str, at: float, wall: float) -> Liquidation:
    order = m.o
    _check(order.s, wire)
    price = order.ap or order.p
    quantity = order.z
    if market_of(symbol) == COINM:
        notional = quantity * coinm_contract_size(wire)
    else:
        notional = quantity * price
    return Liquidation(symbol, order.S, price, quantity, notional, order.T, m.E, at, wall)


MARKET_BUILDERS: dict[str, MarketBuilder] = {
    KIND_TRADE: _trade,
    KIND_AGG_TRADE: _agg_trade,
    KIND_BOOK_TICKER: _book_ticker,
    KIND_DEPTH_DIFF: _diff,
    **{kind: _partial for kind in PARTIAL_DEPTH_KINDS},
    KIND_MARK_PRICE: _mark_price,
    KIND_FORCE_ORDER: _force_order,
}
"""The builder of each stream kind, for every market but spot."""
