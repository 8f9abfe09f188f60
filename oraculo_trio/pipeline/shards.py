"""Shards: bounded channels from the feed, the overload policy, and the consumers.

Each shard has one depth channel and one trade channel (capacity ``pipeline.channel_capacity``).
The feed routes each message with ``send_nowait``; when a channel is full the stream's policy
applies (the overload policy, docs/architecture.md):

- trades: the reader awaits ``send`` (TCP backpressure); a trade is never dropped;
- depth snapshots and book tickers: the newest message per symbol waits in the shard's
  :class:`ConflationBuffer`, replacing (and counting as ``conflated``) an older one;
- depth diffs: the waiting diff and the new one merge into one diff (a later level wins, no
  level is lost: ``core.sync.merge_depth``), counted as ``conflated``.

Per-symbol order holds because once a symbol has a message in the buffer, every later
message of that symbol goes to the buffer too, and the consumer takes the buffer only
when the channel is empty, i.e. after every older message of that symbol.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import attrs
import trio
from prometheus_client import Counter, Gauge

from oraculo_trio.core.alerts import FIRING, PENDING, AlertTransition
from oraculo_trio.core.engine import ShardEngine
from oraculo_trio.core.events import DepthDiff
from oraculo_trio.core.sharding import shard_of
from oraculo_trio.core.sync import BookSnapshot, PendingDiff
from oraculo_trio.observe.health import FeedAge
from oraculo_trio.observe.metrics import FastHistogramChild, ServiceMetrics
from oraculo_trio.observe.ratelimit import RateLimitedLog
from oraculo_trio.pipeline.channels import FeedPressure, Room, send_when_room
from oraculo_trio.pipeline.diffbooks import ShardBooks

if TYPE_CHECKING:
    from oraculo_trio.pipeline.feed import FrameBatch
from oraculo_trio.settings import Settings

LOGGER = logging.getLogger("oraculo_trio.pipeline.shards")


@attrs.define(eq=False)
class ConflationBuffer:
    """The newest waiting depth message per symbol, while a shard's channel is full.

    A newer message replaces an older one; with ``merge_diffs``, depth diffs merge instead
    (:class:`~oraculo_trio.core.sync.PendingDiff`: later levels win, no level is lost).
    """

    merge_diffs: bool = False
    pending: dict[str, object] = attrs.field(factory=dict)

    def put(self, event: object) -> bool:
        """Hold ``event``; True when it replaced or merged into (conflated) an older message."""
        symbol = event.symbol
        pending = self.pending
        old = pending.get(symbol)
        if old is None:
            pending[symbol] = event
            return False
        if self.merge_diffs and type(event) is DepthDiff:
            if type(old) is PendingDiff:
                old.add(event)
                return True
            if type(old) is DepthDiff:
                merged = pending[symbol] = PendingDiff(old)
                merged.add(event)
                return True
        pending[symbol] = event
        return True

    def take(self) -> list[object]:
        """Everything waiting, oldest symbol first; the buffer is left empty."""
        if not self.pending:
            return []
        taken = [
            entry.event() if type(entry) is PendingDiff else entry
            for entry in self.pending.values()
        ]
        self.pending = {}
        return taken

    def __len__(self) -> int:
        return len(self.pending)


@attrs.define(eq=False)
class ShardRouter:
    """The feed side of one stream's shards: routes a message to its shard's channel.

    Owned by one feed connection task, which owns (and closes) the ``senders`` clones.
    """

    stream: str
    senders: Sequence[trio.MemorySendChannel]
    buffers: Sequence[ConflationBuffer] | None
    metrics: ServiceMetrics
    rooms: Sequence[Room] = ()
    # Per symbol of a book shed and made live again, the update id its snapshot holds: the
    # reader skips the diffs it holds without decoding them (pipeline/diffbooks.py).
    caught_up_to: dict[str, int] = attrs.field(factory=dict)
    # Shared by the readers and the diff books: whether a read-ahead was full lately.
    pressure: FeedPressure = attrs.field(factory=FeedPressure)
    _shard_cache: dict[str, int] = attrs.field(factory=dict)
    # While a trade waits for room (backpressure), and when the last wait ended: the feed's
    # stall detector does not count that time as silence from the exchange.
    waiting: bool = False
    resumed_at: float = -math.inf
    # The batch its feed connection is handing on (part of the read-ahead), while it reads.
    reading: FrameBatch | None = None

    def held(self) -> int:
        """Frames its feed connection has read and not yet handed on (the read-ahead)."""
        reading = self.reading
        return reading.held() if reading is not None else 0

    def shard(self, symbol: str) -> int:
        shard = self._shard_cache.get(symbol)
        if shard is None:
            shard = self._shard_cache[symbol] = shard_of(symbol, len(self.senders))
        return shard

    async def route(self, event: object, merge: bool = False) -> None:
        """Deliver ``event`` to its shard under the stream's overload policy.

        Args:
            event: a decoded market event of this router's stream.
            merge: the service is behind its feed: depth messages go to the conflation
                buffer (a diff merges, a book replaces) even when the channel has room.

        Cancellation: a trade waiting for room (backpressure) is never abandoned: the wait
        is shielded, and the caller notices the cancellation at its next checkpoint.
        """
        shard = self.shard(event.symbol)
        buffers = self.buffers
        if buffers is not None:
            buffer = buffers[shard]
            # Into the buffer: a symbol already waiting there (its order), or anything while
            # behind, as long as the consumer will look: it takes the buffer once its channel
            # is empty, so the buffer gets nothing while both are empty (it may be asleep).
            if buffer.pending:
                to_buffer = merge or event.symbol in buffer.pending
            else:
                to_buffer = merge and self.senders[shard].statistics().current_buffer_used > 0
            if to_buffer:
                if buffer.put(event):
                    self.metrics.dropped[self.stream, "conflated"].inc()
                return
            try:
                self.senders[shard].send_nowait(event)
            except trio.WouldBlock:
                if buffer.put(event):
                    self.metrics.dropped[self.stream, "conflated"].inc()
                self._show_backlog(shard)
            return
        try:
            self.senders[shard].send_nowait(event)
        except trio.WouldBlock:
            self.metrics.backpressure.labels("trade_shard").inc()
            # Every shard's: while this one waits, the others receive nothing more.
            for other in range(len(self.senders)):
                self._show_backlog(other)
            await self._wait_for_room(shard, event)

    def _show_backlog(self, shard: int) -> None:
        # The consumer sets its queue depth after each batch; one held up downstream (a store
        # that pushes back) sets nothing while its backlog grows, so the producer that finds
        # the channel full shows it. A channel with room costs nothing here.
        depth = self.senders[shard].statistics().current_buffer_used
        if self.buffers is not None:
            depth += len(self.buffers[shard].pending)
        self.metrics.queue_depth[self.stream, shard].set(depth)

    async def _wait_for_room(self, shard: int, event: object) -> None:
        # The trade was read and counted: abandoning it to a cancellation (a stall or
        # rotation of the connection, a shutdown) would lose it and leave it unaccounted.
        # The wait is shielded; only a consumer gone for good (the shutdown grace ran out)
        # ends it without delivery.
        self.waiting = True
        try:
            with trio.CancelScope(shield=True):
                if self.rooms:
                    await send_when_room(self.senders[shard], self.rooms[shard], event)
                else:
                    await self.senders[shard].send(event)
        except trio.BrokenResourceError:
            LOGGER.error("trade for %s not delivered: its consumer has stopped", event.symbol)
        finally:
            self.waiting = False
            self.resumed_at = trio.current_time()

    def close(self) -> None:
        # Synchronous on purpose: it runs while the feed is being cancelled, where an
        # ``await`` would raise Cancelled before every clone is closed.
        for sender in self.senders:
            sender.close()

    def __enter__(self) -> ShardRouter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@attrs.frozen
class ConsumerSettings:
    """A shard consumer's limits (``pipeline.*`` keys, in seconds); no defaults of its own."""

    batch_max: int
    batch_budget: float
    stale_after: float
    debug_batch_delay: float

    @classmethod
    def from_settings(cls, settings: Settings) -> ConsumerSettings:
        pipeline = settings.pipeline
        return cls(
            batch_max=pipeline.batch_max,
            batch_budget=pipeline.batch_budget_ms / 1000.0,
            stale_after=pipeline.stale_after,
            debug_batch_delay=pipeline.debug_batch_delay_ms / 1000.0,
        )


