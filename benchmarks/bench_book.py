"""Order-book variants on the recorded Binance data (µs per operation).

Run: ``python benchmarks/bench_book.py [--rounds N] [--bursts N]``

Variants:
  list+bisect  ``oraculo_trio.core.book.OrderBook``: per side the sorted prices and the
               quantities at the same indexes, each in an ``array('d')`` (what the service
               uses), its levels updated in C when the extension was built (the header
               line says whether)
  Python loop  the same book, its levels updated by the Python loop
               (``update_side_in_python``: the service where no C compiler was at install)
  float lists  the same with Python lists of float objects (the service's earlier layout)
  SortedDict   ``sortedcontainers.SortedDict`` per side (the asyncio pipeline's choice)
  order_book   ``order_book.OrderBook`` (PyPI order-book: a SortedDict in C), only when it is
               installed: it is not a dependency
  tuples       ``oraculo_trio.core.book.PartialBook``: the partial book's level tuples kept
               as the decoder built them (snapshots only: no diffs)

Workloads (each op includes best bid, best ask, spread in bps and imbalance(10)):
  (a) replace with a 20+20-level snapshot: the 2 recorded ``@depth20`` frames and the
      top 20 levels of each recorded REST snapshot, in turn
  (b) 10+10-level diffs on a 1000-level book: the REST snapshots with 1000 levels a side
      (BTCUSDT, DOTUSDT, MANAUSD) then the levels of their synced diffs, regrouped 10 bids
      + 10 asks per diff
  (b') the same diffs as recorded (1 to 70 levels each)
  (c) the diffs of (b) as the service meets them: 50 books (the 3 deep books, copied), in
      bursts of 150 diffs every 100 ms, CPU time per diff. Between bursts the core idles,
      so each burst starts with cold caches; what a diff touches then costs more than in
      (b), where everything stays cached. This is the regime of a feed of 100 ms diff
      streams at a moderate rate, and the one the layout was chosen for.
Plus the one-off load of a 1000+1000-level REST snapshot, and the liquidity queries.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from sortedcontainers import SortedDict

from oraculo_trio.core.book import UPDATES_IN_C, OrderBook, PartialBook, update_side_in_python

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "binance"

Level = tuple[float, float]


class MappingBook:
    """A book whose sides are {price: quantity} mappings kept sorted (the subclasses say
    how they read their best levels)."""

    __slots__ = ("asks", "bids", "last_update_id")

    def apply_diff(self, bids, asks, final_update_id=None) -> None:
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for price, qty in levels:
                if qty:
                    side[price] = qty
                elif price in side:
                    del side[price]

    @property
    def spread_bps(self):
        best_bid, best_ask = self.best_bid, self.best_ask
        if best_bid is None or best_ask is None:
            return None
        bid, ask = best_bid[0], best_ask[0]
        return (ask - bid) / ((ask + bid) * 0.5) * 1e4


class SortedDictBook(MappingBook):
    """The same queries on ``SortedDict``: bids and asks keyed by price, ascending."""

    __slots__ = ()

    def __init__(self) -> None:
        self.bids: SortedDict = SortedDict()
        self.asks: SortedDict = SortedDict()
        self.last_update_id: int | None = None

    def apply_snapshot(self, bids, asks, last_update_id) -> None:
        self.bids = SortedDict({p: q for p, q in bids if q})
        self.asks = SortedDict({p: q for p, q in asks if q})
        self.last_update_id = last_update_id

    @property
    def best_bid(self):
        return self.bids.peekitem(-1) if self.bids else None

    @property
    def best_ask(self):
        return self.asks.peekitem(0) if self.asks else None

    def imbalance(self, n: int = 10):
        # Index slices of the values views: the fastest top-N SortedDict offers.
        bid = sum(self.bids.values()[-n:])
        ask = sum(self.asks.values()[:n])
        total = bid + ask
        return bid / total if total else None


class PythonLoopBook(OrderBook):
    """``OrderBook`` updating its levels with the Python loop, as without the C extension."""

    __slots__ = ()

    def apply_diff(self, bids, asks, final_update_id=None) -> None:
        if bids:
            update_side_in_python(self._bid_prices, self._bid_qty, bids)
        if asks:
            update_side_in_python(self._ask_prices, self._ask_qty, asks)
        if final_update_id is not None:
            self.last_update_id = final_update_id


class FloatListBook(PythonLoopBook):
    """``OrderBook`` with its sides in Python lists of float objects, as it once was."""

    __slots__ = ()

    def apply_snapshot(self, bids, asks, last_update_id) -> None:
        super().apply_snapshot(bids, asks, last_update_id)
        self._bid_prices, self._bid_qty = list(self._bid_prices), list(self._bid_qty)
        self._ask_prices, self._ask_qty = list(self._ask_prices), list(self._ask_qty)


class OrderBookPackageBook(MappingBook):
    """The same queries on the order-book package's C ``SortedDict`` (bids descending)."""

    __slots__ = ()

    def __init__(self) -> None:
        self.apply_snapshot((), (), None)

    def apply_snapshot(self, bids, asks, last_update_id) -> None:
        book = order_book.OrderBook()
        self.bids, self.asks = book.bids, book.asks
        self.apply_diff(bids, asks)
        self.last_update_id = last_update_id

    @property
    def best_bid(self):
        return self.bids.index(0) if len(self.bids) else None

    @property
    def best_ask(self):
        return self.asks.index(0) if len(self.asks) else None

    def imbalance(self, n: int = 10):
        bid = sum(self.bids.index(i)[1] for i in range(min(n, len(self.bids))))
        ask = sum(self.asks.index(i)[1] for i in range(min(n, len(self.asks))))
        total = bid + ask
        return bid / total if total else None


