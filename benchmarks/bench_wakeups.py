"""What a wake-up costs on this machine: a Trio timer wake and a worker-thread hop.

Run: ``python benchmarks/bench_wakeups.py [--seconds S]``

At low message rates the service's CPU is dominated not by messages but by the times the
Trio thread goes to sleep and is woken: a batch window's timer, a store write's hop to a
worker thread and back. On a VM each of those can cost tens to hundreds of µs of CPU (timer
interrupts, context switches), far more than the Python code around it. This prints the
process CPU per wake for a task sleeping at several rates, and per ``trio.to_thread.run_sync``
call of a function that does nothing, so that a change that adds or removes wake-ups can be
priced on the machine it will run on.
"""

from __future__ import annotations

import argparse
import time

import trio


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


if __name__ == "__main__":
    main()