@attrs.define(eq=False)
class AlertOutlet:
    """Where a consumer's transitions go: the store writer (never dropped; backpressure)
    and the dispatcher (dropped and counted when its channel is full).

    ``order`` is shared by every outlet of a service: one batch is handed on at a time, in
    the order the batches were raised. Without it, a consumer waiting on a full store
    channel halfway through its batch could be overtaken by the rule clock with a later
    transition of the same alert (a resolved stored before its firing).
    """

    store: trio.MemorySendChannel
    dispatch: trio.MemorySendChannel
    metrics: ServiceMetrics
    order: trio.Lock = attrs.field(factory=trio.Lock)
    # A full dispatch channel drops many notifications in a row: log them, but not each one.
    _overflow_log: RateLimitedLog = attrs.field(factory=lambda: RateLimitedLog(LOGGER))

    async def emit(self, transitions: list[AlertTransition]) -> None:
        # The consumer's next receive is its checkpoint: take a free lock without one (a
        # scheduler pass per batch with alerts), wait in line only when another holds it.
        try:
            self.order.acquire_nowait()
        except trio.WouldBlock:
            await self.order.acquire()
        try:
            await self._emit(transitions)
        finally:
            self.order.release()

    async def _emit(self, transitions: list[AlertTransition]) -> None:
        metrics = self.metrics
        for transition in transitions:
            metrics.alert_transitions.labels(transition.state).inc()
            # Only pending and firing last; resolved passes to inactive without a record.
            if transition.previous_state in (PENDING, FIRING) and not transition.repeat:
                metrics.alerts_active.labels(transition.previous_state).dec()
                if transition.previous_state == FIRING:
                    metrics.alerts_firing.labels(transition.rule_id, transition.severity).dec()
            if transition.state in (PENDING, FIRING) and not transition.repeat:
                metrics.alerts_active.labels(transition.state).inc()
                if transition.state == FIRING:
                    metrics.alerts_firing.labels(transition.rule_id, transition.severity).inc()
            try:
                self.store.send_nowait(transition)
            except trio.WouldBlock:
                metrics.backpressure.labels("store").inc()
                await self.store.send(transition)
            if transition.notify:
                try:
                    self.dispatch.send_nowait(transition)
                except trio.WouldBlock:
                    metrics.dispatch_dropped.labels("overflow").inc()
                    self._overflow_log.warning(
                        "dispatch_overflow",
                        "dispatch channel full: notification for %s %s %s dropped "
                        "(the alert is still stored)",
                        transition.rule_id,
                        transition.symbol,
                        transition.state,
                    )

    def close(self) -> None:
        self.store.close()
        self.dispatch.close()

    def __enter__(self) -> AlertOutlet:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class BatchTally(NamedTuple):
    """What one batch did, handed from :meth:`ShardConsumer.process` to ``publish``."""

    processed: int
    evaluated: int
    stale: int
    # The largest feed lag (receive time - exchange event time), -inf when none was seen.
    lag_max: float
    # The oldest message evaluated (now - its event time), -inf for none.
    age_max: float
    # The queue time of the batch's last frame read.
    latest: float
    transitions: list[AlertTransition]
    # ``time.thread_time()`` when the batch began.
    cpu_start: float


