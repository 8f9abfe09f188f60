"""Random walks: synthetic symbols whose mid moves a tick at a time, for load.

``RandomWalkMarket`` publishes ``@depthN@100ms`` snapshots and ``@trade`` frames at an exact
total rate; ``start_walks`` and ``quantity_pool`` are the pieces the load market
(``markets/load.py``) builds on.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import TypeVar

import attrs

from oraculo_trio.mockexchange.markets.payloads import (
    PARTIAL_DEPTHS,
    Frame,
    Payload,
    RateCarry,
    check_nonnegative,
    format_units,
    to_units,
    trade_payload,
)


@attrs.define(eq=False)
class WalkSymbol:
    """One symbol's random walk: streams, price ladder, mid and ids (:func:`start_walks`)."""

    symbol: str
    depth_stream: str
    trade_stream: str
    # Price strings of the walk's whole range, ascending and descending (index = tick).
    ladder: list[str]
    ladder_desc: list[str]
    mid: int
    update_id: int
    trade_id: int
    best_bid: int = 0
    best_ask: int = 0


#: Ticks a walk may range over (it reflects at the edges).
WALK_RANGE = 512
_QTY_POOL_SIZE = 256
_STEPS = (-1, 0, 0, 1)

WalkT = TypeVar("WalkT", bound=WalkSymbol)


def start_walks(
    make: type[WalkT], symbols: Sequence[str], levels: int, rng: random.Random, top: float
) -> list[WalkT]:
    """One walk per symbol, at the middle of a :data:`WALK_RANGE` ladder of 0.01 ticks.

    Args:
        make: the walk type, :class:`WalkSymbol` or a subclass.
        symbols: upper-case symbols.
        levels: partial book depth (names the depth stream).
        rng: draws each ladder's base price, uniform in [10, ``top``].
        top: highest base price.

    Returns:
        The walks, in the order of ``symbols``.
    """
    tick_units = to_units(0.01)
    walks = []
    for index, symbol in enumerate(symbols):
        lower = symbol.lower()
        base = round(rng.uniform(10.0, top) * 100) - WALK_RANGE // 2
        ladder = [format_units((base + i) * tick_units) for i in range(WALK_RANGE)]
        ids = 1_000_000_000 * (index + 1)
        mid = WALK_RANGE // 2
        walks.append(
            make(
                symbol,
                f"{lower}@depth{levels}@100ms",
                f"{lower}@trade",
                ladder,
                ladder[::-1],
                mid,
                ids,
                ids,
                best_bid=mid - 1,
                best_ask=mid + 1,
            )
        )
    return walks


def quantity_pool(rng: random.Random) -> list[str]:
    """Level quantities drawn from ``rng``, doubled so any window of up to 2 x 20 levels is
    one slice."""
    pool = [format_units(to_units(rng.uniform(0.001, 50.0))) for _ in range(_QTY_POOL_SIZE)]
    return pool + pool


