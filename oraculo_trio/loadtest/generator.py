"""Open-loop load generation: a schedule of bursts, the frames they carry, and the process
that publishes them through the mock exchange.

Open loop means the schedule never waits for the service (no coordinated omission): burst
``k`` is due at ``start + k * tick`` and carries every message scheduled for its tick; its
frames' event time ``E`` is that scheduled time, whenever they actually go out. When the
service pushes back (full socket, full exchange queue) the generator keeps to the schedule,
catching up as fast as it can, and records how late each burst was published, so the ages
the service measures (``now - E``) include the backlog.

Pieces, each usable alone:

- :class:`Schedule` (pure): ramp, warm-up and measured phases at a rate; how many messages
  each burst carries (exact: the counts are differences of ``floor(cumulative(t))``).
- :class:`LoadMarket` (pure, seeded): synthetic ``@depthN@100ms`` snapshots and ``@trade``
  frames over ``symbols`` with a uniform or Zipf popularity; every payload carries a
  per-stream sequence number ``seq`` (Binance decoders ignore unknown fields), and partial
  books carry ``E`` unless ``faithful`` (spot ``@depthN`` has no ``E``; futures partial books
  do). Every ``alert_period`` seconds one frame carries a condition the load rules alert on
  (a wide spread, or a price spike on trade-only runs) so the store gets writes.
- :class:`Generator` (Trio): drives a schedule in real time through a :class:`Publisher`
  (``MockExchange.publish``), records lateness per phase, and counts what the exchange
  actually wrote to sockets inside the measured window.
- ``python -m oraculo_trio.loadtest.generator --spec JSON``: the generator's own process,
  hosting the mock exchange; JSON lines on stdout (``ready``, ``phase``, ``stats``, ``done``),
  commands on stdin (``start``; end of input stops it). The runner (loadtest/runner.py) drives it.

Other frame sources plug in through :data:`SOURCES` (``register_source``): anything with
``symbols``, ``depth_kinds``, ``trade_kinds`` and ``frames(count, now_ms)``. A tick-based
:class:`~loadtest.markets.Market` (a diff-book market, say) becomes one with
:class:`MarketSource`, which stamps ``seq`` (and ``E``) on its payloads.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import os
import random
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

import attrs
import trio

from oraculo_trio.mockexchange.markets import (
    PARTIAL_DEPTHS,
    WALK_RANGE,
    Frame,
    Market,
    Payload,
    WalkSymbol,
    quantity_pool,
    start_walks,
    synthetic_symbols,
)

LOGGER = logging.getLogger("oraculo_trio.loadtest.generator")

PHASES = ("ramp", "warmup", "measure")
"""Phases of a schedule, in order; ``done`` follows the last one."""

DONE = "done"

STREAMS = ("depth", "trade", "mixed")
"""Load shapes built in: partial books only, trades only, or both (``trade_ratio`` trades)."""

# Float noise when turning cumulative message counts into whole messages.
_EPSILON = 1e-9


# --------------------------------------------------------------------------------------------
# Schedule


@attrs.frozen
class Burst:
    """One scheduled burst: due ``offset`` seconds after the start, ``count`` messages."""

    index: int
    offset: float
    count: int
    phase: str


def _check_positive(_instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a positive number, got {value!r}")


def _check_non_negative(_instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a number >= 0, got {value!r}")


@attrs.frozen
class Schedule:
    """When each burst is due and how many messages it carries.

    The rate rises linearly from 0 to ``rate`` during ``ramp`` seconds, then holds through
    ``warmup`` and ``duration`` (the measured phase). Burst ``k`` is due at ``k * tick`` and
    carries the messages scheduled in ``[k * tick, (k + 1) * tick)``; counts are differences
    of ``floor(cumulative(t))``, so any run of bursts holds exactly the scheduled total.

    Attributes:
        rate: messages per second at full rate.
        duration: seconds of the measured phase.
        warmup: seconds at full rate before it (not measured).
        ramp: seconds of linear rise before the warm-up.
        tick: seconds between bursts.
    """

    rate: float = attrs.field(validator=_check_positive)
    duration: float = attrs.field(validator=_check_positive)
    warmup: float = attrs.field(default=0.0, validator=_check_non_negative)
    ramp: float = attrs.field(default=0.0, validator=_check_non_negative)
    tick: float = attrs.field(default=0.1, validator=_check_positive)

    @property
    def total(self) -> float:
        """Seconds from the first burst to the end of the measured phase."""
        return self.ramp + self.warmup + self.duration

    @property
    def measure_start(self) -> float:
        """Offset of the measured phase's start."""
        return self.ramp + self.warmup

    def cumulative(self, offset: float) -> float:
        """Messages scheduled in ``[0, offset)`` (fractional)."""
        offset = min(max(offset, 0.0), self.total)
        if offset < self.ramp:
            return self.rate * offset * offset / (2.0 * self.ramp)
        return self.rate * (self.ramp / 2.0 + (offset - self.ramp))

    def phase_at(self, offset: float) -> str:
        """The phase at ``offset`` seconds (``done`` from the end on)."""
        if offset < self.ramp:
            return "ramp"
        if offset < self.measure_start:
            return "warmup"
        if offset < self.total:
            return "measure"
        return DONE

    def bursts(self) -> Iterator[Burst]:
        """Every burst in order, including empty ones early in a ramp."""
        count = math.ceil(self.total / self.tick - _EPSILON)
        sent = 0
        for index in range(count):
            offset = index * self.tick
            # Round the boundaries as the window tests do, so phases start on a burst.
            due = math.floor(self.cumulative((index + 1) * self.tick) + _EPSILON)
            yield Burst(index, offset, due - sent, self.phase_at(offset + _EPSILON))
            sent = due

    def end_offset(self) -> float:
        """When the first burst after the schedule would be due: the end of the last tick."""
        return math.ceil(self.total / self.tick - _EPSILON) * self.tick

    def measured_count(self) -> int:
        """Messages the measured phase's bursts carry (what ``sent`` is compared with)."""
        return sum(b.count for b in self.bursts() if b.phase == "measure")


