"""The one way every task of the service is spawned: counted, logged, optionally restarted.

:func:`supervised` runs a task under a name. An exception escaping the task is counted in
``oraculo_task_exceptions_total{task}``, stamps ``oraculo_last_exception_timestamp_seconds``
and is logged with its traceback. Then, with a :class:`RestartPolicy`, the task starts again
after an exponential backoff with jitter (back to the initial delay after a healthy run);
without one, the exception propagates and takes the service down, which is the right thing
for a task whose failure leaves the service wrong.

Cancellation is never an error: ``trio.Cancelled`` (and ``KeyboardInterrupt``) pass through
uncounted. An exception group that mixes cancellation with real errors has its errors counted
and logged, then propagates as it is, even under a restart policy: someone is cancelling us.

:func:`spawn` and :func:`start` are the nursery-side conveniences (``nursery.start`` and
``start_soon`` take no keyword arguments); they also give the Trio task the supervised name,
which is what slow task steps are counted under.

:func:`next_tick` and :func:`sleep_to_tick` put the periodic tasks (rule clock, watchdog,
lag monitor, process stats, health checks, reload, silences) on one time grid: each wakes at
the next multiple of its interval on Trio's clock, so tasks of the same or commensurate
intervals wake in the same scheduler pass. Waking a process costs far more CPU than the
task steps it runs (``python benchmarks/bench_wakeups.py``: 120 to 350 µs a wake on a VM,
against a few µs a step), and a dozen periodic tasks on their own phases would wake the
service a dozen times a second where two wakes do.
"""

from __future__ import annotations

import functools
import logging
import math
import random
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from oraculo_trio.observe.metrics import ServiceMetrics

LOGGER = logging.getLogger("oraculo_trio.observe.supervise")


def next_tick(now: float, interval: float) -> float:
    """The first multiple of ``interval`` after ``now`` (Trio clock seconds)."""
    return (math.floor(now / interval) + 1.0) * interval


async def sleep_to_tick(interval: float) -> None:
    """Sleep until the next multiple of ``interval`` seconds on Trio's clock: at most
    ``interval``, and in step with every other task on the grid (see the module)."""
    await trio.sleep_until(next_tick(trio.current_time(), interval))


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"RestartPolicy.{attribute.name} must be > 0, got {value!r}")


