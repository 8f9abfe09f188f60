"""The scripted market: a data-driven, looping timeline of ``Phase`` rows over ``Instrument``
baselines. ``demo_script()`` is the demo's 20 s cycle.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable

import attrs

from oraculo_trio.mockexchange.markets.payloads import (
    PARTIAL_DEPTHS,
    UNITS,
    Frame,
    agg_trade_payload,
    check_nonnegative,
    check_positive,
    format_units,
    to_units,
    trade_payload,
)


@attrs.frozen
class Instrument:
    """The calm baseline of one symbol in a script; phases override it for a while.

    Attributes:
        symbol: upper-case symbol (``BTCUSDT``).
        mid: baseline mid price.
        tick_size: price grid; the best bid is rounded down and the best ask up to it.
        spread_bps: best ask minus best bid, in basis points of the mid.
        level_step_bps: distance between book levels, in basis points (at least one tick).
        level_qty: quantity at the best level; deeper levels grow by 25 % per level.
        trade_qty: mean trade quantity (each trade draws 0.5x to 1.5x of it).
        trades_per_tick: trades per tick (each is one ``@trade`` and one ``@aggTrade``).
        noise_bps: uniform noise on the mid per tick, +/- this many basis points.
        levels: book levels per side (the ``@depthN`` views are cut from them).
    """

    symbol: str
    mid: float = attrs.field(validator=check_positive)
    tick_size: float = attrs.field(validator=check_positive)
    spread_bps: float = attrs.field(default=1.0, validator=check_nonnegative)
    level_step_bps: float = attrs.field(default=0.5, validator=check_nonnegative)
    level_qty: float = attrs.field(default=1.0, validator=check_positive)
    trade_qty: float = attrs.field(default=0.1, validator=check_positive)
    trades_per_tick: int = attrs.field(default=1, validator=check_nonnegative)
    noise_bps: float = attrs.field(default=0.5, validator=check_nonnegative)
    levels: int = attrs.field(default=20, validator=attrs.validators.in_(PARTIAL_DEPTHS))


@attrs.frozen
class Phase:
    """One row of a script: while ``start <= offset < end`` (seconds into each cycle), the
    fields that are not ``None`` override the symbol's ``Instrument`` baseline.

    Rows of the same symbol may overlap; later rows win field by field. Outside every row the
    symbol is back to its baseline, so a phase never needs an explicit "end" row.

    Attributes:
        symbol: the symbol the row acts on.
        start: cycle offset (seconds) at which the row starts applying.
        end: cycle offset at which it stops (exclusive, at most the script's period).
        mid_from: mid at ``start``; ``None`` means the baseline mid.
        mid_to: mid at ``end``, reached by a linear ramp; ``None`` means no ramp. When neither
            is set the mid is untouched.
        spread_bps: spread override.
        trades_per_tick: trade-count override (0 stops trades but keeps the book).
        trade_qty: mean trade quantity override.
        bid_ask_qty_ratio: every bid level's quantity is this many times the ask level's
            (1.0 is a balanced book).
        silent: the symbol publishes nothing at all, on any stream.
        block_trade_qty: one extra buy of this quantity at the best ask, on the first tick of
            each cycle inside the row (make the row longer than a tick).
        note: what the row is for, shown in docs and reports.
    """

    symbol: str
    start: float = attrs.field(validator=check_nonnegative)
    end: float = attrs.field()
    mid_from: float | None = attrs.field(default=None, validator=check_positive)
    mid_to: float | None = attrs.field(default=None, validator=check_positive)
    spread_bps: float | None = attrs.field(default=None, validator=check_nonnegative)
    trades_per_tick: int | None = attrs.field(default=None, validator=check_nonnegative)
    trade_qty: float | None = attrs.field(default=None, validator=check_positive)
    bid_ask_qty_ratio: float | None = attrs.field(default=None, validator=check_positive)
    silent: bool = False
    block_trade_qty: float | None = attrs.field(default=None, validator=check_positive)
    note: str = ""

    @end.validator
    def _check_end(self, _attribute: attrs.Attribute, value: float) -> None:
        if value <= self.start:
            raise ValueError(
                f"Phase {self.symbol}: end ({value!r}) must be after start ({self.start!r})"
            )


@attrs.frozen
class Script:
    """A looping timeline: instruments (baselines) and phases (overrides) over ``period``.

    Attributes:
        instruments: one baseline per symbol, in publishing order.
        phases: the rows; every row's symbol must be an instrument and end within the period.
        period: cycle length in seconds; the timeline restarts at offset 0 after it.
    """

    instruments: tuple[Instrument, ...] = attrs.field(converter=tuple)
    phases: tuple[Phase, ...] = attrs.field(converter=tuple)
    period: float = attrs.field(validator=check_positive)

    def __attrs_post_init__(self) -> None:
        known = {instrument.symbol for instrument in self.instruments}
        if len(known) != len(self.instruments):
            raise ValueError("Script: instrument symbols must be unique")
        for phase in self.phases:
            if phase.symbol not in known:
                raise ValueError(
                    f"Script: phase symbol {phase.symbol!r} is not an instrument "
                    f"(instruments: {sorted(known)})"
                )
            if phase.end > self.period:
                raise ValueError(
                    f"Script: phase {phase.symbol} ends at {phase.end!r}, after the period "
                    f"{self.period!r}"
                )


#: Length of the demo cycle in seconds.
DEMO_PERIOD = 20.0


def demo_instruments() -> list[Instrument]:
    """Baselines of the demo's five symbols (a calm market with small seeded noise).

    Returns:
        BTCUSDT ~49,800, ETHUSDT ~3,000, SOLUSDT ~150, BNBUSDT ~600, XRPUSDT ~0.5.
    """
    return [
        Instrument(
            "BTCUSDT",
            mid=49_800.0,
            tick_size=0.01,
            spread_bps=1.0,
            level_qty=0.5,
            trade_qty=0.05,
            noise_bps=0.3,
        ),
        Instrument(
            "ETHUSDT",
            mid=3_000.0,
            tick_size=0.01,
            spread_bps=1.0,
            level_qty=5.0,
            trade_qty=0.5,
            noise_bps=0.3,
        ),
        Instrument(
            "SOLUSDT",
            mid=150.0,
            tick_size=0.01,
            spread_bps=2.0,
            level_qty=50.0,
            trade_qty=5.0,
        ),
        Instrument(
            "BNBUSDT",
            mid=600.0,
            tick_size=0.01,
            spread_bps=1.5,
            level_qty=10.0,
            trade_qty=1.0,
        ),
        Instrument(
            "XRPUSDT",
            mid=0.5,
            tick_size=0.0001,
            spread_bps=2.0,
            level_qty=5_000.0,
            trade_qty=500.0,
        ),
    ]


def demo_phases() -> list[Phase]:
    """The demo's phase table, one row per scripted behaviour, times in seconds of the cycle.

    Extend it by appending rows (see ``Phase``); a new symbol also needs an ``Instrument`` in
    ``demo_instruments()``.

    Returns:
        The rows: BTCUSDT ramps 49,800 -> 50,200 (0-6 s, crossing 50,000 at ~3 s) and back
        (6-12 s, crossing at ~9 s); ETHUSDT's spread is 30 bps (3-7 s) and it trades 5x as
        often (12-15 s); SOLUSDT rises 3 %
        (2-6 s) and falls back (6-10 s) with one >1,000,000 USDT trade at 4 s; BNBUSDT's bids
        hold 5x the asks' quantity (5-9 s); XRPUSDT is silent on every stream (10-16 s).
    """
    return [
        Phase(
            "BTCUSDT",
            0.0,
            6.0,
            mid_from=49_800.0,
            mid_to=50_200.0,
            note="trades cross 50,000 upward at ~3 s",
        ),
        Phase(
            "BTCUSDT",
            6.0,
            12.0,
            mid_from=50_200.0,
            mid_to=49_800.0,
            note="trades cross 50,000 downward at ~9 s",
        ),
        Phase("ETHUSDT", 3.0, 7.0, spread_bps=30.0, note="spread 30 bps instead of ~1 bps"),
        Phase(
            "ETHUSDT",
            12.0,
            15.0,
            trades_per_tick=5,
            note="trade burst: 5 trades per tick (50/s) instead of 1 (trade rate, volume spike)",
        ),
        Phase("SOLUSDT", 2.0, 6.0, mid_from=150.0, mid_to=154.5, note="price rises 3 %"),
        Phase("SOLUSDT", 6.0, 10.0, mid_from=154.5, mid_to=150.0, note="price falls back"),
        Phase(
            "SOLUSDT",
            4.0,
            4.5,
            block_trade_qty=7_000.0,
            note="one trade of 7,000 SOL (~1,066,000 USDT notional)",
        ),
        Phase(
            "BNBUSDT",
            5.0,
            9.0,
            bid_ask_qty_ratio=5.0,
            note="book imbalance: bid quantity 5x ask quantity on every level",
        ),
        Phase(
            "XRPUSDT", 10.0, 16.0, silent=True, note="no messages on any stream (a stalled symbol)"
        ),
    ]


def demo_script() -> Script:
    """The demo's script: ``demo_instruments()`` and ``demo_phases()`` over ``DEMO_PERIOD``."""
    return Script(demo_instruments(), demo_phases(), period=DEMO_PERIOD)


@attrs.frozen
class SymbolParams:
    """A symbol's effective parameters at one cycle offset (baseline plus active phases)."""

    mid: float
    spread_bps: float
    trades_per_tick: int
    trade_qty: float
    bid_ask_qty_ratio: float
    silent: bool


def resolve(instrument: Instrument, phases: Iterable[Phase], offset: float) -> SymbolParams:
    """Apply the rows of ``phases`` active at ``offset`` over the instrument's baseline.

    Args:
        instrument: the baseline.
        phases: rows of this symbol, in table order (later rows win field by field).
        offset: seconds into the cycle.

    Returns:
        The parameters in effect (before the per-tick noise).
    """
    mid = instrument.mid
    spread_bps = instrument.spread_bps
    trades_per_tick = instrument.trades_per_tick
    trade_qty = instrument.trade_qty
    ratio = 1.0
    silent = False
    for phase in phases:
        if not phase.start <= offset < phase.end:
            continue
        if phase.mid_from is not None or phase.mid_to is not None:
            begin = phase.mid_from if phase.mid_from is not None else instrument.mid
            finish = phase.mid_to if phase.mid_to is not None else begin
            fraction = (offset - phase.start) / (phase.end - phase.start)
            mid = begin + (finish - begin) * fraction
        if phase.spread_bps is not None:
            spread_bps = phase.spread_bps
        if phase.trades_per_tick is not None:
            trades_per_tick = phase.trades_per_tick
        if phase.trade_qty is not None:
            trade_qty = phase.trade_qty
        if phase.bid_ask_qty_ratio is not None:
            ratio = phase.bid_ask_qty_ratio
        silent = silent or phase.silent
    return SymbolParams(mid, spread_bps, trades_per_tick, trade_qty, ratio, silent)


@attrs.define(eq=False)
class _ScriptedSymbol:
    instrument: Instrument
    phases: list[tuple[int, Phase]]
    lower: str
    update_id: int
    trade_id: int
    agg_id: int
    fired: dict[int, int] = attrs.Factory(dict)


@attrs.define(eq=False)
class ScriptedMarket:
    """Publishes a ``Script``: every tick, for each symbol not silenced, a book update and its
    trades.

    Per symbol and tick: ``@depth5@100ms``, ``@depth10@100ms``, ``@depth20@100ms`` (views of
    one book, same ``lastUpdateId``), ``@bookTicker``, then ``trades_per_tick`` pairs of
    ``@trade`` and ``@aggTrade`` (plus a phase's block trade). On the first tick of every
    whole second since ``start`` the 1000 ms views ``@depth5``/``@depth10``/``@depth20``
    are published too. All randomness comes from ``seed``: the same sequence of ``tick``
    calls yields the same frames.

    Attributes:
        script: the timeline (``demo_script()`` for the demo).
        seed: seed of the noise.
        start: epoch seconds of cycle offset 0; ``None`` takes the first tick's ``now``.
    """

    script: Script = attrs.field(factory=demo_script)
    seed: int = 0
    start: float | None = None
    _rng: random.Random = attrs.field(init=False)
    _states: list[_ScriptedSymbol] = attrs.field(init=False)
    _last_second: int | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._states = []
        for index, instrument in enumerate(self.script.instruments):
            rows = [
                (row, phase)
                for row, phase in enumerate(self.script.phases)
                if phase.symbol == instrument.symbol
            ]
            base = 1_000_000_000 * (index + 1)
            self._states.append(
                _ScriptedSymbol(instrument, rows, instrument.symbol.lower(), base, base, base)
            )

    @property
    def symbols(self) -> list[str]:
        """The script's symbols, upper case, in publishing order."""
        return [instrument.symbol for instrument in self.script.instruments]

    def offset(self, now: float) -> float:
        """Seconds into the current cycle at ``now`` (0 before the first tick fixes ``start``)."""
        if self.start is None:
            return 0.0
        return max(0.0, now - self.start) % self.script.period

    def tick(self, now: float, dt: float) -> list[Frame]:
        """Advance to ``now`` and return this tick's frames (see the class docstring).

        Args:
            now: exchange time of the tick, epoch seconds.
            dt: tick length in seconds (the script is driven by ``now``; ``dt`` is unused).

        Returns:
            The frames of every symbol, symbol by symbol in ``script.instruments`` order.
        """
        if self.start is None:
            self.start = now
        elapsed = max(0.0, now - self.start)
        cycle, offset = divmod(elapsed, self.script.period)
        second = int(elapsed)
        slow = second != self._last_second
        self._last_second = second
        now_ms = int(now * 1000)
        frames: list[Frame] = []
        for state in self._states:
            self._tick_symbol(frames, state, offset, int(cycle), now_ms, slow)
        return frames

    def _tick_symbol(
        self,
        frames: list[Frame],
        state: _ScriptedSymbol,
        offset: float,
        cycle: int,
        now_ms: int,
        slow: bool,
    ) -> None:
        instrument = state.instrument
        effective = resolve(instrument, (phase for _, phase in state.phases), offset)
        if effective.silent:
            return
        rng = self._rng
        mid = effective.mid * (1.0 + rng.uniform(-1.0, 1.0) * instrument.noise_bps * 1e-4)
        tick_units = to_units(instrument.tick_size)
        half = mid * effective.spread_bps * 0.5e-4
        bid = math.floor((mid - half) * UNITS / tick_units) * tick_units
        ask = math.ceil((mid + half) * UNITS / tick_units) * tick_units
        if ask <= bid:
            ask = bid + tick_units
        step_ticks = max(1, round(mid * instrument.level_step_bps * 1e-4 * UNITS / tick_units))
        step = step_ticks * tick_units
        scale = instrument.level_qty * (1.0 + 0.2 * rng.uniform(-1.0, 1.0))
        ratio = effective.bid_ask_qty_ratio
        bids: list[list[str]] = []
        asks: list[list[str]] = []
        for level in range(instrument.levels):
            qty = scale * (1.0 + 0.25 * level)
            bids.append([format_units(bid - level * step), format_units(to_units(qty * ratio))])
            asks.append([format_units(ask + level * step), format_units(to_units(qty))])
        state.update_id += 1
        update_id = state.update_id
        lower = state.lower
        for depth in PARTIAL_DEPTHS:
            if depth > instrument.levels:
                break
            payload = {"lastUpdateId": update_id, "bids": bids[:depth], "asks": asks[:depth]}
            frames.append((f"{lower}@depth{depth}@100ms", payload))
            if slow:
                frames.append((f"{lower}@depth{depth}", payload))
        frames.append(
            (
                f"{lower}@bookTicker",
                {
                    "u": update_id,
                    "s": instrument.symbol,
                    "b": bids[0][0],
                    "B": bids[0][1],
                    "a": asks[0][0],
                    "A": asks[0][1],
                },
            )
        )
        for _ in range(effective.trades_per_tick):
            buy = rng.random() < 0.5
            qty = effective.trade_qty * rng.uniform(0.5, 1.5)
            self._trade(frames, state, ask if buy else bid, to_units(qty), now_ms, buy)
        for row, phase in state.phases:
            if (
                phase.block_trade_qty is not None
                and phase.start <= offset < phase.end
                and state.fired.get(row) != cycle
            ):
                state.fired[row] = cycle
                self._trade(frames, state, ask, to_units(phase.block_trade_qty), now_ms, True)

    @staticmethod
    def _trade(
        frames: list[Frame],
        state: _ScriptedSymbol,
        price_units: int,
        qty_units: int,
        now_ms: int,
        buy: bool,
    ) -> None:
        state.trade_id += 1
        state.agg_id += 1
        price = format_units(price_units)
        qty = format_units(qty_units)
        symbol = state.instrument.symbol
        frames.append(
            (
                f"{state.lower}@trade",
                trade_payload(symbol, state.trade_id, price, qty, now_ms, not buy),
            )
        )
        frames.append(
            (
                f"{state.lower}@aggTrade",
                agg_trade_payload(
                    symbol, state.agg_id, state.trade_id, price, qty, now_ms, not buy
                ),
            )
        )
