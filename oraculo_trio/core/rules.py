"""Rules: what the rule file declares, and the kinds that evaluate events.

A rule kind is a class with a ``kind`` name, the ``streams`` it looks at, and
``evaluate(event, state, now) -> Signal | None`` (the :class:`Rule` protocol). ``state`` is
the rule's :class:`RuleState` for one symbol: the symbol's shared :class:`MarketState` and
the rule's own scratch data. ``None`` means "this event tells me nothing"; a
:class:`Signal` says whether the condition holds and with what value.

Kinds and their boundaries (``>=`` means the value equal to the threshold fires):

=====================  =======  =============================================================
kind                   stream   holds while / fires when
=====================  =======  =============================================================
crossing               trade    a trade crosses ``level`` either way (an event)
crossing_up / _down    trade    ... upward (prev < level <= price) / downward (prev > level >=
                                price)
greater_than           trade    last price > ``level`` (``hysteresis``: stays until <= level-h)
less_than              trade    last price < ``level`` (``hysteresis``: stays until >= level+h)
entering_channel       trade    a trade moves from outside ``[low, high]`` to inside (an event)
exiting_channel        trade    a trade moves from inside ``[low, high]`` to outside (an event)
inside_channel         trade    low <= last price <= high
outside_channel        trade    last price < low or > high
moving_up_pct          trade    price >= ``pct`` % above the lowest price of the last ``window`` s
moving_down_pct        trade    price >= ``pct`` % below the highest price of the last ``window``
large_trade            trade    one trade's notional >= ``notional`` (an event)
volume_spike           trade    volume rate of the last ``window`` s >= ``factor`` x the rate of
                                the ``baseline`` s before it
trade_rate             trade    trades per second over ``window`` > ``rate``
buy_sell_imbalance     trade    (buy - sell) / (buy + sell) quantity over ``window`` >=
                                ``threshold`` (``side``)
spread_above_bps       depth    spread > ``bps`` (``hysteresis`` in bps)
book_imbalance         depth    top-``levels`` bid qty / ask qty >= ``ratio`` (or <= 1/ratio)
liquidity_wall         depth    one level within ``bps`` of mid has notional >= ``notional``
thin_book              depth    notional within ``bps`` of mid < ``notional``
no_data                both     no message for >= ``seconds``
zscore                 trade    abs(z-score of the price over ``window``) >= ``threshold``
=====================  =======  =============================================================

Event kinds read false again as soon as the moment has passed (the next trade or tick), so
with ``keep_firing_for = 0`` they resolve right after firing.

Everything here is pure: no trio, no I/O, ``now`` is passed in.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

import attrs
import numpy as np

from oraculo_trio.core.book import ASK, BID, Book, OrderBook, PartialBook
from oraculo_trio.core.errors import ConfigError
from oraculo_trio.core.events import DEPTH, TRADE, BookTicker, DepthDiff, DepthSnapshot, Trade
from oraculo_trio.core.windows import Extremum, RingBuffer, RollingSum, SplitSum

TRIGGERS = ("once", "every_time", "once_per_interval")
SEVERITIES = ("info", "warning", "critical")
OFFLOADS = ("thread", "process")


@attrs.frozen(slots=True)
class Signal:
    """A rule's verdict on one event: does the condition hold, and the deciding value."""

    active: bool
    value: float


@attrs.define(eq=False, slots=True)
class MarketState:
    """What the shard knows about one symbol, shared by every rule of that symbol.

    ``last_event_wall``, ``last_trade_wall`` and ``last_depth_wall`` are the wall-clock
    times the last message (of any stream, of trades, of depth) was folded in;
    ``watch_since`` is when the service started expecting the symbol, so that a symbol
    that never sent anything still counts as silent.
    """

    symbol: str
    book: Book | None = None
    best_bid: float | None = None
    best_ask: float | None = None
    last_price: float | None = None
    previous_price: float | None = None
    last_trade: Trade | None = None
    last_event_wall: float | None = None
    last_trade_wall: float | None = None
    last_depth_wall: float | None = None
    watch_since: float | None = None
    # The symbol's core.sync.BookSync when the shard keeps a diff book: it applies each diff
    # after Binance's sequence checks, before the rules see it (pipeline/diffbooks.py).
    book_sync: Any = None

    def spread_bps(self) -> float | None:
        bid, ask = self.best_bid, self.best_ask
        if bid is None or ask is None or bid <= 0 or ask <= 0:
            return None
        mid = (bid + ask) / 2.0
        return (ask - bid) / mid * 10_000.0

    def apply(self, event: Any, now_wall: float) -> None:
        """Fold ``event`` into the state (always, stale or not: state must stay right)."""
        self.last_event_wall = now_wall
        if isinstance(event, Trade):
            self.last_trade_wall = now_wall
            self.previous_price = self.last_price
            self.last_price = event.price
            self.last_trade = event
            return
        self.last_depth_wall = now_wall
        if isinstance(event, DepthSnapshot):
            book = self.book
            if book is None:
                # Partial books replace the whole top-N: keeping the decoder's level tuples
                # as they come is ~4x cheaper than a sorted book (core/book.py benchmark).
                book = self.book = PartialBook(self.symbol)
            book.apply_snapshot(event.bids, event.asks, event.last_update_id)
            self._top_from_book(book)
        elif isinstance(event, DepthDiff):
            book = self.book
            if self.book_sync is None:
                if not isinstance(book, OrderBook):
                    book = self.book = OrderBook(self.symbol)
                book.apply_diff(event.bids, event.asks, event.final_update_id)
            self._top_from_book(book)
        elif isinstance(event, BookTicker):
            self.best_bid = event.bid_price
            self.best_ask = event.ask_price

    def _top_from_book(self, book: Book) -> None:
        bid = book.best_bid
        ask = book.best_ask
        self.best_bid = bid[0] if bid else None
        self.best_ask = ask[0] if ask else None


