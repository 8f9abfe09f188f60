"""Diff books: a true book per symbol, its diff streams and REST snapshots, and the faults
that test a client's sync (``oraculo-trio loadtest depthdiff --faults ...``).

:class:`DiffBookMarket` keeps each symbol's true book (at most ``depth`` levels a side around
a mid that walks) and publishes every change as Binance diffs: ``<symbol>@depth@100ms`` at
``rate_per_s`` frames per second over all symbols, each frame one or more updates with
consecutive ``U``/``u`` (``U`` = previous ``u`` + 1), and, with ``slow_stream``,
``<symbol>@depth`` once a second with everything since its last frame merged. ``snapshot``
serves ``GET /api/v3/depth`` from the same books (``MockExchange`` starts its REST server
for it), with ``lastUpdateId`` = the last update made, published or not yet.

It is both a tick-based :class:`~oraculo_trio.mockexchange.markets.payloads.Market` and a
frame source for open-loop load (``frames(count, now_ms)``, ``depth_kinds``), so the load
test publishes it as it is.

With ``market = "usdm"`` or ``"coinm"`` it plays Binance futures: update ids are shared by
every symbol (one counter: a symbol's next ``U`` is not its last ``u + 1``), each diff carries
``pu`` (its symbol's previous ``u``) and ``T``, COIN-M diffs ``ps`` too, and snapshots carry
``E`` and ``T`` (COIN-M: ``symbol`` and ``pair``).

Faults, on the ``@depth@100ms`` stream (the 1000 ms stream stays faithful):

- ``gaps``: a diff is made (the true book changes) but never sent: the next one shows a gap;
- ``dups``: a diff is sent twice;
- ``reorder``: a diff is held back and sent after the next one of its symbol;
- ``crossed``: a bogus diff (its own update id) puts a bid at the best ask, which the true
  book never had;

and at the REST server: ``429`` (a request refused with ``Retry-After``) and ``slow``
(a snapshot answered late). :meth:`DiffBookMarket.inject` queues one on command;
a :class:`FaultPlan` makes them happen at random, ``per_second`` of each kind.
"""

from __future__ import annotations

import functools
import math
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from oraculo_trio.mockexchange.markets.payloads import Frame, Payload, RateCarry, format_units
from oraculo_trio.mockexchange.rest import RestFault

MARKET_FAULTS = ("gaps", "dups", "reorder", "crossed")
REST_FAULTS = ("429", "slow")
FAULT_KINDS = (*MARKET_FAULTS, *REST_FAULTS)
"""Every fault ``--faults`` accepts."""

#: Price step (1e-8 units): 0.01.
_TICK_UNITS = 1_000_000
#: Quantities (1e-8 units) levels take, a fixed pool so a run is cheap and seeded.
_QTY_POOL = tuple(units * 1_000_000 for units in (1, 2, 5, 10, 25, 50, 100, 250, 1000, 4000))
# Chance that an update moves the mid, and that a level update deletes the level.
_MOVE = 0.08
_DELETE = 0.3

# The load test's overload stage asks the generator for twice what the service can take:
# formatting each level's two decimals was 7 of the ~20 us a diff cost to make (py-spy at
# 100,000 diffs/s), so quantities (a fixed pool) are formatted once and prices once each.
_QTY_TEXT = {units: format_units(units) for units in (0, *_QTY_POOL)}


@functools.lru_cache(maxsize=1 << 16)
def _price_text(units: int) -> str:
    # Bounded: the mid walks, so a long run keeps meeting new prices.
    return format_units(units)


