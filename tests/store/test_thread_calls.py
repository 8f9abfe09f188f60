"""Worker-thread calls noticed at the loop's next wake: when they end, and what hurries them."""

from __future__ import annotations

import threading

import pytest
import trio
import trio.testing

from oraculo_trio.store.thread_calls import ThreadCalls

# Long enough that a call noticed before it was not noticed by its timer.
NEVER = 30.0


class BlockedLazyCall:
    """A lazy call (by default noticed at a wake, never by its timer) whose work blocks
    until ``release`` is set, then sets ``ended``."""

    def __init__(
        self,
        value: str,
        limiter: trio.CapacityLimiter | None = None,
        notice_within: float = NEVER,
    ) -> None:
        self.calls = ThreadCalls(limiter or trio.CapacityLimiter(1), notice_within=notice_within)
        self.value = value
        self.release = threading.Event()
        self.ended = threading.Event()

    def work(self) -> str:
        self.release.wait()
        self.ended.set()
        return self.value

    async def run(self, results: list[str]) -> None:
        results.append(await self.calls.run_sync(self.work, lazy=True))

    async def start_then_release(self, nursery: trio.Nursery, results: list[str]) -> None:
        """Start the call in ``nursery`` and let its work end once the call waits."""
        nursery.start_soon(self.run, results)
        await trio.testing.wait_all_tasks_blocked()
        self.release.set()


async def test_a_lazy_call_is_noticed_when_something_else_wakes_the_loop() -> None:
    blocked = BlockedLazyCall("written")
    results: list[str] = []

    started = trio.current_time()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await blocked.start_then_release(nursery, results)
            # Its end wakes nothing; each to_thread hop here ends with a wake of the loop,
            # and the first wake after the end notices it (long before its timer).
            while not results:
                await trio.to_thread.run_sync(blocked.ended.wait)
    assert results == ["written"]
    assert trio.current_time() - started < NEVER
    blocked.calls.close()


async def test_a_lazy_call_alone_is_noticed_within_its_bound() -> None:
    calls = ThreadCalls(trio.CapacityLimiter(1), notice_within=0.05)
    with trio.fail_after(60):
        assert await calls.run_sync(lambda: 42, lazy=True) == 42
    calls.close()


async def test_a_prompt_call_hurries_the_lazy_one_it_waits_behind() -> None:
    limiter = trio.CapacityLimiter(1)
    blocked = BlockedLazyCall("batch", limiter)
    calls = blocked.calls
    order: list[str] = []

    async def prompt_call() -> None:
        order.append(await calls.run_sync(lambda: "read"))

    started = trio.current_time()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(blocked.run, order)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(prompt_call)
            await trio.testing.wait_all_tasks_blocked()
            assert limiter.statistics().tasks_waiting == 1
            blocked.release.set()
    assert order == ["batch", "read"]
    assert trio.current_time() - started < NEVER
    calls.close()


async def test_a_prompt_call_after_a_lazy_call_ended_does_not_wait_for_its_bound() -> None:
    blocked = BlockedLazyCall("batch")
    calls = blocked.calls
    order: list[str] = []

    started = trio.current_time()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await blocked.start_then_release(nursery, order)
            # Ended, and nothing has woken the loop since (a plain wait in this thread).
            blocked.ended.wait()
            order.append(await calls.run_sync(lambda: "read"))
    assert order == ["batch", "read"]
    assert trio.current_time() - started < NEVER
    calls.close()


async def test_the_work_s_exception_reaches_the_caller() -> None:
    calls = ThreadCalls(trio.CapacityLimiter(1), notice_within=0.05)

    def fail() -> None:
        raise ValueError("disk full")

    for lazy in (False, True):
        with pytest.raises(ValueError, match="disk full"):
            await calls.run_sync(fail, lazy=lazy)
    calls.close()


async def test_a_cancelled_caller_gets_the_result_then_the_cancellation() -> None:
    # Nothing else wakes the loop here: the timer notices the end.
    blocked = BlockedLazyCall("kept", notice_within=0.05)
    calls = blocked.calls
    results: list[str] = []

    async def lazy_call_then_sleep() -> None:
        await blocked.run(results)
        await trio.sleep(NEVER)  # the cancellation arrives here

    with trio.fail_after(60):
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lazy_call_then_sleep)
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()
                blocked.release.set()
    # The work ran to its end and its result was returned despite the cancellation.
    assert blocked.ended.is_set()
    assert results == ["kept"]
    calls.close()