@attrs.define(eq=False)
class RandomWalkMarket:
    """Synthetic random walks: ``@depth{levels}@100ms`` snapshots and ``@trade`` frames whose
    total rate over all streams is exactly ``rate_per_s``.

    Each tick adds ``rate_per_s * dt`` to a carried budget and publishes its whole part, so
    fractional rates are exact over time (never off by more than one message). Of those,
    ``trade_ratio`` are trades (also carried exactly). Depth snapshots and trades each go
    round-robin over the symbols; every snapshot is a new step of that symbol's walk (mid
    moves -1/0/+1 tick of 0.01 and stays within 512 ticks, spread 1-2 ticks, levels one tick
    apart), so a symbol may get several snapshots in one 100 ms burst at high rates. Trades
    print at the current best bid or ask. Only these two streams are produced; use
    ``ScriptedMarket`` for the other stream kinds. Building a snapshot costs a few
    microseconds (price strings and quantities are precomputed).

    Attributes:
        symbols: upper-case symbols.
        rate_per_s: total frames per second over all streams.
        levels: levels per side of the partial book (5, 10 or 20).
        trade_ratio: share of the frames that are trades, in [0, 1].
        seed: seed of the walks.
    """

    symbols: tuple[str, ...] = attrs.field(converter=tuple)
    rate_per_s: float = attrs.field(validator=check_nonnegative)
    levels: int = attrs.field(default=20, validator=attrs.validators.in_(PARTIAL_DEPTHS))
    trade_ratio: float = attrs.field(default=0.2)
    seed: int = 0
    _rng: random.Random = attrs.field(init=False)
    _walks: list[WalkSymbol] = attrs.field(init=False)
    _qty_pool: list[str] = attrs.field(init=False)
    _carry: RateCarry = attrs.field(init=False, factory=RateCarry)
    _trade_carry: RateCarry = attrs.field(init=False, factory=RateCarry)
    _depth_cursor: int = attrs.field(init=False, default=0)
    _trade_cursor: int = attrs.field(init=False, default=0)

    @trade_ratio.validator
    def _check_ratio(self, _attribute: attrs.Attribute, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"RandomWalkMarket: trade_ratio must be in [0, 1], got {value!r}")

    def __attrs_post_init__(self) -> None:
        if not self.symbols:
            raise ValueError("RandomWalkMarket: symbols must not be empty")
        self._rng = rng = random.Random(self.seed)
        self._walks = start_walks(WalkSymbol, self.symbols, self.levels, rng, 1_000.0)
        self._qty_pool = quantity_pool(rng)

    def tick(self, now: float, dt: float) -> Iterator[Frame]:
        """Return this tick's share of the rate: depth snapshots first, then trades.

        The count is decided now; the frames are built as they are iterated, so a burst of
        thousands of books never sits in memory at once (each dies once serialised, which
        keeps the garbage collector's work small).

        Args:
            now: exchange time of the tick, epoch seconds (the trades' ``E`` and ``T``).
            dt: tick length in seconds.

        Returns:
            An iterator over ``floor(carried budget)`` frames.
        """
        count = self._carry.take(self.rate_per_s * dt)
        trades = self._trade_carry.take(count * self.trade_ratio, most=count)
        symbols = len(self._walks)
        depth_cursor, trade_cursor = self._depth_cursor, self._trade_cursor
        self._depth_cursor = (depth_cursor + count - trades) % symbols
        self._trade_cursor = (trade_cursor + trades) % symbols
        return self._frames(count - trades, trades, depth_cursor, trade_cursor, int(now * 1000))

    def _frames(
        self, depths: int, trades: int, depth_cursor: int, trade_cursor: int, now_ms: int
    ) -> Iterator[Frame]:
        walks = self._walks
        symbols = len(walks)
        snapshot = self._snapshot
        for _ in range(depths):
            walk = walks[depth_cursor]
            depth_cursor = (depth_cursor + 1) % symbols
            yield walk.depth_stream, snapshot(walk)
        bits = self._rng.getrandbits
        pool = self._qty_pool
        for _ in range(trades):
            walk = walks[trade_cursor]
            trade_cursor = (trade_cursor + 1) % symbols
            walk.trade_id += 1
            draw = bits(9)
            buy = bool(draw & 256)
            price = walk.ladder[walk.best_ask if buy else walk.best_bid]
            yield (
                walk.trade_stream,
                trade_payload(walk.symbol, walk.trade_id, price, pool[draw & 255], now_ms, not buy),
            )

    def _snapshot(self, walk: WalkSymbol) -> Payload:
        levels = self.levels
        draw = self._rng.getrandbits(11)
        mid = walk.mid + _STEPS[draw & 3]
        if not levels + 2 <= mid < WALK_RANGE - levels - 2:
            mid = walk.mid - _STEPS[draw & 3]  # reflect at the edge of the range
        walk.mid = mid
        spread = 1 + ((draw >> 2) & 1)
        walk.best_bid = bid = mid - 1
        walk.best_ask = ask = bid + spread
        walk.update_id += 1
        start = draw >> 3
        pool = self._qty_pool
        top = WALK_RANGE - 1 - bid
        bid_prices = walk.ladder_desc[top : top + levels]
        ask_prices = walk.ladder[ask : ask + levels]
        bid_qtys = pool[start : start + levels]
        ask_qtys = pool[start + levels : start + 2 * levels]
        return {
            "lastUpdateId": walk.update_id,
            "bids": list(map(list, zip(bid_prices, bid_qtys, strict=True))),
            "asks": list(map(list, zip(ask_prices, ask_qtys, strict=True))),
        }
