"""What every rule kind shares: the :class:`Rule` protocol, its defaults, and the state it reads.

A kind's ``evaluate(event, state, now)`` sees the rule's :class:`RuleState` for one symbol:
the symbol's shared :class:`MarketState` and the rule's own scratch data.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

import attrs

from oraculo_trio.core.book import Book, OrderBook, PartialBook
from oraculo_trio.core.events import (
    TRADE,
    BookTicker,
    DepthDiff,
    DepthSnapshot,
    Liquidation,
    MarkPrice,
    Trade,
)


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
    that never sent anything still counts as silent. Futures symbols also keep their last
    mark price (``mark``) and liquidation (``last_liquidation``).
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
    mark: MarkPrice | None = None
    last_liquidation: Liquidation | None = None

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
        if isinstance(event, DepthSnapshot):
            self.last_depth_wall = now_wall
            book = self.book
            if book is None:
                # Partial books replace the whole top-N: keeping the decoder's level tuples
                # as they come is ~4x cheaper than a sorted book (core/book.py benchmark).
                book = self.book = PartialBook(self.symbol)
            book.apply_snapshot(event.bids, event.asks, event.last_update_id)
            self._top_from_book(book)
        elif isinstance(event, DepthDiff):
            self.last_depth_wall = now_wall
            book = self.book
            if self.book_sync is None:
                if not isinstance(book, OrderBook):
                    book = self.book = OrderBook(self.symbol)
                book.apply_diff(event.bids, event.asks, event.final_update_id)
            self._top_from_book(book)
        elif isinstance(event, BookTicker):
            self.last_depth_wall = now_wall
            self.best_bid = event.bid_price
            self.best_ask = event.ask_price
        elif isinstance(event, MarkPrice):
            self.mark = event
        elif isinstance(event, Liquidation):
            self.last_liquidation = event

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


class TradeEventKind(RuleBase):
    """A kind whose condition is a moment (a trade): false again once it has passed."""

    streams: ClassVar[frozenset[str]] = frozenset({TRADE})

    def tick(self, state: RuleState, now: float) -> Signal | None:
        price = state.market.last_price
        return None if price is None else Signal(False, price)
