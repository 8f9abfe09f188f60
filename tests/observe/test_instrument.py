"""LagInstrument and LagMonitor: scheduler delay, slow steps, lag publication."""

from __future__ import annotations

import logging
import time

import pytest
import trio
import trio.testing

from oraculo_trio.observe.instrument import (
    OTHER_TASKS,
    LagInstrument,
    LagMonitor,
    SlowStep,
    install,
)
from oraculo_trio.observe.metrics import LATENCY_BUCKETS, FastHistogramChild, ServiceMetrics
from tests.observe.helpers import FakeClock, FakeTask


def sample(metrics: ServiceMetrics, name: str, **labels: str) -> float | None:
    return metrics.inner.get_sample_value(name, labels)


def test_delay_is_measured_from_scheduled_to_running_under_an_injected_clock() -> None:
    clock = FakeClock(100.0)
    histogram = FastHistogramChild(LATENCY_BUCKETS)
    instrument = LagInstrument(clock=clock, delay_histogram=histogram)
    probe = instrument.probe
    first, second = FakeTask("first"), FakeTask("second")

    instrument.after_io_wait(0.0)  # due: arms the probe (no run loop here: nothing to add)
    assert probe.armed
    probe.task_scheduled(first)
    clock.now = 100.25
    probe.task_scheduled(second)  # only the first task after arming is stamped
    clock.now = 100.75
    probe.before_task_step(second)
    assert probe.armed
    probe.before_task_step(first)

    assert not probe.armed
    assert instrument.take_max_delay() == pytest.approx(0.75)
    assert instrument.take_max_delay() == 0.0  # reset by the read
    assert sum(histogram.counts) == 1
    assert histogram.sum == pytest.approx(0.75)


def test_probe_is_armed_once_per_sample_interval() -> None:
    clock = FakeClock(10.0)
    instrument = LagInstrument(clock=clock, delay_sample_interval=0.5)
    probe = instrument.probe
    task = FakeTask("t")

    instrument.after_io_wait(0.0)
    assert probe.armed
    probe.task_scheduled(task)
    clock.now = 10.1
    probe.before_task_step(task)
    assert not probe.armed
    instrument.after_io_wait(0.0)
    assert not probe.armed  # next sample due at 10.5
    clock.now = 10.5
    instrument.after_io_wait(0.0)
    assert probe.armed
    assert instrument.take_max_delay() == pytest.approx(0.1)


def test_slow_steps_are_counted_by_task_name_and_idle_time_is_not_a_step() -> None:
    clock = FakeClock(0.0)
    instrument = LagInstrument(clock=clock, slow_step_threshold=0.05)

    instrument.after_io_wait(0.0)
    clock.now = 0.01
    instrument.after_task_step(FakeTask("fast"))
    clock.now = 0.11
    instrument.after_task_step(FakeTask("decoder"))  # 0.10 s: slow
    clock.now = 0.15
    instrument.after_task_step(FakeTask("writer"))  # 0.04 s: not slow
    clock.now = 5.0  # the loop slept in its I/O wait: not part of any step
    instrument.after_io_wait(4.85)
    clock.now = 5.06
    instrument.after_task_step(FakeTask("decoder"))  # 0.06 s: slow
    clock.now = 5.31
    instrument.after_task_step(FakeTask("writer"))  # 0.25 s: slow

    assert instrument.top_slow() == [
        SlowStep("decoder", 2, pytest.approx(0.10)),
        SlowStep("writer", 1, pytest.approx(0.25)),
    ]
    assert instrument.top_slow(1) == [SlowStep("decoder", 2, pytest.approx(0.10))]


