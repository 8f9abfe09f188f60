"""Measure the demo: process CPU % and queue-time p99 over a window at its default rate.

    python benchmarks/measure_demo.py [--seconds 60]

Starts ``oraculo-trio demo`` (mock exchange + service in one process), waits 5 s of warm-up,
then scrapes /metrics at the start and the end of the window. CPU is the process's
utime+stime delta from /proc over the wall time (the mock exchange shares the process, so
this is an upper bound for the service); queue time p99 is computed from the histogram's
bucket deltas over the window, per stream.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

from oraculo_trio.loadtest.processes import process_cpu
from oraculo_trio.observe.report import histogram_buckets, histogram_quantile, parse_samples


def scrape(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return parse_samples(response.read().decode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        # Port 0: the demo prints the address it bound ("metrics at http://HOST:PORT/...").
        command = [
            sys.executable, "-m", "oraculo_trio.cli", "demo", "--http-port", "0",
            "--database-url", f"sqlite:///{tmp}/demo.db", "--log-level", "WARNING",
            "--duration", str(args.seconds + 10),
        ]  # fmt: skip
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        url = ""
        for line in process.stdout:
            match = re.search(r"metrics at (http://\S+)", line)
            if match:
                url = match.group(1)
                break
        time.sleep(5.0)
        before, cpu0, t0 = scrape(url), process_cpu(process.pid), time.monotonic()
        time.sleep(args.seconds)
        after, cpu1, t1 = scrape(url), process_cpu(process.pid), time.monotonic()
        process.terminate()
        process.wait(timeout=30)
    wall = t1 - t0
    print(f"window: {wall:.1f} s; process CPU: {100 * (cpu1 - cpu0) / wall:.2f} % of one core")
    for stream in ("depth", "trade"):
        start = dict(
            histogram_buckets(before, "oraculo_alerts_queue_time_seconds", {"stream": stream})
        )
        end = histogram_buckets(after, "oraculo_alerts_queue_time_seconds", {"stream": stream})
        window = [(bound, count - start.get(bound, 0.0)) for bound, count in end]
        count = window[-1][1] if window else 0
        p50 = histogram_quantile(0.50, window)
        p99 = histogram_quantile(0.99, window)
        print(
            f"{stream}: {count:.0f} messages ({count / wall:.0f}/s), queue time "
            f"p50 {p50 * 1000:.3f} ms, p99 {p99 * 1000:.3f} ms (histogram interpolation)"
        )


if __name__ == "__main__":
    main()
