"""The service's per-message hot path, stage by stage, on a diff-book feed like Binance's busiest.

``python benchmarks/bench_hot_path.py [--batch 64] [--messages 60000]``: 50 symbols, books of
1,000 levels a side, diffs of 10 bids and 10 asks (9 % deletes) within a few ticks of the top,
as raw combined-stream frames. Three rules like a typical deployment: spread above a level and
top-10 imbalance (evaluated once per symbol per micro-batch), and a best-bid threshold
evaluated per message. Each stage runs alone, in this process, with no sockets and no
scheduler, so that its µs per message can be compared before and after a change:

- ``read``: stream name from the raw frame, one-pass decode to a ``DepthDiff``;
- ``route``: the shard router's ``send_nowait`` into the shard channels;
- ``consume``: a shard consumer's batches (sync checks, book, rules, metrics, publish);
- ``total``: the three, as the service runs them for one socket read of ``--batch`` frames.

Best of 5 runs, µs per message. Machine noise moves these by a few per cent; compare runs
made back to back.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from typing import Any

import trio

from oraculo_trio.core.engine import ShardEngine
from oraculo_trio.core.rules import RuleBase, Signal, parse_rules
from oraculo_trio.core.sync import BookSnapshot
from oraculo_trio.feeds.binance import BinanceDecoder, stream_name
from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.pipeline.diffbooks import ShardBooks
from oraculo_trio.pipeline.shards import (
    AlertOutlet,
    ConflationBuffer,
    ConsumerSettings,
    ShardConsumer,
    ShardRouter,
)
from oraculo_trio.pipeline.snapshots import SnapshotRequests
from oraculo_trio.settings import Settings

SYMBOLS = [f"SYM{i:02d}USDT" for i in range(50)]
LEVELS = 1000
MID = 43250.0
TICK = 0.01


class BestBidAbove(RuleBase):
    """Per message: the best bid against a level (what a custom rule typically reads)."""

    kind = "bench_best_bid"
    streams = frozenset({"depth"})

    def __init__(self, params: dict[str, Any]) -> None:
        self.level = float(params.get("level", MID - TICK))

    def evaluate(self, event: Any, state: Any, now: float) -> Signal | None:
        best = state.market.best_bid
        if best is None:
            return None
        return Signal(best >= self.level, best)


def rules() -> list:
    return parse_rules(
        {
            "rule": [
                {"id": "spread", "kind": "spread_above_bps", "params": {"bps": 0.5}},
                {"id": "imbalance", "kind": "book_imbalance", "params": {"ratio": 4.0}},
                {"id": "price", "kind": BestBidAbove, "params": {"level": MID - TICK}},
            ]
        }
    )


def frames(count: int, seed: int = 3) -> list[bytes]:
    rng = random.Random(seed)
    update = {symbol: 1_000_001 for symbol in SYMBOLS}
    out = []
    for index in range(count):
        symbol = SYMBOLS[index % len(SYMBOLS)]

        def side(sign: int) -> list[list[str]]:
            levels = []
            for _ in range(10):
                ticks = rng.randint(1, 60 if rng.random() < 0.7 else 1100)
                quantity = "0.000000" if rng.random() < 0.09 else f"{rng.random() * 5:.6f}"
                levels.append([f"{MID + sign * TICK * ticks:.2f}", quantity])
            return levels

        first = update[symbol]
        update[symbol] = first + 4
        payload = {
            "e": "depthUpdate", "E": 1_700_000_000_000 + index, "s": symbol,
            "U": first, "u": first + 3, "b": side(-1), "a": side(1),
        }  # fmt: skip
        name = stream_name(symbol, "depth")
        out.append(json.dumps({"stream": name, "data": payload}, separators=(",", ":")).encode())
    return out


def snapshot(symbol: str) -> BookSnapshot:
    bids = tuple((round(MID - TICK * k, 2), 1.0) for k in range(1, LEVELS + 1))
    asks = tuple((round(MID + TICK * k, 2), 1.0) for k in range(1, LEVELS + 1))
    return BookSnapshot(symbol, 1, 1_000_000, bids, asks)


class Shard:
    """One shard's consumer, its books synced from the snapshot, and its channel."""

    def __init__(self, metrics: ServiceMetrics, settings: Settings, capacity: int) -> None:
        engine = ShardEngine(rules())
        self.books = ShardBooks(0, engine, SnapshotRequests(), metrics, 30.0)
        self.send, self.receive = trio.open_memory_channel(capacity)
        store_send, self.store_receive = trio.open_memory_channel(1_000_000)
        dispatch_send, self.dispatch_receive = trio.open_memory_channel(1_000_000)
        outlet = AlertOutlet(store_send, dispatch_send, metrics)
        self.consumer = ShardConsumer(
            "depth", 0, self.receive, ConflationBuffer(merge_diffs=True), engine, outlet,
            metrics, ConsumerSettings.from_settings(settings), self.books,
        )  # fmt: skip
        for symbol in SYMBOLS:
            self.books.process(first_diff(symbol), 0.0, 0.0, 0.0)
            self.books.apply_snapshot(snapshot(symbol), 0.0, 0.0)

    def drain_outlets(self) -> None:
        for channel in (self.store_receive, self.dispatch_receive):
            while True:
                try:
                    channel.receive_nowait()
                except trio.WouldBlock:
                    break


def first_diff(symbol: str) -> Any:
    from oraculo_trio.core.events import DepthDiff

    return DepthDiff(symbol, 1_000_000, 1_000_000, (), (), None, 0.0, 0.0)


async def measure(raw: list[bytes], batch: int) -> dict[str, float]:
    settings = Settings()
    metrics = ServiceMetrics(shards=1)
    decoder = BinanceDecoder([stream_name(symbol, "depth") for symbol in SYMBOLS])
    timings: dict[str, float] = {"read": 0.0, "route": 0.0, "consume": 0.0}
    shard = Shard(metrics, settings, capacity=len(raw) + 1)
    router = ShardRouter("depth", [shard.send], None, metrics)
    consumer = shard.consumer
    now, now_wall = trio.current_time(), time.time()
    for start in range(0, len(raw), batch):
        chunk = raw[start : start + batch]
        began = time.perf_counter()
        keys = [decoder.stream_key(frame) for frame in chunk]
        events = [
            decoder.decode_keyed(k, f, now, now_wall) for k, f in zip(keys, chunk, strict=True)
        ]
        read = time.perf_counter()
        for event in events:
            await router.route(event)
        routed = time.perf_counter()
        while True:
            pending = [shard.receive.receive_nowait()] if routed else []
            tally = consumer.process(pending)
            await consumer.publish(tally)
            if shard.receive.statistics().current_buffer_used == 0:
                break
        consumed = time.perf_counter()
        shard.drain_outlets()
        timings["read"] += read - began
        timings["route"] += routed - read
        timings["consume"] += consumed - routed
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64, help="frames per socket read")
    parser.add_argument("--messages", type=int, default=60_000)
    args = parser.parse_args()
    raw = frames(args.messages)
    best: dict[str, float] = {}
    for _ in range(5):
        timings = trio.run(measure, raw, args.batch)
        timings["total"] = sum(timings.values())
        for stage, seconds in timings.items():
            best[stage] = min(best.get(stage, float("inf")), seconds)
    for stage in ("read", "route", "consume", "total"):
        print(f"{stage:8s} {best[stage] / len(raw) * 1e6:6.2f} µs/msg")


if __name__ == "__main__":
    main()