@attrs.frozen
class FaultPlan:
    """Faults a :class:`DiffBookMarket` makes by itself.

    Attributes:
        kinds: names from :data:`FAULT_KINDS`.
        per_second: how many of each kind per second, over all symbols.
        retry_after: ``Retry-After`` seconds of a ``429``.
        slow_seconds: how late a ``slow`` snapshot is answered.
    """

    kinds: frozenset[str] = attrs.field(converter=frozenset)
    per_second: float = 0.5
    retry_after: float = 1.0
    slow_seconds: float = 0.5

    @kinds.validator
    def _check_kinds(self, _attribute: attrs.Attribute, value: frozenset[str]) -> None:
        unknown = sorted(value - set(FAULT_KINDS))
        if unknown:
            raise ValueError(f"fault {unknown[0]!r}: expected some of {', '.join(FAULT_KINDS)}")

    @classmethod
    def parse(cls, text: str, **options: Any) -> FaultPlan:
        """``"gaps,dups,429"`` -> a plan of those kinds (``options`` as the attributes).

        Raises:
            ValueError: an unknown fault name (the message lists the allowed ones).
        """
        return cls(frozenset(part.strip() for part in text.split(",") if part.strip()), **options)


@attrs.define(eq=False, slots=True)
class _Book:
    """One symbol's true book: price index (ticks) -> quantity (1e-8 units)."""

    symbol: str
    fast: str
    slow: str
    base: int
    mid: int
    update_id: int
    bids: dict[int, int] = attrs.field(factory=dict)
    asks: dict[int, int] = attrs.field(factory=dict)
    faults: deque[str] = attrs.field(factory=deque)
    held: Payload | None = None
    previous: int = 0
    slow_first: int | None = None
    slow_bids: dict[int, int] = attrs.field(factory=dict)
    slow_asks: dict[int, int] = attrs.field(factory=dict)