@attrs.frozen
class RestartPolicy:
    """Exponential backoff between restarts of a failed task.

    The n-th failure in a row waits ``min(maximum, initial * multiplier ** (n - 1))``, scaled
    by a random factor in ``[1 - jitter, 1 + jitter]`` so that tasks failing together do not
    restart together. A run that lasted at least ``reset_after`` seconds was healthy: the
    failure that ends it waits ``initial`` again.

    Raises:
        ValueError: a field is out of range (the message names it).
    """

    initial: float = attrs.field(default=0.5, validator=_positive)
    maximum: float = attrs.field(default=30.0, validator=_positive)
    multiplier: float = attrs.field(default=2.0)
    jitter: float = attrs.field(default=0.2)
    reset_after: float = attrs.field(default=60.0, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.maximum < self.initial:
            raise ValueError(
                f"RestartPolicy.maximum ({self.maximum!r}) must be >= initial ({self.initial!r})"
            )
        if self.multiplier < 1:
            raise ValueError(f"RestartPolicy.multiplier must be >= 1, got {self.multiplier!r}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"RestartPolicy.jitter must be in [0, 1), got {self.jitter!r}")

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before restarting after ``failures`` failures in a row (>= 1)."""
        base = min(self.maximum, self.initial * self.multiplier ** max(0, failures - 1))
        if not self.jitter:
            return base
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return base * (1.0 + spread)


class _StartedOnce(trio.TaskStatus[Any]):
    """Forwards the first ``started()`` and ignores the ones of restarted runs."""

    def __init__(self, inner: trio.TaskStatus[Any]) -> None:
        self._inner = inner
        self._done = False

    def started(self, value: Any = None) -> None:
        if not self._done:
            self._done = True
            self._inner.started(value)


def _errors_in(exc: BaseException) -> BaseException | None:
    """The part of ``exc`` that is an error (not cancellation or an interrupt), if any."""
    if isinstance(exc, Exception):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        errors, _ = exc.split(Exception)
        return errors
    return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        leaves = ", ".join(_describe(inner) for inner in exc.exceptions)
        return f"{type(exc).__name__} of {len(exc.exceptions)}: [{leaves}]"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def supervised(
    name: str,
    async_fn: Callable[..., Awaitable[object]],
    *args: object,
    metrics: ServiceMetrics,
    restart: RestartPolicy | None = None,
    rng: random.Random | None = None,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``async_fn(*args)`` as the task ``name``: count, log and maybe restart its failures.

    Args:
        name: the task's name in metrics (``task`` label) and logs; keep it low-cardinality.
        async_fn: the task. Started through ``nursery.start`` (see :func:`start`) it is
            called with ``task_status=`` and must report readiness; its later restarts call
            ``started()`` again, which is ignored. Started with ``start_soon`` (see
            :func:`spawn`) it is called without ``task_status``.
        *args: positional arguments for ``async_fn``.
        metrics: where failures are counted.
        restart: restart after a failure with this backoff; None lets the failure propagate.
        rng: random source for the jitter (tests pass a seeded one).
        task_status: given by ``nursery.start``.

    Returns:
        When ``async_fn`` returns (a finished task is not restarted).

    Raises:
        Exception: whatever ``async_fn`` raised, unchanged, when there is no restart policy.

    Cancellation: ``trio.Cancelled`` propagates, uncounted, during a run or a backoff sleep.
    """
    failures_counter = metrics.task_exceptions.labels(name)
    status = _StartedOnce(task_status) if task_status is not trio.TASK_STATUS_IGNORED else None
    failures = 0
    delay = 0.0
    while True:
        began = trio.current_time()
        try:
            if status is None:
                await async_fn(*args)
            else:
                await async_fn(*args, task_status=status)
            return
        except BaseException as exc:
            errors = _errors_in(exc)
            if errors is None:
                raise
            failures_counter.inc()
            metrics.last_exception_timestamp.set_to_current_time()
            if restart is None or errors is not exc:
                LOGGER.error("task %s failed: %s", name, _describe(errors), exc_info=True)
                raise
            ran = trio.current_time() - began
            failures = 1 if ran >= restart.reset_after else failures + 1
            delay = restart.delay(failures, rng)
            LOGGER.error(
                "task %s failed after %.1f s (failure %d in a row): %s; restarting in %.2f s",
                name,
                ran,
                failures,
                _describe(errors),
                delay,
                exc_info=True,
            )
        # Outside the except block, so a Cancelled here does not chain the old failure.
        await trio.sleep(delay)


def spawn(
    nursery: trio.Nursery,
    name: str,
    async_fn: Callable[..., Awaitable[object]],
    *args: object,
    metrics: ServiceMetrics,
    restart: RestartPolicy | None = None,
) -> None:
    """Start ``async_fn(*args)`` in ``nursery`` under :func:`supervised`, like ``start_soon``.

    Args:
        nursery: the owner of the task.
        name: the supervised name, also given to the Trio task.
        async_fn: the task; called without ``task_status``.
        *args: positional arguments for ``async_fn``.
        metrics: where failures are counted.
        restart: the restart policy, or None to let a failure propagate.
    """
    nursery.start_soon(
        functools.partial(supervised, name, async_fn, *args, metrics=metrics, restart=restart),
        name=name,
    )


async def start(
    nursery: trio.Nursery,
    name: str,
    async_fn: Callable[..., Awaitable[object]],
    *args: object,
    metrics: ServiceMetrics,
    restart: RestartPolicy | None = None,
) -> Any:
    """Start ``async_fn(*args)`` in ``nursery`` under :func:`supervised`, like ``start``.

    Args:
        nursery: the owner of the task.
        name: the supervised name, also given to the Trio task.
        async_fn: the task; it must accept ``task_status`` and call ``started()``.
        *args: positional arguments for ``async_fn``.
        metrics: where failures are counted.
        restart: the restart policy, or None to let a failure propagate.

    Returns:
        The value ``async_fn`` passed to ``task_status.started()``.

    Raises:
        Exception: a failure before ``started()`` without a restart policy (with one, the
            task retries with backoff and this call keeps waiting).

    Cancellation: if cancelled before the task reports readiness, the task is cancelled too.
    """
    return await nursery.start(
        functools.partial(supervised, name, async_fn, *args, metrics=metrics, restart=restart),
        name=name,
    )