@attrs.define(eq=False, slots=True)
class RuleState:
    """One rule's state for one symbol."""

    market: MarketState
    data: Any = None


@runtime_checkable
class Rule(Protocol):
    """What a rule kind provides. Custom kinds (``module:Class``) implement the same.

    ``__init__(params)`` validates its parameters and raises ``ValueError`` naming the
    parameter (``"params.level is required"``); the loader turns that into a
    :class:`~oraculo_trio.errors.ConfigError` naming the rule id.

    ``evaluate`` must be pure and cheap (microseconds): it runs in the event loop, for
    every message of ``streams`` of every symbol the rule matches. The market state is
    already updated with ``event`` when it runs.

    Optional class attributes and methods, read when the rule is bound (see
    :class:`RuleBase` for their defaults):

    - ``per_batch = True``: evaluated once per micro-batch and symbol, with the batch's
      last event, instead of per message (costly book queries).
    - ``stateful = True``: ``evaluate`` also folds the event into the rule's windows, so
      it runs on stale messages too (their signal is discarded).
    - ``tick(state, now) -> Signal | None``: a reading driven by time alone, taken every
      ``rules.tick_interval`` (windows that empty, silence) while the alert is not
      inactive, or always with ``ticks_when_inactive = True`` (a kind that time alone can
      make hold: ``no_data``). Without ``tick``, a rule's last reading is fed again while
      its alert is not inactive, so ``for``, ``keep_firing_for`` and ``repeat_interval``
      run on time.
    - ``offload = "thread"`` or ``"process"``: CPU-heavy (> ~50 µs). ``evaluate`` only
      folds data (returns None); per batch, ``snapshot(state, now)`` copies the inputs in
      the event loop and ``compute(snapshot) -> Signal | None`` runs in a worker thread
      (code that releases the GIL, such as numpy) or a worker process (trio_parallel:
      code that holds the GIL; the rule and the snapshot must pickle).
    """

    kind: ClassVar[str]
    streams: ClassVar[frozenset[str]]

    def initial_data(self) -> Any:
        """Scratch data for a new (rule, symbol) pair, kept in ``RuleState.data``."""

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        """Judge one event; ``now`` is wall-clock Unix seconds."""


class RuleBase:
    """Defaults of the optional parts of :class:`Rule`; custom kinds may subclass it."""

    kind: ClassVar[str] = ""
    streams: ClassVar[frozenset[str]] = frozenset()
    per_batch: ClassVar[bool] = False
    stateful: ClassVar[bool] = False
    ticks_when_inactive: ClassVar[bool] = False
    offload: ClassVar[str | None] = None

    def initial_data(self) -> Any:
        return None

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        raise NotImplementedError


# --- parameter checks -------------------------------------------------------------------

_REQUIRED = object()


def _number(
    params: Mapping[str, Any],
    key: str,
    *,
    minimum: float | None = None,
    above: float | None = None,
    maximum: float | None = None,
    default: Any = _REQUIRED,
) -> float:
    if key not in params:
        if default is _REQUIRED:
            raise ValueError(f"params.{key} is required")
        return default
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"params.{key} = {value!r}: expected a finite number")
    if minimum is not None and value < minimum:
        raise ValueError(f"params.{key} = {value!r}: expected a number >= {minimum:g}")
    if above is not None and value <= above:
        raise ValueError(f"params.{key} = {value!r}: expected a number > {above:g}")
    if maximum is not None and value > maximum:
        raise ValueError(f"params.{key} = {value!r}: expected a number <= {maximum:g}")
    return float(value)


def _integer(
    params: Mapping[str, Any], key: str, *, minimum: int, maximum: int, default: int
) -> int:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ValueError(f"params.{key} = {value!r}: expected an integer {minimum}..{maximum}")
    return value


def _choice(params: Mapping[str, Any], key: str, allowed: tuple[str, ...], default: str) -> str:
    value = params.get(key, default)
    if value not in allowed:
        raise ValueError(f"params.{key} = {value!r}: expected one of {', '.join(allowed)}")
    return value


def _duration_param(params: Mapping[str, Any], key: str) -> float:
    if key not in params:
        raise ValueError(f"params.{key} is required")
    seconds = _seconds(params[key])
    if seconds is None or seconds <= 0:
        raise ValueError(
            f'params.{key} = {params[key]!r}: expected seconds > 0 or a duration such as "30s"'
        )
    return seconds


