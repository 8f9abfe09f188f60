"""A shard's diff books: every symbol's :class:`~oraculo_trio.core.sync.BookSync`, between the
depth consumer and the rule engine.

With ``depth`` among ``feed.depth_streams``, the shard's depth consumer hands each
:class:`~oraculo_trio.core.events.DepthDiff` here instead of to the engine, and each
:class:`~oraculo_trio.core.sync.BookSnapshot` the fetcher sends back. A diff applied to a live
book goes on to the engine (state, then rules); a diff of a syncing symbol waits in its
sync's buffer, and its rules pause, while every other symbol of the shard runs on. When the
snapshot makes the book live again, the buffered diffs are applied and the rules run once on
the book they made.

Accounting (the accounting formula, docs/architecture.md): the books count the diffs
themselves, because a diff's fate may be decided later than its turn in the batch:
``evaluated`` or ``stale_drop`` (by its own age) once applied to a live book, ``superseded``
once discarded because the book, the buffer or a snapshot holds it, ``unsynced`` once
discarded while its book waited for a snapshot that never took it (the buffer restarted or
overflowed). The consumer adds the counts up once per batch (:meth:`ShardBooks.flush`); at
its end, diffs still buffered by books that never synced are ``unsynced`` too.

Futures books (``usdm:``/``coinm:`` symbols) follow Binance's futures procedure (diffs chain
on ``pu``, core/sync.py); spot and Binance.US books the spot one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence

import attrs
import trio

from oraculo_trio.core.alerts import AlertTransition
from oraculo_trio.core.engine import ShardEngine
from oraculo_trio.core.events import DEPTH, DepthDiff
from oraculo_trio.core.markets import chains_on_previous_id, split
from oraculo_trio.core.sync import (
    APPLIED,
    LIVE,
    MAX_BUFFERED,
    SNAPSHOT_APPLIED,
    SYNCING,
    BookSnapshot,
    BookSync,
    Step,
)
from oraculo_trio.observe.health import Readiness
from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.observe.ratelimit import RateLimitedLog
from oraculo_trio.observe.supervise import sleep_to_tick
from oraculo_trio.pipeline.channels import FeedPressure
from oraculo_trio.pipeline.snapshots import SnapshotRequest, SnapshotRequests

LOGGER = logging.getLogger("oraculo_trio.pipeline.diffbooks")


@attrs.define(eq=False)
class BookChanges:
    """Wakes whoever waits for the diff books to reach some state (tests, tools): notified
    after every batch a consumer ran through its books. Shared by every shard."""

    _event: trio.Event = attrs.field(factory=trio.Event)

    def notify(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds, checked after each batch.

        Cancellation: safe; put a ``trio.fail_after`` around it.
        """
        while not predicate():
            await self._event.wait()


