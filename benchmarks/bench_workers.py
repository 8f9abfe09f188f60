"""Throughput and CPU per message of ``oraculo-trio run --workers N`` (N = 1, 2, ...).

For each worker count and each offered rate, this starts the load generator (the mock
exchange in its own process, ``python -m oraculo_trio.loadtest.generator``), the service with
``--workers N`` (a fresh SQLite store, the load test's rules), waits for ``/readyz``, lets
the generator warm up, then measures one window:

- ``recv/s``: messages the service read per second (``oraculo_feed_messages_received_total``
  summed over the workers, from the supervisor's merged ``/metrics``); ``eval %``: the share
  whose rules ran (the rest was conflated: the service shed depth snapshots to keep up);
- ``q p99``: queue time p99 (frame read -> rules evaluated) over the window;
- ``svc cores`` and ``µs/msg``: CPU of the service's whole process tree (supervisor and
  workers, from /proc) per second and per message read; ``gen cores``: the generator's;
  ``late``: bursts the generator published more than a tick late (it or the service could
  not keep up); ``load``: the machine's 1-minute load average (other processes' share).

A rate is kept up with when the service reads >= 97 % of what was offered, evaluates >= 97 %
of what it read, and queue time p99 stays < 100 ms; the last such rate is the saturation
throughput of that worker count (within the rates tried).

Usage: ``python benchmarks/bench_workers.py [--workers 1,2] [--rates 5000,10000,20000]
[--duration 10] [--stream mixed] [--symbols 100]``. On a machine with fewer cores than
workers + 1, the generator and the workers share cores: read ``gen cores`` and
``svc cores`` next to each other before reading anything into the throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from oraculo_trio.loadtest.configuration import load_rules_text  # noqa: E402
from oraculo_trio.loadtest.shape import GeneratorSpec, LoadShape  # noqa: E402
from oraculo_trio.testing.config import write_service_config  # noqa: E402
from oraculo_trio.testing.processes import (  # noqa: E402
    ChildProcess,
    child_process,
    service_process,
)

TICKS = os.sysconf("SC_CLK_TCK")
KEEP_UP = 0.97
QUEUE_P99_LIMIT = 0.100


def tree_cpu(root: int) -> float:
    """CPU seconds (user + system) of ``root`` and every descendant still alive."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as file:
                fields = file.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command: state ppid ... utime (14th field of stat) stime (15th).
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / TICKS
    tree = {root}
    grew = True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return sum(times.get(pid, 0.0) for pid in tree)


def scrape(text: str) -> dict[str, Any]:
    """Totals of the counters and the merged queue-time buckets we need."""
    received = evaluated = 0.0
    per_worker: dict[str, float] = {}
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "oraculo_feed_messages_received_total":
                received += sample.value
                worker = sample.labels.get("worker", "0")
                per_worker[worker] = per_worker.get(worker, 0.0) + sample.value
            elif sample.name == "oraculo_alerts_messages_evaluated_total":
                evaluated += sample.value
            elif sample.name == "oraculo_alerts_queue_time_seconds_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return {"received": received, "evaluated": evaluated, "workers": per_worker, "q": buckets}


def quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """The ``q`` quantile of the observations between two cumulative bucket sets."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return float("nan")
    for bound, count in zip(bounds, counts, strict=True):
        if count >= q * total:
            return bound
    return float("inf")


async def read_events(generator: ChildProcess, events: dict[str, Any], changed: list):
    while (line := await generator.stdout.next_line()) is not None:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        kind = event.get("event")
        if kind in ("ready", "done", "drained") or (
            kind == "phase" and event.get("phase") == "measure"
        ):
            events[kind if kind != "phase" else "measure"] = (event, time.monotonic())
            changed[0].set()
            changed[0] = trio.Event()


async def wait_for(events: dict[str, Any], changed: list, kind: str, within: float) -> Any:
    with trio.fail_after(within):
        while kind not in events:
            await changed[0].wait()
    return events[kind]


async def one_run(workers: int, rate: float, args: argparse.Namespace) -> dict[str, Any]:
    spec = GeneratorSpec(
        LoadShape(
            stream=args.stream,
            rate=rate,
            duration=args.duration,
            warmup=args.warmup,
            symbols=args.symbols,
            alert_period=0.5,
        )
    )
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as scratch:
        scratch = Path(scratch)
        events: dict[str, Any] = {}
        changed = [trio.Event()]
        argv = [sys.executable, "-m", "oraculo_trio.loadtest.generator", "--spec", spec.to_json()]
        async with (
            trio.open_nursery() as nursery,
            httpx.AsyncClient(timeout=10) as client,
            child_process(argv, name="generator", cwd=ROOT, stdin=True) as generator,
        ):
            nursery.start_soon(read_events, generator, events, changed)
            ready, _ = await wait_for(events, changed, "ready", 30)
            (scratch / "rules.toml").write_text(load_rules_text())
            sections: dict[str, dict[str, Any]] = {
                # INFO: the harness reads the port the service bound from its log.
                "service": {"log_level": "INFO"},
                "feed": {
                    "url": ready["url"],
                    "symbols": ready["symbols"],
                    "depth_streams": ready["depth_kinds"],
                    "trade_streams": ready["trade_kinds"],
                    **({"rest_url": ready["rest_url"]} if ready.get("rest_url") else {}),
                },
                "rules": {"file": str(scratch / "rules.toml")},
                "database": {"url": f"sqlite:///{scratch / 'alerts.db'}"},
                "dispatch": {"sinks": ["log"]},
                "http": {"host": "127.0.0.1", "port": 0},
                "observe": {"dump_dir": str(scratch / "dumps")},
            }
            # What the source needs (diff books: a snapshot deep enough...).
            for section, values in (ready.get("service") or {}).items():
                sections.setdefault(section, {}).update(values)
            config = write_service_config(scratch, sections)
            async with service_process(
                config, workers=workers, log_path=scratch / "service.log", stop_grace=30
            ) as service:
                with trio.fail_after(60):
                    await service.wait_ready(interval=0.2)
                base = service.url
                assert generator.process.stdin is not None
                await generator.process.stdin.send_all(b"start\n")
                await wait_for(events, changed, "measure", args.warmup + args.duration + 30)
                before = scrape((await client.get(base + "/metrics")).text)
                cpu_before, gen_before, wall_before = (
                    tree_cpu(service.pid),
                    tree_cpu(generator.pid),
                    time.monotonic(),
                )
                done, _ = await wait_for(events, changed, "done", args.duration + 60)
                after = scrape((await client.get(base + "/metrics")).text)
                cpu_after, gen_after, wall_after = (
                    tree_cpu(service.pid),
                    tree_cpu(generator.pid),
                    time.monotonic(),
                )
                await service.stop(signal.SIGTERM, grace=30)
            nursery.cancel_scope.cancel()
    wall = wall_after - wall_before
    received = after["received"] - before["received"]
    evaluated = after["evaluated"] - before["evaluated"]
    cpu = cpu_after - cpu_before
    offered = rate  # open loop: the schedule's rate, whatever the service does
    result = {
        "workers": workers,
        "rate": rate,
        "recv_per_s": received / wall,
        "eval_share": evaluated / received if received else 0.0,
        "queue_p99": quantile(before["q"], after["q"], 0.99),
        "svc_cores": cpu / wall,
        "us_per_msg": cpu / received * 1e6 if received else float("nan"),
        "gen_cores": (gen_after - gen_before) / wall,
        "late_bursts": done.get("late_bursts"),
        # Other processes share the machine: the 1-minute load average says how much.
        "load": os.getloadavg()[0],
        "per_worker_per_s": {
            w: (after["workers"][w] - before["workers"].get(w, 0.0)) / wall
            for w in sorted(after["workers"])
        },
    }
    result["kept_up"] = (
        result["recv_per_s"] >= KEEP_UP * offered
        and result["eval_share"] >= KEEP_UP
        and result["queue_p99"] < QUEUE_P99_LIMIT
    )
    return result


def show(result: dict[str, Any]) -> None:
    split = " ".join(f"w{w}={v:,.0f}" for w, v in result["per_worker_per_s"].items())
    print(
        f"workers={result['workers']} rate={result['rate']:>7,.0f} "
        f"recv/s={result['recv_per_s']:>7,.0f} eval%={100 * result['eval_share']:5.1f} "
        f"q_p99={1000 * result['queue_p99']:7.1f}ms svc_cores={result['svc_cores']:.2f} "
        f"us/msg={result['us_per_msg']:5.1f} gen_cores={result['gen_cores']:.2f} "
        f"late={result['late_bursts']} load={result['load']:.1f} "
        f"{'ok ' if result['kept_up'] else 'BEHIND'} [{split}]",
        flush=True,
    )


async def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for workers in args.workers:
        for rate in args.rates:
            result = await one_run(workers, rate, args)
            results.append(result)
            show(result)
            if not result["kept_up"] and args.stop_when_behind:
                break
    print("\nsaturation (highest rate kept up with, among those tried):")
    for workers in args.workers:
        kept = [r["rate"] for r in results if r["workers"] == workers and r["kept_up"]]
        print(f"  workers={workers}: {max(kept):,.0f} msg/s" if kept else f"  workers={workers}: -")
    return results


def _numbers(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=lambda t: [int(x) for x in _numbers(t)], default=[1, 2])
    parser.add_argument("--rates", type=_numbers, default=[5000, 10000, 20000, 30000, 40000])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--stream", default="mixed")
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument(
        "--stop-when-behind", action="store_true", help="skip higher rates once one falls behind"
    )
    arguments = parser.parse_args()
    measured = trio.run(main, arguments)
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(measured, indent=2))
