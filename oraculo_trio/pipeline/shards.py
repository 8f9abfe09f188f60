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
from collections.abc import Callable, Sequence

import attrs
import trio

from oraculo_trio.core.alerts import FIRING, PENDING, AlertTransition
from oraculo_trio.core.engine import ShardEngine
from oraculo_trio.core.events import DepthDiff
from oraculo_trio.core.sharding import shard_of
from oraculo_trio.core.sync import BookSnapshot
from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.observe.ratelimit import RateLimitedLog
from oraculo_trio.pipeline.diffbooks import ShardBooks
from oraculo_trio.settings import Settings

LOGGER = logging.getLogger("oraculo_trio.pipeline.shards")


@attrs.define(eq=False)
class ConflationBuffer:
    """The newest waiting depth message per symbol, while a shard's channel is full.

    ``merge(old, new)`` decides what survives; for snapshots and tickers it is ``new``.
    """

    merge: Callable[[object, object], object] = lambda old, new: new
    pending: dict[str, object] = attrs.field(factory=dict)

    def put(self, event: object) -> bool:
        """Hold ``event``; True when it replaced (conflated) an older message."""
        symbol = event.symbol
        old = self.pending.get(symbol)
        if old is None:
            self.pending[symbol] = event
            return False
        self.pending[symbol] = self.merge(old, event)
        return True

    def take(self) -> list[object]:
        """Everything waiting, oldest symbol first; the buffer is left empty."""
        if not self.pending:
            return []
        taken = list(self.pending.values())
        self.pending = {}
        return taken


