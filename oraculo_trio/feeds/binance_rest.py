"""Binance's REST facts that the service and the mock exchange both follow.

Per market (:mod:`oraculo_trio.feeds.binance_markets`): the paths, the request weight of a
depth snapshot by its ``limit``, the weight an IP may spend per minute, and what a 429 or
418 without ``Retry-After`` means. Also the bodies the service reads besides snapshots:
``exchangeInfo`` (which symbols exist and trade), ``time`` (the exchange's clock) and past
trades by id (``aggTrades``, ``historicalTrades``: the backfill of a gap). The
snapshot fetcher (:mod:`oraculo_trio.pipeline.snapshots`) spends within these limits; the
mock exchange (its REST server) enforces them.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterable, Mapping
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import attrs
import msgspec

from oraculo_trio.core.events import Trade
from oraculo_trio.core.markets import SPOT
from oraculo_trio.feeds.binance_markets import (
    AGG_TRADES,
    BINANCE_MARKETS,
    DEPTH,
    HISTORICAL_TRADES,
    KIND_AGG_TRADE,
    KIND_TRADE,
    binance_market,
)

# Binance spot allows an IP this much request weight per window, for everything it sends
# (other markets: BinanceMarket.ip_weight_limit).
IP_WEIGHT_LIMIT = BINANCE_MARKETS[SPOT].ip_weight_limit
IP_WEIGHT_WINDOW = 60.0

DEPTH_PATH = BINANCE_MARKETS[SPOT].path(DEPTH)
MAX_SNAPSHOT_LIMIT = BINANCE_MARKETS[SPOT].max_depth_limit

# Seconds to stop for when a 429 or 418 comes without Retry-After (Binance bans for 2 min
# at least).
DEFAULT_RETRY_AFTER = {429: 60.0, 418: 120.0}

TRADING = "TRADING"
"""The status of a symbol that trades (spot ``status``, futures ``contractStatus``)."""


def snapshot_weight(limit: int, market: str = SPOT) -> int:
    """Binance's request weight of ``GET <prefix>/depth`` with ``limit`` levels per side.

    Raises:
        ValueError: ``limit`` is not one ``market`` accepts (the message lists them).
    """
    return binance_market(market).depth_weight(limit)


def rest_base_url(rest_url: str, ws_url: str, market: str = SPOT) -> str:
    """The REST base URL: ``rest_url`` when set, else derived from the WebSocket URL.

    An empty ``ws_url`` (or the market's own stream base) gives the market's REST base
    (``https://api.binance.com``, ``https://fapi.binance.com``...); a ``stream.`` host gives
    its ``api.`` twin (``wss://stream.binance.us:9443`` -> ``https://api.binance.us``); any
    other ``ws(s)://host:port`` gives ``http(s)://host:port``.
    """
    if rest_url:
        return rest_url.rstrip("/")
    spec = binance_market(market)
    if not ws_url or ws_url.rstrip("/") == spec.ws_url:
        return spec.rest_url
    parts = urlsplit(ws_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    host = parts.hostname or ""
    if host.startswith("stream."):
        return f"{scheme}://api.{host[len('stream.') :]}"
    return urlunsplit((scheme, parts.netloc, "", "", "")).rstrip("/")


def ws_base_url(ws_url: str, market: str = SPOT) -> str:
    """The stream base URL: ``ws_url`` when set, else the market's."""
    return ws_url.rstrip("/") if ws_url else binance_market(market).ws_url


# ---------------------------------------------------------------------------------------
# exchangeInfo


class ExchangeInfoError(ValueError):
    """Raised by :func:`parse_exchange_info` when a body is not an exchangeInfo answer."""


class _Symbol(msgspec.Struct, gc=False):
    symbol: str
    status: str | None = None
    contractStatus: str | None = None


class _ExchangeInfo(msgspec.Struct, gc=False):
    symbols: list[_Symbol]


_EXCHANGE_INFO = msgspec.json.Decoder(_ExchangeInfo)


def parse_exchange_info(body: bytes | str, market: str = SPOT) -> dict[str, str]:
    """``{symbol: trading status}`` of an exchangeInfo body of ``market``.

    Raises:
        ExchangeInfoError: not JSON, or no ``symbols`` list of objects with a ``symbol``.
    """
    status_key = binance_market(market).status_key
    try:
        info = _EXCHANGE_INFO.decode(body)
    except msgspec.DecodeError as exc:
        raise ExchangeInfoError(f"not an exchangeInfo answer: {exc}") from None
    return {s.symbol: (getattr(s, status_key) or s.status or "") for s in info.symbols}


@attrs.frozen
class SymbolProblem:
    """One configured symbol the exchange does not trade: unknown (with close names) or
    listed with another status (``BREAK``: halted or delisted; ``DELIVERED``...)."""

    symbol: str
    status: str | None
    suggestions: tuple[str, ...] = ()

    def describe(self, market: str) -> str:
        title = binance_market(market).title
        if self.status is None:
            names = " or ".join(map(repr, self.suggestions))
            hint = f"; did you mean {names}?" if self.suggestions else ""
            return f"{self.symbol!r} is not a {title} symbol{hint}"
        return f"{self.symbol!r} does not trade on {title} (status {self.status})"


def check_symbols(symbols: Iterable[str], listed: Mapping[str, str]) -> list[SymbolProblem]:
    """The symbols of ``symbols`` (the exchange's names) ``listed`` does not show trading.

    Args:
        symbols: configured symbols, upper case.
        listed: :func:`parse_exchange_info`'s answer.
    """
    problems = []
    for symbol in symbols:
        status = listed.get(symbol)
        if status == TRADING:
            continue
        suggestions: tuple[str, ...] = ()
        if status is None:
            trading = [name for name, state in listed.items() if state == TRADING]
            suggestions = tuple(difflib.get_close_matches(symbol, trading, n=3, cutoff=0.6))
        problems.append(SymbolProblem(symbol, status, suggestions))
    return problems


def parse_server_time(body: bytes | str) -> int:
    """``serverTime`` (Unix ms) of a ``GET <prefix>/time`` body.

    Raises:
        ValueError: anything else.
    """
    try:
        value: Any = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a time answer: {exc}") from None
    server_time = value.get("serverTime") if isinstance(value, dict) else None
    if not isinstance(server_time, int) or isinstance(server_time, bool) or server_time <= 0:
        raise ValueError(f"not a time answer: {str(value)[:80]!r}")
    return server_time


# ---------------------------------------------------------------------------------------
# aggTrades and historicalTrades (the backfill of a gap in trade ids)

_PRICE = Annotated[float, msgspec.Meta(gt=0.0, le=sys.float_info.max)]
_QTY = Annotated[float, msgspec.Meta(ge=0.0, le=sys.float_info.max)]


class _RestAggTrade(msgspec.Struct, gc=False):
    a: int
    p: _PRICE
    q: _QTY
    T: int
    m: bool


class _RestTrade(msgspec.Struct, gc=False):
    id: int
    price: _PRICE
    qty: _QTY
    time: int
    isBuyerMaker: bool


_REST_TRADES = {
    KIND_AGG_TRADE: msgspec.json.Decoder(list[_RestAggTrade], strict=False),
    KIND_TRADE: msgspec.json.Decoder(list[_RestTrade], strict=False),
}


class BadTrades(ValueError):
    """Raised by :func:`decode_rest_trades` when a body is not a list of trades."""


def trades_path(kind: str, market: str = SPOT) -> str:
    """Where ``market`` serves past trades of ``kind`` by id: ``<prefix>/aggTrades`` for
    ``aggTrade``, ``<prefix>/historicalTrades`` for ``trade``."""
    endpoint = AGG_TRADES if kind == KIND_AGG_TRADE else HISTORICAL_TRADES
    return binance_market(market).path(endpoint)


def trades_weight(kind: str, market: str = SPOT) -> int:
    """The request weight of :func:`trades_path`."""
    spec = binance_market(market)
    return spec.agg_trades_weight if kind == KIND_AGG_TRADE else spec.historical_trades_weight


def backfills_without_key(kind: str, market: str = SPOT) -> bool:
    """Whether past trades of ``kind`` can be fetched from ``market`` without an API key:
    aggTrades everywhere; raw trades (``historicalTrades``) on spot only."""
    return kind == KIND_AGG_TRADE or binance_market(market).historical_trades_keyless


def decode_rest_trades(
    body: bytes, kind: str, symbol: str, received_at: float, received_wall: float
) -> list[Trade]:
    """The trades of an ``aggTrades`` or ``historicalTrades`` body, as stream trades of
    ``symbol`` (the service's name) would be: their event time is their trade time.

    Raises:
        BadTrades: not JSON, or not a list of trades of that kind with valid values.
    """
    try:
        rows = _REST_TRADES[kind].decode(body)
    except (msgspec.DecodeError, KeyError) as exc:
        raise BadTrades(f"not a list of {kind}s: {exc}") from None
    if kind == KIND_AGG_TRADE:
        return [
            Trade(symbol, r.p, r.q, r.m, r.a, r.T, r.T, received_at, received_wall, kind)
            for r in rows
        ]
    return [
        Trade(
            symbol, r.price, r.qty, r.isBuyerMaker, r.id, r.time, r.time, received_at,
            received_wall, kind,
        )
        for r in rows
    ]  # fmt: skip