@attrs.define(eq=False)
class ShardBooks:
    """The diff books of one shard.

    Attributes:
        shard: the shard's index (snapshots come back to its depth channel).
        engine: the shard's rule engine; each symbol's ``MarketState.book`` is its sync's book.
        requests: where syncs ask for snapshots (the fetcher serves them).
        metrics: the service's metrics.
        stale_after: ``pipeline.stale_after``, to judge buffered diffs when they are applied.
        shed_after: ``pipeline.shed_after``: a live book whose next diff is older than this,
            while the feed's read-ahead is full (the backlog is ours to skip), is shed:
            resynced from a fresh snapshot instead of caught up diff by diff.
        pressure: whether a feed reader found its read-ahead full lately (shared).
        caught_up_to: per symbol shed, the ``lastUpdateId`` of the snapshot it was made live
            from again: the feed's reader skips the diffs it holds without decoding them.
        changes: notified after each batch (shared by the shards).
        syncs: each symbol's sync.
    """

    shard: int
    engine: ShardEngine
    requests: SnapshotRequests
    metrics: ServiceMetrics
    stale_after: float
    shed_after: float = math.inf
    max_buffered: int = MAX_BUFFERED
    changes: BookChanges = attrs.field(factory=BookChanges)
    syncs: dict[str, BookSync] = attrs.field(factory=dict)
    # Counts not yet added to the metrics (the consumer flushes once per batch).
    _evaluated: int = 0
    _stale: int = 0
    _superseded: int = 0
    _overflow: int = 0
    caught_up_to: dict[str, int] = attrs.field(factory=dict)
    pressure: FeedPressure = attrs.field(factory=FeedPressure)
    _shed: set[str] = attrs.field(factory=set)
    _unsynced: int = 0
    _log: RateLimitedLog = attrs.field(factory=lambda: RateLimitedLog(LOGGER))

    def sync(self, symbol: str) -> BookSync:
        """The symbol's sync, created (syncing, book empty) on first use."""
        sync = self.syncs.get(symbol)
        if sync is None:
            sync = self.syncs[symbol] = BookSync(
                symbol, self.max_buffered, chained=chains_on_previous_id(symbol)
            )
            market = self.engine.market(symbol)
            market.book = sync.book
            market.book_sync = sync
            self.metrics.book_symbols[SYNCING].inc()
        return sync

    def process(
        self, diff: DepthDiff, now: float, now_wall: float, age: float
    ) -> list[AlertTransition] | None:
        """Take a diff of this shard's stream; evaluate its symbol's rules if its book is live.

        Args:
            diff: the next diff of its symbol.
            now: ``trio.current_time()``.
            now_wall: wall-clock Unix seconds (the rules' ``now``).
            age: seconds since the diff's event time: older than ``stale_after``, its rules
                are skipped (``stale_drop``); older than ``shed_after``, its book is shed.

        Returns:
            The alert transitions raised, or None.
        """
        sync = self.syncs.get(diff.symbol)
        if sync is None:
            sync = self.sync(diff.symbol)
        before = sync.state
        if age > self.shed_after and before == LIVE and self.pressure.behind(now):
            return self._shed_book(sync, diff, now, now_wall)
        step = sync.on_diff(diff, now)
        if step is APPLIED:
            fresh = age <= self.stale_after
            if fresh:
                self._evaluated += 1
            else:
                self._stale += 1
            return self.engine.process(diff, now_wall, fresh)
        return self._follow(sync, before, step, now, now_wall)

    def _shed_book(
        self, sync: BookSync, diff: DepthDiff, now: float, now_wall: float
    ) -> list[AlertTransition] | None:
        # This diff and everything buffered go (overflow: load shed on purpose); the fresh
        # snapshot holds them all, and the diffs still on their way that it holds too.
        if diff.final_update_id > (sync.book.last_update_id or 0):
            self._overflow += 1
        else:
            self._superseded += 1
        self._shed.add(sync.symbol)
        return self._follow(sync, LIVE, sync.shed(now), now, now_wall)

    def apply_snapshot(
        self, snapshot: BookSnapshot, now: float, now_wall: float
    ) -> list[AlertTransition] | None:
        """Take a snapshot the fetcher brought back (not a frame: not counted as one).

        Returns:
            The transitions of the rules run on the book it made live, or None.
        """
        self.requests.in_channels -= 1
        sync = self.syncs.get(snapshot.symbol)
        if sync is None:
            return None
        before = sync.state
        step = sync.on_snapshot(
            snapshot.request_id, snapshot.last_update_id, snapshot.bids, snapshot.asks, now
        )
        return self._follow(sync, before, step, now, now_wall)

    def flush(self) -> None:
        """Add the counts of the diffs decided since the last flush to the metrics (once per
        batch), and wake whoever waits on the books."""
        self.changes.notify()
        metrics = self.metrics
        if self._evaluated:
            metrics.evaluated[DEPTH].inc(self._evaluated)
            self._evaluated = 0
        if self._stale:
            metrics.dropped[DEPTH, "stale_drop"].inc(self._stale)
            self._stale = 0
        if self._superseded:
            metrics.dropped[DEPTH, "superseded"].inc(self._superseded)
            self._superseded = 0
        if self._overflow:
            metrics.dropped[DEPTH, "overflow"].inc(self._overflow)
            self._overflow = 0
        if self._unsynced:
            metrics.dropped[DEPTH, "unsynced"].inc(self._unsynced)
            self._unsynced = 0

    def close(self) -> None:
        """The consumer is done: diffs still buffered will never be applied (unsynced)."""
        for sync in self.syncs.values():
            self._unsynced += sync.discard()
        self.flush()

    def buffered(self) -> int:
        """Diffs waiting in syncing books (they are in no channel, and not yet accounted)."""
        return sum(len(sync.buffer) for sync in self.syncs.values())

    def _follow(
        self, sync: BookSync, before: str, step: Step, now: float, now_wall: float
    ) -> list[AlertTransition] | None:
        """Everything but a plain applied diff: counts, requests, state, replayed diffs."""
        self._superseded += step.superseded
        self._overflow += step.overflow
        if step.signal == SNAPSHOT_APPLIED and step.state == LIVE and sync.symbol in self._shed:
            self._shed.discard(sync.symbol)
            self.caught_up_to[sync.symbol] = sync.book.last_update_id
        self._unsynced += step.unsynced
        # The feed is not silent while a book syncs (time-driven rules such as no_data).
        market = self.engine.market(sync.symbol)
        market.last_event_wall = market.last_depth_wall = now_wall
        metrics = self.metrics
        if step.state != before:
            metrics.book_symbols[before].dec()
            metrics.book_symbols[step.state].inc()
            self.requests.settled(sync.symbol)
        if step.resync is not None:
            metrics.book_resyncs[step.resync].inc()
            self._log.log(
                logging.INFO,
                step.resync,
                "book %s resyncing (%s); its rules pause until it is live again",
                sync.symbol,
                step.resync,
            )
        if step.request is not None:
            self.requests.put(SnapshotRequest(sync.symbol, self.shard, step.request))
        if step.synced_after is not None and not step.initial:
            metrics.book_resync_seconds.observe(step.synced_after)
        applied = step.applied
        if not applied:
            return None
        # Each replayed diff counts by its own age; the rules run once, on the book they made.
        # Age = time queued here + feed lag, both on one clock: received_wall is on the
        # exchange's (pipeline/exchange_clock.py), as E is.
        stale_after = self.stale_after
        fresh = False
        for diff in applied:
            age = now - diff.received_at
            event_time_ms = diff.event_time_ms
            if event_time_ms is not None:
                age += diff.received_wall - event_time_ms * 0.001
            fresh = age <= stale_after
            if fresh:
                self._evaluated += 1
            else:
                self._stale += 1
        return self.engine.process(applied[-1], now_wall, fresh)


