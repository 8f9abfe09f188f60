"""Binance's four markets, as data: where each one serves its streams and REST endpoints,
what a symbol looks like there, which streams and speeds it offers, what its requests weigh
and how much weight an IP may spend.

The service (feed connections, the snapshot fetcher, the start-up check of the symbols, the
clock offset) and the mock exchange read the same rows, so a test against the mock follows
the exchange's own rules. Sources: Binance's API documentation for spot
(``binance-spot-api-docs``), Binance.US, USD-M futures and COIN-M futures (request weights
as published; spot's ``historicalTrades`` needs no API key since 2023, the others' do).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import attrs

from oraculo_trio.core.markets import COINM, MARKETS, SPOT, US, USDM

KIND_TRADE = "trade"
KIND_AGG_TRADE = "aggTrade"
KIND_BOOK_TICKER = "bookTicker"
KIND_DEPTH5 = "depth5"
KIND_DEPTH10 = "depth10"
KIND_DEPTH20 = "depth20"
KIND_DEPTH_DIFF = "depth"
KIND_MARK_PRICE = "markPrice"
KIND_FORCE_ORDER = "forceOrder"

PARTIAL_DEPTH_KINDS = (KIND_DEPTH5, KIND_DEPTH10, KIND_DEPTH20)
DEPTH_KINDS = (*PARTIAL_DEPTH_KINDS, KIND_DEPTH_DIFF)
SPOT_KINDS = (KIND_TRADE, KIND_AGG_TRADE, KIND_BOOK_TICKER, *DEPTH_KINDS)
FUTURES_ONLY_KINDS = (KIND_MARK_PRICE, KIND_FORCE_ORDER)
FUTURES_KINDS = (KIND_AGG_TRADE, KIND_BOOK_TICKER, *DEPTH_KINDS, *FUTURES_ONLY_KINDS)

MARK_PRICE_SPEED = "@1s"
"""``<symbol>@markPrice@1s``: every second (without it, every 3 s)."""

# REST endpoints, the same on every market under its prefix (BinanceMarket.path).
DEPTH = "depth"
EXCHANGE_INFO = "exchangeInfo"
TIME = "time"
AGG_TRADES = "aggTrades"
HISTORICAL_TRADES = "historicalTrades"

MAX_STREAMS_PER_CONNECTION = 1024
"""Binance refuses more streams than this on one connection."""


@attrs.frozen
class BinanceMarket:
    """One Binance market.

    Attributes:
        name: ``feed.market`` (``spot``, ``us``, ``usdm``, ``coinm``).
        title: for messages.
        ws_url: default stream base (``feed.url``).
        rest_url: default REST base (``feed.rest_url``).
        prefix: the REST paths' prefix (``/api/v3``, ``/fapi/v1``, ``/dapi/v1``).
        ip_weight_limit: request weight an IP may spend per minute, everything included.
        depth_weights: ``(largest limit, weight)`` of ``GET <prefix>/depth``, ascending.
        depth_limits: the only ``limit`` values accepted, or None for any up to the last
            row of ``depth_weights``.
        agg_trades_weight: ``GET <prefix>/aggTrades``.
        historical_trades_weight: ``GET <prefix>/historicalTrades``.
        historical_trades_keyless: whether ``historicalTrades`` answers without an API key.
        exchange_info_weight: ``GET <prefix>/exchangeInfo`` (every symbol).
        time_weight: ``GET <prefix>/time``.
        kinds: the stream kinds offered.
        speeds: depth streams' update period (ms) -> stream-name suffix; the period
            without a suffix is the market's default speed.
        symbol_pattern: what an exchange symbol looks like (upper case).
        symbol_example: for messages.
        chained: diff books follow the futures procedure (``pu``, see core/sync.py).
        status_key: the exchangeInfo symbol field holding its trading status.
    """

    name: str
    title: str
    ws_url: str
    rest_url: str
    prefix: str
    ip_weight_limit: int
    depth_weights: tuple[tuple[int, int], ...]
    depth_limits: tuple[int, ...] | None
    agg_trades_weight: int
    historical_trades_weight: int
    historical_trades_keyless: bool
    exchange_info_weight: int
    time_weight: int
    kinds: tuple[str, ...]
    speeds: Mapping[int, str]
    symbol_pattern: re.Pattern[str]
    symbol_example: str
    chained: bool = False
    status_key: str = "status"

    def path(self, endpoint: str) -> str:
        """The REST path of ``endpoint`` (:data:`DEPTH`, :data:`EXCHANGE_INFO`...) here:
        ``/api/v3/depth``, ``/fapi/v1/depth``..."""
        return f"{self.prefix}/{endpoint}"

    @property
    def max_depth_limit(self) -> int:
        return self.depth_weights[-1][0]

    def depth_weight(self, limit: int) -> int:
        """The request weight of a depth snapshot of ``limit`` levels a side.

        Raises:
            ValueError: a ``limit`` this market does not accept (the message lists them).
        """
        if self.depth_limits is not None and limit not in self.depth_limits:
            allowed = ", ".join(map(str, self.depth_limits))
            raise ValueError(f"limit={limit!r}: {self.title} allows {allowed}")
        for most, weight in self.depth_weights:
            if 1 <= limit <= most:
                return weight
        raise ValueError(f"limit={limit!r}: {self.title} allows 1..{self.max_depth_limit}")

    def is_symbol(self, symbol: str) -> bool:
        """Whether ``symbol`` (upper case) is spelled as this market spells symbols."""
        return self.symbol_pattern.fullmatch(symbol) is not None


_SPOT_DEPTH = ((100, 5), (500, 25), (1000, 50), (5000, 250))
_US_DEPTH = ((100, 1), (500, 5), (1000, 10), (5000, 50))
_FUTURES_DEPTH = ((50, 2), (100, 5), (500, 10), (1000, 20))
_FUTURES_LIMITS = (5, 10, 20, 50, 100, 500, 1000)
_US_LIMITS = (5, 10, 20, 50, 100, 500, 1000, 5000)
_SPOT_SPEEDS = {100: "@100ms", 1000: ""}
_FUTURES_SPEEDS = {100: "@100ms", 250: "", 500: "@500ms"}
_SPOT_SYMBOL = re.compile(r"[A-Z0-9]{2,30}")

BINANCE_MARKETS: Mapping[str, BinanceMarket] = {
    SPOT: BinanceMarket(
        SPOT,
        "Binance spot",
        "wss://stream.binance.com:9443",
        "https://api.binance.com",
        "/api/v3",
        ip_weight_limit=6000,
        depth_weights=_SPOT_DEPTH,
        depth_limits=None,
        agg_trades_weight=4,
        historical_trades_weight=25,
        historical_trades_keyless=True,
        exchange_info_weight=20,
        time_weight=1,
        kinds=SPOT_KINDS,
        speeds=_SPOT_SPEEDS,
        symbol_pattern=_SPOT_SYMBOL,
        symbol_example="BTCUSDT",
    ),
    US: BinanceMarket(
        US,
        "Binance.US",
        "wss://stream.binance.us:9443",
        "https://api.binance.us",
        "/api/v3",
        ip_weight_limit=1200,
        depth_weights=_US_DEPTH,
        depth_limits=_US_LIMITS,
        agg_trades_weight=1,
        historical_trades_weight=5,
        historical_trades_keyless=False,
        exchange_info_weight=10,
        time_weight=1,
        kinds=SPOT_KINDS,
        speeds=_SPOT_SPEEDS,
        symbol_pattern=_SPOT_SYMBOL,
        symbol_example="BTCUSD",
    ),
    USDM: BinanceMarket(
        USDM,
        "Binance USD-M futures",
        "wss://fstream.binance.com",
        "https://fapi.binance.com",
        "/fapi/v1",
        ip_weight_limit=2400,
        depth_weights=_FUTURES_DEPTH,
        depth_limits=_FUTURES_LIMITS,
        agg_trades_weight=20,
        historical_trades_weight=20,
        historical_trades_keyless=False,
        exchange_info_weight=1,
        time_weight=1,
        kinds=FUTURES_KINDS,
        speeds=_FUTURES_SPEEDS,
        # Perpetuals BTCUSDT; quarterly deliveries BTCUSDT_250328.
        symbol_pattern=re.compile(r"[A-Z0-9]{2,30}(_[0-9]{6})?"),
        symbol_example="BTCUSDT",
        chained=True,
    ),
    COINM: BinanceMarket(
        COINM,
        "Binance COIN-M futures",
        "wss://dstream.binance.com",
        "https://dapi.binance.com",
        "/dapi/v1",
        ip_weight_limit=2400,
        depth_weights=_FUTURES_DEPTH,
        depth_limits=_FUTURES_LIMITS,
        agg_trades_weight=20,
        historical_trades_weight=20,
        historical_trades_keyless=False,
        exchange_info_weight=1,
        time_weight=1,
        kinds=FUTURES_KINDS,
        speeds=_FUTURES_SPEEDS,
        # Perpetuals BTCUSD_PERP; quarterly deliveries BTCUSD_251226.
        symbol_pattern=re.compile(r"[A-Z0-9]{2,30}_(PERP|[0-9]{6})"),
        symbol_example="BTCUSD_PERP",
        chained=True,
        status_key="contractStatus",
    ),
}
"""Every market by ``feed.market`` name (in the order of ``core.markets.MARKETS``)."""


def binance_market(name: str) -> BinanceMarket:
    """The market called ``name``.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    try:
        return BINANCE_MARKETS[name]
    except KeyError:
        raise ValueError(f"market {name!r}: expected one of {', '.join(MARKETS)}") from None


