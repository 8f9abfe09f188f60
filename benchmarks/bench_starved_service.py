"""Diff books on the mock exchange with the service short of CPU: the overload policy at work.

On a 2-core machine ``just bench --overload --stream depthdiff`` is bounded by the generator:
keeping true books, the mock makes at most about 70,000 diffs a second on its one core, so
twice the service's saturation is never offered on time and the ages it reports are the
sender's backlog. Here the service is the one that cannot keep up: the generator runs alone on
core 0, and the service on core 1 gets ``--service-cpu`` of it (a CFS quota: a cgroup, which
needs root) or shares it with ``--hogs`` busy processes (a noisy neighbour; the scheduler
favours a task that sleeps between bursts, so the service keeps about half the core), while
the generator keeps its schedule. What the service then
evaluates shows what its policy does with a backlog of its own: diffs merged per symbol
(``conflated``), books shed by resync past ``pipeline.shed_after`` (``overflow``), the age of
what is evaluated, ``/readyz``, and the accounting at every scrape.

It runs ``oraculo-trio loadtest depthdiff RATE`` (its summary, artifacts under ``--out``,
and verdict: the age p99 under 2 s, nothing stale, nothing unaccounted; exit 99 otherwise),
pins the generator and the service (every thread) once they have started, and removes the
quota or the hogs when the load test ends. Linux only; needs 2 cores.

Usage: ``python benchmarks/bench_starved_service.py [--rate 60000] [--duration 30]
[--service-cpu 0.25 | --hogs 1] [--out DIR]``; the load test's own options go after ``--``.

Measured on a 2-core test VM (2026-12-06, a VM on which the side-by-side harness's asyncio
reference saturates at 47,000-53,000 msg/s), 60,000 diffs/s for 30 s over 50 symbols, with
the reader handing on larger merges while behind (``pipeline.batch_budget_ms``):

- ``--hogs 1``: all 60,046 msg/s processed at 6.9 µs a message (0.41 of a core), never
  behind enough to merge, age p99 0.4 s, feed lag max 0.28 s, 0 unaccounted (pass).
- ``--service-cpu 0.4``: 58,850 of 59,630 msg/s processed (6.8 µs), 1,460,247 diffs merged,
  age p99 1.5 s, feed lag max 1.15 s, no resync, 0 unaccounted (pass).
- ``--service-cpu 0.25``: 43,433 msg/s processed (5.8 µs); 59 books shed by resync (53 diffs
  ``overflow``, 41,427 skipped undecoded as ``superseded``), yet age p99 30 s, the feed lag
  15.7 s and the sender's bursts up to 12 s late: a diff must still be read to be skipped,
  and reading alone costs more than a quarter of a core at this rate. Shedding frees the
  rule work, not the reading; such a load needs more CPU (``--workers``) or fewer streams
  per connection.

On the slower VM of the day's earlier runs, before the reader's budget: ``--hogs 1`` kept
0.52 of a core and passed (age p99 1.0 s); ``--service-cpu 0.4`` read 54,962 msg/s, age p99
5 s and growing; ``--service-cpu 0.25`` read 31,026 msg/s, age p99 60 s.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERATOR_CORE = 0
SERVICE_CORE = 1
# The verdict of a service behind its feed on purpose: merging and shedding are the policy at
# work (no limit of their own), queue time may grow with the backlog; what must hold is a
# bounded age, nothing evaluated stale, nothing unaccounted (the load test's defaults).
THRESHOLDS = (
    "conflated < 1000000000",
    "overflow < 1000000000",
    "queue_time_mean < 1s",
    "queue_time_latest_max <= 2s",
    "queue_depth_peak < 1000000",
    "evaluated_age_p99 < 2s",
)


def descendants(root: int) -> list[int]:
    """Every live descendant of ``root`` (``/proc/<pid>/task/<tid>/children``)."""
    found: list[int] = []
    pending = [root]
    while pending:
        pid = pending.pop()
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as file:
                    children = [int(child) for child in file.read().split()]
            except OSError:
                continue
            found.extend(children)
            pending.extend(children)
    return found


def command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return file.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pin(pid: int, core: int) -> None:
    """Pin every thread of ``pid`` (threads started later inherit the pinning)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), {core})
        except OSError:
            pass  # a thread that just ended


