"""Worker-thread calls whose end the run loop may notice at its next wake.

``trio.to_thread.run_sync`` wakes the Trio thread the moment the worker finishes (a byte on
its wakeup socket). For the store writer at a steady feed that is one more sleep and wake of
the whole process per commit, ten a second at 100 ms bursts, and on a small VM a wake costs
more CPU (120-300 µs) than the commit's Python work. The writer does not need to know at once
that its commit is done: the commit itself happens at once, and the feed wakes the loop again
within one burst anyway. So a *lazy* call is noticed by an instrument when the loop next
wakes (``after_io_wait``); a timer (``notice_within``) bounds the wait when nothing else wakes
the loop, and a call that needs the worker (any *prompt* call) hurries the lazy one, which
then wakes the loop as ``to_thread`` does.

Like ``trio.to_thread.run_sync`` without ``abandon_on_cancel``: a call runs to its end even
when the caller is cancelled, and the cancellation is delivered at the caller's next
checkpoint.
"""

from __future__ import annotations

import collections
import functools
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import trio

if TYPE_CHECKING:
    from outcome import Outcome

T = TypeVar("T")


@attrs.define(eq=False)
class _Call:
    """One call in a worker thread; ``result`` and ``prompt`` are guarded by ``lock``."""

    token: trio.lowlevel.TrioToken
    done: trio.Event = attrs.field(factory=trio.Event)
    lock: threading.Lock = attrs.field(factory=threading.Lock)
    result: Outcome[Any] | None = None
    # True once the caller waits for it: the worker then wakes the loop when it ends.
    prompt: bool = False

    def hurry(self) -> bool:
        """Ask the worker to wake the loop when it ends; True if it has ended already."""
        with self.lock:
            if self.result is None:
                self.prompt = True
                return False
            return True


class _NoticeAtWake(trio.abc.Instrument):
    """Sets the ``done`` event of each lazy call that ended, when the loop wakes."""

    def __init__(self) -> None:
        # Appended by worker threads, emptied by the run loop (deque ops are atomic).
        self.ended: collections.deque[_Call] = collections.deque()

    def after_io_wait(self, timeout: float) -> None:
        ended = self.ended
        while ended:
            ended.popleft().done.set()


class ThreadCalls:
    """Runs calls one at a time in a worker thread under ``limiter``.

    Attributes:
        limiter: held for each call, from before it starts until its end is noticed; its
            statistics are what the ``oraculo_to_thread_executor_*`` series show.
        notice_within: seconds a lazy call's end may go unnoticed when nothing else wakes
            the loop.
    """

    def __init__(self, limiter: trio.CapacityLimiter, *, notice_within: float) -> None:
        self.limiter = limiter
        self.notice_within = notice_within
        self._watch = _NoticeAtWake()
        self._watching: trio.lowlevel.TrioToken | None = None
        self._running: _Call | None = None

    async def run_sync(self, fn: Callable[[], T], *, lazy: bool = False) -> T:
        """Run ``fn()`` in a worker thread and return its result (or raise its exception).

        Args:
            fn: the work; it must not touch Trio.
            lazy: notice the end at the loop's next wake (within ``notice_within``) rather
                than waking the loop for it.
        """
        running = self._running
        if running is not None and running.hurry():
            # It has ended and only waits to be noticed: notice it now.
            running.done.set()
        async with self.limiter:
            token = trio.lowlevel.current_trio_token()
            if lazy and self._watching is not token:
                trio.lowlevel.add_instrument(self._watch)
                self._watching = token
            call = _Call(token)
            self._running = call
            # The worker calls _ended(call, lazy, outcome.capture(fn)).
            trio.lowlevel.start_thread_soon(
                fn,
                functools.partial(self._ended, call, lazy),
                f"{getattr(fn, '__name__', 'call')} from {trio.lowlevel.current_task().name}",
            )
            try:
                with trio.CancelScope(shield=True):
                    if lazy:
                        with trio.move_on_after(self.notice_within):
                            await call.done.wait()
                    if not call.hurry():
                        await call.done.wait()
            finally:
                self._running = None
        assert call.result is not None
        return call.result.unwrap()  # type: ignore[no-any-return]

    def _ended(self, call: _Call, lazy: bool, result: Outcome[Any]) -> None:
        # In the worker thread.
        with call.lock:
            call.result = result
            prompt = call.prompt or not lazy
        if prompt:
            call.token.run_sync_soon(call.done.set)
        else:
            self._watch.ended.append(call)

    def close(self) -> None:
        """Stop watching the run loop (call it in the run that made lazy calls)."""
        if self._watching is not None:
            self._watching = None
            try:
                trio.lowlevel.remove_instrument(self._watch)
            except (KeyError, RuntimeError):
                pass  # already removed, or not in that run