@attrs.define(eq=False)
class ShardRouter:
    """The feed side of one stream's shards: routes a message to its shard's channel.

    Owned by one feed connection task, which owns (and closes) the ``senders`` clones.
    """

    stream: str
    senders: Sequence[trio.MemorySendChannel]
    buffers: Sequence[ConflationBuffer] | None
    metrics: ServiceMetrics
    _shard_cache: dict[str, int] = attrs.field(factory=dict)
    # While a trade waits for room (backpressure), and when the last wait ended: the feed's
    # stall detector does not count that time as silence from the exchange.
    waiting: bool = False
    resumed_at: float = -math.inf

    def shard(self, symbol: str) -> int:
        shard = self._shard_cache.get(symbol)
        if shard is None:
            shard = self._shard_cache[symbol] = shard_of(symbol, len(self.senders))
        return shard

    async def route(self, event: object) -> None:
        """Deliver ``event`` to its shard under the stream's overload policy.

        Cancellation: a trade waiting for room (backpressure) is never abandoned: it is
        handed over first (the consumers drain meanwhile), then Cancelled is raised.
        """
        shard = self.shard(event.symbol)
        buffers = self.buffers
        if buffers is not None:
            buffer = buffers[shard]
            if buffer.pending and event.symbol in buffer.pending:
                if buffer.put(event):
                    self.metrics.dropped[self.stream, "conflated"].inc()
                return
            try:
                self.senders[shard].send_nowait(event)
            except trio.WouldBlock:
                if buffer.put(event):
                    self.metrics.dropped[self.stream, "conflated"].inc()
            return
        try:
            self.senders[shard].send_nowait(event)
        except trio.WouldBlock:
            self.metrics.backpressure.labels("trade_shard").inc()
            await self._wait_for_room(self.senders[shard], event)

    async def _wait_for_room(self, sender: trio.MemorySendChannel, event: object) -> None:
        # The trade was read and counted: abandoning it to a cancellation (a stall or
        # rotation of the connection, a shutdown) would lose it and leave it unaccounted.
        # The wait is shielded; only a consumer gone for good (the shutdown grace ran out)
        # ends it without delivery.
        self.waiting = True
        try:
            with trio.CancelScope(shield=True):
                await sender.send(event)
        except trio.BrokenResourceError:
            LOGGER.error("trade for %s not delivered: its consumer has stopped", event.symbol)
        finally:
            self.waiting = False
            self.resumed_at = trio.current_time()
        await trio.lowlevel.checkpoint_if_cancelled()

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
    and the dispatcher (dropped and counted when its channel is full)."""

    store: trio.MemorySendChannel
    dispatch: trio.MemorySendChannel
    metrics: ServiceMetrics
    # A full dispatch channel drops many notifications in a row: log them, but not each one.
    _overflow_log: RateLimitedLog = attrs.field(factory=lambda: RateLimitedLog(LOGGER))

    async def emit(self, transitions: list[AlertTransition]) -> None:
        metrics = self.metrics
        for transition in transitions:
            metrics.alert_transitions.labels(transition.state).inc()
            # Only pending and firing last; resolved passes to inactive without a record.
            if transition.previous_state in (PENDING, FIRING) and not transition.repeat:
                metrics.alerts_active.labels(transition.previous_state).dec()
            if transition.state in (PENDING, FIRING) and not transition.repeat:
                metrics.alerts_active.labels(transition.state).inc()
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
) -> None:
    """Consume one shard's channel of one stream in micro-batches until it closes.

    Takes what is already queued, up to ``batch_max`` messages or ``batch_budget`` seconds of
    work, then yields. Never waits to fill a batch. A message older than ``stale_after``
    updates state but skips rules (``stale_drop``). With ``books`` (diff books), diffs and
    the snapshots the fetcher sends back go through the shard's book syncs first, which count
    the diffs themselves (pipeline/diffbooks.py).

    Cancellation: stops between messages; whatever is still queued is abandoned (a graceful
    shutdown closes the feed first, so the channel drains to its end instead).
    """
    queue_time = metrics.queue_time[stream]
    queue_time_latest = metrics.queue_time_latest[stream]
    queue_depth = metrics.queue_depth[stream, shard]
    evaluated_total = metrics.evaluated[stream]
    stale_total = metrics.dropped[stream, "stale_drop"]
    stage_in = metrics.stage_in[stream]
    stage_out = metrics.stage_out[stream]
    batch_size_histogram = metrics.batch_size[stream]
    batch_cpu_histogram = metrics.batch_cpu[stream]
    feed_lag = metrics.feed_lag[stream]
    batch_max = settings.batch_max
    budget = settings.batch_budget
    stale_after = settings.stale_after
    current_time = trio.current_time
    wall_time = time.time
    perf_counter = time.perf_counter
    process = engine.process

    with receive_channel, outlet:
        while True:
            # The buffer only ever holds messages newer than anything of the same symbol in
            # the channel, so it is taken only once the channel is empty.
            try:
                pending = [receive_channel.receive_nowait()]
            except trio.WouldBlock:
                pending = buffer.take() if buffer is not None else []
                if not pending:
                    try:
                        pending = [await receive_channel.receive()]
                    except trio.EndOfChannel:
                        if books is not None:
                            books.close()
                        return
            except trio.EndOfChannel:
                pending = buffer.take() if buffer is not None else []
                if not pending:
                    if books is not None:
                        books.close()
                    return
            cpu_start = time.thread_time()
            started = perf_counter()
            processed = evaluated = stale = 0
            lag_max = -math.inf
            latest = 0.0
            transitions: list[AlertTransition] = []
            index = 0
            while True:
                if index < len(pending):
                    event = pending[index]
                    index += 1
                else:
                    try:
                        event = receive_channel.receive_nowait()
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
                queue_time.observe(latest)
                event_time_ms = event.event_time_ms
                if event_time_ms is None:
                    age = latest
                else:
                    age = now_wall - event_time_ms * 0.001
                    lag = event.received_wall - event_time_ms * 0.001
                    if lag > lag_max:
                        lag_max = lag
                fresh = age <= stale_after
                if books is not None and type(event) is DepthDiff:
                    raised = books.process(event, now, now_wall, fresh)
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
                    buffer.put(event)
            stage_in.inc(processed)
            stage_out.inc(processed)
            evaluated_total.inc(evaluated)
            if stale:
                stale_total.inc(stale)
            if books is not None:
                books.flush()
            # Costly rules (book queries) run once per symbol per batch, not per message.
            flushed = engine.flush(wall_time())
            if flushed:
                transitions.extend(flushed)
            batch_size_histogram.observe(processed)
            batch_cpu_histogram.observe(time.thread_time() - cpu_start)
            queue_time_latest.set(latest)
            if lag_max > -math.inf:
                feed_lag.set(lag_max)
            depth = receive_channel.statistics().current_buffer_used
            if buffer is not None:
                depth += len(buffer.pending)
            queue_depth.set(depth)
            if transitions:
                await outlet.emit(transitions)
            if settings.debug_batch_delay:
                await trio.sleep(settings.debug_batch_delay)
            else:
                await trio.lowlevel.checkpoint()
