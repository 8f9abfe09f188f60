"""Scheduler lag and slow task steps, measured from inside the Trio run loop.

:class:`LagInstrument` times every task step with two O(1) hooks and samples the scheduler
delay (runnable -> running) with a :class:`DelayProbe` that is in the run loop only while it
takes a sample; ``benchmarks/bench_instrument.py`` measures what that costs on a model
pipeline and ``benchmarks/bench_service_instrument.py`` on the real service at 15,000 msg/s
(``observe.instrument = false`` is the baseline).

:class:`LagMonitor` is the task that publishes what the instrument saw, once per interval:
``oraculo_event_loop_lag_seconds`` is the larger of the worst sampled scheduler delay and
how late the monitor's own timer woke, so a loop blocked by one long step shows up even when
no sampled task was waiting.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import attrs
import trio

from oraculo_trio.observe.metrics import LAG_SPIKE_THRESHOLDS, FastHistogramChild, ServiceMetrics
from oraculo_trio.observe.supervise import next_tick

LOGGER = logging.getLogger("oraculo_trio.observe.instrument")

OTHER_TASKS = "<other>"
"""Label slow steps are counted under once ``max_tasks`` distinct task names were seen."""


@attrs.define(slots=True)
class SlowStepStats:
    """Mutable totals of one task name's slow steps (owned by the instrument)."""

    count: int = 0
    max_seconds: float = 0.0
    total_seconds: float = 0.0


@attrs.frozen
class SlowStep:
    """One row of the slow-step table: a task name, its slow steps and its longest one."""

    task: str
    count: int
    max_seconds: float


class LagInstrument(trio.abc.Instrument):
    """Catches every task step slower than a threshold and samples scheduler delay.

    Trio pays ~0.4 µs to dispatch each hook call whatever the hook does, and a per-message
    pipeline takes several task steps per message, so this instrument keeps only two hooks
    installed for good: ``after_io_wait`` (once per loop iteration) and ``after_task_step``.
    A step's duration is the time since the previous step ended or the loop left its I/O
    wait, whichever is later, so every step is timed and no slow step is missed.

    Scheduler delay (runnable -> running) needs ``task_scheduled`` and ``before_task_step``
    on every step, which would double the cost. Instead a :class:`DelayProbe` with those two
    hooks is added every ``delay_sample_interval`` seconds, stamps the next task that becomes
    runnable, measures how long that task waited to run, and removes itself: one sample per
    interval, at no per-step cost in between.

    Only the Trio thread calls the hooks; the other methods are for the same thread (the
    :class:`LagMonitor` task).

    Args:
        slow_step_threshold: a task step running longer than this many seconds is slow.
        delay_sample_interval: seconds between scheduler-delay samples (0: every loop
            iteration).
        max_tasks: distinct task names kept in the slow-step table; later names are counted
            under ``"<other>"``, which bounds memory and the ``task`` label's cardinality.
        clock: seconds as a float; injectable so a test can drive time by hand.
        delay_histogram: where each sampled delay is observed; :meth:`LagMonitor.run` binds
            ``metrics.scheduler_delay`` here when it is None.
    """

    # Slots: the hooks run on every task step, and slot access is cheaper than a __dict__.
    __slots__ = (
        "_clock",
        "_last_event",
        "_max_delay",
        "_next_sample",
        "_slow",
        "delay_histogram",
        "delay_sample_interval",
        "max_tasks",
        "probe",
        "slow_step_threshold",
    )

    def __init__(
        self,
        *,
        slow_step_threshold: float = 0.05,
        delay_sample_interval: float = 0.05,
        max_tasks: int = 256,
        clock: Callable[[], float] = time.perf_counter,
        delay_histogram: FastHistogramChild | None = None,
    ) -> None:
        if slow_step_threshold <= 0:
            raise ValueError(f"slow_step_threshold must be > 0, got {slow_step_threshold!r}")
        if delay_sample_interval < 0:
            raise ValueError(f"delay_sample_interval must be >= 0, got {delay_sample_interval!r}")
        if max_tasks < 1:
            raise ValueError(f"max_tasks must be >= 1, got {max_tasks!r}")
        self.slow_step_threshold = slow_step_threshold
        self.delay_sample_interval = delay_sample_interval
        self.max_tasks = max_tasks
        self.delay_histogram = delay_histogram
        self.probe = DelayProbe(self, clock)
        self._clock = clock
        self._last_event = clock()
        self._next_sample = 0.0
        self._max_delay = 0.0
        self._slow: dict[str, SlowStepStats] = {}

    # --- hooks (Trio thread: keep them O(1) and unable to raise) ---

    def after_io_wait(self, timeout: float) -> None:
        """Start the clock of the batch's first step; add the delay probe when one is due."""
        now = self._clock()
        self._last_event = now
        if now >= self._next_sample and not self.probe.armed:
            self._next_sample = now + self.delay_sample_interval
            self.probe.arm()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        """Count the step under the task's name if it ran longer than the threshold."""
        now = self._clock()
        duration = now - self._last_event
        self._last_event = now
        if duration > self.slow_step_threshold:
            self._record_slow(task.name, duration)

    # --- reading (the monitor task) ---

    def record_delay(self, delay: float) -> None:
        """Account one sampled scheduler delay (called by the probe)."""
        if delay > self._max_delay:
            self._max_delay = delay
        histogram = self.delay_histogram
        if histogram is not None:
            histogram.observe(delay)

    def take_max_delay(self) -> float:
        """Return the largest sampled scheduler delay since the last call, and reset it."""
        delay, self._max_delay = self._max_delay, 0.0
        return delay

    def slow_steps(self) -> dict[str, SlowStep]:
        """Return a snapshot of every task name's slow-step totals since start."""
        return {
            name: SlowStep(name, stats.count, stats.max_seconds)
            for name, stats in self._slow.items()
        }

    def top_slow(self, n: int = 10) -> list[SlowStep]:
        """Return the ``n`` task names with the most slow steps, most first (ties: longest)."""
        rows = self.slow_steps().values()
        return sorted(rows, key=lambda row: (-row.count, -row.max_seconds, row.task))[:n]

    def _record_slow(self, name: str, duration: float) -> None:
        try:
            stats = self._slow.get(name)
            if stats is None:
                if len(self._slow) >= self.max_tasks:
                    name = OTHER_TASKS
                stats = self._slow.setdefault(name, SlowStepStats())
            stats.count += 1
            stats.total_seconds += duration
            if duration > stats.max_seconds:
                stats.max_seconds = duration
        except Exception:  # Trio disables an instrument that raises: lose one count instead
            pass