# --------------------------------------------------------------------------------------------
# Popularity of symbols


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


# --------------------------------------------------------------------------------------------
# Frame sources


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


# Walk range in price ticks (0.01, the ladders of markets.start_walks), and the wide spread
# (in ticks) of an alert frame: prices are 10-50, so a normal spread (1-2 ticks) is 2-20 bps
# and the alert's 60 ticks is 120-600 bps (the load rules alert above 100 bps).
_RANGE = WALK_RANGE
_WIDE_TICKS = 60
_SPIKE_PRICE = "2000.00000000"

#: The level the load rules' crossing rule watches (above every normal trade price).
SPIKE_LEVEL = 1000.0
#: The spread, in bps, above which the load rules alert (above every normal spread).
WIDE_SPREAD_BPS = 100.0


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
    """

    symbols: tuple[str, ...] = attrs.field(converter=tuple)
    trade_ratio: float = 0.0
    levels: int = attrs.field(default=20, validator=attrs.validators.in_(PARTIAL_DEPTHS))
    distribution: str = "uniform"
    seed: int = 0
    faithful: bool = False
    alert_period: float | None = 0.5
    rate_per_s: float = 0.0
    alerts_sent: int = attrs.field(init=False, default=0)
    _rng: random.Random = attrs.field(init=False)
    _walks: list[_Walk] = attrs.field(init=False)
    _pool: list[str] = attrs.field(init=False)
    _depth_picker: _Picker = attrs.field(init=False)
    _trade_picker: _Picker = attrs.field(init=False)
    _trade_carry: float = attrs.field(init=False, default=0.0)
    _tick_carry: float = attrs.field(init=False, default=0.0)
    _next_alert_ms: float | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        if not self.symbols:
            raise ValueError("LoadMarket: symbols must not be empty")
        if not 0.0 <= self.trade_ratio <= 1.0:
            raise ValueError(f"LoadMarket: trade_ratio must be in [0, 1], got {self.trade_ratio}")
        exponent = parse_distribution(self.distribution)
        self._rng = rng = random.Random(self.seed)
        self._walks = start_walks(_Walk, self.symbols, self.levels, rng, 50.0)
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
        return ("trade",) if self.trade_ratio > 0.0 else ()

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
        self._tick_carry += self.rate_per_s * dt
        count = int(self._tick_carry + _EPSILON)
        self._tick_carry -= count
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
        self._trade_carry += count * self.trade_ratio
        trades = min(count, int(self._trade_carry + _EPSILON))
        self._trade_carry -= trades
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
        return self._build(depth_picks, trade_picks, now_ms, alert)

    def _build(
        self, depth_picks: list[int], trade_picks: list[int], now_ms: int, alert: bool
    ) -> Iterator[Frame]:
        walks = self._walks
        snapshot = self._snapshot
        trade = self._trade
        for i in depth_picks:
            stream, payload = snapshot(walks[i], now_ms)
            if alert:
                alert = False
                payload = self._rewiden(payload, walks[i])
            yield stream, payload
        for i in trade_picks:
            stream, payload = trade(walks[i], now_ms)
            if alert:
                alert = False
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
    """Adapts a tick-based :class:`~loadtest.markets.Market` to a :class:`FrameSource`.

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


