"""What Binance's sync procedure costs per diff: a shard's diff books against the bare engine.

``python benchmarks/bench_diffbook.py``: the same 20,000 diffs of the mock exchange's true
book (50 levels a side) applied through ``ShardBooks.process`` (sequence checks, crossed
check, then the engine) and straight through ``ShardEngine.process``; no rules, so the
difference is the sync's own work. Best of 7 runs, µs per diff.
"""

from __future__ import annotations

import time

from oraculo_trio.core.book import OrderBook
from oraculo_trio.core.engine import ShardEngine
from oraculo_trio.core.events import DepthDiff
from oraculo_trio.core.sync import BookSnapshot
from oraculo_trio.mockexchange import DiffBookMarket
from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.pipeline.diffbooks import ShardBooks
from oraculo_trio.pipeline.snapshots import SnapshotRequests


def levels(rows: list[list[str]]) -> tuple[tuple[float, float], ...]:
    return tuple((float(price), float(qty)) for price, qty in rows)


def main() -> None:
    market = DiffBookMarket(["BENCH"], rate_per_s=1000, seed=1)
    first = [payload for _, payload in market.tick(0.0, 0.001)]
    snapshot = market.snapshot("BENCH", 1000)
    assert snapshot is not None
    payloads = first + [payload for _, payload in market.tick(0.0, 20.0)]
    diffs = [
        DepthDiff("BENCH", p["U"], p["u"], levels(p["b"]), levels(p["a"]), None, 0.0, 0.0)
        for p in payloads
    ]
    bids, asks, last = levels(snapshot["bids"]), levels(snapshot["asks"]), snapshot["lastUpdateId"]

    def through_books() -> float:
        books = ShardBooks(0, ShardEngine([]), SnapshotRequests(), ServiceMetrics(), 5.0)
        books.process(diffs[0], 0.0, 0.0, 0.0)
        books.apply_snapshot(BookSnapshot("BENCH", 1, last, bids, asks), 0.0, 0.0)
        started = time.perf_counter()
        for diff in diffs[1:]:
            books.process(diff, 0.0, 0.0, 0.0)
        elapsed = time.perf_counter() - started
        assert books.syncs["BENCH"].book.last_update_id == market.update_id("BENCH")
        return elapsed

    def through_engine() -> float:
        engine = ShardEngine([])
        book = engine.market("BENCH").book = OrderBook("BENCH")
        book.apply_snapshot(bids, asks, last)
        started = time.perf_counter()
        for diff in diffs[1:]:
            engine.process(diff, 0.0, True)
        return time.perf_counter() - started

    count = len(diffs) - 1
    for name, run in (
        ("diff books (sync + engine)", through_books),
        ("engine alone", through_engine),
    ):
        best = min(run() for _ in range(7))
        print(f"{name:28s} {best / count * 1e6:6.2f} µs/diff  ({count} diffs)")


if __name__ == "__main__":
    main()