class DelayProbe(trio.abc.Instrument):
    """Measures the scheduler delay of one task, then takes itself out of the run loop.

    Added by :class:`LagInstrument` (:meth:`arm`); ``task_scheduled`` stamps the first task
    that becomes runnable, ``before_task_step`` of that task records the delay and removes
    the probe, so its two hooks cost nothing between samples.
    """

    def __init__(self, owner: LagInstrument, clock: Callable[[], float]) -> None:
        self.armed = False
        self._owner = owner
        self._clock = clock
        self._task: trio.lowlevel.Task | None = None
        self._scheduled_at = 0.0

    def arm(self) -> None:
        """Add the probe to the current run loop to take one sample."""
        self._task = None
        self.armed = True
        try:
            trio.lowlevel.add_instrument(self)
        except RuntimeError:  # no run loop (a test driving the hooks by hand)
            pass

    def disarm(self) -> None:
        """Remove the probe from the run loop; a pending sample is dropped."""
        self._task = None
        if self.armed:
            self.armed = False
            try:
                trio.lowlevel.remove_instrument(self)
            except (KeyError, RuntimeError):  # already removed, or no run loop
                pass

    def task_scheduled(self, task: trio.lowlevel.Task) -> None:
        """Stamp the first task that becomes runnable after arming."""
        if self._task is None:
            self._task = task
            self._scheduled_at = self._clock()

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        """When the stamped task gets to run, record its delay and remove the probe."""
        if task is self._task:
            self._owner.record_delay(self._clock() - self._scheduled_at)
            self.disarm()


@contextmanager
def install(instrument: trio.abc.Instrument) -> Iterator[trio.abc.Instrument]:
    """Add ``instrument`` to the current run loop for the duration of the ``with`` block.

    Must be used inside ``trio.run``. On exit the instrument is removed, unless Trio already
    removed it because a hook raised.
    """
    trio.lowlevel.add_instrument(instrument)
    try:
        yield instrument
    finally:
        try:
            trio.lowlevel.remove_instrument(instrument)
        except KeyError:
            pass
        if isinstance(instrument, LagInstrument):
            instrument.probe.disarm()


