"""Per-symbol order books, and the top-of-book maths the depth rules use.

Two books with the same queries, one per workload, each the faster one measured:

- :class:`OrderBook` for diff streams (``@depth``) and REST snapshots: per side, the sorted
  prices and the quantities at the same indexes, each in an ``array('d')``. A diff level is
  one bisect plus an in-place set, or an ``insert``/``del`` (a memmove of at most a few
  KB); best, top-N, and sums within N bps are slices and C-level ``sum``/``map``, so no
  query sorts. The per-level loop runs in C (``_book_levels.c``, built at install), or in
  Python, :func:`update_side_in_python`, where no C compiler built it.
- :class:`PartialBook` for partial books (``@depthN``), replaced whole every 100 ms: it keeps
  the decoder's level tuples as they are, so a replace is two assignments.

Each book defines its updates and the reads of its own layout (best bid and ask, read per
message, directly); the queries over them (mid, spread, crossed, depth, ratios, levels, the
liquidity wall's checks) are written once, in :class:`_BookQueries`.

Measured on the recorded Binance data (``python benchmarks/bench_book.py``, Python 3.11,
2-core VM; µs per op, best of 30 rounds; each op also reads best bid, best ask, spread_bps
and imbalance(10)):

===============================  ======  ======  ======  ==========  =====  ======
workload                         C loop  Python  float   SortedDict  order  tuples
                                         loop    lists               -book
===============================  ======  ======  ======  ==========  =====  ======
(a) 20+20 snapshot replace        6.5     6.4     7.5      15.2       7.4    1.1
(b) 10+10 diff, 1000-level book   4.2     8.0     7.4      17.3      25.2     -
(b) recorded diffs (7.2 levels)   2.4     4.1     3.8      10.4      20.4     -
(c) (b) in 100 ms bursts          8.0    13.4    16.0      30.6      37.7     -
1000+1000 REST snapshot load      169     167     201       156       173     -
===============================  ======  ======  ======  ==========  =====  ======

"C loop" and "Python loop" are :class:`OrderBook` (arrays) with each loop; "float lists" is
its earlier layout, Python lists of float objects; "tuples" is :class:`PartialBook`.

(a) cycles the 2 recorded ``@depth20`` frames and the top 20 levels of the 25 REST
snapshots; (b) starts from the three 1000+1000-level REST snapshots (BTCUSDT, DOTUSDT,
MANAUSD) and applies the levels of their synced diffs regrouped 10 bids + 10 asks; (c)
applies those diffs to 50 such books in bursts of 150 every 100 ms, as a 1,500 msg/s feed
of 100 ms streams arrives: each burst starts on caches the idle core has lost.

Why a loop of our own in C: the libraries made for the job lose to the Python loop already.
``SortedDict`` (sortedcontainers) does its insert, delete and top-N slicing in Python code,
where ``bisect`` and ``insert`` are C; order-book's C ``SortedDict`` re-sorts its keys after
an insert or a delete, at the next read of the best level, so each diff pays a sort. The C
loop is the Python loop, level for level (the tests hold them to the same bytes on
the recorded data and on generated input), without the interpreter: on the side-by-side
harness at 1,500 diffs/s it took the service from 7.0 % to 5.3-5.7 % of a core.

Why arrays although lists of floats win (b) by a few per cent in Python: the service lives
in (c). A list holds pointers to float objects scattered over the heap, so a cold bisect
touches ten of them in ten places; an array holds the numbers themselves, 8 bytes each,
side by side. With the whole service running (the side-by-side harness at 1,500 diffs/s, 4
interleaved runs each) the arrays took the process from 10.1-12.9 % to 9.0-9.7 % of a core.
An earlier list+dict variant (quantities in a ``{price: qty}`` dict) did (b) in 6.2 µs and
``notional_within_bps`` twice as slowly, because every summed level cost a dict lookup.

The liquidity queries cost per level inside the band: on the BTCUSDT book,
``notional_within_bps(10)`` (291 levels) takes 12 µs and ``largest_level_within_bps(10)``
20 µs; at 50 bps (1,403 levels) 49 and 81 µs. Evaluate them once per micro-batch and
symbol, not per message.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from operator import itemgetter, lt, mul
from typing import NamedTuple

import attrs

from oraculo_trio.core.events import Level

BID = "bid"
ASK = "ask"
SIDES = (BID, ASK)


class Notional(NamedTuple):
    """Quote notional (price x quantity) resting within some distance of the mid."""

    bid: float
    ask: float
    total: float


class Wall(NamedTuple):
    """The single level with the largest notional within some distance of the mid."""

    side: str
    price: float
    quantity: float
    notional: float


def _doubles() -> array[float]:
    return array("d")


_PRICE = itemgetter(0)
_QTY = itemgetter(1)


def update_side_in_python(
    prices: array[float], quantities: array[float], levels: Iterable[Level]
) -> None:
    """Set or replace each level; a zero quantity removes it (absent levels are fine).

    The reference for the C loop of the same name (``_book_levels.update_side``), and the
    one the books use when that extension was not built.
    """
    for price, quantity in levels:
        i = bisect_left(prices, price)
        if i < len(prices) and prices[i] == price:
            if quantity:
                quantities[i] = quantity
            else:
                del prices[i]
                del quantities[i]
        elif quantity:
            prices.insert(i, price)
            quantities.insert(i, quantity)


try:
    # The same loop in C, built at install when a C compiler is there (setup.py).
    from oraculo_trio.core._book_levels import update_side as _update
except ImportError:  # pragma: no cover - depends on the install
    _update = update_side_in_python

#: Whether the books update their levels in C (see the module doc); the service says so at start-up.
UPDATES_IN_C = _update is not update_side_in_python


def _side(levels: Iterable[Level]) -> tuple[array[float], array[float]]:
    """Prices ascending and their quantities, for a replacement side without zero levels."""
    if not isinstance(levels, tuple | list):
        levels = tuple(levels)
    # Lists first, arrays at the end: array() takes a list in one C pass but an iterator
    # item by item (a 1000-level load: 166 against 258 µs).
    prices = list(map(_PRICE, levels))
    quantities = list(map(_QTY, levels))
    # Exchanges send sides ordered (bids descending, asks ascending): one pass checks it;
    # only out-of-order input (or zero or repeated levels) is sorted.
    if len(prices) > 1 and prices[0] > prices[-1]:
        prices.reverse()
        quantities.reverse()
    if all(map(lt, prices, prices[1:])) and 0.0 not in quantities:
        return array("d", prices), array("d", quantities)
    by_price = dict(levels)  # a repeated price: the last one given wins
    by_price = {price: qty for price, qty in by_price.items() if qty}
    prices = sorted(by_price)
    return array("d", prices), array("d", map(by_price.__getitem__, prices))


class _BookQueries:
    """The queries both books answer, written once over what each book's layout gives.

    A book defines its updates, :attr:`best_bid` and :attr:`best_ask` (read per message,
    so each reads its own layout directly), and the primitives here: ``_top()`` (best bid
    and best ask prices, None when a side is empty), ``_sides()`` (one entry per level a
    side), ``_top_quantities(n)``, ``_best_levels(side, n)`` and ``_largest_within(bps,
    side)``.
    """

    __slots__ = ()

    # -- top of book ----------------------------------------------------------------------

    @property
    def mid(self) -> float | None:
        """Mean of best bid and best ask prices, None when a side is empty."""
        top = self._top()
        if top is None:
            return None
        return (top[0] + top[1]) * 0.5

    @property
    def spread_bps(self) -> float | None:
        """Best ask minus best bid in basis points of the mid, None when a side is empty.

        Negative when the book is crossed.
        """
        top = self._top()
        if top is None:
            return None
        bid, ask = top
        return (ask - bid) / ((ask + bid) * 0.5) * 1e4

    def is_crossed(self) -> bool:
        """True when the best bid is at or above the best ask (a locked book counts too)."""
        top = self._top()
        return top is not None and top[0] >= top[1]

    @property
    def depth(self) -> tuple[int, int]:
        """Number of ``(bid, ask)`` levels held."""
        bids, asks = self._sides()
        return len(bids), len(asks)

    def levels(self, side: str, n: int | None = None) -> tuple[Level, ...]:
        """The best ``n`` levels of ``side`` (all when None), best first.

        Raises:
            ValueError: ``side`` is not ``"bid"`` or ``"ask"``, or ``n`` is negative.
        """
        if n is not None and n < 0:
            raise ValueError(f"n={n!r}: must be >= 0")
        if side not in SIDES:
            raise ValueError(f"side={side!r}: allowed {BID!r} or {ASK!r}")
        return self._best_levels(side, n)

    # -- depth ratios ---------------------------------------------------------------------

    def imbalance(self, n: int = 10) -> float | None:
        """Share of bids in the top ``n`` levels: ``bid_qty / (bid_qty + ask_qty)``, 0 to 1.

        0.5 is balanced, 1.0 means no asks. None when both sides are empty.

        Raises:
            ValueError: ``n`` < 1.
        """
        if n < 1:
            raise _top_n_error(n)
        bid, ask = self._top_quantities(n)
        total = bid + ask
        return bid / total if total else None

    def bid_ask_ratio(self, n: int = 10) -> float | None:
        """Top-``n`` bid quantity over top-``n`` ask quantity, None when there are no asks.

        Raises:
            ValueError: ``n`` < 1.
        """
        if n < 1:
            raise _top_n_error(n)
        bid, ask = self._top_quantities(n)
        return bid / ask if ask else None

    # -- liquidity near the mid -----------------------------------------------------------

    def largest_level_within_bps(self, bps: float, side: str | None = None) -> Wall | None:
        """The level with the largest notional within ``bps`` of the mid (a liquidity wall).

        Args:
            bps: Distance from the mid in basis points, as :meth:`notional_within_bps`.
            side: ``"bid"`` or ``"ask"`` to look at one side only; both when None.

        Returns:
            The largest level (on a tie, the one nearer the mid; bids before asks), or None
            when a side is empty (no mid) or no level of ``side`` lies within ``bps``.

        Raises:
            ValueError: ``side`` is not ``"bid"``, ``"ask"`` or None.
        """
        if side is not None and side not in SIDES:
            raise ValueError(f"side={side!r}: allowed {BID!r}, {ASK!r} or None")
        return self._largest_within(bps, side)


def _top_n_error(n: int) -> ValueError:
    return ValueError(f"n={n!r}: must be >= 1")


@attrs.define(eq=False)
class OrderBook(_BookQueries):
    """The book of one symbol: both sides, and queries over their best levels.

    Prices are the exchange's decimal strings parsed to float: one price string always
    gives the same float, so levels are matched exactly.

    ``last_update_id`` is the exchange's book sequence number after the last update applied
    (``lastUpdateId`` of a snapshot, ``u`` of a diff), None before the first.
    """

    symbol: str
    last_update_id: int | None = None
    # Per side, prices ascending and quantities at the same index: best bid last, best ask
    # first, so top-N is a slice, no query sorts, and sums run in C without lookups.
    _bid_prices: array[float] = attrs.field(factory=_doubles, init=False, repr=False)
    _bid_qty: array[float] = attrs.field(factory=_doubles, init=False, repr=False)
    _ask_prices: array[float] = attrs.field(factory=_doubles, init=False, repr=False)
    _ask_qty: array[float] = attrs.field(factory=_doubles, init=False, repr=False)

    # -- updates --------------------------------------------------------------------------

    def apply_snapshot(
        self, bids: Iterable[Level], asks: Iterable[Level], last_update_id: int | None
    ) -> None:
        """Replace the whole book (a REST snapshot, or a ``@depthN`` partial book).

        Args:
            bids: ``(price, quantity)`` levels in any order; zero quantities are skipped and
                a repeated price keeps its last quantity.
            asks: Likewise.
            last_update_id: The snapshot's ``lastUpdateId``.
        """
        self._bid_prices, self._bid_qty = _side(bids)
        self._ask_prices, self._ask_qty = _side(asks)
        self.last_update_id = last_update_id

    def apply_diff(
        self,
        bids: Iterable[Level],
        asks: Iterable[Level],
        final_update_id: int | None = None,
    ) -> None:
        """Apply an incremental update: each level is set or replaced; quantity 0 removes it.

        Sequence checks (``U``/``u`` continuity) are the caller's: this only applies levels.

        Args:
            bids: ``(price, quantity)`` levels, in any order.
            asks: Likewise.
            final_update_id: The diff's ``u``; stored as ``last_update_id`` when given.
        """
        if bids:
            _update(self._bid_prices, self._bid_qty, bids)
        if asks:
            _update(self._ask_prices, self._ask_qty, asks)
        if final_update_id is not None:
            self.last_update_id = final_update_id

    def clear(self) -> None:
        """Forget every level and the update id (for a resync)."""
        self._bid_prices, self._bid_qty = _doubles(), _doubles()
        self._ask_prices, self._ask_qty = _doubles(), _doubles()
        self.last_update_id = None

    # -- the layout's reads ---------------------------------------------------------------

    @property
    def best_bid(self) -> Level | None:
        """Highest bid as ``(price, quantity)``, None when there are no bids."""
        if self._bid_prices:
            return self._bid_prices[-1], self._bid_qty[-1]
        return None

    @property
    def best_ask(self) -> Level | None:
        """Lowest ask as ``(price, quantity)``, None when there are no asks."""
        if self._ask_prices:
            return self._ask_prices[0], self._ask_qty[0]
        return None

    def is_crossed(self) -> bool:
        """As :meth:`_BookQueries.is_crossed`, reading the lists directly.

        The sync asks it after every diff (``core/sync.py``): no call through ``_top()``.
        """
        bids, asks = self._bid_prices, self._ask_prices
        return bool(bids and asks and bids[-1] >= asks[0])

    def _top(self) -> tuple[float, float] | None:
        bids, asks = self._bid_prices, self._ask_prices
        if bids and asks:
            return bids[-1], asks[0]
        return None

    def _sides(self) -> tuple[array[float], array[float]]:
        return self._bid_prices, self._ask_prices

    def _best_levels(self, side: str, n: int | None) -> tuple[Level, ...]:
        if side == BID:
            stop = None if n is None else -n - 1
            return tuple(zip(self._bid_prices[:stop:-1], self._bid_qty[:stop:-1], strict=True))
        return tuple(zip(self._ask_prices[:n], self._ask_qty[:n], strict=True))

    def _top_quantities(self, n: int) -> tuple[float, float]:
        return sum(self._bid_qty[-n:], 0.0), sum(self._ask_qty[:n], 0.0)

    def _within(self, bps: float) -> tuple[int, int] | None:
        """Index of the first bid and end index of the asks within ``bps`` of the mid."""
        bids, asks = self._bid_prices, self._ask_prices
        if not bids or not asks:
            return None
        mid = (bids[-1] + asks[0]) * 0.5
        offset = mid * bps * 1e-4
        return bisect_left(bids, mid - offset), bisect_right(asks, mid + offset)

    def notional_within_bps(self, bps: float) -> Notional | None:
        """Quote notional resting within ``bps`` basis points of the mid, per side and total.

        A bid counts when its price >= mid x (1 - bps/10^4), an ask when <= mid x (1 + bps/10^4).
        None when a side is empty (no mid).
        """
        within = self._within(bps)
        if within is None:
            return None
        first_bid, end_ask = within
        bid = sum(map(mul, self._bid_prices[first_bid:], self._bid_qty[first_bid:]), 0.0)
        ask = sum(map(mul, self._ask_prices[:end_ask], self._ask_qty[:end_ask]), 0.0)
        return Notional(bid, ask, bid + ask)

    def _largest_within(self, bps: float, side: str | None) -> Wall | None:
        within = self._within(bps)
        if within is None:
            return None
        first_bid, end_ask = within
        best: Wall | None = None
        if side != ASK and first_bid < len(self._bid_prices):
            # Best first, so that max() keeps the level nearest the mid on a tie.
            best = _largest(
                BID,
                self._bid_prices[: first_bid - 1 if first_bid else None : -1],
                self._bid_qty[: first_bid - 1 if first_bid else None : -1],
            )
        if side != BID and end_ask:
            wall = _largest(ASK, self._ask_prices[:end_ask], self._ask_qty[:end_ask])
            if best is None or wall.notional > best.notional:
                best = wall
        return best


@attrs.define(eq=False)
class PartialBook(_BookQueries):
    """The top levels of one symbol, replaced whole by each partial book (``@depthN``).

    Keeps the decoder's level tuples as they are (best first, as Binance orders them), so
    a replace costs nothing and top-N is a slice; it cannot apply diffs. Same queries, with
    the same meanings, as :class:`OrderBook`.
    """

    symbol: str
    last_update_id: int | None = None
    _bids: tuple[Level, ...] = attrs.field(default=(), init=False, repr=False)
    _asks: tuple[Level, ...] = attrs.field(default=(), init=False, repr=False)

    def apply_snapshot(
        self, bids: Iterable[Level], asks: Iterable[Level], last_update_id: int | None
    ) -> None:
        """Replace the book.

        Args:
            bids: ``(price, quantity)`` levels, best (highest) first, as Binance sends them.
            asks: Levels best (lowest) first.
            last_update_id: The partial book's ``lastUpdateId``.
        """
        self._bids = bids if type(bids) is tuple else tuple(bids)
        self._asks = asks if type(asks) is tuple else tuple(asks)
        self.last_update_id = last_update_id

    def clear(self) -> None:
        """Forget every level and the update id."""
        self._bids = self._asks = ()
        self.last_update_id = None

    # -- the layout's reads ---------------------------------------------------------------

    @property
    def best_bid(self) -> Level | None:
        """Highest bid as ``(price, quantity)``, None when there are no bids."""
        return self._bids[0] if self._bids else None

    @property
    def best_ask(self) -> Level | None:
        """Lowest ask as ``(price, quantity)``, None when there are no asks."""
        return self._asks[0] if self._asks else None

    def _top(self) -> tuple[float, float] | None:
        bids, asks = self._bids, self._asks
        if bids and asks:
            return bids[0][0], asks[0][0]
        return None

    def _sides(self) -> tuple[tuple[Level, ...], tuple[Level, ...]]:
        return self._bids, self._asks

    def _best_levels(self, side: str, n: int | None) -> tuple[Level, ...]:
        return self._bids[:n] if side == BID else self._asks[:n]

    def _top_quantities(self, n: int) -> tuple[float, float]:
        return sum(map(_QTY, self._bids[:n]), 0.0), sum(map(_QTY, self._asks[:n]), 0.0)

    def _within(self, bps: float) -> tuple[tuple[Level, ...], tuple[Level, ...]] | None:
        bids, asks = self._bids, self._asks
        if not bids or not asks:
            return None
        mid = (bids[0][0] + asks[0][0]) * 0.5
        offset = mid * bps * 1e-4
        low, high = mid - offset, mid + offset
        nb = 0
        for price, _ in bids:
            if price < low:
                break
            nb += 1
        na = 0
        for price, _ in asks:
            if price > high:
                break
            na += 1
        return bids[:nb], asks[:na]

    def notional_within_bps(self, bps: float) -> Notional | None:
        """As :meth:`OrderBook.notional_within_bps`."""
        within = self._within(bps)
        if within is None:
            return None
        bid = sum([price * qty for price, qty in within[0]], 0.0)
        ask = sum([price * qty for price, qty in within[1]], 0.0)
        return Notional(bid, ask, bid + ask)

    def _largest_within(self, bps: float, side: str | None) -> Wall | None:
        within = self._within(bps)
        if within is None:
            return None
        best: Wall | None = None
        for wall_side, levels in ((BID, within[0]), (ASK, within[1])):
            if side is not None and side != wall_side:
                continue
            for price, qty in levels:
                notional = price * qty
                if best is None or notional > best.notional:
                    best = Wall(wall_side, price, qty, notional)
        return best


Book = OrderBook | PartialBook
"""Either book: rules only query, so they take both."""


def _largest(side: str, prices: Sequence[float], quantities: Sequence[float]) -> Wall:
    """Largest notional among levels ordered best first (the first wins a tie)."""
    notionals = list(map(mul, prices, quantities))
    top = max(notionals)
    i = notionals.index(top)
    return Wall(side, prices[i], quantities[i], top)
