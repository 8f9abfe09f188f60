"""The load market: synthetic depth snapshots and trades for open-loop load, and the frame
sources a load generator publishes from.

A frame source (:class:`FrameSource`) is asked for exactly ``count`` frames at a scheduled
time instead of being ticked: :class:`LoadMarket` is one; :class:`MarketSource` makes one of
any tick-based :class:`~oraculo_trio.mockexchange.markets.payloads.Market`, stamping ``seq``
(and ``E``) on its payloads. Every ``alert_period`` seconds one :class:`LoadMarket` frame
carries a condition the load rules alert on (a wide spread above :data:`WIDE_SPREAD_BPS`, or a
price spike above :data:`SPIKE_LEVEL`; with both streams, one then the other) so the store
gets writes.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

import attrs

from oraculo_trio.mockexchange.markets.payloads import (
    PARTIAL_DEPTHS,
    Frame,
    Market,
    Payload,
    RateCarry,
)
from oraculo_trio.mockexchange.markets.walk import (
    WALK_RANGE,
    WalkSymbol,
    quantity_pool,
    start_walks,
)


def parse_distribution(text: str) -> float | None:
    """``uniform`` -> None; ``zipf:S`` -> the exponent S (> 0).

    Raises:
        ValueError: anything else, with what is allowed.
    """
    if text == "uniform":
        return None
    name, sep, value = text.partition(":")
    if name == "zipf" and sep:
        try:
            exponent = float(value)
        except ValueError:
            exponent = float("nan")
        if exponent > 0 and math.isfinite(exponent):
            return exponent
    raise ValueError(f"distribution {text!r}: expected 'uniform' or 'zipf:S' with S > 0")


@attrs.define(eq=False)
class _Picker:
    """Chooses the symbol index of each message: round-robin (uniform) or Zipf weights."""

    size: int
    exponent: float | None
    rng: random.Random
    cursor: int = 0
    _cum_weights: list[float] | None = None

    def __attrs_post_init__(self) -> None:
        if self.exponent is not None:
            weights = [1.0 / (rank**self.exponent) for rank in range(1, self.size + 1)]
            self._cum_weights = list(itertools.accumulate(weights))

    def pick(self, count: int) -> list[int]:
        if self._cum_weights is None:
            start = self.cursor
            self.cursor = (start + count) % self.size
            return [(start + i) % self.size for i in range(count)]
        return self.rng.choices(range(self.size), cum_weights=self._cum_weights, k=count)


class FrameSource(Protocol):
    """What the generator publishes from. ``symbols`` are upper case; ``depth_kinds`` and
    ``trade_kinds`` are the service's ``feed.depth_streams`` / ``feed.trade_streams`` that
    subscribe to everything the source produces."""

    @property
    def symbols(self) -> Sequence[str]: ...

    @property
    def depth_kinds(self) -> tuple[str, ...]: ...

    @property
    def trade_kinds(self) -> tuple[str, ...]: ...

    def frames(self, count: int, now_ms: int) -> Iterable[Frame]:
        """Exactly ``count`` frames whose scheduled time is ``now_ms`` (epoch ms)."""
        ...


# Walk range in price ticks (0.01, the ladders of start_walks), and the wide spread
# (in ticks) of an alert frame: prices are 10-50, so a normal spread (1-2 ticks) is 2-20 bps
# and the alert's 60 ticks is 120-600 bps (the load rules alert above 100 bps).
_RANGE = WALK_RANGE
_WIDE_TICKS = 60
_SPIKE_PRICE = "2000.00000000"

#: The level the load rules' crossing rule watches (above every normal trade price).
SPIKE_LEVEL = 1000.0
#: The spread, in bps, above which the load rules alert (above every normal spread).
WIDE_SPREAD_BPS = 100.0


TRADE_KINDS = ("trade", "aggTrade")
"""The trade streams :class:`LoadMarket` may publish on."""


@attrs.define(eq=False, slots=True)
class _Walk(WalkSymbol):
    depth_seq: int = 0
    trade_seq: int = 0


@attrs.define(eq=False)
class LoadMarket:
    """Synthetic depth snapshots and trades for load: seeded, cheap, Binance-shaped.

    Every message is one step of its symbol's random walk (mid moves -1/0/+1 tick of 0.01,
    spread 1-2 ticks, levels one tick apart); trades print at the current best bid or ask.
    Payloads are Binance spot shapes plus ``seq`` (per stream, from 1, no gaps) and, on
    partial books unless ``faithful``, ``E`` (the scheduled time).

    Attributes:
        symbols: upper-case symbols.
        trade_ratio: share of messages that are trades (exact over time), in [0, 1].
        levels: partial book depth (5, 10 or 20).
        distribution: ``uniform`` (round-robin) or ``zipf:S`` (symbol i weighs 1/i^S).
        seed: seed of the walks and of the Zipf draws.
        faithful: leave ``E`` out of partial books, as Binance spot does.
        alert_period: seconds between alert frames (None: never).
        rate_per_s: messages per second when driven by ``tick`` (the Market protocol).
        trade_kind: ``trade`` (``@trade``, ids ``t``) or ``aggTrade`` (``@aggTrade``, ids
            ``a``, each aggregating one trade); either way a symbol's ids are consecutive.
    """

    symbols: tuple[str, ...] = attrs.field(converter=tuple)
    trade_ratio: float = 0.0
    levels: int = attrs.field(default=20, validator=attrs.validators.in_(PARTIAL_DEPTHS))
    distribution: str = "uniform"
    seed: int = 0
    faithful: bool = False
    alert_period: float | None = 0.5
    rate_per_s: float = 0.0
    trade_kind: str = attrs.field(default="trade", validator=attrs.validators.in_(TRADE_KINDS))
    alerts_sent: int = attrs.field(init=False, default=0)
    _rng: random.Random = attrs.field(init=False)
    _walks: list[_Walk] = attrs.field(init=False)
    _pool: list[str] = attrs.field(init=False)
    _depth_picker: _Picker = attrs.field(init=False)
    _trade_picker: _Picker = attrs.field(init=False)
    _trade_carry: RateCarry = attrs.field(init=False, factory=RateCarry)
    _tick_carry: RateCarry = attrs.field(init=False, factory=RateCarry)
    _next_alert_ms: float | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        if not self.symbols:
            raise ValueError("LoadMarket: symbols must not be empty")
        if not 0.0 <= self.trade_ratio <= 1.0:
            raise ValueError(f"LoadMarket: trade_ratio must be in [0, 1], got {self.trade_ratio}")
        exponent = parse_distribution(self.distribution)
        self._rng = rng = random.Random(self.seed)
        self._walks = start_walks(_Walk, self.symbols, self.levels, rng, 50.0)
        if self.trade_kind != "trade":
            for walk in self._walks:
                walk.trade_stream = f"{walk.symbol.lower()}@{self.trade_kind}"
        self._pool = quantity_pool(rng)
        self._depth_picker = _Picker(len(self.symbols), exponent, rng)
        self._trade_picker = _Picker(len(self.symbols), exponent, rng)

    @property
    def depth_kinds(self) -> tuple[str, ...]:
        """The service's ``feed.depth_streams`` for this market."""
        return (f"depth{self.levels}",) if self.trade_ratio < 1.0 else ()

    @property
    def trade_kinds(self) -> tuple[str, ...]:
        """The service's ``feed.trade_streams`` for this market."""
        return (self.trade_kind,) if self.trade_ratio > 0.0 else ()

    def streams(self) -> list[str]:
        """Every stream name this market publishes on."""
        names = []
        for walk in self._walks:
            if self.depth_kinds:
                names.append(walk.depth_stream)
            if self.trade_kinds:
                names.append(walk.trade_stream)
        return names

    def tick(self, now: float, dt: float) -> Iterator[Frame]:
        """The Market protocol: ``rate_per_s * dt`` frames (fractions carried)."""
        count = self._tick_carry.take(self.rate_per_s * dt)
        return self.frames(count, int(now * 1000))

    def frames(self, count: int, now_ms: int) -> Iterator[Frame]:
        """``count`` frames scheduled at ``now_ms``: partial books first, then trades.

        The counts (and which symbols) are decided now; payloads are built as the iterator is
        consumed, so each dies once serialised and a burst of thousands of books never sits
        in memory (which would make the garbage collector's work grow with the burst).

        Args:
            count: how many messages.
            now_ms: the scheduled time, epoch milliseconds (``E`` and trade times).

        Returns:
            An iterator over ``(stream, payload)`` pairs.
        """
        trades = self._trade_carry.take(count * self.trade_ratio, most=count)
        depths = count - trades
        alert = False
        if self.alert_period is not None and count:
            if self._next_alert_ms is None:
                self._next_alert_ms = now_ms + self.alert_period * 1000.0
            elif now_ms >= self._next_alert_ms:
                alert = True
                self.alerts_sent += 1
                self._next_alert_ms += self.alert_period * 1000.0
                if self._next_alert_ms <= now_ms:  # far behind: no burst of alerts
                    self._next_alert_ms = now_ms + self.alert_period * 1000.0
        depth_picks = self._depth_picker.pick(depths) if depths else []
        trade_picks = self._trade_picker.pick(trades) if trades else []
        # With both streams, alerts alternate between them: a depth alert frame that a newer
        # book of its symbol supersedes may be skipped by a service behind its feed (only the
        # newest book matters), while a trade is never skipped.
        depth_alert = alert and bool(depth_picks) and (not trade_picks or self.alerts_sent % 2)
        trade_alert = alert and not depth_alert
        return self._build(depth_picks, trade_picks, now_ms, depth_alert, trade_alert)

    def _build(
        self,
        depth_picks: list[int],
        trade_picks: list[int],
        now_ms: int,
        depth_alert: bool,
        trade_alert: bool,
    ) -> Iterator[Frame]:
        walks = self._walks
        snapshot = self._snapshot
        trade = self._trade
        for i in depth_picks:
            stream, payload = snapshot(walks[i], now_ms)
            if depth_alert:
                depth_alert = False
                payload = self._rewiden(payload, walks[i])
            yield stream, payload
        for i in trade_picks:
            stream, payload = trade(walks[i], now_ms)
            if trade_alert:
                trade_alert = False
                payload["p"] = _SPIKE_PRICE
            yield stream, payload

    def _snapshot(self, walk: _Walk, now_ms: int) -> Frame:
        levels = self.levels
        draw = self._rng.getrandbits(11)
        step = (draw & 3) - 1 if draw & 3 != 3 else 0
        mid = walk.mid + step
        if not levels + 2 <= mid < _RANGE - levels - 2 - _WIDE_TICKS:
            mid = walk.mid - step  # reflect at the edge of the range
        walk.mid = mid
        walk.best_bid = bid = mid - 1
        walk.best_ask = ask = bid + 1 + ((draw >> 2) & 1)
        walk.update_id += 1
        walk.depth_seq += 1
        start = draw >> 3
        pool = self._pool
        top = _RANGE - 1 - bid
        bid_prices = walk.ladder_desc[top : top + levels]
        ask_prices = walk.ladder[ask : ask + levels]
        payload: Payload = {
            "lastUpdateId": walk.update_id,
            "bids": list(zip(bid_prices, pool[start : start + levels], strict=True)),
            "asks": list(zip(ask_prices, pool[start + levels : start + 2 * levels], strict=True)),
        }
        if not self.faithful:
            payload["E"] = now_ms
        payload["seq"] = walk.depth_seq
        return walk.depth_stream, payload

    def _rewiden(self, payload: Payload, walk: _Walk) -> Payload:
        # The alert frame: the same book with the asks moved up by a wide gap.
        ask = walk.best_ask + _WIDE_TICKS
        qtys = [qty for _, qty in payload["asks"]]
        payload["asks"] = list(zip(walk.ladder[ask : ask + self.levels], qtys, strict=True))
        return payload

    def _trade(self, walk: _Walk, now_ms: int) -> Frame:
        walk.trade_id += 1
        walk.trade_seq += 1
        draw = self._rng.getrandbits(9)
        buy = bool(draw & 256)
        price = walk.ladder[walk.best_ask if buy else walk.best_bid]
        if self.trade_kind == "aggTrade":
            return walk.trade_stream, {
                "e": "aggTrade",
                "E": now_ms,
                "s": walk.symbol,
                "a": walk.trade_id,
                "p": price,
                "q": self._pool[draw & 255],
                "f": walk.trade_id,
                "l": walk.trade_id,
                "T": now_ms,
                "m": not buy,
                "M": True,
                "seq": walk.trade_seq,
            }
        return walk.trade_stream, {
            "e": "trade",
            "E": now_ms,
            "s": walk.symbol,
            "t": walk.trade_id,
            "p": price,
            "q": self._pool[draw & 255],
            "T": now_ms,
            "m": not buy,
            "M": True,
            "seq": walk.trade_seq,
        }


