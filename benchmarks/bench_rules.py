"""What each rule kind costs in the shard engine (µs per message), and the batch paths.

Run: ``python benchmarks/bench_rules.py [--rounds N] [--messages N]``

For each kind, one rule bound to one symbol, driven through ``ShardEngine.process`` exactly
as a consumer does (market state updated, then the rule); the cost shown is the engine's
time per message minus the same engine with no rule (the ``(no rule)`` row: state update and
routing alone). Trades walk randomly around 100; depth messages are 20+20-level partial
books. Book kinds (``per_batch``) are judged in ``flush`` once per batch of 64 messages, as
the consumer does; ``zscore`` folds per message and computes per batch (``compute`` on the
window's numpy copy, the cost a worker thread pays; shown separately).

Best of ``--rounds`` rounds; the numbers of this machine are in the report of the rules
issue.
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

from oraculo_trio.core.engine import ShardEngine, compute_offloaded
from oraculo_trio.core.events import DepthSnapshot, Trade
from oraculo_trio.core.rules import parse_rules

BATCH = 64

KINDS: dict[str, tuple[str, dict[str, Any]]] = {
    "crossing": ("trade", {"level": 100.0}),
    "crossing_up": ("trade", {"level": 100.0}),
    "crossing_down": ("trade", {"level": 100.0}),
    "greater_than": ("trade", {"level": 100.0, "hysteresis": 0.5}),
    "less_than": ("trade", {"level": 100.0, "hysteresis": 0.5}),
    "entering_channel": ("trade", {"low": 99.5, "high": 100.5}),
    "exiting_channel": ("trade", {"low": 99.5, "high": 100.5}),
    "inside_channel": ("trade", {"low": 99.5, "high": 100.5}),
    "outside_channel": ("trade", {"low": 99.5, "high": 100.5}),
    "moving_up_pct": ("trade", {"pct": 1.0, "window": 60}),
    "moving_down_pct": ("trade", {"pct": 1.0, "window": 60}),
    "large_trade": ("trade", {"notional": 1000.0}),
    # Windows short enough to be past the warm-up within the simulated 2 s.
    "volume_spike": ("trade", {"window": 0.2, "baseline": 1, "factor": 3}),
    "trade_rate": ("trade", {"rate": 100, "window": 10}),
    "buy_sell_imbalance": ("trade", {"threshold": 0.6, "window": 10}),
    "zscore": ("trade", {"window": 60, "threshold": 3, "min_samples": 20}),
    "spread_above_bps": ("depth", {"bps": 5, "hysteresis": 1}),
    "book_imbalance": ("depth", {"ratio": 3, "levels": 10}),
    "liquidity_wall": ("depth", {"notional": 5000, "bps": 10}),
    "thin_book": ("depth", {"notional": 1000, "bps": 10}),
    "no_data": ("depth", {"seconds": 30}),
}


def trades(count: int, rng: random.Random) -> list[Trade]:
    price = 100.0
    out = []
    for i in range(count):
        price += rng.choice((-0.05, 0.0, 0.05))
        out.append(Trade("BTCUSDT", price, rng.uniform(0.1, 10), rng.random() < 0.5, i, 0,
                         None, 0.0, 0.0))  # fmt: skip
    return out


def books(count: int, rng: random.Random) -> list[DepthSnapshot]:
    out = []
    for i in range(count):
        mid = 100.0 + rng.uniform(-0.5, 0.5)
        bids = tuple((round(mid - 0.01 * (k + 1), 2), rng.uniform(1, 50)) for k in range(20))
        asks = tuple((round(mid + 0.01 * (k + 1), 2), rng.uniform(1, 50)) for k in range(20))
        out.append(DepthSnapshot("BTCUSDT", bids, asks, i, None, 0.0, 0.0))
    return out


def run(engine: ShardEngine, events: list, *, start: float) -> float:
    """Seconds to process ``events`` (10 per simulated ms), flushing every BATCH."""
    process, flush = engine.process, engine.flush
    began = time.perf_counter()
    for i, event in enumerate(events):
        now = start + i * 0.0001
        process(event, now)
        if i % BATCH == BATCH - 1:
            flush(now)
    return time.perf_counter() - began


def best(rounds: int, make: Any, events: list) -> float:
    """Best µs per message over ``rounds`` fresh engines."""
    times = []
    for r in range(rounds):
        engine = make()
        times.append(run(engine, events, start=1_000.0 + r * 1e4))
    return min(times) / len(events) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--messages", type=int, default=20_000)
    args = parser.parse_args()
    rng = random.Random(1)
    streams = {"trade": trades(args.messages, rng), "depth": books(args.messages, rng)}
    base = {
        stream: best(args.rounds, lambda: ShardEngine([]), events)
        for stream, events in streams.items()
    }
    print(f"{'kind':<20} {'stream':<6} {'µs/msg':>8}  (engine with the rule, minus the bare "
          "engine)")  # fmt: skip
    for stream in ("trade", "depth"):
        print(f"{'(no rule)':<20} {stream:<6} {base[stream]:8.2f}  (state update and routing)")
    for kind, (stream, params) in KINDS.items():
        rules = parse_rules({"rule": [{"id": "r", "kind": kind, "params": params}]})
        cost = best(args.rounds, lambda rules=rules: ShardEngine(rules), streams[stream])
        print(f"{kind:<20} {stream:<6} {cost - base[stream]:8.2f}")
    # zscore's batch computation, as the worker thread runs it: one symbol, a full window.
    rules = parse_rules({"rule": [{"id": "z", "kind": "zscore", "params": KINDS["zscore"][1]}]})
    engine = ShardEngine(rules)
    for i, event in enumerate(streams["trade"][:600]):
        engine.process(event, 1_000.0 + i * 0.1)  # 600 prices over 60 s
    job = engine.offload_jobs(1_060.0)[0]
    work = [(job.rule, job.snapshot)]
    runs = []
    for _ in range(args.rounds):
        began = time.perf_counter()
        for _ in range(1_000):
            compute_offloaded(work)
        runs.append((time.perf_counter() - began) / 1_000 * 1e6)
    print(f"zscore compute (600 prices, in the worker thread): {min(runs):.1f} µs per symbol "
          "per batch")  # fmt: skip
    # A tick: no_data judges every symbol (it ticks even while inactive); a crossing rule
    # on every symbol costs nothing while its alerts are inactive.
    symbols = [f"S{i:04d}USDT" for i in range(1_000)]
    rules = parse_rules({"rule": [
        {"id": "quiet", "kind": "no_data", "params": {"seconds": 60}},
        {"id": "cross", "kind": "crossing", "params": {"level": 100}},
    ]})  # fmt: skip
    engine = ShardEngine(rules)
    engine.expect(symbols, 1_000.0)
    runs = []
    for r in range(args.rounds):
        began = time.perf_counter()
        engine.tick(1_001.0 + r)
        runs.append((time.perf_counter() - began) * 1e3)
    print(f"tick with no_data and crossing on 1,000 symbols: {min(runs):.2f} ms")


if __name__ == "__main__":
    main()