def _no_extra(params: Mapping[str, Any], *allowed: str) -> None:
    extra = sorted(set(params) - set(allowed))
    if extra:
        raise ValueError(f"params.{extra[0]} is not a parameter of this kind (takes {allowed})")


# --- price ------------------------------------------------------------------------------


class _TradeEvent(RuleBase):
    """A kind whose condition is a moment (a trade): false again once it has passed."""

    streams: ClassVar[frozenset[str]] = frozenset({TRADE})

    def tick(self, state: RuleState, now: float) -> Signal | None:
        price = state.market.last_price
        return None if price is None else Signal(False, price)


class Crossing(_TradeEvent):
    """Fires when a trade crosses ``params.level`` (either direction).

    Up: previous < level <= price; down: previous > level >= price.
    """

    kind: ClassVar[str] = "crossing"
    direction: ClassVar[int] = 0  # +1 up only, -1 down only, 0 both

    def __init__(self, params: Mapping[str, Any]) -> None:
        _no_extra(params, "level")
        self.level = _number(params, "level", minimum=0)

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        previous = state.market.previous_price
        price = event.price
        if previous is None:
            return None
        level = self.level
        up = previous < level <= price
        down = previous > level >= price
        crossed = (up and self.direction >= 0) or (down and self.direction <= 0)
        return Signal(crossed, price)


class CrossingUp(Crossing):
    """Fires when a trade crosses ``params.level`` upward (previous < level <= price)."""

    kind: ClassVar[str] = "crossing_up"
    direction: ClassVar[int] = 1


class CrossingDown(Crossing):
    """Fires when a trade crosses ``params.level`` downward (previous > level >= price)."""

    kind: ClassVar[str] = "crossing_down"
    direction: ClassVar[int] = -1


class GreaterThan(RuleBase):
    """Holds while the last trade price is above ``level`` (strictly).

    With ``hysteresis`` h, once holding it holds until the price is at or below level - h.
    """

    kind: ClassVar[str] = "greater_than"
    streams: ClassVar[frozenset[str]] = frozenset({TRADE})
    sign: ClassVar[float] = 1.0

    def __init__(self, params: Mapping[str, Any]) -> None:
        _no_extra(params, "level", "hysteresis")
        self.level = _number(params, "level", minimum=0)
        self.hysteresis = _number(params, "hysteresis", minimum=0, default=0.0)

    def initial_data(self) -> Any:
        return False

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        price = event.price
        # sign flips the comparison for less_than: -price > -level.
        threshold = self.level - self.hysteresis * self.sign if state.data else self.level
        active = price * self.sign > threshold * self.sign
        state.data = active
        return Signal(active, price)


class LessThan(GreaterThan):
    """Holds while the last trade price is below ``level`` (strictly).

    With ``hysteresis`` h, once holding it holds until the price is at or above level + h.
    """

    kind: ClassVar[str] = "less_than"
    sign: ClassVar[float] = -1.0


def _channel(params: Mapping[str, Any]) -> tuple[float, float]:
    _no_extra(params, "low", "high")
    low = _number(params, "low", minimum=0)
    high = _number(params, "high", minimum=0)
    if high <= low:
        raise ValueError(f"params.high = {high:g}: expected a number > params.low ({low:g})")
    return low, high


class InsideChannel(RuleBase):
    """Holds while the last trade price is inside ``[low, high]`` (bounds included)."""

    kind: ClassVar[str] = "inside_channel"
    streams: ClassVar[frozenset[str]] = frozenset({TRADE})
    inside: ClassVar[bool] = True

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.low, self.high = _channel(params)

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        price = event.price
        return Signal((self.low <= price <= self.high) is self.inside, price)


class OutsideChannel(InsideChannel):
    """Holds while the last trade price is below ``low`` or above ``high``."""

    kind: ClassVar[str] = "outside_channel"
    inside: ClassVar[bool] = False


class EnteringChannel(_TradeEvent):
    """Fires when a trade moves the price from outside ``[low, high]`` to inside it."""

    kind: ClassVar[str] = "entering_channel"
    entering: ClassVar[bool] = True

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.low, self.high = _channel(params)

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        previous = state.market.previous_price
        if previous is None:
            return None
        price = event.price
        was_inside = self.low <= previous <= self.high
        is_inside = self.low <= price <= self.high
        moved = (not was_inside and is_inside) if self.entering else (was_inside and not is_inside)
        return Signal(moved, price)


class ExitingChannel(EnteringChannel):
    """Fires when a trade moves the price from inside ``[low, high]`` to outside it."""

    kind: ClassVar[str] = "exiting_channel"
    entering: ClassVar[bool] = False