@attrs.define(eq=False)
class MarketSource:
    """Adapts a tick-based :class:`~oraculo_trio.mockexchange.markets.payloads.Market` to a
    :class:`FrameSource`.

    Frames are taken from ``market.tick(now, tick)`` as needed (surplus frames wait for the
    next burst, so counts stay exact), and stamped: ``seq`` per stream, and ``E`` on payloads
    without one unless ``faithful``. Payloads are copied before stamping.

    Attributes:
        market: the market (its own rate should match the schedule's).
        depth_kinds: the service's ``feed.depth_streams`` that cover the market's depth.
        trade_kinds: the service's ``feed.trade_streams`` that cover its trades.
        tick: the ``dt`` passed to ``market.tick``.
        faithful: do not add ``E``.
    """

    market: Market
    depth_kinds: tuple[str, ...] = ()
    trade_kinds: tuple[str, ...] = ()
    tick: float = 0.1
    faithful: bool = False
    _pending: list[Frame] = attrs.field(factory=list)
    _seq: dict[str, int] = attrs.field(factory=dict)

    @property
    def symbols(self) -> Sequence[str]:
        """The market's symbols."""
        return self.market.symbols

    def frames(self, count: int, now_ms: int) -> list[Frame]:
        """Exactly ``count`` stamped frames from the market.

        Raises:
            ValueError: the market produced nothing for 100 ticks in a row.
        """
        pending = self._pending
        idle = 0
        while len(pending) < count:
            produced = list(self.market.tick(now_ms / 1000.0, self.tick))
            idle = 0 if produced else idle + 1
            if idle >= 100:
                raise ValueError("MarketSource: the market produced no frames for 100 ticks")
            pending.extend(produced)
        taken, self._pending = pending[:count], pending[count:]
        seq = self._seq
        out: list[Frame] = []
        for stream, payload in taken:
            stamped = dict(payload) if isinstance(payload, dict) else payload
            if isinstance(stamped, dict):
                number = seq.get(stream, 0) + 1
                seq[stream] = number
                stamped["seq"] = number
                if not self.faithful and "E" not in stamped:
                    stamped["E"] = now_ms
            out.append((stream, stamped))
        return out