VARIANTS: dict[str, Callable[[], object]] = {
    "list+bisect": lambda: OrderBook("BENCH"),
    "Python loop": lambda: PythonLoopBook("BENCH"),
    "float lists": lambda: FloatListBook("BENCH"),
    "SortedDict": SortedDictBook,
    "tuples": lambda: PartialBook("BENCH"),
}
try:
    import order_book
except ImportError:
    pass
else:
    VARIANTS["order_book"] = OrderBookPackageBook


def _levels(rows) -> tuple[Level, ...]:
    return tuple((float(p), float(q)) for p, q in rows)


def _load(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line]


def snapshots_20() -> list[tuple[tuple[Level, ...], tuple[Level, ...], int]]:
    out = []
    for frame in _load("spot_depth_partial.jsonl"):
        data = frame["data"]
        out.append((_levels(data["bids"]), _levels(data["asks"]), data["lastUpdateId"]))
    for name in ("rest_depth_snapshot.jsonl", "us_rest_depth_snapshot.jsonl"):
        for body in _load(name):
            bids, asks = _levels(body["bids"][:20]), _levels(body["asks"][:20])
            if bids and asks:
                out.append((bids, asks, body["lastUpdateId"]))
    return out


def deep_sessions() -> list[tuple[dict, list[dict]]]:
    """(REST snapshot, synced diffs) for every symbol whose snapshot has 1000+1000 levels."""
    sessions = []
    for diffs_name, snaps_name in (
        ("spot_depth_diff.jsonl", "rest_depth_snapshot.jsonl"),
        ("us_depth_diff.jsonl", "us_rest_depth_snapshot.jsonl"),
    ):
        diffs = [frame["data"] for frame in _load(diffs_name)]
        for snap in _load(snaps_name):
            if len(snap["bids"]) < 1000 or len(snap["asks"]) < 1000:
                continue
            lid = snap["lastUpdateId"]
            first = next(d for d in diffs if d["U"] <= lid + 1 <= d["u"])
            synced = [d for d in diffs if d["s"] == first["s"] and d["u"] > lid]
            sessions.append((snap, synced))
    return sessions


def regroup(diffs: list[dict], size: int = 10) -> list[tuple[tuple[Level, ...], ...]]:
    """The diffs' levels, in order, as size-bid + size-ask diffs."""
    bids = [lvl for d in diffs for lvl in _levels(d["b"])]
    asks = [lvl for d in diffs for lvl in _levels(d["a"])]
    count = max(len(bids), len(asks)) // size
    return [
        (tuple(bids[i * size : (i + 1) * size]), tuple(asks[i * size : (i + 1) * size]))
        for i in range(count)
    ]


def _query(book) -> None:
    book.best_bid  # noqa: B018
    book.best_ask  # noqa: B018
    book.spread_bps  # noqa: B018
    book.imbalance(10)


def bench_snapshots(make, snaps, rounds: int) -> float:
    book = make()
    ops = snaps * 200
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for bids, asks, lid in ops:
            book.apply_snapshot(bids, asks, lid)
            _query(book)
        times.append(time.perf_counter() - start)
    return min(times) / len(ops) * 1e6


def bench_diffs(make, sessions, rounds: int) -> float:
    """Reset each book from its snapshot (untimed), then time its diffs."""
    times = []
    ops = sum(len(diffs) for _, _, diffs in sessions)
    for _ in range(rounds):
        total = 0.0
        for (bids, asks, lid), _, diffs in [(s[0], None, s[2]) for s in sessions]:
            book = make()
            book.apply_snapshot(bids, asks, lid)
            start = time.perf_counter()
            for diff_bids, diff_asks in diffs:
                book.apply_diff(diff_bids, diff_asks)
                _query(book)
            total += time.perf_counter() - start
        times.append(total)
    return min(times) / ops * 1e6