class MovingUpPct(RuleBase):
    """Holds while the price is ``pct`` % or more above the lowest trade of the last
    ``window`` seconds (value: the move in %)."""

    kind: ClassVar[str] = "moving_up_pct"
    streams: ClassVar[frozenset[str]] = frozenset({TRADE})
    stateful: ClassVar[bool] = True
    up: ClassVar[bool] = True

    def __init__(self, params: Mapping[str, Any]) -> None:
        _no_extra(params, "pct", "window")
        self.pct = _number(params, "pct", above=0)
        self.window = _duration_param(params, "window")

    def initial_data(self) -> Any:
        return Extremum(self.window, largest=not self.up)

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        window: Extremum = state.data
        window.expire(now)
        window.add(now, event.price)
        return self._judge(window, event.price)

    def tick(self, state: RuleState, now: float) -> Signal | None:
        price = state.market.last_price
        if price is None:
            return None
        window: Extremum = state.data
        window.expire(now)
        if window.value is None:
            return Signal(False, 0.0)
        return self._judge(window, price)

    def _judge(self, window: Extremum, price: float) -> Signal:
        reference = window.value
        if not reference:
            return Signal(False, 0.0)
        move = (price - reference) / reference * 100.0
        if not self.up:
            move = -move
        return Signal(move >= self.pct, move)


class MovingDownPct(MovingUpPct):
    """Holds while the price is ``pct`` % or more below the highest trade of the last
    ``window`` seconds (value: the fall in %, positive)."""

    kind: ClassVar[str] = "moving_down_pct"
    up: ClassVar[bool] = False


# --- trade flow -------------------------------------------------------------------------

SIDES_ANY = ("any", "buy", "sell")


def _is_buy(trade: Trade) -> bool:
    # The buyer is the taker (aggressor) when the maker was the seller.
    return not trade.buyer_is_maker


class LargeTrade(_TradeEvent):
    """Fires on a trade whose notional (price x quantity) is >= ``notional``.

    ``side``: ``any`` (default), ``buy`` or ``sell`` (the aggressor's side).
    """

    kind: ClassVar[str] = "large_trade"

    def __init__(self, params: Mapping[str, Any]) -> None:
        _no_extra(params, "notional", "side")
        self.notional = _number(params, "notional", above=0)
        self.side = _choice(params, "side", SIDES_ANY, "any")

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        notional = event.price * event.quantity
        side = self.side
        if side != "any" and (side == "buy") != _is_buy(event):
            return Signal(False, notional)
        return Signal(notional >= self.notional, notional)


class VolumeSpike(RuleBase):
    """Holds while the traded quantity per second of the last ``window`` seconds is at least
    ``factor`` times that of the ``baseline`` seconds before it (value: the ratio).

    Nothing is judged until ``window + baseline`` seconds of history exist; a recent volume
    below ``min_volume`` never holds. A zero baseline with recent volume is an infinite ratio.
    """

    kind: ClassVar[str] = "volume_spike"
    streams: ClassVar[frozenset[str]] = frozenset({TRADE})
    stateful: ClassVar[bool] = True
    # The baseline ages out on its own: time alone can make the ratio hold.
    ticks_when_inactive: ClassVar[bool] = True

    def __init__(self, params: Mapping[str, Any]) -> None:
        _no_extra(params, "window", "baseline", "factor", "min_volume")
        self.window = _duration_param(params, "window")
        self.baseline = _duration_param(params, "baseline")
        self.factor = _number(params, "factor", above=0)
        self.min_volume = _number(params, "min_volume", minimum=0, default=0.0)

    def initial_data(self) -> Any:
        return [SplitSum(self.window, self.baseline), None]  # windows, first seen

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        data = state.data
        if data[1] is None:
            data[1] = now
        windows: SplitSum = data[0]
        windows.expire(now)
        windows.add(now, event.quantity)
        return self._judge(data, now)

    def tick(self, state: RuleState, now: float) -> Signal | None:
        data = state.data
        if data[1] is None:
            return None
        data[0].expire(now)
        return self._judge(data, now)

    def _judge(self, data: list, now: float) -> Signal | None:
        if now - data[1] < self.window + self.baseline:
            return None  # warming up: the baseline is not known yet
        windows: SplitSum = data[0]
        recent = windows.recent.total
        recent_rate = recent / self.window
        base_rate = windows.base.total / self.baseline
        # A zero baseline with recent volume is an infinite ratio: a market waking up.
        ratio = recent_rate / base_rate if base_rate > 0 else (math.inf if recent > 0 else 0.0)
        return Signal(ratio >= self.factor and recent >= self.min_volume and recent > 0, ratio)


class TradeRate(RuleBase):
    """Holds while trades per second over the last ``window`` seconds are above ``rate``."""

    kind: ClassVar[str] = "trade_rate"
    streams: ClassVar[frozenset[str]] = frozenset({TRADE})
    stateful: ClassVar[bool] = True

    def __init__(self, params: Mapping[str, Any]) -> None:
        _no_extra(params, "rate", "window")
        self.rate = _number(params, "rate", minimum=0)
        self.window = _duration_param(params, "window")

    def initial_data(self) -> Any:
        return deque()

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        times: deque[float] = state.data
        times.append(now)
        return self.tick(state, now)

    def tick(self, state: RuleState, now: float) -> Signal | None:
        times: deque[float] = state.data
        cutoff = now - self.window
        while times and times[0] < cutoff:
            times.popleft()
        rate = len(times) / self.window
        return Signal(rate > self.rate, rate)