def test_slow_step_table_is_bounded() -> None:
    clock = FakeClock(0.0)
    instrument = LagInstrument(clock=clock, max_tasks=2)
    for name in ("a", "b", "c", "d"):
        instrument.after_io_wait(0.0)
        clock.now += 1.0
        instrument.after_task_step(FakeTask(name))
    assert set(instrument.slow_steps()) == {"a", "b", OTHER_TASKS}
    assert instrument.slow_steps()[OTHER_TASKS].count == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"slow_step_threshold": 0}, "slow_step_threshold"),
        ({"delay_sample_interval": -1}, "delay_sample_interval"),
        ({"max_tasks": 0}, "max_tasks"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LagInstrument(**kwargs)


async def test_in_a_real_loop_a_blocking_step_is_slow_and_delays_the_next_task() -> None:
    instrument = LagInstrument(delay_sample_interval=0.0)
    victim_may_run = trio.Event()

    async def blocker() -> None:
        await trio.testing.wait_all_tasks_blocked()
        # Reschedule, so the next step starts in a fresh loop iteration with the probe armed.
        await trio.lowlevel.checkpoint()
        victim_may_run.set()  # the first task scheduled after arming: stamped
        time.sleep(0.15)  # noqa: ASYNC251 - blocking the loop is the fault under test

    async def victim() -> None:
        await victim_may_run.wait()

    with trio.fail_after(5), install(instrument):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(victim, name="victim")
            nursery.start_soon(blocker, name="blocker")

    slow = instrument.slow_steps()
    assert slow["blocker"].count == 1
    assert slow["blocker"].max_seconds >= 0.15
    assert "victim" not in slow
    assert instrument.take_max_delay() >= 0.15


async def test_install_removes_the_instrument_and_its_probe() -> None:
    instrument = LagInstrument(delay_sample_interval=0.0)
    with install(instrument):
        await trio.lowlevel.checkpoint()
    instrument.probe.arm()
    instrument.probe.disarm()
    assert not instrument.probe.armed
    # Removing again would raise KeyError if the exit had not removed it.
    with pytest.raises(KeyError):
        trio.lowlevel.remove_instrument(instrument)


async def test_monitor_publishes_lag_spikes_and_slow_steps(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="oraculo_trio.observe.instrument")
    metrics = ServiceMetrics()
    clock = FakeClock(0.0)
    instrument = LagInstrument(clock=clock)
    monitor = LagMonitor(instrument, log_every=2, top_n=5)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(monitor.run, metrics, 1.0)
            assert instrument.delay_histogram is metrics.scheduler_delay
            instrument.record_delay(2.5)  # as the probe would after a 2.5 s wait
            instrument.after_io_wait(0.0)
            clock.now += 0.2
            instrument.after_task_step(FakeTask("decoder"))
            await trio.sleep(1.5)

            assert sample(metrics, "oraculo_event_loop_lag_seconds") == pytest.approx(2.5)
            spikes = {
                t: sample(metrics, "oraculo_event_loop_lag_spikes_total", threshold=t)
                for t in ("0.5", "2.0", "10.0")
            }
            assert spikes == {"0.5": 1.0, "2.0": 1.0, "10.0": 0.0}
            assert sample(metrics, "oraculo_slow_task_steps_total", task="decoder") == 1.0
            assert sample(
                metrics, "oraculo_slow_task_step_max_seconds", task="decoder"
            ) == pytest.approx(0.2)
            # The probe also samples the test's own tasks, at zero delay on the frozen clock.
            assert sample(metrics, "oraculo_scheduler_delay_seconds_sum") == pytest.approx(2.5)
            assert not caplog.records  # the table comes every second interval

            await trio.sleep(1.0)
            assert sample(metrics, "oraculo_event_loop_lag_seconds") == 0.0
            assert len(caplog.records) == 1
            assert "decoder" in caplog.records[0].getMessage()

            await trio.sleep(2.0)  # no new slow step: no new table
            assert len(caplog.records) == 1
            nursery.cancel_scope.cancel()
    assert instrument.delay_histogram is None


async def first_publication(monitor: LagMonitor) -> float:
    """The lag the monitor publishes at its first interval (autojump clock: no time passes
    but the clock's own)."""
    while True:
        if monitor.last_lag:
            return monitor.last_lag
        await trio.sleep(0.01)  # the monitor has no wake-up event


async def test_monitor_lag_includes_its_own_oversleep(
    autojump_clock: trio.testing.MockClock,
) -> None:
    metrics = ServiceMetrics()
    # The instrument's clock stands still, so its scheduler-delay samples are all zero and
    # the lag is the heartbeat's oversleep alone.
    monitor = LagMonitor(LagInstrument(clock=FakeClock(0.0)))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(monitor.run, metrics, 0.5)
            # The loop is held for 1.2 s (the clock moves while no task runs): the heartbeat
            # due at 0.5 s wakes 0.7 s late.
            autojump_clock.jump(1.2)
            assert await first_publication(monitor) == pytest.approx(0.7)
            assert sample(metrics, "oraculo_event_loop_lag_seconds") == pytest.approx(0.7)
            spikes = {
                t: sample(metrics, "oraculo_event_loop_lag_spikes_total", threshold=t)
                for t in ("0.5", "2.0", "10.0")
            }
            assert spikes == {"0.5": 1.0, "2.0": 0.0, "10.0": 0.0}
            nursery.cancel_scope.cancel()


async def test_without_the_instrument_the_heartbeat_still_measures_lag(
    autojump_clock: trio.testing.MockClock,
) -> None:
    metrics = ServiceMetrics()
    monitor = LagMonitor(instrumented=False)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(monitor.run, metrics, 0.5)
            # Nothing was added to the run loop: removing the instrument finds nothing.
            with pytest.raises(KeyError):
                trio.lowlevel.remove_instrument(monitor.instrument)
            # A step slower than slow_step_threshold, which an instrument would have counted.
            time.sleep(2 * monitor.instrument.slow_step_threshold)  # noqa: ASYNC251 - the fault
            # The loop is held for 0.8 s: the heartbeat due at 0.5 s wakes 0.3 s late.
            autojump_clock.jump(0.8)
            assert await first_publication(monitor) == pytest.approx(0.3)
            assert sample(metrics, "oraculo_event_loop_lag_spikes_total", threshold="0.5") == 0
            nursery.cancel_scope.cancel()
    # No step timing, no delay samples: the slow step above went unseen.
    assert monitor.instrument.slow_steps() == {}
    assert sample(metrics, "oraculo_scheduler_delay_seconds_count") == 0
