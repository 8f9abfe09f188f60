"""Markets and symbol identity: one name per (market, symbol) everywhere in the service.

Binance runs four markets that share symbol names: spot (binance.com), Binance.US, USD-M
futures and COIN-M futures. ``BTCUSDT`` on spot and ``BTCUSDT`` on USD-M are two books, two
trade tapes and two sets of alerts, so the service names a symbol by its market too:

- spot keeps the exchange's plain name (``BTCUSDT``): configurations, rule files, stores,
  partitions and metric labels written before markets existed mean the same thing;
- every other market prefixes it (``us:BTCUSD``, ``usdm:BTCUSDT``, ``coinm:BTCUSD_PERP``).

That name is an event's ``symbol``, the engines' and the store's key, the partition input
and what a rule file's ``symbols`` selects (``symbols = ["usdm:BTCUSDT"]``; a glob such as
``"usdm:*"`` selects a whole market).
"""

from __future__ import annotations

SPOT = "spot"
US = "us"
USDM = "usdm"
COINM = "coinm"
MARKETS = (SPOT, US, USDM, COINM)
"""``feed.market`` values: Binance spot, Binance.US, USD-M futures, COIN-M futures."""

FUTURES_MARKETS = (USDM, COINM)
"""Markets whose diff books chain on ``pu`` (Binance's futures sync procedure)."""

SEPARATOR = ":"


def qualified(market: str, symbol: str) -> str:
    """The service's name of ``symbol`` (the exchange's, upper case) on ``market``.

    ``qualified("spot", "BTCUSDT")`` is ``"BTCUSDT"``; ``qualified("usdm", "BTCUSDT")`` is
    ``"usdm:BTCUSDT"``.
    """
    return symbol if market == SPOT else f"{market}{SEPARATOR}{symbol}"


def split(name: str) -> tuple[str, str]:
    """``(market, exchange symbol)`` of a service symbol name: the inverse of :func:`qualified`.

    A name without a known market prefix is spot.
    """
    market, sep, symbol = name.partition(SEPARATOR)
    if sep and market in MARKETS:
        return market, symbol
    return SPOT, name


def normalized(name: str) -> str:
    """A symbol name (or glob) as a user may write it, in the service's spelling: market
    prefix in lower case, symbol in upper case, no ``spot:`` prefix
    (``"USDM:btcusdt"`` -> ``"usdm:BTCUSDT"``, ``"spot:btc*"`` -> ``"BTC*"``)."""
    market, sep, symbol = name.partition(SEPARATOR)
    if sep and market.lower() in MARKETS:
        return qualified(market.lower(), symbol.upper())
    return name.upper()


def market_of(name: str) -> str:
    """The market of a service symbol name (``"usdm:BTCUSDT"`` -> ``"usdm"``)."""
    return split(name)[0]


def chains_on_previous_id(name: str) -> bool:
    """Whether the diff book of this service symbol follows the futures procedure (``pu``)."""
    return split(name)[0] in FUTURES_MARKETS