class BuySellImbalance(RuleBase):
    """Holds while ``(buy - sell) / (buy + sell)`` of the quantity traded in the last
    ``window`` seconds is >= ``threshold`` (``side = "buy"``), <= -threshold (``"sell"``),
    or either (``"any"``, default). Value: the imbalance, -1 to 1.

    A window with less than ``min_volume`` traded never holds.
    """

    kind: ClassVar[str] = "buy_sell_imbalance"
    streams: ClassVar[frozenset[str]] = frozenset({TRADE})
    stateful: ClassVar[bool] = True
    # Old trades of one side leaving the window can tip the balance with no new trade.
    ticks_when_inactive: ClassVar[bool] = True

    def __init__(self, params: Mapping[str, Any]) -> None:
        _no_extra(params, "threshold", "window", "side", "min_volume")
        self.threshold = _number(params, "threshold", above=0, maximum=1)
        self.window = _duration_param(params, "window")
        self.side = _choice(params, "side", SIDES_ANY, "any")
        self.min_volume = _number(params, "min_volume", minimum=0, default=0.0)

    def initial_data(self) -> Any:
        return RollingSum(self.window), RollingSum(self.window)  # buys, sells

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        buys, sells = state.data
        (buys if _is_buy(event) else sells).add(now, event.quantity)
        return self.tick(state, now)

    def tick(self, state: RuleState, now: float) -> Signal | None:
        buys, sells = state.data
        buys.expire(now)
        sells.expire(now)
        total = buys.total + sells.total
        if total <= 0:
            return Signal(False, 0.0)
        imbalance = (buys.total - sells.total) / total
        side = self.side
        if side == "buy":
            active = imbalance >= self.threshold
        elif side == "sell":
            active = -imbalance >= self.threshold
        else:
            active = abs(imbalance) >= self.threshold
        return Signal(active and total >= self.min_volume, imbalance)


# --- book -------------------------------------------------------------------------------


class SpreadAboveBps(RuleBase):
    """Holds while the best bid/ask spread is above ``params.bps`` basis points.

    With ``hysteresis`` h (bps), once holding it holds until the spread is <= bps - h.
    """

    kind: ClassVar[str] = "spread_above_bps"
    streams: ClassVar[frozenset[str]] = frozenset({DEPTH})

    def __init__(self, params: Mapping[str, Any]) -> None:
        _no_extra(params, "bps", "hysteresis")
        self.bps = _number(params, "bps", minimum=0)
        self.hysteresis = _number(params, "hysteresis", minimum=0, default=0.0)

    def initial_data(self) -> Any:
        return False

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        spread = state.market.spread_bps()
        if spread is None:
            return None
        threshold = self.bps - self.hysteresis if state.data else self.bps
        active = spread > threshold
        state.data = active
        return Signal(active, spread)


SIDES_BOOK = ("any", BID, ASK)


class BookImbalance(RuleBase):
    """Holds while top-``levels`` bid quantity over ask quantity is >= ``ratio`` (``side =
    "bid"``), <= 1 / ratio (``"ask"``), or either (``"any"``, default). Value: the ratio.

    Evaluated once per micro-batch and symbol (``per_batch``).
    """

    kind: ClassVar[str] = "book_imbalance"
    streams: ClassVar[frozenset[str]] = frozenset({DEPTH})
    per_batch: ClassVar[bool] = True

    def __init__(self, params: Mapping[str, Any]) -> None:
        _no_extra(params, "ratio", "levels", "side")
        self.ratio = _number(params, "ratio", above=1)
        self.levels = _integer(params, "levels", minimum=1, maximum=5000, default=10)
        self.side = _choice(params, "side", SIDES_BOOK, "any")

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        book = state.market.book
        if book is None:
            return None
        ratio = book.bid_ask_ratio(self.levels)
        if ratio is None:
            return None
        bid_heavy = ratio >= self.ratio
        ask_heavy = ratio * self.ratio <= 1.0
        side = self.side
        active = bid_heavy if side == BID else ask_heavy if side == ASK else bid_heavy or ask_heavy
        return Signal(active, ratio)


class _NotionalNearMid(RuleBase):
    """A kind comparing the notional within ``bps`` of the mid (``side``: ``any``, ``bid``
    or ``ask``) with ``notional``, once per micro-batch and symbol (``per_batch``): the
    query costs per level."""

    streams: ClassVar[frozenset[str]] = frozenset({DEPTH})
    per_batch: ClassVar[bool] = True

    def __init__(self, params: Mapping[str, Any]) -> None:
        _no_extra(params, "notional", "bps", "side")
        self.notional = _number(params, "notional", above=0)
        self.bps = _number(params, "bps", above=0)
        self.side = _choice(params, "side", SIDES_BOOK, "any")


class LiquidityWall(_NotionalNearMid):
    """Holds while one book level within ``bps`` of the mid has a notional >= ``notional``
    (``side``: ``any``, ``bid`` or ``ask``). Value: the largest such level's notional.

    Evaluated once per micro-batch and symbol (``per_batch``): the query costs per level.
    """

    kind: ClassVar[str] = "liquidity_wall"

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        book = state.market.book
        if book is None or book.mid is None:
            return None
        wall = book.largest_level_within_bps(self.bps, None if self.side == "any" else self.side)
        if wall is None:
            return Signal(False, 0.0)
        return Signal(wall.notional >= self.notional, wall.notional)