def coinm_contract_size(symbol: str) -> float:
    """USD per COIN-M contract: 100 for BTC contracts, 10 for every other (Binance's sizes;
    ``exchangeInfo`` says ``contractSize``)."""
    return 100.0 if symbol.startswith("BTCUSD_") else 10.0


# ---------------------------------------------------------------------------------------
# Stream names and URLs


def _is_stream_symbol(symbol: str) -> bool:
    return bool(symbol) and symbol.isascii() and symbol.isalnum() and symbol == symbol.lower()


def stream_name(symbol: str, kind: str, *, update_ms: int | None = None, market: str = SPOT) -> str:
    """Return the Binance stream name for ``symbol`` and ``kind`` on ``market``.

    Args:
        symbol: The exchange's symbol in any case (``"BTCUSDT"``, ``"BTCUSD_PERP"``); stream
            names use lower case.
        kind: One of the market's kinds. ``"depth"`` is the diff stream, ``"depthN"`` partial
            books, ``"markPrice"`` the 1 s mark price stream.
        update_ms: Depth kinds only: 100 (default) or a speed the market offers (spot 1000,
            futures 250 and 500).
        market: ``feed.market`` (default spot).

    Returns:
        For example ``"btcusdt@depth20@100ms"``, ``"btcusdt@depth"``, ``"btcusdt@aggTrade"``,
        ``"btcusd_perp@markPrice@1s"``.

    Raises:
        ValueError: Unknown market or kind, a kind or speed the market does not offer, or a
            symbol the market does not spell that way.
    """
    spec = binance_market(market)
    upper = symbol.upper()
    if not spec.is_symbol(upper):
        raise ValueError(
            f"symbol {symbol!r} is not a {spec.title} symbol (such as {spec.symbol_example})"
        )
    lowered = symbol.lower()
    if kind not in spec.kinds:
        raise ValueError(f"stream kind {kind!r}: {spec.title} offers {', '.join(spec.kinds)}")
    if kind in DEPTH_KINDS:
        speed = spec.speeds.get(100 if update_ms is None else update_ms)
        if speed is None:
            allowed = ", ".join(map(str, spec.speeds))
            raise ValueError(f"update_ms={update_ms!r} for {kind!r}: {spec.title} offers {allowed}")
        return f"{lowered}@{kind}{speed}"
    if update_ms is not None:
        raise ValueError(f"update_ms={update_ms!r} given for {kind!r}, which has no speed")
    if kind == KIND_MARK_PRICE:
        return f"{lowered}@{kind}{MARK_PRICE_SPEED}"
    return f"{lowered}@{kind}"


