"""Process statistics for the runbook's CPU/GIL queries, sampled once a second.

* ``oraculo_cpu_process_cores``: process CPU seconds per wall second (1.0 = one core busy).
* ``oraculo_threads_total`` and ``oraculo_thread_cpu_seconds{thread_name,native_id}``: every
  thread of the process (Python's and native ones) from ``/proc/self/task``, named after the
  Python thread with that ``native_id`` or else the kernel's ``comm``, as first seen; series
  of threads that ended are removed.
* ``oraculo_to_thread_executor_{threads,max_workers,queue_depth}{limiter}`` from each
  ``to_thread`` CapacityLimiter's statistics.
* ``oraculo_trio_tasks_living``, ``oraculo_trio_tasks_runnable``,
  ``oraculo_trio_io_waiting_tasks{direction}`` from ``trio.lowlevel.current_statistics()``.

Reading ``/proc`` happens in the Trio thread on purpose: procfs reads never wait for a disk,
a sample of twenty threads costs ~0.2 ms a second, and ``to_thread`` would cost more (and add
a thread to the count).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping

import trio
from prometheus_client import Gauge

from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.observe.supervise import sleep_to_tick

LOGGER = logging.getLogger("oraculo_trio.observe.process")

PROC_TASKS = "/proc/self/task"


def _clock_ticks() -> int:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (AttributeError, ValueError, OSError):
        return 100


CLOCK_TICKS = _clock_ticks()


def read_thread_cpu(tid: int, proc_tasks: str = PROC_TASKS) -> float | None:
    """Return the CPU seconds (user + system) of thread ``tid``, None if it is gone."""
    try:
        with open(f"{proc_tasks}/{tid}/stat", "rb") as stat:
            data = stat.read()
    except OSError:
        return None
    # The comm field (2) may hold spaces and parentheses: split after the last ")".
    fields = data[data.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime (14), stime (15)


def _read_comm(tid: int, proc_tasks: str) -> str:
    try:
        with open(f"{proc_tasks}/{tid}/comm", encoding="utf-8", errors="replace") as comm:
            return comm.read().strip() or f"tid-{tid}"
    except OSError:
        return f"tid-{tid}"


class ProcessStats:
    """Samples process, thread, limiter and run-loop statistics into the metrics.

    Args:
        metrics: the service's metrics.
        limiters: ``to_thread`` CapacityLimiters by name (the ``limiter`` label).
        proc_tasks: the directory listing this process's threads (``/proc/self/task``);
            when it does not exist, per-thread CPU is skipped and the thread count comes
            from :func:`threading.active_count`.
        clock: wall-clock seconds (monotonic) for the CPU rate.
        cpu_time: process CPU seconds.
    """

    def __init__(
        self,
        metrics: ServiceMetrics,
        limiters: Mapping[str, trio.CapacityLimiter],
        *,
        proc_tasks: str = PROC_TASKS,
        clock: Callable[[], float] = time.monotonic,
        cpu_time: Callable[[], float] = time.process_time,
    ) -> None:
        self._metrics = metrics
        self._limiters = dict(limiters)
        self._proc_tasks = proc_tasks
        self._clock = clock
        self._cpu_time = cpu_time
        self._last: tuple[float, float] | None = None
        # A thread keeps the labels it had when first seen: Trio renames its to_thread
        # workers for every job, and a series per job would flap between names each sample.
        self._series: dict[int, tuple[str, str]] = {}
        self._limiter_gauges: dict[str, tuple[Gauge, Gauge, Gauge]] = {}
        for name in self._limiters:
            metrics.register_limiter(name)
            self._limiter_gauges[name] = (
                metrics.to_thread_threads.labels(name),
                metrics.to_thread_max_workers.labels(name),
                metrics.to_thread_queue_depth.labels(name),
            )

    def sample(self) -> None:
        """Take one sample of everything (Trio thread; the run-loop part needs ``trio.run``)."""
        self._sample_cpu()
        self._sample_threads()
        self._sample_limiters()
        self._sample_trio()

    def _sample_cpu(self) -> None:
        now, cpu = self._clock(), self._cpu_time()
        if self._last is not None:
            wall = now - self._last[0]
            if wall > 0:
                self._metrics.cpu_process_cores.set(max(0.0, cpu - self._last[1]) / wall)
        self._last = (now, cpu)

    def _sample_threads(self) -> None:
        metrics = self._metrics
        try:
            tids = [int(entry) for entry in os.listdir(self._proc_tasks)]
        except OSError:
            metrics.threads.set(threading.active_count())
            return
        metrics.threads.set(len(tids))
        python_names = {t.native_id: t.name for t in threading.enumerate()}
        alive: set[int] = set()
        for tid in tids:
            seconds = read_thread_cpu(tid, self._proc_tasks)
            if seconds is None:
                continue
            alive.add(tid)
            labels = self._series.get(tid)
            if labels is None:
                name = python_names.get(tid) or _read_comm(tid, self._proc_tasks)
                labels = self._series[tid] = (name, str(tid))
            metrics.thread_cpu_seconds.labels(*labels).set(seconds)
        for tid in [tid for tid in self._series if tid not in alive]:
            labels = self._series.pop(tid)
            try:
                metrics.thread_cpu_seconds.remove(*labels)
            except KeyError:
                pass

    def _sample_limiters(self) -> None:
        for name, limiter in self._limiters.items():
            stats = limiter.statistics()
            threads, max_workers, queue_depth = self._limiter_gauges[name]
            threads.set(stats.borrowed_tokens)
            max_workers.set(stats.total_tokens)
            queue_depth.set(stats.tasks_waiting)

    def _sample_trio(self) -> None:
        metrics = self._metrics
        stats = trio.lowlevel.current_statistics()
        metrics.trio_tasks_living.set(stats.tasks_living)
        metrics.trio_tasks_runnable.set(stats.tasks_runnable)
        metrics.trio_run_sync_soon_queue.set(stats.run_sync_soon_queue_size)
        io = stats.io_statistics
        # epoll reports read and write waiters; other backends only a total, counted as read.
        reading = getattr(io, "tasks_waiting_read", None)
        if reading is None:
            reading = getattr(io, "tasks_waiting", 0)
        metrics.trio_io_waiting_tasks.labels("read").set(reading)
        metrics.trio_io_waiting_tasks.labels("write").set(getattr(io, "tasks_waiting_write", 0))


async def run_process_stats(
    metrics: ServiceMetrics,
    limiters: Mapping[str, trio.CapacityLimiter],
    interval: float = 1.0,
    *,
    task_status: trio.TaskStatus[ProcessStats] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Sample process statistics into ``metrics`` every ``interval`` seconds.

    The first sample is taken before reporting readiness, so every gauge except
    ``oraculo_cpu_process_cores`` (a rate, known after one interval) is set once started.

    Args:
        metrics: the service's metrics.
        limiters: ``to_thread`` CapacityLimiters by name; include
            ``trio.to_thread.current_default_thread_limiter()`` to watch the default pool.
        interval: seconds between samples.
        task_status: receives the :class:`ProcessStats` (so a caller can :meth:`sample` now).

    Cancellation: runs until cancelled.
    """
    stats = ProcessStats(metrics, limiters)
    stats.sample()
    task_status.started(stats)
    while True:
        await sleep_to_tick(interval)
        stats.sample()