class ThinBook(_NotionalNearMid):
    """Holds while the notional resting within ``bps`` of the mid is below ``notional``
    (``side``: ``any`` for both sides together, ``bid`` or ``ask``). Value: that notional.

    Evaluated once per micro-batch and symbol (``per_batch``): the query costs per level.
    """

    kind: ClassVar[str] = "thin_book"

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        book = state.market.book
        if book is None:
            return None
        within = book.notional_within_bps(self.bps)
        if within is None:
            return None
        side = self.side
        value = within.bid if side == BID else within.ask if side == ASK else within.total
        return Signal(value < self.notional, value)


# --- staleness --------------------------------------------------------------------------


class NoData(RuleBase):
    """Holds while the symbol has sent no message (``stream``: ``any``, ``depth`` or
    ``trade``) for ``seconds`` or more. Value: the silence so far, seconds.

    Judged by time alone (``tick``); a message ends the silence at the next tick.
    """

    kind: ClassVar[str] = "no_data"
    streams: ClassVar[frozenset[str]] = frozenset({DEPTH, TRADE})
    ticks_when_inactive: ClassVar[bool] = True

    def __init__(self, params: Mapping[str, Any]) -> None:
        _no_extra(params, "seconds", "stream")
        self.seconds = _duration_param(params, "seconds")
        self.stream = _choice(params, "stream", ("any", DEPTH, TRADE), "any")

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        return None

    def tick(self, state: RuleState, now: float) -> Signal | None:
        market = state.market
        stream = self.stream
        if stream == TRADE:
            last = market.last_trade_wall
        elif stream == DEPTH:
            last = market.last_depth_wall
        else:
            last = market.last_event_wall
        if last is None:
            last = market.watch_since
            if last is None:
                return None
        silence = now - last
        return Signal(silence >= self.seconds, silence)


# --- CPU-heavy --------------------------------------------------------------------------


class ZScore(RuleBase):
    """Holds while the z-score of the last trade price against the prices of the last
    ``window`` seconds (including it) is >= ``threshold`` in absolute value. Value: z.

    Needs ``min_samples`` prices (default 20); keeps at most ``max_samples`` (default
    10,000). CPU-heavy by design (numpy over the window): evaluated per batch in a worker
    thread (``offload = "thread"``), never per message.
    """

    kind: ClassVar[str] = "zscore"
    streams: ClassVar[frozenset[str]] = frozenset({TRADE})
    stateful: ClassVar[bool] = True
    offload: ClassVar[str | None] = "thread"

    def __init__(self, params: Mapping[str, Any]) -> None:
        _no_extra(params, "window", "threshold", "min_samples", "max_samples")
        self.window = _duration_param(params, "window")
        self.threshold = _number(params, "threshold", above=0)
        self.min_samples = _integer(params, "min_samples", minimum=3, maximum=10**6, default=20)
        self.max_samples = _integer(
            params, "max_samples", minimum=self.min_samples, maximum=10**7, default=10_000
        )

    def initial_data(self) -> Any:
        return RingBuffer(self.window, self.max_samples)

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        state.data.add(now, event.price)
        return None

    def snapshot(self, state: RuleState, now: float) -> Any:
        """The window's prices (a copy), or None when there are too few to judge."""
        buffer: RingBuffer = state.data
        buffer.expire(now)
        if len(buffer) < self.min_samples:
            return None
        return buffer.values()

    def compute(self, prices: Any) -> Signal | None:
        """The z-score of the last price; runs in a worker thread."""
        if prices is None:
            return None
        mean = float(np.mean(prices))
        std = float(np.std(prices))
        if std == 0.0:
            return Signal(False, 0.0)
        z = (float(prices[-1]) - mean) / std
        return Signal(abs(z) >= self.threshold, z)


RULE_KINDS: dict[str, type] = {
    cls.kind: cls
    for cls in (
        Crossing,
        CrossingUp,
        CrossingDown,
        GreaterThan,
        LessThan,
        EnteringChannel,
        ExitingChannel,
        InsideChannel,
        OutsideChannel,
        MovingUpPct,
        MovingDownPct,
        LargeTrade,
        VolumeSpike,
        TradeRate,
        BuySellImbalance,
        SpreadAboveBps,
        BookImbalance,
        LiquidityWall,
        ThinBook,
        NoData,
        ZScore,
    )
}


# --- the rule file ----------------------------------------------------------------------


