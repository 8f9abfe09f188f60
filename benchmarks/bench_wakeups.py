"""What a wake-up costs on this machine: a Trio timer wake, a worker-thread hop, a store commit.

Run: ``python benchmarks/bench_wakeups.py [--seconds S]``

At low message rates the service's CPU is dominated not by messages but by the times the
Trio thread goes to sleep and is woken: a batch window's timer, a store write's hop to a
worker thread and back. On a VM each of those can cost tens to hundreds of µs of CPU (timer
interrupts, context switches), far more than the Python code around it. This prints the
process CPU per wake for a task sleeping at several rates, per ``trio.to_thread.run_sync``
call of a function that does nothing, and per SQLite store commit (the store writer's
``record_transitions``, 10 times a second as under a steady alert flow) of 1 and of 30
transitions with a dispatch log each: what a commit costs against what a row costs, which
sets ``database.commit_interval_ms``.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import trio

from oraculo_trio.core.alerts import AlertTransition
from oraculo_trio.store import DispatchLog, open_store


async def _timer_wakes(rate: float, seconds: float) -> tuple[int, float]:
    wakes = 0
    cpu_start = time.process_time()
    deadline = trio.current_time() + seconds
    while trio.current_time() < deadline:
        await trio.sleep(1.0 / rate)
        wakes += 1
    return wakes, time.process_time() - cpu_start


async def _thread_hops(count: int) -> float:
    cpu_start = time.process_time()
    for _ in range(count):
        await trio.to_thread.run_sync(lambda: None)
    return time.process_time() - cpu_start


def _alerts(count: int, serial: int) -> tuple[list[AlertTransition], list[DispatchLog]]:
    now = time.time()
    transitions = [
        AlertTransition(
            rule_id=f"rule-{i % 3}",
            symbol=f"SYM{i % 50:02d}USDT",
            state="firing",
            previous_state="firing",
            value=1.5,
            at=now,
            started_at=now - 10.0,
            fire_count=serial,
            repeat=True,
        )
        for i in range(count)
    ]
    logs = [
        DispatchLog(t.rule_id, t.symbol, "stdout", "delivered", 1, 0.01, None, now, t.state)
        for t in transitions
    ]
    return transitions, logs


async def _store_commits(directory: str, count: int, commits: int) -> float:
    """Process CPU per commit of ``count`` transitions and their logs, 10 commits a second."""
    async with open_store(f"sqlite:///{directory}/alerts.db", statement_timeout=5.0) as store:
        for serial in range(20):  # warm up: tables, pages, the worker thread
            await store.record_transitions(*_alerts(count, serial))
        cpu = 0.0
        for serial in range(20, 20 + commits):
            batch = _alerts(count, serial)
            cpu_start = time.process_time()
            await store.record_transitions(*batch)
            cpu += time.process_time() - cpu_start
            await trio.sleep(0.1)
    return cpu / commits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per rate (default 5)")
    args = parser.parse_args()
    print("timer wakes: rate, CPU of a core, CPU per wake")
    for rate in (10.0, 100.0, 500.0):
        wakes, cpu = trio.run(_timer_wakes, rate, args.seconds)
        print(f"  {rate:6.0f}/s  {100 * cpu / args.seconds:5.2f} %  {1e6 * cpu / wakes:7.1f} µs")
    hops = 2000
    cpu = trio.run(_thread_hops, hops)
    print(f"worker-thread hop (trio.to_thread.run_sync of a no-op): {1e6 * cpu / hops:.1f} µs")
    commits = max(10, int(10 * args.seconds))
    per_commit = {}
    for count in (1, 30):
        with tempfile.TemporaryDirectory() as directory:
            per_commit[count] = trio.run(_store_commits, directory, count, commits)
    per_row = (per_commit[30] - per_commit[1]) / (29 * 3)  # 3 rows per transition and log
    print(
        f"SQLite store commit: {1e6 * per_commit[1]:.0f} µs with 1 transition, "
        f"{1e6 * per_commit[30]:.0f} µs with 30 (about {1e6 * per_row:.1f} µs per row, "
        f"{1e6 * (per_commit[1] - 3 * per_row):.0f} µs per commit)"
    )


if __name__ == "__main__":
    main()
