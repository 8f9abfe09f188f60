"""What every load-tool command shares: the console (live progress line, status messages),
``trio.run`` under SIGINT/SIGTERM with our errors unwrapped, the exit codes and the artifact
directory.

Exit codes (k6's convention): 0 every threshold holds, 99 a threshold failed, 2 a bad option
(nothing started), 1 the test could not run (a process that would not start or died),
130 interrupted.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from oraculo_trio.errors import OraculoError
from oraculo_trio.loadtest.summary import progress_line

LOGGER = logging.getLogger("oraculo_trio.loadtest.console")

EXIT_PASS = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_THRESHOLD = 99
EXIT_INTERRUPTED = 130


class Console:
    """The live progress line on stderr: rewritten in place on a terminal, else a line
    every ``every`` seconds."""

    def __init__(self, stream: Any = None, every: float = 5.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = every
        self.previous: dict[str, Any] | None = None
        self.last_printed = -1e9
        self.dirty = False

    def on_sample(self, sample: dict[str, Any], _config: Any) -> None:
        """Show one per-second sample (the run's ``on_sample``)."""
        line = progress_line(sample, self.previous)
        self.previous = sample
        if self.tty:
            self.stream.write("\r" + line[:200] + "\x1b[K")
            self.dirty = True
        elif sample["t"] - self.last_printed >= self.every or sample["mark"]:
            self.stream.write(line + "\n")
            self.last_printed = sample["t"]
        self.stream.flush()

    def say(self, text: str) -> None:
        """Print one status line."""
        self.end_line()
        self.stream.write(f"loadtest: {text}\n")
        self.stream.flush()

    def end_line(self) -> None:
        """End a progress line rewritten in place."""
        if self.dirty:
            self.stream.write("\n")
            self.dirty = False


def our_error(exc: BaseException) -> OraculoError | None:
    """The first :class:`OraculoError` of ``exc`` (alone or in exception groups), when
    everything else in it is a cancellation; None otherwise (a bug: keep its traceback)."""
    if isinstance(exc, OraculoError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        found = None
        for inner in exc.exceptions:
            if isinstance(inner, trio.Cancelled):
                continue
            error = our_error(inner)
            if error is None:
                return None
            found = found or error
        return found
    return None


def utc_stamp() -> str:
    """``20250102T030405Z``: the artifact directory name."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def default_out(kind: str = "loadtest") -> Path:
    """``./artifacts/<kind>/<UTC timestamp>``, absolute (a suffix keeps two runs in one second
    apart)."""
    base = Path("artifacts").absolute() / kind / utc_stamp()
    path = base
    index = 1
    while path.exists():
        index += 1
        path = base.with_name(f"{base.name}-{index}")
    return path


async def with_signals(
    work: Callable[[], Awaitable[Any]],
) -> tuple[Any, int | None]:
    """Run ``work()``; SIGINT or SIGTERM cancels it (its cleanup still runs).

    Returns:
        ``(result, None)``, or ``(None, signum)`` when a signal cancelled it.
    """
    received: list[int] = []
    result = None
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            work_scope = trio.CancelScope()

            async def watch() -> None:
                async for signum in signals:
                    if not received:
                        received.append(signum)
                        LOGGER.warning("%s: stopping the load test", signal.Signals(signum).name)
                        work_scope.cancel()

            nursery.start_soon(watch)
            with work_scope:
                result = await work()
            nursery.cancel_scope.cancel()
    return result, (received[0] if received else None)


def run_trio(work: Callable[[], Any]) -> tuple[Any, int | None]:
    """``trio.run`` the work under :func:`with_signals`; our errors come out unwrapped.

    Raises:
        OraculoError: the work failed for a reason of ours (alone or in a group).
    """
    try:
        return trio.run(with_signals, work)
    except BaseExceptionGroup as group:
        error = our_error(group)
        if error is None:
            raise
        raise error from None