@attrs.frozen
class RuleSpec:
    """One ``[[rule]]`` entry of the rule file, validated and normalised.

    ``inhibits``: label matchers; while this rule fires for a symbol, notifications of the
    symbol's other alerts whose labels (their ``labels`` plus ``severity`` and ``rule_id``)
    match every pair are inhibited.
    """

    id: str
    kind: str
    symbols: tuple[str, ...]
    params: Mapping[str, Any]
    severity: str = "warning"
    labels: Mapping[str, str] = attrs.field(factory=dict)
    message: str = ""
    for_: float = 0.0
    keep_firing_for: float = 0.0
    repeat_interval: float = 300.0
    trigger: str = "once_per_interval"
    expires_at: float | None = None
    enabled: bool = True
    inhibits: Mapping[str, str] = attrs.field(factory=dict)

    def matches(self, symbol: str) -> bool:
        return any(fnmatch.fnmatchcase(symbol, pattern) for pattern in self.symbols)

    def match_labels(self) -> dict[str, str]:
        """The labels inhibition matchers see: ``labels`` plus ``severity`` and ``rule_id``."""
        return {**self.labels, "severity": self.severity, "rule_id": self.id}

    def to_entry(self) -> dict[str, Any]:
        """The spec as a rule-file entry (durations in seconds), the inverse of parse_rule."""
        entry: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "symbols": list(self.symbols),
            "params": dict(self.params),
            "severity": self.severity,
            "labels": dict(self.labels),
            "message": self.message,
            "for": self.for_,
            "keep_firing_for": self.keep_firing_for,
            "repeat_interval": self.repeat_interval,
            "trigger": self.trigger,
            "enabled": self.enabled,
            "inhibits": dict(self.inhibits),
        }
        if self.expires_at is not None:
            entry["expires_at"] = self.expires_at
        return entry


@attrs.frozen(eq=False)
class CompiledRule:
    """A rule spec with its kind instantiated."""

    spec: RuleSpec
    rule: Any


RULE_KEYS = (
    "id", "kind", "symbols", "params", "severity", "labels", "message", "for",
    "keep_firing_for", "repeat_interval", "trigger", "expires_at", "enabled", "inhibits",
)  # fmt: skip


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