class LagMonitor:
    """The task that installs a :class:`LagInstrument` and publishes what it measures.

    Args:
        instrument: the instrument to install; a default :class:`LagInstrument` when None.
        log_every: log the slow-step table every this many intervals (when it has new rows).
        top_n: rows in that table.
        instrumented: install the instrument; False keeps only the heartbeat (the lag is this
            task's own oversleep, with no scheduler-delay samples and no slow steps), which
            is how ``benchmarks/bench_service_instrument.py`` measures the instrument's cost.
    """

    def __init__(
        self,
        instrument: LagInstrument | None = None,
        *,
        log_every: int = 60,
        top_n: int = 10,
        instrumented: bool = True,
    ) -> None:
        self.instrument = instrument if instrument is not None else LagInstrument()
        self.log_every = log_every
        self.top_n = top_n
        self.instrumented = instrumented
        self.last_lag = 0.0  # the lag published at the last interval, seconds
        self._published: dict[str, int] = {}
        self._logged: dict[str, int] = {}

    async def run(
        self,
        metrics: ServiceMetrics,
        interval: float = 1.0,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Install the instrument and publish lag and slow steps every ``interval`` seconds.

        Each interval sets ``oraculo_event_loop_lag_seconds`` to the larger of the worst
        sampled scheduler delay and the oversleep of this task's own timer, increments
        ``oraculo_event_loop_lag_spikes_total{threshold}`` for every threshold reached, and
        publishes ``oraculo_slow_task_steps_total{task}`` / ``..._max_seconds{task}``.

        Args:
            metrics: the service's metrics.
            interval: seconds between publications.
            task_status: reports readiness once the instrument is installed.

        Cancellation: runs until cancelled; the instrument is removed on the way out.
        """
        instrument = self.instrument
        bound_histogram = instrument.delay_histogram is None
        if bound_histogram:
            instrument.delay_histogram = metrics.scheduler_delay
        spikes = [(float(t), metrics.event_loop_lag_spikes.labels(t)) for t in LAG_SPIKE_THRESHOLDS]
        try:
            with install(instrument) if self.instrumented else contextlib.nullcontext():
                task_status.started()
                intervals = 0
                deadline = next_tick(trio.current_time(), interval)
                while True:
                    await trio.sleep_until(deadline)
                    now = trio.current_time()
                    lag = max(now - deadline, instrument.take_max_delay())
                    self.last_lag = lag
                    metrics.event_loop_lag.set(lag)
                    for threshold, counter in spikes:
                        if lag >= threshold:
                            counter.inc()
                    self.publish_slow_steps(metrics)
                    intervals += 1
                    if intervals % self.log_every == 0:
                        self.log_slow_steps()
                    # On the grid of the other periodic tasks, with no burst of catch-up
                    # intervals after a block. Woken half an interval late or more (the loop
                    # was blocked), not the next tick, which may be a moment away, but the one
                    # after: the lag just published then stays more than an interval, so a
                    # scrape every interval sees it.
                    late = now - deadline >= interval / 2
                    deadline = next_tick(now + interval if late else now, interval)
        finally:
            if bound_histogram:
                instrument.delay_histogram = None

    def publish_slow_steps(self, metrics: ServiceMetrics) -> None:
        """Bring the slow-step counters and max gauges up to date with the instrument."""
        for name, row in self.instrument.slow_steps().items():
            new = row.count - self._published.get(name, 0)
            if new > 0:
                self._published[name] = row.count
                metrics.slow_task_steps.labels(name).inc(new)
                metrics.slow_task_step_max.labels(name).set(row.max_seconds)

    def log_slow_steps(self) -> list[SlowStep]:
        """Log the top-N table of slow steps seen since the last table; return its rows.

        Nothing is logged when no task had a slow step since the last table.
        """
        window = []
        for name, row in self.instrument.slow_steps().items():
            new = row.count - self._logged.get(name, 0)
            if new > 0:
                self._logged[name] = row.count
                window.append(SlowStep(name, new, row.max_seconds))
        if not window:
            return []
        window.sort(key=lambda row: (-row.count, -row.max_seconds, row.task))
        rows = window[: self.top_n]
        width = max(len("task"), *(len(row.task) for row in rows))
        lines = [f"{'task':<{width}}  {'count':>7}  {'max_s':>8}"]
        lines += [f"{row.task:<{width}}  {row.count:>7}  {row.max_seconds:>8.3f}" for row in rows]
        LOGGER.warning(
            "slow task steps (> %.3f s) since the last report, top %d of %d:\n%s",
            self.instrument.slow_step_threshold,
            len(rows),
            len(window),
            "\n".join(lines),
        )
        return rows