def bench_bursts(make, sessions, bursts: int, books: int = 50, burst: int = 150) -> float:
    """CPU µs per diff, applied in bursts of ``burst`` every 100 ms over ``books`` books."""
    starts = [sessions[i % len(sessions)] for i in range(books)]
    shelf = []
    for (bids, asks, lid), _, _ in starts:
        book = make()
        book.apply_snapshot(bids, asks, lid)
        shelf.append(book)
    cursors = [0] * books
    cpu = 0.0
    for number in range(bursts):
        time.sleep(0.1)
        start = time.thread_time()
        for op in range(burst):
            index = (number * burst + op) % books
            diffs = starts[index][2]
            diff_bids, diff_asks = diffs[cursors[index] % len(diffs)]
            cursors[index] += 1
            book = shelf[index]
            book.apply_diff(diff_bids, diff_asks)
            _query(book)
        cpu += time.thread_time() - start
    return cpu / (bursts * burst) * 1e6


def bench_load(make, sessions, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        for (bids, asks, lid), _, _ in sessions:
            book = make()
            start = time.perf_counter()
            book.apply_snapshot(bids, asks, lid)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--bursts", type=int, default=40, help="bursts in (c), 0 skips it")
    args = parser.parse_args()

    snaps = snapshots_20()
    deep = deep_sessions()
    as_10 = []
    as_recorded = []
    for snap, diffs in deep:
        start = (_levels(snap["bids"]), _levels(snap["asks"]), snap["lastUpdateId"])
        as_10.append((start, None, regroup(diffs)))
        recorded = [(_levels(d["b"]), _levels(d["a"])) for d in diffs]
        as_recorded.append((start, None, recorded))
    n10 = sum(len(s[2]) for s in as_10)
    nrec = sum(len(s[2]) for s in as_recorded)
    levels_rec = sum(len(b) + len(a) for s in as_recorded for b, a in s[2]) / nrec
    print(f"list+bisect updates its levels in {'C' if UPDATES_IN_C else 'Python (not built)'}")
    print(
        f"(a) {len(snaps)} distinct 20+20 snapshots; (b) {len(deep)} books of 1000+1000, "
        f"{n10} diffs of 10+10; (b') {nrec} recorded diffs, {levels_rec:.1f} levels each"
    )
    print(
        f"{'variant':12} {'(a) snap20':>11} {'(b) diff10':>11} {'(b) recorded':>13} "
        f"{'load 1000':>10} {'(c) bursts':>11}  (µs per op, best of {args.rounds}; "
        f"(c): CPU per diff over {args.bursts} bursts)"
    )
    for label, make in VARIANTS.items():
        a = bench_snapshots(make, snaps, args.rounds)
        if hasattr(make(), "apply_diff"):
            b = f"{bench_diffs(make, as_10, args.rounds):11.2f}"
            b2 = f"{bench_diffs(make, as_recorded, args.rounds):13.2f}"
            load = f"{bench_load(make, as_10, args.rounds):10.1f}"
            bursts = f"{bench_bursts(make, as_10, args.bursts):11.2f}" if args.bursts else ""
        else:
            b, b2, load, bursts = f"{'-':>11}", f"{'-':>13}", f"{'-':>10}", f"{'-':>11}"
        print(f"{label:12} {a:11.2f} {b} {b2} {load} {bursts}")

    snap, _ = deep[0]
    book = OrderBook("BENCH")
    book.apply_snapshot(_levels(snap["bids"]), _levels(snap["asks"]), snap["lastUpdateId"])
    symbol = next(d["s"] for d in deep[0][1])
    for bps in (10, 50):
        within = book.notional_within_bps(bps)
        count = sum(
            1
            for side in ("bid", "ask")
            for p, _ in book.levels(side)
            if abs(p - book.mid) <= book.mid * bps * 1e-4
        )
        for name, fn in (
            ("notional_within_bps", book.notional_within_bps),
            ("largest_level_within_bps", book.largest_level_within_bps),
        ):
            n = 20_000
            start = time.perf_counter()
            for _ in range(n):
                fn(bps)
            us = (time.perf_counter() - start) / n * 1e6
            print(
                f"list+bisect {name}({bps}) on {symbol} 1000+1000 "
                f"({count} levels within, {within.total:,.0f} quote): {us:.2f} µs"
            )


if __name__ == "__main__":
    main()
