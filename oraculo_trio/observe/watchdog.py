"""A thread that notices when the Trio loop stops running and writes down why.

The loop side (:meth:`Watchdog.run`, a cheap task) stamps a heartbeat a few times per
``dump_after`` and, every ``tree_every`` seconds, records the task tree as text. The
watchdog thread compares the heartbeat with the clock; once the loop has been blocked for
longer than ``dump_after`` it dumps the Trio thread's stack (which names the blocking line),
every other thread's stack and the last task tree, to the log and to
``<dump_dir>/<UTC timestamp>.txt``, and counts ``oraculo_dumps_total{reason="event_loop_lag"}``.
One dump per blocking episode: the watchdog re-arms when the heartbeat moves again.

The HTTP thread reads :attr:`Watchdog.blocked` for ``/healthz``.
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType

import trio

from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.observe.supervise import sleep_to_tick

LOGGER = logging.getLogger("oraculo_trio.observe.watchdog")

THREAD_NAME = "oraculo-watchdog"
DUMP_REASON = "event_loop_lag"
MAX_TREE_TASKS = 2000
"""Tasks written in a task-tree snapshot; the rest are counted, not listed."""

_TRIO_DIR = os.path.dirname(trio.__file__) + os.sep


class Watchdog:
    """Watches the Trio loop's heartbeat from a daemon thread and dumps stacks when it stops.

    Use as a context manager around the root nursery (the thread runs inside the ``with``)
    and start :meth:`run` in that nursery: until :meth:`run` has stamped a first heartbeat
    the watchdog is not armed, and it disarms when :meth:`run` exits, so a normal shutdown
    never looks like a blocked loop.

    Args:
        metrics: the service's metrics (``oraculo_dumps_total`` is counted here).
        dump_after: seconds without a heartbeat after which the loop counts as blocked and
            one dump is written.
        dump_dir: directory for dump files; created on the first dump.
        beat_interval: seconds between heartbeats; ``dump_after / 4`` by default.
        tree_every: seconds between task-tree snapshots.
        clock: monotonic seconds, shared by both threads.
    """

    def __init__(
        self,
        metrics: ServiceMetrics,
        *,
        dump_after: float = 2.0,
        dump_dir: str | os.PathLike[str] = "var/dumps",
        beat_interval: float | None = None,
        tree_every: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if dump_after <= 0:
            raise ValueError(f"dump_after must be > 0, got {dump_after!r}")
        self.dump_after = dump_after
        self.dump_dir = Path(dump_dir)
        self.beat_interval = beat_interval if beat_interval is not None else dump_after / 4
        if not 0 < self.beat_interval < dump_after:
            raise ValueError(
                f"beat_interval must be > 0 and < dump_after ({dump_after!r}), "
                f"got {self.beat_interval!r}"
            )
        self.tree_every = tree_every
        self.dumps: list[Path] = []
        """Files written so far, oldest first."""
        self._clock = clock
        self._dumps_counter = metrics.dumps.labels(DUMP_REASON)
        # Written by the Trio thread, read by the others: single attribute stores and loads
        # are atomic under the GIL, and a stale read only delays a verdict by one poll.
        self._last_beat: float | None = None
        self._trio_ident: int | None = None
        self._tree: tuple[float, str] | None = None
        self._dumped_beat: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- thread lifecycle ---

    def __enter__(self) -> Watchdog:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the watchdog thread (daemon, named ``oraculo-watchdog``)."""
        if self._thread is not None:
            raise RuntimeError("watchdog already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name=THREAD_NAME, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the watchdog thread and wait up to ``timeout`` seconds for it to end."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # --- the loop side ---

    def beat(self) -> None:
        """Stamp the heartbeat (Trio thread only)."""
        self._trio_ident = threading.get_ident()
        self._last_beat = self._clock()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Stamp the heartbeat every ``beat_interval`` and snapshot the task tree now and then.

        Args:
            task_status: reports readiness once the first heartbeat is stamped (armed).

        Cancellation: runs until cancelled; disarms the watchdog on the way out.
        """
        try:
            self.beat()
            self.snapshot_tasks()
            task_status.started()
            next_tree = trio.current_time() + self.tree_every
            while True:
                await sleep_to_tick(self.beat_interval)
                self.beat()
                if trio.current_time() >= next_tree:
                    self.snapshot_tasks()
                    next_tree = trio.current_time() + self.tree_every
        finally:
            self._last_beat = None

    def snapshot_tasks(self) -> str:
        """Record (and return) the current task tree as text (Trio thread only)."""
        text = format_task_tree(trio.lowlevel.current_root_task())
        self._tree = (self._clock(), text)
        return text

    # --- what other threads read ---

    def blocked_for(self) -> float:
        """Seconds since the last heartbeat, 0.0 when not armed."""
        beat = self._last_beat
        return 0.0 if beat is None else max(0.0, self._clock() - beat)

    @property
    def blocked(self) -> bool:
        """True while the loop has gone more than ``dump_after`` seconds without a heartbeat."""
        return self.blocked_for() > self.dump_after

    # --- the watchdog thread ---

    def _watch(self) -> None:
        # As often as the heartbeat: a block is seen within dump_after + beat_interval.
        poll = self.beat_interval
        while not self._stop.wait(poll):
            try:
                self.check()
            except Exception:
                LOGGER.exception("watchdog check failed")

    def check(self) -> Path | None:
        """Dump once if the loop is blocked and this episode has no dump yet; return the file.

        Called by the watchdog thread every poll; public so a test can drive it.
        """
        beat = self._last_beat
        if beat is None or self._clock() - beat <= self.dump_after or beat == self._dumped_beat:
            return None
        self._dumped_beat = beat
        return self.dump()

    def dump(self) -> Path:
        """Write a stack dump to the log and to a new file in ``dump_dir``; return its path."""
        now = datetime.datetime.now(datetime.UTC)
        text = self.format_dump(now)
        LOGGER.error("%s", text)
        path = self._write(now, text)
        self._dumps_counter.inc()
        self.dumps.append(path)
        return path

    def format_dump(self, now: datetime.datetime) -> str:
        """The dump's text: header, the Trio thread's stack, other threads, the task tree."""
        frames = sys._current_frames()
        threads = {thread.ident: thread for thread in threading.enumerate()}
        trio_ident = self._trio_ident
        lines = [
            f"oraculo-trio watchdog dump at {now.isoformat()}",
            f"reason: {DUMP_REASON}: no Trio heartbeat for {self.blocked_for():.3f} s "
            f"(dump_after={self.dump_after} s)",
            f"pid: {os.getpid()}",
            "",
        ]
        trio_frame = frames.get(trio_ident) if trio_ident is not None else None
        lines.append(f"=== Trio thread {_describe(threads.get(trio_ident), trio_ident)} ===")
        if trio_frame is None:
            lines.append("(no frame: the Trio thread is gone)")
        else:
            lines.extend(_format_stack(trio_frame))
        for ident, frame in sorted(frames.items()):
            if ident == trio_ident:
                continue
            lines.append("")
            lines.append(f"=== thread {_describe(threads.get(ident), ident)} ===")
            lines.extend(_format_stack(frame))
        lines.append("")
        tree = self._tree
        if tree is None:
            lines.append("=== task tree: no snapshot yet ===")
        else:
            taken, text = tree
            lines.append(f"=== task tree (snapshot taken {self._clock() - taken:.1f} s ago) ===")
            lines.append(text)
        return "\n".join(lines) + "\n"

    def _write(self, now: datetime.datetime, text: str) -> Path:
        self.dump_dir.mkdir(parents=True, exist_ok=True)
        stem = now.strftime("%Y%m%dT%H%M%S.%fZ")
        path = self.dump_dir / f"{stem}.txt"
        suffix = 1
        while path.exists():
            path = self.dump_dir / f"{stem}-{suffix}.txt"
            suffix += 1
        path.write_text(text, encoding="utf-8")
        return path


def _describe(thread: threading.Thread | None, ident: int | None) -> str:
    if thread is None:
        return f"ident={ident}"
    return f"{thread.name!r} ident={ident} native_id={thread.native_id} daemon={thread.daemon}"


def _format_stack(frame: FrameType) -> list[str]:
    return "".join(traceback.format_stack(frame)).rstrip("\n").splitlines()


def format_task_tree(root: trio.lowlevel.Task) -> str:
    """Render the task tree under ``root``: one line per task, with where it is waiting.

    Args:
        root: usually ``trio.lowlevel.current_root_task()``.

    Returns:
        Indented text, at most ``MAX_TREE_TASKS`` task lines.
    """
    lines: list[str] = []
    skipped = 0
    stack: list[tuple[trio.lowlevel.Task, int]] = [(root, 0)]
    while stack:
        task, depth = stack.pop()
        if len(lines) >= MAX_TREE_TASKS:
            skipped += 1
        else:
            lines.append(f"{'  ' * depth}{task.name}{_where(task)}")
        children = [child for nursery in task.child_nurseries for child in nursery.child_tasks]
        stack.extend((child, depth + 1) for child in reversed(children))
    if skipped:
        lines.append(f"... and {skipped} more tasks")
    return "\n".join(lines)


def _where(task: trio.lowlevel.Task) -> str:
    # The innermost frame outside Trio says what the task is waiting for; for a task that is
    # Trio code from the start (trio.sleep_forever), its own outermost frame does.
    chosen = None
    for frame, lineno in task.iter_await_frames():
        if chosen is None or not frame.f_code.co_filename.startswith(_TRIO_DIR):
            chosen = (frame, lineno)
    if chosen is None:
        return ""
    frame, lineno = chosen
    code = frame.f_code
    return f"  [{code.co_name} at {code.co_filename}:{lineno}]"