def parse_stream_name(name: str, market: str = SPOT) -> tuple[str, str] | None:
    """Return ``(SYMBOL, kind)`` for a stream name :func:`stream_name` can produce.

    ``"btcusdt@depth@100ms"`` gives ``("BTCUSDT", "depth")`` (the exchange's symbol, not the
    service's market-qualified name). Returns None for anything else, including wrong case
    (``"BTCUSDT@trade"``, ``"btcusdt@aggtrade"``), speeds the market does not offer, kinds of
    another market and special streams such as ``!serverShutdown``.
    """
    symbol, sep, rest = name.partition("@")
    if not sep:
        return None
    if market == SPOT:
        # Spot's own check, first: the decoder learns stream names this way.
        if not _is_stream_symbol(symbol):
            return None
        kind, sep, speed = rest.partition("@")
        if kind in DEPTH_KINDS:
            if sep and speed != "100ms":
                return None
        elif kind not in SPOT_KINDS or sep:
            return None
        return symbol.upper(), kind
    spec = binance_market(market)
    upper = symbol.upper()
    if symbol != symbol.lower() or not spec.is_symbol(upper):
        return None
    kind, sep, speed = rest.partition("@")
    if kind not in spec.kinds:
        return None
    if kind in DEPTH_KINDS:
        if sep and "@" + speed not in spec.speeds.values():
            return None
    elif kind == KIND_MARK_PRICE:
        if "@" + speed != MARK_PRICE_SPEED:
            return None
    elif sep:
        return None
    return upper, kind


