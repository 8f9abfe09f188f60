"""The spawn helper: failures counted and logged, propagated or restarted with backoff."""

from __future__ import annotations

import itertools
import logging
import random

import pytest
import trio
import trio.testing

from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.observe.supervise import RestartPolicy, spawn, start, supervised

LOGGER_NAME = "oraculo_trio.observe.supervise"


def failures(metrics: ServiceMetrics, task: str) -> float | None:
    return metrics.inner.get_sample_value("oraculo_task_exceptions_total", {"task": task})


class Stop(BaseException):
    """A BaseException that is not an error (like Cancelled or KeyboardInterrupt)."""


async def test_a_failure_is_counted_logged_with_traceback_and_propagates(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = ServiceMetrics(tasks=("decoder",))

    async def decoder() -> None:
        raise ValueError("bad price field")

    with trio.fail_after(5), pytest.RaisesGroup(pytest.RaisesExc(ValueError, match="bad price")):
        async with trio.open_nursery() as nursery:
            spawn(nursery, "decoder", decoder, metrics=metrics)

    assert failures(metrics, "decoder") == 1.0
    assert metrics.inner.get_sample_value("oraculo_last_exception_timestamp_seconds") > 0
    [record] = [r for r in caplog.records if r.name == LOGGER_NAME]
    assert record.levelno == logging.ERROR
    assert "task decoder failed: ValueError: bad price field" in record.getMessage()
    assert record.exc_info is not None
    assert record.exc_info[0] is ValueError
    assert "Traceback (most recent call last)" in caplog.text
    assert 'raise ValueError("bad price field")' in caplog.text


async def test_supervised_alone_raises_the_exception_unchanged() -> None:
    metrics = ServiceMetrics()

    async def boom(message: str) -> None:
        raise KeyError(message)

    with trio.fail_after(5), pytest.raises(KeyError, match="gone"):
        await supervised("boom", boom, "gone", metrics=metrics)
    assert failures(metrics, "boom") == 1.0


async def test_restarts_back_off_and_reset_after_a_healthy_run(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = ServiceMetrics()
    policy = RestartPolicy(initial=0.5, maximum=30, multiplier=2, jitter=0, reset_after=60)
    starts: list[float] = []

    async def flaky() -> None:
        starts.append(trio.current_time())
        if len(starts) == 4:
            await trio.sleep(100)  # a healthy run, then a failure
        if len(starts) <= 4:
            raise ConnectionError("exchange went away")

    with trio.fail_after(1000):
        await supervised("feed", flaky, metrics=metrics, restart=policy)

    waits = [round(b - a, 6) for a, b in itertools.pairwise(starts)]
    assert waits == [0.5, 1.0, 2.0, 100.5]  # 0.5, 1, 2; then a 100 s run and 0.5 again
    assert failures(metrics, "feed") == 4.0
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER_NAME]
    assert len(messages) == 4
    assert "failure 3 in a row" in messages[2]
    assert "restarting in 2.00 s" in messages[2]
    assert "failure 1 in a row" in messages[3]
    assert all(r.exc_info for r in caplog.records if r.name == LOGGER_NAME)


def test_backoff_is_capped_and_jittered_within_bounds() -> None:
    policy = RestartPolicy(initial=0.5, maximum=30, multiplier=2, jitter=0.2)
    rng = random.Random(7)
    for failures_in_a_row, base in [(1, 0.5), (2, 1.0), (6, 16.0), (7, 30.0), (50, 30.0)]:
        delay = policy.delay(failures_in_a_row, rng)
        assert base * 0.8 <= delay <= base * 1.2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"initial": 0}, "initial"),
        ({"initial": 2, "maximum": 1}, "maximum"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"jitter": 1.0}, "jitter"),
        ({"reset_after": -1}, "reset_after"),
    ],
)
def test_bad_policies_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RestartPolicy(**kwargs)


async def test_cancellation_is_not_a_failure(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = ServiceMetrics()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            spawn(nursery, "idle", trio.sleep_forever, metrics=metrics, restart=RestartPolicy())
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert failures(metrics, "idle") == 0.0
    assert not [r for r in caplog.records if r.name == LOGGER_NAME]


async def test_cancellation_during_backoff_stops_the_restarts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    metrics = ServiceMetrics()
    runs = 0

    async def always_fails() -> None:
        nonlocal runs
        runs += 1
        raise RuntimeError("no")

    with trio.move_on_after(3.6):  # runs at 0, 0.5, 1.5, 3.5; the next would be at 7.5
        await supervised("loop", always_fails, metrics=metrics, restart=RestartPolicy(jitter=0))
    assert runs == 4
    assert failures(metrics, "loop") == 4.0


async def test_an_exception_group_is_one_failure(caplog: pytest.LogCaptureFixture) -> None:
    metrics = ServiceMetrics()

    async def fail(exc: Exception) -> None:
        raise exc

    async def shard() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fail, ValueError("depth"))
            nursery.start_soon(fail, KeyError("trade"))

    with trio.fail_after(5), pytest.RaisesGroup(ValueError, KeyError):
        await supervised("shard[0]", shard, metrics=metrics)
    assert failures(metrics, "shard[0]") == 1.0
    [message] = [r.getMessage() for r in caplog.records if r.name == LOGGER_NAME]
    assert "task shard[0] failed: ExceptionGroup of 2: [" in message
    assert "ValueError: depth" in message
    assert "KeyError: 'trade'" in message


async def test_a_group_mixing_errors_and_cancellation_is_counted_and_not_restarted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    metrics = ServiceMetrics()
    runs = 0

    async def mixed() -> None:
        nonlocal runs
        runs += 1
        raise BaseExceptionGroup("mixed", [ValueError("real"), Stop()])

    with trio.fail_after(10), pytest.raises(BaseExceptionGroup) as caught:
        await supervised("mixed", mixed, metrics=metrics, restart=RestartPolicy())
    assert caught.value.message == "mixed"
    assert runs == 1
    assert failures(metrics, "mixed") == 1.0


async def test_a_bare_base_exception_is_not_counted() -> None:
    metrics = ServiceMetrics()

    async def stop() -> None:
        raise Stop

    with trio.fail_after(5), pytest.raises(Stop):
        await supervised("stop", stop, metrics=metrics, restart=RestartPolicy())
    assert failures(metrics, "stop") == 0.0


async def test_start_reports_the_first_readiness_and_restarts_quietly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    metrics = ServiceMetrics()
    runs = 0
    finished = trio.Event()

    async def server(port: int, *, task_status: trio.TaskStatus[int]) -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise OSError("address in use")  # before started(): start() keeps waiting
        task_status.started(port + runs)
        if runs == 2:
            raise ConnectionResetError("peer")  # after started(): restarted, started() ignored
        finished.set()
        await trio.sleep_forever()

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            value = await start(
                nursery, "http", server, 8000, metrics=metrics, restart=RestartPolicy(jitter=0)
            )
            await finished.wait()
            nursery.cancel_scope.cancel()
    assert value == 8002
    assert runs == 3
    assert failures(metrics, "http") == 2.0


async def test_spawned_tasks_carry_the_supervised_name() -> None:
    metrics = ServiceMetrics()
    names: list[str] = []

    async def record() -> None:
        names.append(trio.lowlevel.current_task().name)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            spawn(nursery, "store.writer", record, metrics=metrics)
    assert names == ["store.writer"]