@attrs.define(eq=False)
class ShardConsumer:
    """One shard's consumer of one stream, in three steps per micro-batch: :meth:`take` what
    is queued, :meth:`process` it, :meth:`publish` what the batch did.

    The metric children are bound once, here; the per-message loop of :meth:`process` reads
    only locals.
    """

    stream: str
    shard: int
    receive_channel: trio.MemoryReceiveChannel
    buffer: ConflationBuffer | None
    engine: ShardEngine
    outlet: AlertOutlet
    metrics: ServiceMetrics
    settings: ConsumerSettings
    books: ShardBooks | None = None
    room: Room = attrs.field(factory=Room)
    feed_age: FeedAge = attrs.field(factory=FeedAge)
    _queue_time: FastHistogramChild = attrs.field(init=False)
    _evaluated_age: FastHistogramChild = attrs.field(init=False)
    _queue_time_latest: Gauge = attrs.field(init=False)
    _queue_depth: Gauge = attrs.field(init=False)
    _evaluated: Counter = attrs.field(init=False)
    _stale: Counter = attrs.field(init=False)
    _stage_in: Counter = attrs.field(init=False)
    _stage_out: Counter = attrs.field(init=False)
    _batch_size: FastHistogramChild = attrs.field(init=False)
    _batch_cpu: FastHistogramChild = attrs.field(init=False)
    _feed_lag: Gauge = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        metrics, stream = self.metrics, self.stream
        self._queue_time = metrics.queue_time[stream]
        self._evaluated_age = metrics.evaluated_age[stream]
        self._queue_time_latest = metrics.queue_time_latest[stream]
        self._queue_depth = metrics.queue_depth[stream, self.shard]
        self._evaluated = metrics.evaluated[stream]
        self._stale = metrics.dropped[stream, "stale_drop"]
        self._stage_in = metrics.stage_in[stream]
        self._stage_out = metrics.stage_out[stream]
        self._batch_size = metrics.batch_size[stream]
        self._batch_cpu = metrics.batch_cpu[stream]
        self._feed_lag = metrics.feed_lag[stream]

    async def take(self) -> list[object]:
        """The messages that start the next batch: one from the channel, else everything the
        conflation buffer holds, else the next message to arrive; [] once the channel has
        ended and the buffer is empty.

        Cancellation: nothing is taken.
        """
        # The buffer only ever holds messages newer than anything of the same symbol in the
        # channel, so it is taken only once the channel is empty.
        try:
            return [self.receive_channel.receive_nowait()]
        except trio.WouldBlock:
            ended = False
        except trio.EndOfChannel:
            ended = True
        waiting = self.buffer.take() if self.buffer is not None else []
        if waiting or ended:
            return waiting
        # While this waits, a message handed over is in neither the channel nor a batch:
        # the accounting counts it from this flag (see Room).
        self.room.receiving = True
        try:
            return [await self.receive_channel.receive()]
        except trio.EndOfChannel:
            return []
        finally:
            self.room.receiving = False

    def process(self, pending: list[object]) -> BatchTally:
        """Process ``pending``, then what is queued behind it, up to ``batch_max`` messages or
        ``batch_budget`` seconds of work; never waits to fill the batch. What ``pending``
        still holds goes back to the buffer, in order.

        A message older than ``stale_after`` updates state but skips rules (``stale_drop``).
        With ``books``, diffs and the snapshots the fetcher sends back go through the shard's
        book syncs first, which count the diffs themselves (pipeline/diffbooks.py).
        """
        cpu_start = time.thread_time()
        # Bound once per batch, so that the loop looks nothing up per message.
        receive_nowait = self.receive_channel.receive_nowait
        observe_queue_time = self._queue_time.observe
        observe_age = self._evaluated_age.observe
        process = self.engine.process
        books = self.books
        batch_max = self.settings.batch_max
        budget = self.settings.batch_budget
        stale_after = self.settings.stale_after
        current_time = trio.current_time
        wall_time = time.time
        perf_counter = time.perf_counter
        started = perf_counter()
        processed = evaluated = stale = 0
        lag_max = age_max = -math.inf
        latest = 0.0
        transitions: list[AlertTransition] = []
        index = 0
        while True:
            if index < len(pending):
                event = pending[index]
                index += 1
            else:
                try:
                    event = receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            now = current_time()
            now_wall = wall_time()
            if books is not None and type(event) is BookSnapshot:
                # Not a frame read: no queue time, not in the accounting.
                raised = books.apply_snapshot(event, now, now_wall)
                if raised:
                    transitions.extend(raised)
                processed += 1
                continue
            latest = now - event.received_at
            observe_queue_time(latest)
            event_time_ms = event.event_time_ms
            if event_time_ms is None:
                age = latest
            else:
                # received_wall is on the exchange's clock (pipeline/exchange_clock.py): the
                # age is the feed's lag plus our queue time, whatever our clock's offset.
                lag = event.received_wall - event_time_ms * 0.001
                age = latest + lag
                if lag > lag_max:
                    lag_max = lag
            observe_age(age)
            if age > age_max:
                age_max = age
            fresh = age <= stale_after
            if books is not None and type(event) is DepthDiff:
                raised = books.process(event, now, now_wall, age)
            else:
                raised = process(event, now_wall, fresh)
                if fresh:
                    evaluated += 1
                else:
                    stale += 1
            if raised:
                transitions.extend(raised)
            processed += 1
            if processed >= batch_max or perf_counter() - started >= budget:
                break
        # Anything taken from the buffer but not processed stays in order: put it back.
        if index < len(pending):
            for event in pending[index:]:
                self.buffer.put(event)
        return BatchTally(
            processed, evaluated, stale, lag_max, age_max, latest, transitions, cpu_start
        )

    async def publish(self, tally: BatchTally) -> None:
        """Count the batch, flush the books and the costly rules, hand the transitions to the
        outlet, then yield to the scheduler when more is queued (or sleep
        ``debug_batch_delay``).

        Cancellation: transitions not yet handed to the store channel are abandoned.
        """
        self.room.notify()
        processed = tally.processed
        self._stage_in.inc(processed)
        self._stage_out.inc(processed)
        self._evaluated.inc(tally.evaluated)
        if tally.stale:
            self._stale.inc(tally.stale)
        if self.books is not None:
            self.books.flush()
        transitions = tally.transitions
        # Costly rules (book queries) run once per symbol per batch, not per message.
        flushed = self.engine.flush(time.time())
        if flushed:
            transitions.extend(flushed)
        self._batch_size.observe(processed)
        self._batch_cpu.observe(time.thread_time() - tally.cpu_start)
        self._queue_time_latest.set(tally.latest)
        if tally.lag_max > -math.inf:
            self._feed_lag.set(tally.lag_max)
        if tally.age_max > -math.inf:
            self.feed_age.observe(self.stream, tally.age_max)
        depth = self.receive_channel.statistics().current_buffer_used
        if self.buffer is not None:
            depth += len(self.buffer.pending)
        self._queue_depth.set(depth)
        if transitions:
            await self.outlet.emit(transitions)
        if self.settings.debug_batch_delay:
            await trio.sleep(self.settings.debug_batch_delay)
        elif depth:
            # More is queued, so the next take will not wait: yield here, for fairness.
            # With nothing queued the next take waits in receive, itself a checkpoint:
            # a second scheduler pass per batch would only cost.
            await trio.lowlevel.checkpoint()


