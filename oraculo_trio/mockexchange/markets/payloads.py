"""What every market model shares: the ``Market`` protocol, Binance's payload shapes, and the
exact arithmetic of prices and rates.

Payloads are byte-for-byte Binance spot shapes (the key order is the exchange's): prices and
quantities are strings with 8 decimals, ids and times are integers, and the ``@depthN``
partial books carry neither ``E`` nor the symbol.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import attrs

Payload = dict[str, Any]
Frame = tuple[str, Payload]

#: Prices and quantities are kept as integers of 1e-8 so formatting is exact.
UNITS = 100_000_000

#: Partial-book depths Binance spot offers (``@depth5``, ``@depth10``, ``@depth20``).
PARTIAL_DEPTHS = (5, 10, 20)

# Float noise when carrying fractional message counts across ticks.
_RATE_EPSILON = 1e-9


class Market(Protocol):
    """What ``MockExchange`` asks every tick.

    A market is pure and synchronous: ``tick(now, dt)`` takes the exchange time of the tick
    (epoch seconds; it becomes the ``E``/``T`` fields) and the tick length, and returns every
    ``(stream_name, payload)`` pair it produces during that tick. The exchange filters by
    subscription and serialises each payload once; a market never sees sockets, so its
    behaviour is tested by calling ``tick`` with an injected ``now``.

    ``symbols`` are upper-case Binance symbols (``BTCUSDT``); stream names use them in lower
    case (``btcusdt@trade``).
    """

    @property
    def symbols(self) -> Sequence[str]:
        """The upper-case symbols this market publishes."""
        ...

    def tick(self, now: float, dt: float) -> Iterable[Frame]:
        """Advance by one tick and return every frame produced during it.

        Args:
            now: exchange time of the tick, epoch seconds.
            dt: tick length in seconds.

        Returns:
            ``(stream_name, payload)`` pairs for ALL streams the market produces this tick
            (the exchange filters by subscription). A list or a lazy iterator: the exchange
            consumes it once, serialising each payload as it comes.
        """
        ...


@attrs.define
class RateCarry:
    """Whole messages due at a fractional rate: the fraction left over is carried to the next
    call, so the count is exact over time (never off by more than one message)."""

    carried: float = 0.0

    def take(self, amount: float, most: int | None = None) -> int:
        """Add ``amount`` messages and return the whole ones due (at most ``most``)."""
        self.carried += amount
        count = int(self.carried + _RATE_EPSILON)
        if most is not None and count > most:
            count = most
        self.carried -= count
        return count


def synthetic_symbols(count: int) -> list[str]:
    """``count`` synthetic upper-case symbols: ``SYM000USDT``, ``SYM001USDT``, ...

    Args:
        count: how many symbols (at least 1).

    Returns:
        The symbols, in order.

    Raises:
        ValueError: ``count`` is below 1.
    """
    if count < 1:
        raise ValueError(f"synthetic_symbols: count must be >= 1, got {count!r}")
    return [f"SYM{index:03d}USDT" for index in range(count)]


def format_units(units: int) -> str:
    """Format an integer count of 1e-8 as Binance does (``"50000.01000000"``).

    Args:
        units: the value times 1e8; negative values are clamped to zero.

    Returns:
        The decimal string with exactly 8 decimals.
    """
    whole, frac = divmod(max(units, 0), UNITS)
    return f"{whole}.{frac:08d}"


def to_units(value: float) -> int:
    """Round a float to an integer count of 1e-8."""
    return round(value * UNITS)


def trade_payload(
    symbol: str, trade_id: int, price: str, qty: str, now_ms: int, buyer_is_maker: bool
) -> Payload:
    """Build a spot ``@trade`` payload in Binance's key order.

    Args:
        symbol: upper-case symbol.
        trade_id: the trade id ``t``.
        price: price string (8 decimals).
        qty: quantity string (8 decimals).
        now_ms: event and trade time in epoch milliseconds.
        buyer_is_maker: ``m`` (true when the aggressor sold).

    Returns:
        ``{"e":"trade","E":..,"s":..,"t":..,"p":..,"q":..,"T":..,"m":..,"M":true}``.
    """
    return {
        "e": "trade",
        "E": now_ms,
        "s": symbol,
        "t": trade_id,
        "p": price,
        "q": qty,
        "T": now_ms,
        "m": buyer_is_maker,
        "M": True,
    }


def agg_trade_payload(
    symbol: str,
    agg_id: int,
    trade_id: int,
    price: str,
    qty: str,
    now_ms: int,
    buyer_is_maker: bool,
) -> Payload:
    """Build a spot ``@aggTrade`` payload aggregating the single trade ``trade_id``.

    Args:
        symbol: upper-case symbol.
        agg_id: the aggregate trade id ``a``.
        trade_id: first and last trade id (``f`` = ``l``).
        price: price string (8 decimals).
        qty: quantity string (8 decimals).
        now_ms: event and trade time in epoch milliseconds.
        buyer_is_maker: ``m``.

    Returns:
        ``{"e":"aggTrade","E":..,"s":..,"a":..,"p":..,"q":..,"f":..,"l":..,"T":..,"m":..,
        "M":true}``.
    """
    return {
        "e": "aggTrade",
        "E": now_ms,
        "s": symbol,
        "a": agg_id,
        "p": price,
        "q": qty,
        "f": trade_id,
        "l": trade_id,
        "T": now_ms,
        "m": buyer_is_maker,
        "M": True,
    }


def check_nonnegative(_instance: object, attribute: attrs.Attribute, value: float | None) -> None:
    """An attrs validator: ``value`` is None or >= 0."""
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def check_positive(_instance: object, attribute: attrs.Attribute, value: float | None) -> None:
    """An attrs validator: ``value`` is None or > 0."""
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")
