"""The Trio Instrument's overhead on the real service at 15,000 msg/s.

Runs ``oraculo-trio run`` as a subprocess against the mock exchange (in this process, with a
RandomWalkMarket: 50 symbols, ``@depth20@100ms`` snapshots and trades in 100 ms bursts),
alternately with ``observe.instrument = true`` and ``false``, and measures the service's
process CPU time (``/proc/<pid>/stat``) per message received over a window after a warm-up.
Without the instrument the lag still comes from the heartbeat, so the difference is what
the instrument's hooks and delay sampling cost.

Usage::

    python benchmarks/bench_service_instrument.py [--rate 15000] [--seconds 10] [--rounds 3]
        [--client native|trio-websocket]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import trio

# The sibling script's helpers (run as `python benchmarks/...`, this folder is on sys.path).
from measure_demo import process_cpu, scrape

from oraculo_trio.mockexchange import MockExchange, RandomWalkMarket, synthetic_symbols
from oraculo_trio.observe.report import histogram_buckets, histogram_quantile
from oraculo_trio.testing.config import service_sections, write_service_config
from oraculo_trio.testing.processes import service_process

RULES = """
[[rule]]
id = "far-level"
kind = "crossing"
symbols = "*"
params = { level = 1000000 }

[[rule]]
id = "very-wide-spread"
kind = "spread_above_bps"
symbols = "*"
params = { bps = 10000 }
"""


def write_config(
    directory: Path, ws_url: str, symbols: list[str], client: str, instrument: bool
) -> Path:
    """The service's ``oraculo.toml`` (HTTP on a port the system picks) and its rules."""
    sections = service_sections(
        exchange_url=ws_url,
        symbols=symbols,
        database_url=f"sqlite:///{directory / 'alerts.db'}",
        dump_dir=directory / "dumps",
        overrides={
            "feed": {"client": client, "depth_streams": ["depth20"], "trade_streams": ["trade"]},
            "dispatch": {"sinks": []},
            "http": {"host": "127.0.0.1", "port": 0},
            "observe": {"instrument": instrument},
        },
        defaults={},
    )
    return write_service_config(directory, sections, RULES)


def window_p99(before: dict, after: dict, stream: str) -> float:
    start = dict(histogram_buckets(before, "oraculo_alerts_queue_time_seconds", {"stream": stream}))
    end = histogram_buckets(after, "oraculo_alerts_queue_time_seconds", {"stream": stream})
    return histogram_quantile(0.99, [(b, c - start.get(b, 0.0)) for b, c in end]) or 0.0


def received(samples: dict) -> float:
    return sum(value for _, value in samples.get("oraculo_feed_messages_received_total", []))


async def measure(config: Path, warmup: float, seconds: float) -> tuple[float, float, float]:
    """One run: (CPU seconds per message, messages per second, depth queue-time p99)."""
    async with service_process(config) as service:
        with trio.fail_after(30):
            await service.wait_address()
            url = service.url + "/metrics"
            while True:
                try:
                    first = await trio.to_thread.run_sync(scrape, url)
                except OSError:
                    first = {}
                if received(first) > 0:
                    break
                await trio.sleep(0.2)  # the subprocess is starting: poll its endpoint
        await trio.sleep(warmup)
        before = await trio.to_thread.run_sync(scrape, url)
        cpu0, t0 = process_cpu(service.pid), trio.current_time()
        await trio.sleep(seconds)
        after = await trio.to_thread.run_sync(scrape, url)
        cpu1, t1 = process_cpu(service.pid), trio.current_time()
    messages = received(after) - received(before)
    return (cpu1 - cpu0) / messages, messages / (t1 - t0), window_p99(before, after, "depth")


async def main_async(args: argparse.Namespace) -> None:
    symbols = synthetic_symbols(args.symbols)
    market = RandomWalkMarket(symbols, rate_per_s=args.rate, levels=20, trade_ratio=0.2)
    results: dict[bool, list[tuple[float, float, float]]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        async with trio.open_nursery() as nursery:
            exchange = await nursery.start(MockExchange(market).serve)
            for round_ in range(args.rounds):
                for instrument in (False, True):
                    config = write_config(
                        Path(tmp), exchange.ws_url, symbols, args.client, instrument
                    )
                    run = await measure(config, args.warmup, args.seconds)
                    results[instrument].append(run)
                    cost, rate, p99 = run
                    print(
                        f"round {round_ + 1} instrument={str(instrument).lower():5s}: "
                        f"{cost * 1e6:6.2f} µs CPU/msg at {rate:,.0f} msg/s, "
                        f"depth queue time p99 {p99 * 1000:.2f} ms",
                        flush=True,
                    )
            nursery.cancel_scope.cancel()
    base = statistics.median(cost for cost, _, _ in results[False])
    with_instrument = statistics.median(cost for cost, _, _ in results[True])
    rate = statistics.median(rate for _, rate, _ in results[True])
    print(
        f"feed.client={args.client}, service at {rate:,.0f} msg/s: "
        f"without instrument {base * 1e6:.2f} µs CPU/msg, "
        f"with {with_instrument * 1e6:.2f} µs CPU/msg: overhead "
        f"{(with_instrument - base) / base:+.1%} ({(with_instrument - base) * rate:.1%} of a core)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=15_000.0, help="messages per second")
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each variant")
    parser.add_argument(
        "--client",
        choices=("native", "trio-websocket"),
        default="native",
        help="feed.client: trio-websocket takes a task step or two more per message, the "
        "instrument's worst case",
    )
    trio.run(main_async, parser.parse_args())


if __name__ == "__main__":
    main()