async def run_consumer(
    stream: str,
    shard: int,
    receive_channel: trio.MemoryReceiveChannel,
    buffer: ConflationBuffer | None,
    engine: ShardEngine,
    outlet: AlertOutlet,
    metrics: ServiceMetrics,
    settings: ConsumerSettings,
    books: ShardBooks | None = None,
    room: Room | None = None,
    feed_age: FeedAge | None = None,
) -> None:
    """Consume one shard's channel of one stream in micro-batches until it closes.

    Each batch is :meth:`ShardConsumer.take` (what is queued, never waiting to fill a batch),
    :meth:`~ShardConsumer.process` (up to ``batch_max`` messages or ``batch_budget`` seconds
    of work) and :meth:`~ShardConsumer.publish` (metrics, flushes, the outlet; then it
    yields). At the channel's end the diff books, if any, are closed.

    Cancellation: stops between messages; whatever is still queued is abandoned (a graceful
    shutdown closes the feed first, so the channel drains to its end instead).
    """
    consumer = ShardConsumer(
        stream, shard, receive_channel, buffer, engine, outlet, metrics, settings, books,
        room if room is not None else Room(), feed_age if feed_age is not None else FeedAge(),
    )  # fmt: skip
    take, process, publish = consumer.take, consumer.process, consumer.publish
    try:
        with receive_channel, outlet:
            while pending := await take():
                await publish(process(pending))
            if books is not None:
                books.close()
    finally:
        # A producer waiting for room (shielded, so that no trade is lost) retries only when
        # woken: wake it to find the channel closed, or it would wait for ever.
        consumer.room.notify()
