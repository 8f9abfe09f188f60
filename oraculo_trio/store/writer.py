"""The store writer: ONE task owns the database and writes what the pipeline sends it.

Producers (shard consumers, the dispatcher) send :class:`~oraculo_trio.core.alerts.AlertTransition`
and :class:`~oraculo_trio.store.base.DispatchLog` items into one bounded channel. The writer
takes a micro-batch (the first item, then whatever arrives until a row comes once
``commit_interval`` has passed since its last write, or, after a quiet time, until the rest
of the service is idle, within ``batch_window`` at most; up to ``batch_max``) and writes it
in ONE transaction (:meth:`Store.record_transitions`), one statement per table: the alert states
(``upsert_rule_alert``), their events (``insert_alert_events``) and the dispatch logs
(``insert_dispatch_logs``). One commit and one round trip (one worker-thread hop with
SQLite) per batch, and at most one batch per ``commit_interval`` unless batches are full:
commits, not rows, are what a steady alert flow costs.

When the store is unavailable the writer keeps its batch and retries with exponential
backoff and jitter, and takes nothing more from the channel meanwhile: the channel fills and
producers wait (backpressure, counted by them), so database latency or an outage never
grows an unbounded backlog and nothing is dropped. On cancellation the held batch and
everything still in the channel are written within ``flush_grace`` seconds (shielded).

Per-statement ``oraculo_db_*`` series are observed by the store itself (pass the same
metrics to :func:`~oraculo_trio.store.base.open_store`); the writer observes
``oraculo_store_pending_rows``, the ``store`` stage counters and batch sizes.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs
import trio
import trio.testing

from oraculo_trio.core.alerts import AlertTransition
from oraculo_trio.errors import StoreError, StoreUnavailable
from oraculo_trio.store.base import DispatchLog, Store

if TYPE_CHECKING:
    from oraculo_trio.observe.metrics import ServiceMetrics

LOGGER = logging.getLogger("oraculo_trio.store.writer")

StoreItem = AlertTransition | DispatchLog

FAILURE_LOG_INTERVAL = 30.0
"""While the store stays unavailable, log at most one line per this many seconds."""


@attrs.define(eq=False)
class _Batch:
    """A batch taken from the channel: written in one transaction."""

    transitions: list[AlertTransition]
    logs: list[DispatchLog]

    @property
    def size(self) -> int:
        return len(self.transitions) + len(self.logs)


def _make_batch(items: Sequence[StoreItem]) -> _Batch:
    transitions = []
    logs = []
    for item in items:
        if isinstance(item, AlertTransition):
            transitions.append(item)
        else:
            logs.append(item)
    return _Batch(transitions, logs)


def _check_item(item: object) -> StoreItem:
    if not isinstance(item, AlertTransition | DispatchLog):
        raise TypeError(
            f"the store channel carries AlertTransition and DispatchLog, got {type(item).__name__}"
        )
    return item


@attrs.define(eq=False)
class _Writer:
    """The writer's state: what it holds, and how it retries."""

    store: Store
    metrics: ServiceMetrics | None
    retry_initial: float
    retry_max: float
    rng: random.Random = attrs.field(factory=random.Random)
    # Items taken from the channel and not yet part of a batch (the window is open).
    incoming: list[StoreItem] = attrs.field(factory=list)
    # The batch being written (held across retries).
    batch: _Batch | None = None
    # When the last write began (trio.current_time()): commits are spaced by the interval.
    last_write: float = -math.inf
    # Failure bookkeeping for rate-limited logs.
    failures: int = 0
    failing_since: float = math.inf
    last_failure_log: float = -math.inf

    def pending(self) -> int:
        return len(self.incoming) + (self.batch.size if self.batch is not None else 0)

    def update_pending(self) -> None:
        if self.metrics is not None:
            self.metrics.store_pending.set(self.pending())

    def took(self, n: int) -> None:
        if self.metrics is not None and n:
            self.metrics.stage_in["store"].inc(n)
        self.update_pending()

    async def write_incoming(self, *, limit: int) -> None:
        """Write ``incoming`` as batches of at most ``limit`` items, retrying each."""
        if self.incoming:
            self.last_write = trio.current_time()
        while self.incoming:
            chunk, self.incoming = self.incoming[:limit], self.incoming[limit:]
            self.batch = _make_batch(chunk)
            if self.metrics is not None:
                self.metrics.batch_size["store"].observe(self.batch.size)
            await self.write_batch()

    async def write_batch(self) -> None:
        """Write the held batch in one transaction, retrying until it commits."""
        batch = self.batch
        if batch is None:
            return
        await self._retry(batch)
        self.batch = None
        if self.metrics is not None:
            self.metrics.stage_out["store"].inc(batch.size)
        self.update_pending()

    async def _retry(self, batch: _Batch) -> None:
        delay = self.retry_initial
        while True:
            try:
                await self.store.record_transitions(batch.transitions, batch.logs)
            except StoreUnavailable as exc:
                self._failed(exc)
                # Equal jitter: between half and all of the current delay.
                await trio.sleep(self.rng.uniform(delay / 2, delay))
                delay = min(self.retry_max, delay * 2)
                continue
            if self.failures:
                LOGGER.info(
                    "store available again after %d failed attempts in %.1f s",
                    self.failures,
                    trio.current_time() - self.failing_since,
                )
                self.failures = 0
                self.failing_since = math.inf
            return

    def _failed(self, exc: StoreUnavailable) -> None:
        now = trio.current_time()
        self.failures += 1
        if self.failures == 1:
            self.failing_since = now
        if now - self.last_failure_log >= FAILURE_LOG_INTERVAL:
            self.last_failure_log = now
            LOGGER.warning(
                "store unavailable (%d failed attempts in %.1f s, %d items held, "
                "producers are held back): %s",
                self.failures,
                now - self.failing_since,
                self.pending(),
                exc,
                exc_info=self.failures == 1,
            )