@attrs.frozen
class GeneratorSpec:
    """Everything the generator process needs; JSON round-trips through ``attrs.asdict``.

    Attributes:
        stream: a key of :data:`SOURCES` (``depth``, ``trade``, ``mixed``...).
        rate: messages per second at full rate.
        duration: measured seconds.
        warmup: seconds at full rate before measuring.
        ramp: seconds of linear rise from 0 before the warm-up.
        symbols: how many synthetic symbols.
        distribution: ``uniform`` or ``zipf:S``.
        tick: seconds between bursts (Binance's 100 ms).
        batch: messages per burst at full rate instead; the tick becomes ``batch / rate``.
        levels: partial book depth.
        trade_ratio: share of trades for ``mixed``.
        seed: seed of the market.
        faithful: no ``E`` on partial books.
        alert_period: seconds between alert frames (0: none).
        queue_size: the exchange's frames per connection queue.
        overflow: the exchange's full-queue policy (``block`` keeps every frame).
        host: interface the exchange binds.
        faults: faults the source injects, ``gaps,dups,429``... (``depthdiff``; see
            ``loadtest.diffbook.FAULT_KINDS``).
    """

    stream: str = "depth"
    rate: float = 1500.0
    duration: float = 60.0
    warmup: float = 5.0
    ramp: float = 0.0
    symbols: int = 50
    distribution: str = "uniform"
    tick: float = 0.1
    batch: int | None = None
    levels: int = 20
    trade_ratio: float = 0.2
    seed: int = 0
    faithful: bool = False
    alert_period: float = 0.5
    queue_size: int = 16384
    overflow: str = "block"
    host: str = "127.0.0.1"
    faults: str = ""

    @property
    def burst_period(self) -> float:
        """Seconds between bursts."""
        return self.batch / self.rate if self.batch else self.tick

    def schedule(self) -> Schedule:
        """The schedule this spec describes."""
        return Schedule(
            rate=self.rate,
            duration=self.duration,
            warmup=self.warmup,
            ramp=self.ramp,
            tick=self.burst_period,
        )

    def to_json(self) -> str:
        return json.dumps(attrs.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> GeneratorSpec:
        return cls(**json.loads(text))


def _load_market(spec: GeneratorSpec, trade_ratio: float) -> LoadMarket:
    return LoadMarket(
        synthetic_symbols(spec.symbols),
        trade_ratio=trade_ratio,
        levels=spec.levels,
        distribution=spec.distribution,
        seed=spec.seed,
        faithful=spec.faithful,
        alert_period=spec.alert_period or None,
        rate_per_s=spec.rate,
    )


def _diff_books(spec: GeneratorSpec) -> FrameSource:
    # Diff streams from true books, with their REST snapshots and faults (mockexchange/diffbook.py).
    from oraculo_trio.mockexchange.diffbook import depthdiff_source

    return depthdiff_source(spec)


SourceFactory = Callable[[GeneratorSpec], FrameSource]

SOURCES: dict[str, SourceFactory] = {
    "depth": lambda spec: _load_market(spec, 0.0),
    "trade": lambda spec: _load_market(spec, 1.0),
    "mixed": lambda spec: _load_market(spec, spec.trade_ratio),
    "depthdiff": _diff_books,
}
"""STREAM name -> factory of its frame source; the CLI offers every key."""


def register_source(name: str, factory: SourceFactory) -> None:
    """Offer another STREAM (``depthdiff``...) to ``oraculo-trio loadtest``.

    Args:
        name: the STREAM argument.
        factory: builds the source from the spec (``spec.rate``, ``spec.symbols``...).
    """
    SOURCES[name] = factory


def build_source(spec: GeneratorSpec) -> FrameSource:
    """The frame source of ``spec.stream``.

    Raises:
        ValueError: an unknown stream, or a market parameter out of range.
    """
    factory = SOURCES.get(spec.stream)
    if factory is None:
        raise ValueError(f"stream {spec.stream!r}: expected one of {', '.join(sorted(SOURCES))}")
    return factory(spec)


# --------------------------------------------------------------------------------------------
# Lateness and the real-time loop


def percentile(values: Sequence[float], quantile: float) -> float | None:
    """Nearest-rank percentile of ``values`` (None when empty); sorts a copy."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, math.ceil(quantile * len(ordered)) - 1)
    return ordered[rank]


@attrs.define(eq=False)
class Lateness:
    """How late each burst finished publishing, per phase, seconds (one float per burst)."""

    by_phase: dict[str, list[float]] = attrs.field(factory=lambda: {p: [] for p in PHASES})
    last_second_max: float = 0.0

    def record(self, phase: str, seconds: float) -> None:
        self.by_phase[phase].append(seconds)
        if seconds > self.last_second_max:
            self.last_second_max = seconds

    def take_second_max(self) -> float:
        value, self.last_second_max = self.last_second_max, 0.0
        return value

    def summary(self, phase: str = "measure") -> dict[str, float | None]:
        values = self.by_phase[phase]
        return {
            "bursts": len(values),
            "p50": percentile(values, 0.50),
            "p95": percentile(values, 0.95),
            "p99": percentile(values, 0.99),
            "max": max(values, default=None),
        }


class Publisher(Protocol):
    """Where bursts go: ``MockExchange`` (``publish`` queues to subscribers;
    ``frames_sent`` counts frames written to sockets)."""

    frames_sent: int

    async def publish(self, frames: Iterable[Frame]) -> None: ...


@attrs.frozen
class GeneratorResult:
    """What a finished schedule did.

    Attributes:
        generated: messages handed to the publisher, per phase.
        window_sent: frames the publisher wrote to sockets during the measured phase's real
            time (sampled when its first burst and the first burst after it were due).
        expected: messages the measured phase's bursts carry.
        lateness: per-phase lateness summaries.
        late_bursts: measured bursts that finished more than one tick late.
        alerts: alert frames sent.
    """

    generated: dict[str, int]
    window_sent: int
    expected: int
    lateness: dict[str, dict[str, float | None]]
    late_bursts: int
    alerts: int


@attrs.define(eq=False)
class Generator:
    """Publishes a :class:`Schedule` in real time, open loop.

    Attributes:
        schedule: when and how much.
        source: what (``frames(count, now_ms)``).
        publisher: where (``MockExchange``).
        wall_clock: epoch seconds, for the frames' scheduled time ``E``.
        on_event: called with ``{"event": "phase", ...}`` at each phase change.
    """

    schedule: Schedule
    source: FrameSource
    publisher: Publisher
    wall_clock: Callable[[], float] = time.time
    on_event: Callable[[dict[str, Any]], None] = lambda _event: None
    lateness: Lateness = attrs.field(factory=Lateness)
    phase: str = attrs.field(init=False, default="idle")
    generated: dict[str, int] = attrs.field(init=False, factory=lambda: dict.fromkeys(PHASES, 0))
    started_wall: float | None = attrs.field(init=False, default=None)

    async def run(self) -> GeneratorResult:
        """Publish every burst at its time, then wait for the end of the last tick.

        A late burst is published at once (catching up) with its scheduled ``E``; lateness is
        measured when ``publisher.publish`` returns.

        Returns:
            The :class:`GeneratorResult`.

        Cancellation: stops between bursts (or inside a blocked publish).
        """
        schedule = self.schedule
        anchor = trio.current_time()
        wall = self.started_wall = self.wall_clock()
        frames = self.source.frames
        publish = self.publisher.publish
        record = self.lateness.record
        window_start = window_end = 0
        late_bursts = 0
        for burst in schedule.bursts():
            deadline = anchor + burst.offset
            await trio.sleep_until(deadline)
            if burst.phase != self.phase:
                if burst.phase == "measure":
                    window_start = self.publisher.frames_sent
                self._enter(burst.phase, burst.offset)
            if burst.count:
                await publish(frames(burst.count, int((wall + burst.offset) * 1000)))
                self.generated[burst.phase] += burst.count
            late = trio.current_time() - deadline
            record(burst.phase, late)
            if burst.phase == "measure" and late > schedule.tick:
                late_bursts += 1
        await trio.sleep_until(anchor + schedule.end_offset())
        window_end = self.publisher.frames_sent
        self._enter(DONE, schedule.end_offset())
        return GeneratorResult(
            generated=dict(self.generated),
            window_sent=window_end - window_start,
            expected=schedule.measured_count(),
            lateness={phase: self.lateness.summary(phase) for phase in PHASES},
            late_bursts=late_bursts,
            alerts=getattr(self.source, "alerts_sent", 0),
        )

    def _enter(self, phase: str, offset: float) -> None:
        self.phase = phase
        self.on_event(
            {
                "event": "phase",
                "phase": phase,
                "offset": offset,
                "sent": self.publisher.frames_sent,
                "generated": sum(self.generated.values()),
            }
        )


# --------------------------------------------------------------------------------------------
# The generator process


def _emit(event: dict[str, Any]) -> None:
    # One JSON line per event, flushed: the runner reads them as they come.
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def _commands(stream: trio.abc.ReceiveStream) -> AsyncIterator[str]:
    buffer = b""
    while True:
        chunk = await stream.receive_some(4096)
        if not chunk:
            return
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line.decode().strip()


async def _stats_loop(
    exchange: Any, generator: Generator, emit: Callable[[dict[str, Any]], None]
) -> None:
    started = time.monotonic()
    while True:
        # Faster once the schedule is over: the runner's drain waits on these numbers.
        await trio.sleep(0.5 if generator.phase != DONE else 0.1)
        connections = exchange.statistics().connections
        emit(
            {
                "event": "stats",
                "elapsed": time.monotonic() - started,
                "phase": generator.phase,
                "sent": exchange.frames_sent,
                "generated": sum(generator.generated.values()),
                "queued": sum(c.queued for c in connections),
                "connections": len(connections),
                "cpu": time.process_time(),
                "late_max": generator.lateness.take_second_max(),
            }
        )


async def serve_generator(
    spec: GeneratorSpec,
    commands: trio.abc.ReceiveStream,
    emit: Callable[[dict[str, Any]], None] = _emit,
) -> None:
    """The generator process: a mock exchange publishing ``spec``'s schedule on command.

    Events (JSON lines through ``emit``): ``ready`` (``url``, ``streams``, ``symbols``, the
    service's ``depth_kinds``/``trade_kinds``) once the exchange listens; after the ``start``
    command, ``phase`` at each phase change and ``stats`` twice a second; ``done`` (the
    :class:`GeneratorResult`, ``measure_cpu_cores``) at the end of the schedule; ``drained``
    (``sent``) once every generated frame is written to its socket (or the queues stayed
    empty for a second). It keeps serving until ``commands`` ends or says ``quit``.

    Args:
        spec: what to generate.
        commands: lines ``start`` / ``quit`` (the runner's pipe; its end means stop).
        emit: where events go.

    Cancellation: stops the exchange and the schedule.
    """
    from oraculo_trio.mockexchange.exchange import ExchangeSettings, MockExchange

    source = build_source(spec)
    exchange = MockExchange(
        source,  # type: ignore[arg-type]
        ExchangeSettings(
            tick=spec.burst_period,
            queue_size=spec.queue_size,
            overflow=spec.overflow,  # type: ignore[arg-type]
            max_requests_per_s=None,
        ),
    )
    # The exchange's own tick loop stays paused: the generator keeps the schedule.
    exchange.pause()
    generator = Generator(spec.schedule(), source, exchange, on_event=emit)
    streams = source.streams() if hasattr(source, "streams") else []
    async with trio.open_nursery() as nursery:
        await nursery.start(exchange.serve, spec.host, 0)
        emit(
            {
                "event": "ready",
                "url": exchange.ws_url,
                "pid": os.getpid(),
                "streams": streams,
                "depth_kinds": list(source.depth_kinds),
                "trade_kinds": list(source.trade_kinds),
                "symbols": list(source.symbols),
                "rest_url": getattr(exchange, "rest_url", ""),
                # Service settings the source needs (diff books: a snapshot deep enough).
                "service": getattr(source, "service_settings", {}),
            }
        )
        started = False
        async for command in _commands(commands):
            if command == "start" and not started:
                started = True
                nursery.start_soon(_stats_loop, exchange, generator, emit)
                nursery.start_soon(_run_schedule, exchange, generator, emit)
            elif command == "quit":
                break
        nursery.cancel_scope.cancel()


async def _run_schedule(
    exchange: Any, generator: Generator, emit: Callable[[dict[str, Any]], None]
) -> None:
    cpu_start = time.process_time()
    marks: dict[str, tuple[float, float]] = {}

    def on_event(event: dict[str, Any]) -> None:
        if event["phase"] in ("measure", DONE):
            marks[event["phase"]] = (time.process_time(), time.monotonic())
        emit(event)

    generator.on_event = on_event
    result = await generator.run()
    cores = None
    if len(marks) == 2:
        (cpu0, wall0), (cpu1, wall1) = marks["measure"], marks[DONE]
        cores = (cpu1 - cpu0) / max(wall1 - wall0, 1e-9)
    emit(
        {
            "event": "done",
            **attrs.asdict(result),
            "sent": exchange.frames_sent,
            "cpu_seconds": time.process_time() - cpu_start,
            "measure_cpu_cores": cores,
            "tick": generator.schedule.tick,
        }
    )
    # Drained: every generated frame written, or nothing queued and nothing written for 1 s.
    generated = sum(generator.generated.values())
    quiet_since = None
    last_sent = -1
    while exchange.frames_sent < generated:
        queued = sum(c.queued for c in exchange.statistics().connections)
        if queued == 0 and exchange.frames_sent == last_sent:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= 1.0:
                break
        else:
            quiet_since = None
        last_sent = exchange.frames_sent
        await trio.sleep(0.02)
    emit({"event": "drained", "sent": exchange.frames_sent, "generated": generated})


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m oraculo_trio.loadtest.generator --spec JSON``: the generator process."""
    parser = argparse.ArgumentParser(prog="python -m oraculo_trio.loadtest.generator")
    parser.add_argument("--spec", required=True, help="GeneratorSpec as JSON")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    spec = GeneratorSpec.from_json(args.spec)

    async def run() -> None:
        await serve_generator(spec, trio.lowlevel.FdStream(os.dup(sys.stdin.fileno())))

    try:
        trio.run(run)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "SOURCES",
    "Burst",
    "FrameSource",
    "Generator",
    "GeneratorResult",
    "GeneratorSpec",
    "LoadMarket",
    "MarketSource",
    "Schedule",
    "build_source",
    "parse_distribution",
    "register_source",
]
