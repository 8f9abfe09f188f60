"""Process statistics: CPU cores, threads and their CPU, to_thread limiters, Trio's run loop."""

from __future__ import annotations

import functools
import os
import threading

import pytest
import trio
import trio.testing

from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.observe.process import ProcessStats, run_process_stats
from tests.observe.helpers import FakeClock


def value(metrics: ServiceMetrics, name: str, **labels: str) -> float | None:
    return metrics.inner.get_sample_value(name, labels)


def thread_series(metrics: ServiceMetrics) -> dict[tuple[str, str], float]:
    return {
        (s.labels["thread_name"], s.labels["native_id"]): s.value
        for family in metrics.inner.collect()
        if family.name == "oraculo_thread_cpu_seconds"
        for s in family.samples
    }


async def test_limiter_statistics_show_a_saturated_to_thread_pool() -> None:
    metrics = ServiceMetrics(limiters=())
    limiter = trio.CapacityLimiter(2)
    release = threading.Event()
    running = 0
    two_running = trio.Event()

    def job() -> None:
        trio.from_thread.run_sync(note_running)
        release.wait(10)

    def note_running() -> None:
        nonlocal running
        running += 1
        if running == 2:
            two_running.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            try:
                for _ in range(5):
                    nursery.start_soon(
                        functools.partial(trio.to_thread.run_sync, job, limiter=limiter)
                    )
                await two_running.wait()
                await trio.testing.wait_all_tasks_blocked()
                await nursery.start(run_process_stats, metrics, {"rules": limiter})
                threads = value(metrics, "oraculo_to_thread_executor_threads", limiter="rules")
                assert threads == 2.0
                assert (
                    value(metrics, "oraculo_to_thread_executor_max_workers", limiter="rules") == 2.0
                )
                assert (
                    value(metrics, "oraculo_to_thread_executor_queue_depth", limiter="rules") == 3.0
                )
                assert value(metrics, "oraculo_trio_tasks_living") >= 7  # 5 jobs, stats, test
            finally:
                release.set()
            nursery.cancel_scope.cancel()


async def test_thread_cpu_has_main_and_named_threads_and_forgets_dead_ones() -> None:
    metrics = ServiceMetrics()
    stats = ProcessStats(metrics, {})
    stop = threading.Event()

    def burn() -> None:
        spins = 0
        while not stop.is_set():
            spins += 1

    busy = threading.Thread(target=burn, name="oraculo-busy", daemon=True)
    busy.start()
    try:
        # Let it burn CPU: /proc counts in clock ticks (10 ms), 0.3 s gives a few of them.
        await trio.to_thread.run_sync(stop.wait, 0.3)
        stats.sample()
    finally:
        stop.set()
        await trio.to_thread.run_sync(busy.join)
    series = thread_series(metrics)
    main = threading.main_thread()
    assert ("MainThread", str(main.native_id)) in series
    assert series[("oraculo-busy", str(busy.native_id))] > 0.0
    assert value(metrics, "oraculo_threads_total") >= 2

    # join() returns a moment before the kernel thread is gone from /proc/self/task.
    with trio.fail_after(5):
        while str(busy.native_id) in os.listdir("/proc/self/task"):  # noqa: ASYNC110
            await trio.sleep(0.005)
    stats.sample()
    assert ("oraculo-busy", str(busy.native_id)) not in thread_series(metrics)
    assert ("MainThread", str(main.native_id)) in thread_series(metrics)


async def test_cpu_cores_is_cpu_seconds_per_wall_second() -> None:
    metrics = ServiceMetrics()
    wall, cpu = FakeClock(10.0), FakeClock(3.0)
    stats = ProcessStats(metrics, {}, clock=wall, cpu_time=cpu)
    stats.sample()
    assert value(metrics, "oraculo_cpu_process_cores") == 0.0  # a rate needs two samples
    wall.now, cpu.now = 12.0, 4.5
    stats.sample()
    assert value(metrics, "oraculo_cpu_process_cores") == pytest.approx(0.75)


async def test_without_proc_the_thread_count_still_works() -> None:
    metrics = ServiceMetrics()
    ProcessStats(metrics, {}, proc_tasks="/nonexistent/task").sample()
    assert value(metrics, "oraculo_threads_total") == threading.active_count()
    assert thread_series(metrics) == {}


async def test_a_renamed_thread_keeps_its_first_series() -> None:
    metrics = ServiceMetrics()
    stats = ProcessStats(metrics, {})
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait, name="Trio thread 99", daemon=True)
    worker.start()
    try:
        stats.sample()
        worker.name = "flush from store.writer"  # what Trio does for each to_thread job
        stats.sample()
        names = {name for name, tid in thread_series(metrics) if tid == str(worker.native_id)}
        assert names == {"Trio thread 99"}
    finally:
        stop.set()
        await trio.to_thread.run_sync(worker.join)