MAX_NAMED = 20
"""Books ``book_not_live`` names at most; beyond, only their count."""


@attrs.define(eq=False)
class BookLiveWatch:
    """Keeps the ``books`` readiness component: not ready (``book_not_live``) while some diff
    book has been out of ``live`` for longer than its market's ``feed.book_live_timeout``.

    A book's timer starts when its first snapshot request since it left ``live`` was sent
    (:attr:`SnapshotRequests.sent_since`): books whose request waits for the weight budget
    (or a ``Retry-After``) are not late; once sent, the timer runs through failures, refusals
    and refetches until the book is live.

    Attributes:
        books: every shard's diff books.
        requests: the snapshot queue (when each book's request was sent).
        readiness: where ``books`` is registered.
        timeouts: ``feed.book_live_timeout`` by market (the markets with diff books).
    """

    books: Sequence[ShardBooks]
    requests: SnapshotRequests
    readiness: Readiness
    timeouts: Mapping[str, float]
    _log: RateLimitedLog = attrs.field(factory=lambda: RateLimitedLog(LOGGER, interval=30.0))

    @property
    def interval(self) -> float:
        """Seconds between two looks: a quarter of the shortest timeout, at most 1 s."""
        return min(1.0, min(self.timeouts.values(), default=4.0) / 4)

    def late(self, now: float) -> list[str]:
        """The books out of ``live`` for longer than their timeout at ``now``, sorted."""
        late = []
        for symbol, since in self.requests.sent_since.items():
            timeout = self.timeouts.get(split(symbol)[0])
            if timeout is None or now - since <= timeout:
                continue
            sync = next((b.syncs[symbol] for b in self.books if symbol in b.syncs), None)
            # A request left over from before the book went live (it was ignored).
            if sync is not None and sync.state != LIVE:
                late.append(symbol)
        return sorted(late)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Look every :attr:`interval` seconds; log a warning when books turn late
        (rate-limited), and when every one of them is live again.

        Cancellation: runs until cancelled.
        """
        readiness = self.readiness
        readiness.register("books", ok=True, detail="")
        # The books of a pipeline (re)started are new: nothing of an earlier run is late.
        readiness.set("books", True)
        task_status.started()
        reported: list[str] = []
        while True:
            await sleep_to_tick(self.interval)
            late = self.late(trio.current_time())
            if late == reported:
                continue
            if late:
                self._report(late, reported)
            else:
                readiness.set("books", True)
                LOGGER.info("every diff book is live again")
            reported = late

    def _report(self, late: list[str], reported: list[str]) -> None:
        count = len(late)
        shown = ", ".join(late[:5]) + (f" and {count - 5} more" if count > 5 else "")
        timeout = max(self.timeouts[split(symbol)[0]] for symbol in late)
        detail = (
            f"{count} diff book(s) out of live for more than {timeout:g} s "
            f"(feed.book_live_timeout): {shown}"
        )
        names: dict[str, object] = {"count": count}
        if count <= MAX_NAMED:
            names["symbols"] = late
        self.readiness.set("books", False, detail, **names)
        if set(late) - set(reported):
            self._log.warning(
                "book_not_live",
                "%s; their rules are paused (oraculo_book_snapshot_requests_total: do the "
                "snapshots fail?)",
                detail,
            )