def combined_urls(
    base_url: str,
    streams: Iterable[str],
    *,
    max_streams: int = MAX_STREAMS_PER_CONNECTION,
    market: str = SPOT,
) -> list[str]:
    """Return combined-stream URLs covering ``streams``, at most ``max_streams`` each.

    ``base/stream?streams=a/b/c``; more streams give more URLs (one connection each), in
    the order given. Duplicates are subscribed once.

    Args:
        base_url: For example :data:`DEFAULT_BASE_URL`; a trailing ``/`` is ignored.
        streams: Stream names as :func:`stream_name` builds them.
        max_streams: Streams per URL, 1 to 1024.
        market: the market the streams are of (default spot).

    Returns:
        One URL per chunk; an empty list for no streams.

    Raises:
        ValueError: A stream name :func:`parse_stream_name` does not know, or ``max_streams``
            out of range.
    """
    if not 1 <= max_streams <= MAX_STREAMS_PER_CONNECTION:
        raise ValueError(f"max_streams={max_streams!r}: allowed 1 to {MAX_STREAMS_PER_CONNECTION}")
    unique = list(dict.fromkeys(streams))
    for name in unique:
        if parse_stream_name(name, market) is None:
            raise ValueError(f"stream {name!r} is not a Binance stream name this adapter knows")
    base = base_url.rstrip("/")
    return [
        f"{base}/stream?streams={'/'.join(unique[start : start + max_streams])}"
        for start in range(0, len(unique), max_streams)
    ]


def raw_url(base_url: str, stream: str, market: str = SPOT) -> str:
    """Return the raw-stream URL ``base/ws/<stream>`` (frames are payloads, no envelope).

    Raises:
        ValueError: A stream name :func:`parse_stream_name` does not know.
    """
    if parse_stream_name(stream, market) is None:
        raise ValueError(f"stream {stream!r} is not a Binance stream name this adapter knows")
    return f"{base_url.rstrip('/')}/ws/{stream}"