@attrs.define(eq=False)
class DiffBookMarket:
    """True books and their diff streams; see the module docstring.

    Attributes:
        symbols: upper-case symbols.
        rate_per_s: ``@depth@100ms`` frames per second over all symbols (before faults).
        depth: most levels a side of a true book (a snapshot of ``limit`` >= ``depth`` holds
            the whole book).
        faults: faults to make at random; None for none (``inject`` still works).
        slow_stream: also publish ``@depth`` (1000 ms, merged) frames (spot only).
        seed: seed of everything random.
        market: ``spot`` (default), ``usdm`` or ``coinm`` (futures payloads and ids).
        clock: the exchange's clock for snapshots' ``E``/``T`` (epoch seconds).
    """

    symbols: tuple[str, ...] = attrs.field(converter=tuple)
    rate_per_s: float = 100.0
    depth: int = 50
    faults: FaultPlan | None = None
    slow_stream: bool = False
    seed: int = 0
    depth_kinds: tuple[str, ...] = ("depth",)
    trade_kinds: tuple[str, ...] = ()
    market: str = "spot"
    clock: Callable[[], float] = time.time
    frames_made: int = attrs.field(init=False, default=0)
    faults_made: dict[str, int] = attrs.field(init=False, factory=dict)
    _rng: random.Random = attrs.field(init=False)
    _books: dict[str, _Book] = attrs.field(init=False, factory=dict)
    _order: list[_Book] = attrs.field(init=False, factory=list)
    _cursor: int = attrs.field(init=False, default=0)
    _carry: RateCarry = attrs.field(init=False, factory=RateCarry)
    _fault_carry: dict[str, float] = attrs.field(init=False, factory=dict)
    _rest_faults: deque[RestFault] = attrs.field(init=False, factory=deque)
    _last_slow: float | None = attrs.field(init=False, default=None)
    _surplus: list[Frame] = attrs.field(init=False, factory=list)
    _futures: bool = attrs.field(init=False, default=False)
    _engine_id: int = attrs.field(init=False, default=1_000_000)

    def __attrs_post_init__(self) -> None:
        if not self.symbols:
            raise ValueError("DiffBookMarket: symbols must not be empty")
        if self.market not in ("spot", "usdm", "coinm"):
            raise ValueError(f"DiffBookMarket: market {self.market!r}: spot, usdm or coinm")
        self._futures = self.market != "spot"
        if self._futures and self.slow_stream:
            raise ValueError("DiffBookMarket: slow_stream is spot's (futures' @depth is 250 ms)")
        if self.depth < 2:
            raise ValueError(f"DiffBookMarket: depth must be >= 2, got {self.depth!r}")
        self._rng = rng = random.Random(self.seed)
        for index, symbol in enumerate(self.symbols):
            lower = symbol.lower()
            book = _Book(
                symbol,
                f"{lower}@depth@100ms",
                f"{lower}@depth",
                base=rng.randrange(100_000, 1_000_000),
                mid=0,
                # Futures: every book starts at the matching engine's id.
                update_id=self._engine_id if self._futures else 1_000_000 * (index + 1),
            )
            book.previous = book.update_id
            for distance in range(1, self.depth + 1):
                book.bids[-distance] = rng.choice(_QTY_POOL)
                book.asks[distance] = rng.choice(_QTY_POOL)
            self._books[symbol] = book
            self._order.append(book)

    # -- what the exchange and tests ask ---------------------------------------------------

    @property
    def service_settings(self) -> dict[str, dict[str, Any]]:
        """Settings a service reading this market needs: a snapshot holding whole books (the
        default of 1000 levels, weight 50 on spot, as a real deployment asks, unless the
        books are deeper)."""
        if self.depth <= 1000:
            return {}
        return {"feed": {"snapshot_limit": 5000}}

    def streams(self) -> list[str]:
        """Every stream name this market publishes."""
        names = [book.fast for book in self._order]
        if self.slow_stream:
            names += [book.slow for book in self._order]
        return names

    def inject(self, fault: str, symbol: str | None = None, count: int = 1) -> None:
        """Queue ``count`` faults of one kind, for ``symbol`` (market faults: a random one if
        None) or for the next REST requests (``429``, ``slow``).

        Raises:
            ValueError: an unknown fault or symbol.
        """
        if fault not in FAULT_KINDS:
            raise ValueError(f"fault {fault!r}: expected one of {', '.join(FAULT_KINDS)}")
        for _ in range(count):
            if fault in REST_FAULTS:
                self._rest_faults.append(self._rest(fault))
                continue
            book = self._books[symbol] if symbol is not None else self._rng.choice(self._order)
            book.faults.append(fault)

    def calm(self) -> None:
        """No more faults: the fault plan stops and queued faults are forgotten (a diff held back
        for ``reorder`` still goes out after the next one)."""
        self.faults = None
        self._rest_faults.clear()
        for book in self._order:
            book.faults.clear()

    def update_id(self, symbol: str) -> int:
        """The last update id of ``symbol``'s true book."""
        return self._books[symbol].update_id

    def true_book(self, symbol: str) -> tuple[tuple[tuple[float, float], ...], ...]:
        """``(bids, asks)`` of the true book, best first, as floats (as a client parses them)."""
        snapshot = self.snapshot(symbol, 5000)
        assert snapshot is not None
        return tuple(
            tuple((float(price), float(qty)) for price, qty in snapshot[side])
            for side in ("bids", "asks")
        )

    def snapshot(self, symbol: str, limit: int) -> dict[str, Any] | None:
        """The REST depth snapshot of ``symbol`` (``limit`` levels a side), or None."""
        book = self._books.get(symbol)
        if book is None:
            return None
        price = self._price
        snapshot: dict[str, Any] = {"lastUpdateId": book.update_id}
        if self._futures:
            now_ms = int(self.clock() * 1000)
            snapshot |= {"E": now_ms, "T": now_ms}
            if self.market == "coinm":
                snapshot |= {"symbol": symbol, "pair": symbol.partition("_")[0]}
        snapshot["bids"] = [
            [price(book, i), format_units(book.bids[i])]
            for i in sorted(book.bids, reverse=True)[:limit]
        ]
        snapshot["asks"] = [
            [price(book, i), format_units(book.asks[i])] for i in sorted(book.asks)[:limit]
        ]
        return snapshot

    def rest_fault(self, symbol: str) -> RestFault | None:
        """The REST server asks before answering: the next queued ``429``/``slow``, if any."""
        return self._rest_faults.popleft() if self._rest_faults else None

    def tick(self, now: float, dt: float) -> list[Frame]:
        """This tick's ``@depth@100ms`` frames (``rate_per_s * dt``, fractions carried), and
        the ``@depth`` frames when a second has passed since the last ones.

        Args:
            now: exchange time of the tick, epoch seconds (the diffs' ``E``).
            dt: tick length in seconds.
        """
        count = self._carry.take(self.rate_per_s * dt)
        self._plan_faults(dt)
        now_ms = int(now * 1000)
        frames: list[Frame] = []
        for _ in range(count):
            book = self._order[self._cursor]
            self._cursor = (self._cursor + 1) % len(self._order)
            self._diff(book, now_ms, frames)
        if self.slow_stream:
            if self._last_slow is None:
                self._last_slow = now
            elif now - self._last_slow >= 1.0 - 1e-9:
                frames.extend(self.slow_frames(now))
        self.frames_made += len(frames)
        return frames

    def slow_frames(self, now: float) -> list[Frame]:
        """The ``@depth`` frames of every update since the last ones, made now (the tick
        makes them once a second; a test may want them at once)."""
        self._last_slow = now
        frames: list[Frame] = []
        for book in self._order:
            self._slow_frame(book, int(now * 1000), frames)
        return frames

    def frames(self, count: int, now_ms: int) -> list[Frame]:
        """Exactly ``count`` frames due at ``now_ms`` (the load generator's frame source)."""
        frames = self._surplus
        order = self._order
        # Local: an attribute of this class is set through attrs' __setattr__ (its
        # converter), a Python call per frame.
        cursor = self._cursor
        make = self._diff
        while len(frames) < count:
            book = order[cursor]
            cursor = (cursor + 1) % len(order)
            make(book, now_ms, frames)
        self._cursor = cursor
        self._plan_faults(count / self.rate_per_s if self.rate_per_s else 0.0)
        taken, self._surplus = frames[:count], frames[count:]
        self.frames_made += len(taken)
        return taken

    # -- making diffs ----------------------------------------------------------------------

    def _price(self, book: _Book, index: int) -> str:
        return _price_text((book.base + index) * _TICK_UNITS)

    def _plan_faults(self, dt: float) -> None:
        plan = self.faults
        if plan is None or dt <= 0:
            return
        for kind in plan.kinds:
            carry = self._fault_carry.get(kind, 0.0) + plan.per_second * dt
            while carry >= 1.0:
                carry -= 1.0
                self.inject(kind)
            self._fault_carry[kind] = carry

    def _rest(self, fault: str) -> RestFault:
        plan = self.faults or FaultPlan(frozenset())
        if fault == "429":
            return RestFault(429, retry_after=plan.retry_after)
        return RestFault(delay=plan.slow_seconds)

    def _diff(self, book: _Book, now_ms: int, frames: list[Frame]) -> None:
        """Make one diff of ``book`` (the true book changes) and send it as its faults say."""
        fault = book.faults.popleft() if book.faults else None
        payload = self._change(book, now_ms)
        if fault is not None:
            self.faults_made[fault] = self.faults_made.get(fault, 0) + 1
        held, book.held = book.held, None
        if fault == "gaps":
            pass  # made, never sent
        elif fault == "dups":
            frames.append((book.fast, payload))
            frames.append((book.fast, payload))
        elif fault == "reorder":
            book.held = payload
        elif fault == "crossed":
            frames.append((book.fast, payload))
            frames.append((book.fast, self._bogus(book, now_ms)))
        else:
            frames.append((book.fast, payload))
        if held is not None:
            frames.append((book.fast, held))

    def _change(self, book: _Book, now_ms: int) -> Payload:
        # Drawn from random() alone: randint, choice and expovariate cost a Python call each
        # (a third of a diff's making); these are the same distributions.
        random = self._rng.random
        bids: dict[int, int] = {}
        asks: dict[int, int] = {}
        depth = self.depth
        pool = _QTY_POOL
        log = math.log
        updates = 1 + int(random() * 6)
        for _ in range(updates):
            if random() < _MOVE:
                self._move(book, 1 if random() < 0.5 else -1, bids, asks)
                continue
            # Exponential, mean 5 ticks: the levels near the mid change most.
            distance = 1 + int(-log(1.0 - random()) * 5.0)
            if distance > depth:
                distance = depth
            if random() < 0.5:
                side, changes, index = book.bids, bids, book.mid - distance
            else:
                side, changes, index = book.asks, asks, book.mid + distance
            if index in side and random() < _DELETE:
                quantity = 0
            else:
                quantity = pool[int(random() * len(pool))]
            _set(side, changes, index, quantity)
        first = self._next_id(book)
        # Binance's ids count every book event, some of which change no level we show.
        book.update_id = first + updates - 1 + int(random() * 3)
        if self._futures:
            self._engine_id = book.update_id
        if self.slow_stream:
            if book.slow_first is None:
                book.slow_first = first
            book.slow_bids.update(bids)
            book.slow_asks.update(asks)
        return self._payload(book, now_ms, first, book.update_id, bids, asks)

    def _move(self, book: _Book, step: int, bids: dict[int, int], asks: dict[int, int]) -> None:
        """Move the mid one tick; levels on the wrong side of it or too far go (quantity 0)."""
        mid = book.mid = book.mid + step
        depth = self.depth
        # Bids lie in [mid - depth, mid) and asks in (mid, mid + depth]: a one-tick step puts
        # at most one level of each side out of its range (no scan of the whole book).
        if step > 0:
            bid_out, ask_out = mid - depth - 1, mid
        else:
            bid_out, ask_out = mid, mid + depth + 1
        if bid_out in book.bids:
            _set(book.bids, bids, bid_out, 0)
        if ask_out in book.asks:
            _set(book.asks, asks, ask_out, 0)

    def _bogus(self, book: _Book, now_ms: int) -> Payload:
        """A diff of its own update id that crosses the book; the true book never sees it."""
        best_ask = min(book.asks, default=book.mid + 1)
        book.update_id = self._next_id(book)
        if self._futures:
            self._engine_id = book.update_id
        quantity = {best_ask: _QTY_POOL[0]}
        return self._payload(book, now_ms, book.update_id, book.update_id, quantity, {})

    def _payload(
        self,
        book: _Book,
        now_ms: int,
        first: int,
        last: int,
        bids: Mapping[int, int],
        asks: Mapping[int, int],
    ) -> Payload:
        price = self._price
        if self._futures:
            # pu: the symbol's previous diff made (sent or not: a gap shows as a pu break).
            payload: Payload = {
                "e": "depthUpdate", "E": now_ms, "T": now_ms, "s": book.symbol,
                "U": first, "u": last, "pu": book.previous,
            }  # fmt: skip
            book.previous = last
            if self.market == "coinm":
                payload["ps"] = book.symbol.partition("_")[0]
        else:
            payload = {"e": "depthUpdate", "E": now_ms, "s": book.symbol, "U": first, "u": last}
        quantity = _QTY_TEXT
        payload["b"] = [
            [price(book, i), quantity[q]] for i, q in sorted(bids.items(), reverse=True)
        ]
        payload["a"] = [[price(book, i), quantity[q]] for i, q in sorted(asks.items())]
        return payload

    def _next_id(self, book: _Book) -> int:
        """The first update id of ``book``'s next change: its own next (spot), or the
        matching engine's, which every symbol advances (futures)."""
        if not self._futures:
            return book.update_id + 1
        # Other contracts' events in between, as on Binance.
        self._engine_id += 1 + self._rng.randint(0, 5)
        return self._engine_id

    def _slow_frame(self, book: _Book, now_ms: int, frames: list[Frame]) -> None:
        if book.slow_first is None:
            return
        payload = self._payload(
            book, now_ms, book.slow_first, book.update_id, book.slow_bids, book.slow_asks
        )
        frames.append((book.slow, payload))
        book.slow_first = None
        book.slow_bids = {}
        book.slow_asks = {}


def _set(side: dict[int, int], changes: dict[int, int], index: int, quantity: int) -> None:
    if quantity:
        side[index] = quantity
    else:
        side.pop(index, None)
    changes[index] = quantity