def cpu_quota(fraction: float) -> tuple[Path, Path]:
    """A cgroup whose tasks get ``fraction`` of a core: (its directory, the file that takes a
    pid). cgroup v2 (``cpu.max``) or v1 (``cpu.cfs_quota_us``)."""
    period = 100_000
    name = f"oraculo-starved-{os.getpid()}"
    v2 = Path("/sys/fs/cgroup")
    try:
        if (v2 / "cgroup.controllers").exists():
            group = v2 / name
            group.mkdir()
            (group / "cpu.max").write_text(f"{int(fraction * period)} {period}")
            return group, group / "cgroup.procs"
        group = v2 / "cpu" / name
        group.mkdir()
        (group / "cpu.cfs_period_us").write_text(str(period))
        (group / "cpu.cfs_quota_us").write_text(str(int(fraction * period)))
        return group, group / "tasks"
    except OSError as exc:
        sys.exit(f"bench_starved_service: no CPU quota ({exc}): run as root, or use --hogs")


def join_quota(procs: Path, pid: int) -> None:
    """Put every thread of ``pid`` in the quota's group (threads started later follow)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            procs.write_text(tid)
        except OSError:
            pass  # a thread that just ended


def find_processes(loadtest: subprocess.Popen, within: float) -> tuple[int, int]:
    """The generator's and the service's pids, once both have started."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if loadtest.poll() is not None:
            sys.exit(f"bench_starved_service: the load test ended early ({loadtest.returncode})")
        generator = service = None
        for pid in descendants(loadtest.pid):
            line = command_line(pid)
            if "oraculo_trio.loadtest.generator" in line:
                generator = pid
            elif " run --config " in line:
                service = pid
        if generator and service:
            return generator, service
        time.sleep(0.1)
    sys.exit("bench_starved_service: the generator or the service did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=60000, help="diffs per second offered")
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds")
    parser.add_argument(
        "--service-cpu", type=float, default=None, metavar="FRACTION",
        help="the share of a core the service gets (a cgroup CPU quota; needs root)",
    )  # fmt: skip
    parser.add_argument(
        "--hogs", type=int, default=None,
        help="busy processes beside the service instead of a quota (default 1 without one)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="artifact directory")
    parser.add_argument("loadtest_args", nargs="*", help="more load test options (after --)")
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("bench_starved_service: needs 2 cores (the generator gets one of its own)")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = args.out or ROOT / "artifacts" / "starved" / stamp
    argv = [
        sys.executable, "-m", "oraculo_trio.cli", "loadtest", "depthdiff", str(args.rate),
        "--duration", str(args.duration), "--warmup", "3", "--out", str(out),
        *(arg for threshold in THRESHOLDS for arg in ("--threshold", threshold)),
        *args.loadtest_args,
    ]  # fmt: skip
    hog_count = args.hogs if args.hogs is not None else (0 if args.service_cpu else 1)
    quota = cpu_quota(args.service_cpu) if args.service_cpu else None
    starved = f"{args.service_cpu:g} of core 1" if quota else f"{hog_count} hog(s) on core 1"
    print(f"bench_starved_service: {' '.join(argv[3:7])}; the service gets {starved}")
    loadtest = subprocess.Popen(argv, cwd=ROOT)
    hogs: list[subprocess.Popen] = []
    try:
        generator, service = find_processes(loadtest, within=120)
        pin(generator, GENERATOR_CORE)
        pin(service, SERVICE_CORE)
        if quota is not None:
            join_quota(quota[1], service)
        for _ in range(hog_count):
            hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            os.sched_setaffinity(hog.pid, {SERVICE_CORE})
            hogs.append(hog)
        returncode = loadtest.wait()
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
        if loadtest.poll() is None:
            loadtest.terminate()
            loadtest.wait()
        if quota is not None:
            with contextlib.suppress(OSError):
                quota[0].rmdir()  # empty once the service has exited
    return returncode


if __name__ == "__main__":
    sys.exit(main())