def _seconds(value: Any) -> float | None:
    """Seconds from a number or a string like ``"30s"``; None when it is neither (or < 0)."""
    seconds = math.nan
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match[1]) * _DURATION_UNITS[match[2]]
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string like ``"30s"``, ``"5m"``, ``"1h"``, ``"2d"``.

    Raises:
        ValueError: neither a number >= 0 nor such a string.
    """
    seconds = _seconds(value)
    if seconds is None:
        raise ValueError(
            f'{value!r}: expected seconds >= 0 or a duration such as "30s", "5m", "1h"'
        )
    return seconds


def _duration(rule_id: str, key: str, value: Any) -> float:
    seconds = _seconds(value)
    if seconds is None:
        raise ConfigError(
            f"rule {rule_id!r}: {key} = {value!r} is not allowed: expected seconds >= 0 "
            'or a duration such as "30s", "5m", "1h"'
        )
    return seconds


def _string_table(rule_id: str, key: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ConfigError(f"rule {rule_id!r}: {key} must be a table of strings")
    return dict(value)


def _kind_class(rule_id: str, kind: Any, resolve: Callable[[str], type] | None) -> tuple[str, type]:
    if isinstance(kind, type):
        # A class given directly (tests, embedding code): named as module:Class.
        return f"{kind.__module__}:{kind.__qualname__}", kind
    if not isinstance(kind, str):
        raise ConfigError(f"rule {rule_id!r}: kind is required")
    if kind in RULE_KINDS:
        return kind, RULE_KINDS[kind]
    if ":" in kind and resolve is not None:
        try:
            return kind, resolve(kind)
        except Exception as exc:
            raise ConfigError(
                f"rule {rule_id!r}: kind = {kind!r} cannot be loaded: {exc}"
            ) from None
    allowed = ", ".join(sorted(RULE_KINDS))
    raise ConfigError(
        f"rule {rule_id!r}: kind = {kind!r} is not allowed: expected one of {allowed}, "
        "or module:Class"
    )


def _check_kind_class(rule_id: str, kind: str, rule: Any) -> None:
    streams = getattr(rule, "streams", None)
    if not isinstance(streams, frozenset | set) or not streams or not streams <= {DEPTH, TRADE}:
        raise ConfigError(
            f"rule {rule_id!r}: kind = {kind!r} has streams = {streams!r}: expected a "
            f"non-empty set of {DEPTH!r} and/or {TRADE!r}"
        )
    if not callable(getattr(rule, "evaluate", None)) or not callable(
        getattr(rule, "initial_data", None)
    ):
        raise ConfigError(
            f"rule {rule_id!r}: kind = {kind!r} does not implement the Rule protocol "
            "(initial_data and evaluate)"
        )
    offload = getattr(rule, "offload", None)
    if offload is not None and (
        offload not in OFFLOADS
        or not callable(getattr(rule, "snapshot", None))
        or not callable(getattr(rule, "compute", None))
    ):
        raise ConfigError(
            f"rule {rule_id!r}: kind = {kind!r} has offload = {offload!r}: expected one of "
            f"{OFFLOADS} with snapshot() and compute() methods"
        )


def parse_rule(
    entry: Mapping[str, Any], resolve: Callable[[str], type] | None = None
) -> CompiledRule:
    """Validate one rule entry and build its kind.

    Args:
        entry: the ``[[rule]]`` table. ``kind`` is a built-in name, ``module:Class``, or a
            class object (named ``module:Class`` in the spec).
        resolve: turns ``module:Class`` into a class, for custom kinds (I/O lives with the
            caller); None means built-in kinds only.

    Raises:
        ConfigError: naming the rule id and the key that is wrong.
    """
    rule_id = entry.get("id")
    if not isinstance(rule_id, str) or not rule_id:
        raise ConfigError(f"rule {entry!r}: id is required (a non-empty string)")
    for key in entry:
        if key not in RULE_KEYS:
            raise ConfigError(
                f"rule {rule_id!r}: unknown key {key!r}; keys: {', '.join(RULE_KEYS)}"
            )
    kind, kind_cls = _kind_class(rule_id, entry.get("kind"), resolve)
    symbols = entry.get("symbols", "*")
    if isinstance(symbols, str):
        symbols = [symbols]
    if (
        not isinstance(symbols, list | tuple)
        or not symbols
        or not all(isinstance(s, str) and s for s in symbols)
    ):
        raise ConfigError(
            f'rule {rule_id!r}: symbols = {symbols!r} is not allowed: expected "*", a glob '
            "or a list of symbols"
        )
    params = entry.get("params", {})
    if not isinstance(params, dict):
        raise ConfigError(f"rule {rule_id!r}: params must be a table")
    try:
        rule = kind_cls(params)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"rule {rule_id!r}: {exc}") from None
    _check_kind_class(rule_id, kind, rule)
    severity = entry.get("severity", "warning")
    if severity not in SEVERITIES:
        raise ConfigError(
            f"rule {rule_id!r}: severity = {severity!r} is not allowed: "
            f"expected one of {SEVERITIES}"
        )
    trigger = entry.get("trigger", "once_per_interval")
    if trigger not in TRIGGERS:
        raise ConfigError(
            f"rule {rule_id!r}: trigger = {trigger!r} is not allowed: expected one of {TRIGGERS}"
        )
    labels = _string_table(rule_id, "labels", entry.get("labels", {}))
    inhibits = _string_table(rule_id, "inhibits", entry.get("inhibits", {}))
    message = entry.get("message", "")
    if not isinstance(message, str):
        raise ConfigError(f"rule {rule_id!r}: message must be a string")
    enabled = entry.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"rule {rule_id!r}: enabled = {enabled!r}: expected true or false")
    expires_at = entry.get("expires_at")
    if expires_at is not None:
        if hasattr(expires_at, "timestamp") and getattr(expires_at, "tzinfo", None) is not None:
            expires_at = expires_at.timestamp()
        elif not isinstance(expires_at, int | float) or isinstance(expires_at, bool):
            raise ConfigError(
                f"rule {rule_id!r}: expires_at = {expires_at!r}: expected a TOML offset "
                "date-time (2030-01-01T00:00:00Z) or Unix seconds"
            )
    spec = RuleSpec(
        id=rule_id,
        kind=kind,
        symbols=tuple(s.upper() if s != "*" else s for s in symbols),
        params=dict(params),
        severity=severity,
        labels=labels,
        message=message,
        for_=_duration(rule_id, "for", entry.get("for", 0)),
        keep_firing_for=_duration(rule_id, "keep_firing_for", entry.get("keep_firing_for", 0)),
        repeat_interval=_duration(rule_id, "repeat_interval", entry.get("repeat_interval", 300)),
        trigger=trigger,
        expires_at=float(expires_at) if expires_at is not None else None,
        enabled=enabled,
        inhibits=inhibits,
    )
    return CompiledRule(spec, rule)


def parse_rules(
    document: Mapping[str, Any], resolve: Callable[[str], type] | None = None
) -> list[CompiledRule]:
    """Validate a whole rule document (``{"rule": [...]}``); ids must be unique.

    Raises:
        ConfigError: naming the rule id and the key that is wrong.
    """
    extra = sorted(set(document) - {"rule"})
    if extra:
        raise ConfigError(
            f"unknown top-level key {extra[0]!r} in the rule file (expected [[rule]])"
        )
    entries = document.get("rule", [])
    if not isinstance(entries, list):
        raise ConfigError("the rule file must hold [[rule]] tables")
    compiled: list[CompiledRule] = []
    seen: set[str] = set()
    for entry in entries:
        if not isinstance(entry, dict):
            raise ConfigError(f"the rule file must hold [[rule]] tables, got {entry!r}")
        rule = parse_rule(entry, resolve)
        if rule.spec.id in seen:
            raise ConfigError(f"rule {rule.spec.id!r}: id is used twice")
        seen.add(rule.spec.id)
        compiled.append(rule)
    return compiled


def rules_for(symbol: str, rules: Iterable[CompiledRule], now: float | None) -> list[CompiledRule]:
    """The enabled, unexpired (at ``now``; None: ignore expiry) rules matching ``symbol``."""
    return [
        r
        for r in rules
        if r.spec.enabled
        and (now is None or r.spec.expires_at is None or r.spec.expires_at > now)
        and r.spec.matches(symbol)
    ]