async def run_store_writer(
    store: Store,
    receive_channel: trio.MemoryReceiveChannel[StoreItem],
    metrics: ServiceMetrics | None,
    *,
    batch_max: int = 500,
    batch_window: float = 0.05,
    commit_interval: float = 0.0,
    retry_initial: float = 0.1,
    retry_max: float = 5.0,
    flush_grace: float = 5.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Own ``store``: write everything that arrives on ``receive_channel`` in batches.

    Returns when the channel is closed (every producer closed its clone) and everything
    taken from it is committed.

    Args:
        store: the open store; no other task writes to it.
        receive_channel: carries AlertTransition and DispatchLog items; the writer closes it.
        metrics: the service's metrics, or None.
        batch_max: items per batch at most.
        batch_window: seconds to keep collecting after a batch's first item.
        commit_interval: seconds between the starts of two writes at least, unless a
            batch is full (see :func:`_collect`).
        retry_initial, retry_max: backoff bounds, seconds, while the store is unavailable.
        flush_grace: seconds the final flush may take once cancelled.
        task_status: ``started()`` once the writer is taking items (``nursery.start``).

    Raises:
        StoreError: the store failed in a way a retry will not fix (the writer stops).
        TypeError: an item of another type arrived (a bug in a producer).

    Cancellation: the held batch and everything still in the channel are written under
    ``trio.move_on_after(flush_grace, shield=True)``, then Cancelled propagates. Items
    still unwritten when the grace ends are logged as lost.
    """
    if batch_max < 1:
        raise ValueError(f"batch_max must be >= 1, got {batch_max}")
    writer = _Writer(store, metrics, retry_initial, retry_max)
    writer.update_pending()
    async with receive_channel:
        task_status.started()
        try:
            closed = False
            while not closed:
                closed = await _collect(
                    writer, receive_channel, batch_max, batch_window, commit_interval
                )
                await writer.write_incoming(limit=batch_max)
        finally:
            await _final_flush(writer, receive_channel, batch_max, flush_grace)


async def _collect(
    writer: _Writer,
    receive_channel: trio.MemoryReceiveChannel[StoreItem],
    batch_max: int,
    batch_window: float,
    commit_interval: float,
) -> bool:
    """Take the next batch into ``writer.incoming``; True when the channel has ended.

    The first item opens the batch. What is already waiting is taken at once; a full batch
    goes without waiting. Within ``commit_interval`` of the last write, the writer keeps
    taking items as they arrive, and writes as soon as one arrives once the interval has
    passed (or one interval later if none does): a steady flow of alerts is written in one
    transaction per interval instead of one per burst of messages, since a commit costs far
    more than its rows (with SQLite about 0.7 ms of CPU per commit, with its worker-thread
    hop and the event loop's wake-up for the answer, against 9 µs per row:
    ``benchmarks/bench_wakeups.py``). Otherwise (a first item after a quiet time, or a flow
    that stopped) the writer waits until every other task is blocked (the burst of messages
    that raised the item has been handled, its notifications delivered), or the window ends
    if that comes first, and takes what arrived: no timer of its own that would wake an idle
    process once more. The window is waited in one piece only when the channel can hold a
    whole batch meanwhile, so that producers never wait on an idle writer.
    """
    incoming = writer.incoming
    counted = 0

    def count() -> None:
        # Items taken are counted (stage_in, pending rows) as they are taken.
        nonlocal counted
        writer.took(len(incoming) - counted)
        counted = len(incoming)

    try:
        if await _receive_more(incoming, receive_channel, batch_max):
            return True
        if len(incoming) >= batch_max:
            return False
        next_write = writer.last_write + commit_interval
        if next_write > trio.current_time():
            # Until a row comes once the interval has passed; if none comes (the flow
            # stopped), one interval more.
            with trio.move_on_at(next_write + commit_interval):
                while len(incoming) < batch_max:
                    count()
                    if await _receive_more(incoming, receive_channel, batch_max):
                        return True
                    if trio.current_time() >= next_write:
                        # Written at once, while the burst that brought the row keeps the
                        # event loop busy: neither a timer nor the worker thread's answer
                        # has to wake an idle loop.
                        return False
        if len(incoming) >= batch_max:
            return False
        if receive_channel.statistics().max_buffer_size >= batch_max:
            with trio.move_on_after(batch_window):
                await trio.testing.wait_all_tasks_blocked()
            return _take_waiting(incoming, receive_channel, batch_max)
        with trio.move_on_after(batch_window):
            while len(incoming) < batch_max:
                if await _receive_more(incoming, receive_channel, batch_max):
                    return True
        return False
    finally:
        # Also when cancelled inside the window: what was taken is held and counted.
        count()


async def _receive_more(
    incoming: list[StoreItem], receive_channel: trio.MemoryReceiveChannel[StoreItem], limit: int
) -> bool:
    """Wait for the next item, then move it and what waits with it into ``incoming``, up to
    ``limit`` items in all; True when the channel has ended.

    Cancellation: nothing is taken.
    """
    try:
        incoming.append(_check_item(await receive_channel.receive()))
    except trio.EndOfChannel:
        return True
    return _take_waiting(incoming, receive_channel, limit)


def _take_waiting(
    incoming: list[StoreItem], receive_channel: trio.MemoryReceiveChannel[StoreItem], limit: int
) -> bool:
    """Move what ``receive_channel`` holds into ``incoming``, up to ``limit`` items in all;
    True when the channel has ended."""
    while len(incoming) < limit:
        try:
            item = receive_channel.receive_nowait()
        except trio.WouldBlock:
            return False
        except trio.EndOfChannel:
            return True
        incoming.append(_check_item(item))
    return False


async def _final_flush(
    writer: _Writer,
    receive_channel: trio.MemoryReceiveChannel[StoreItem],
    batch_max: int,
    flush_grace: float,
) -> None:
    """Write the held batch and what is left in the channel, within ``flush_grace``."""
    drained = 0
    while True:
        try:
            item = receive_channel.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            break
        if isinstance(item, AlertTransition | DispatchLog):
            writer.incoming.append(item)
            drained += 1
        else:
            LOGGER.error("store writer: dropping an item of type %s", type(item).__name__)
    writer.took(drained)
    if writer.pending() == 0:
        return
    LOGGER.info("store writer stopping: flushing %d items", writer.pending())
    with trio.move_on_after(flush_grace, shield=True) as scope:
        try:
            await writer.write_batch()
            await writer.write_incoming(limit=batch_max)
        except (StoreError, TypeError):
            LOGGER.error(
                "store writer: final flush failed, %d items not stored",
                writer.pending(),
                exc_info=True,
            )
            return
    if scope.cancelled_caught:
        LOGGER.error(
            "store writer: flush grace of %.1f s ended with the store unavailable, "
            "%d items not stored",
            flush_grace,
            writer.pending(),
        )
