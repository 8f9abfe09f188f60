"""The dispatcher: delivers notifications to every sink, records each attempt.

::

    consumers --send_nowait--> dispatch channel --> dispatcher
                                                     ├── silenced / inhibited: recorded, not sent
                                                     └── per sink: a lane (bounded, send_nowait)
                                                           └── `concurrency` workers: attempt,
                                                               retry with backoff, breaker

It has its own bounded channel, fed with ``send_nowait`` by the shard consumers, so a slow
or hanging sink never slows evaluation: when the channel is full the notification is
dropped and counted, while the alert state itself was already sent to the store. Each sink
has its own lane, so a hanging webhook never delays the stdout or log sinks either: its
lane fills and its notifications are dropped (``sink_overflow``), and after
``breaker_failures`` failed attempts in a row its circuit opens and notifications are
dropped at once (``breaker_open``) until a trial attempt succeeds.

Every attempt (and every notification not attempted) is a ``dispatch_logs`` row sent to
the store writer.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import attrs
import trio

from oraculo_trio.core.alerts import AlertTransition
from oraculo_trio.core.silences import SilenceSet, alert_labels
from oraculo_trio.dispatch.policy import CircuitBreaker, SinkPolicy
from oraculo_trio.dispatch.sinks import Sink
from oraculo_trio.errors import DeliveryRejected, StoreError, StoreUnavailable
from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.observe.ratelimit import RateLimitedLog
from oraculo_trio.observe.supervise import sleep_to_tick
from oraculo_trio.store.base import DispatchLog, Store

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge

LOGGER = logging.getLogger("oraculo_trio.dispatch.dispatcher")

DEFAULT_POLICY = SinkPolicy()


@attrs.define(eq=False)
class _Lane:
    """One sink's queue, policy and breaker."""

    sink: Sink
    policy: SinkPolicy
    breaker: CircuitBreaker
    send: trio.MemorySendChannel[AlertTransition]
    receive: trio.MemoryReceiveChannel[AlertTransition]
    # The sink's series, bound once: a label lookup per notification costs more than the
    # rest of the bookkeeping around a delivery.
    attempts: dict[str, Counter]
    circuit_open: Gauge


async def run_dispatcher(
    receive_channel: trio.MemoryReceiveChannel[AlertTransition],
    sinks: Sequence[Sink],
    store_channel: trio.MemorySendChannel,
    metrics: ServiceMetrics,
    *,
    silences: SilenceSet | None = None,
    clock: Callable[[], float] = time.time,
    rng: random.Random | None = None,
    drain_grace: float = 5.0,
) -> None:
    """Deliver each notification to every sink until the channel closes.

    Args:
        receive_channel: notifications (transitions marked ``notify``); closed here.
        sinks: where to deliver; a sink with ``__aenter__`` is entered for the lifetime.
        store_channel: where ``dispatch_logs`` rows go (the store writer); closed here.
        metrics: the service's metrics.
        silences: active silences, matched per notification (refreshed by
            :func:`run_silence_refresh`); None: nothing is silenced.
        clock: wall-clock seconds, for silences and records.
        rng: jitter of the retry backoff.
        drain_grace: once the channel has closed (shutdown), seconds the sinks get to
            deliver what they still hold; the rest is abandoned (logged).

    Returns when the channel has closed and every lane has finished what it holds, or
    ``drain_grace`` has passed.

    Cancellation: stops at once; notifications still queued are not delivered (they are
    recorded as alert transitions already).
    """
    rng = rng or random.Random()
    stage_in = metrics.stage_in["dispatch"]
    stage_out = metrics.stage_out["dispatch"]
    async with receive_channel, store_channel, AsyncExitStack() as stack:
        lanes = []
        for sink in sinks:
            if hasattr(sink, "__aenter__"):
                await stack.enter_async_context(sink)
            policy = getattr(sink, "policy", None) or DEFAULT_POLICY
            send, receive = trio.open_memory_channel[AlertTransition](policy.queue)
            breaker = CircuitBreaker(policy.breaker_failures, policy.breaker_cooldown)
            metrics.register_sink(sink.name)
            attempts = {
                outcome: metrics.dispatch_attempts.labels(sink.name, outcome)
                for outcome in ("delivered", "failed")
            }
            circuit_open = metrics.dispatch_circuit_open[sink.name]
            lanes.append(_Lane(sink, policy, breaker, send, receive, attempts, circuit_open))
        async with trio.open_nursery() as nursery:
            for lane in lanes:
                with lane.receive:
                    for _ in range(lane.policy.concurrency):
                        nursery.start_soon(
                            _run_lane,
                            lane,
                            lane.receive.clone(),
                            store_channel.clone(),
                            metrics,
                            clock,
                            rng,
                        )
            try:
                async for transition in receive_channel:
                    while True:
                        stage_in.inc()
                        await _route(transition, lanes, store_channel, metrics, silences, clock)
                        stage_out.inc()
                        transition = _next_waiting(receive_channel)
                        if transition is None:
                            break
            finally:
                # The workers finish what their lanes hold, then end.
                for lane in lanes:
                    lane.send.close()
            # A hanging sink must not hold the shutdown for its timeouts and retries.
            nursery.cancel_scope.deadline = trio.current_time() + drain_grace
        if nursery.cancel_scope.cancelled_caught:
            LOGGER.warning(
                "dispatcher: notifications still held %.1f s after the input closed were "
                "abandoned (their alerts are stored)",
                drain_grace,
            )


async def _route(
    transition: AlertTransition,
    lanes: Sequence[_Lane],
    store_channel: trio.MemorySendChannel,
    metrics: ServiceMetrics,
    silences: SilenceSet | None,
    clock: Callable[[], float],
) -> None:
    now = clock()
    status = detail = None
    if transition.inhibited_by is not None:
        status, detail = "inhibited", f"inhibited by rule {transition.inhibited_by}"
    elif silences is not None and silences.silences:
        labels = alert_labels(
            transition.rule_id, transition.symbol, transition.severity, transition.labels
        )
        silence = silences.match(labels, now)
        if silence is not None:
            status, detail = "silenced", f"silence {silence.id}"
    if status is not None:
        metrics.dispatch_dropped.labels(status).inc()
        for lane in lanes:
            await _store(store_channel, _record(transition, lane.sink, status, 0, 0.0, detail, now))
        return
    for lane in lanes:
        try:
            lane.send.send_nowait(transition)
        except trio.WouldBlock:
            metrics.dispatch_dropped.labels("sink_overflow").inc()
            record = _record(transition, lane.sink, "dropped", 0, 0.0, "sink queue full", now)
            await _store(store_channel, record)
        else:
            metrics.dispatch_queue_depth[lane.sink.name].inc()


async def _run_lane(
    lane: _Lane,
    receive: trio.MemoryReceiveChannel[AlertTransition],
    store_channel: trio.MemorySendChannel,
    metrics: ServiceMetrics,
    clock: Callable[[], float],
    rng: random.Random,
) -> None:
    failures = RateLimitedLog(LOGGER)
    queued = metrics.dispatch_queue_depth[lane.sink.name]
    async with receive, store_channel:
        async for transition in receive:
            while True:
                queued.dec()
                await _deliver(lane, transition, store_channel, metrics, clock, rng, failures)
                transition = _next_waiting(receive)
                if transition is None:
                    break


def _next_waiting(
    receive: trio.MemoryReceiveChannel[AlertTransition],
) -> AlertTransition | None:
    """The next notification if one waits, else None (the caller then awaits ``receive``).

    A burst of messages raises its notifications together: taking those that wait without
    a scheduler pass each saves a pass per notification. A loop that never yields ends
    with what was waiting (the channel is bounded); one whose deliveries wait yields there.
    """
    try:
        return receive.receive_nowait()
    except (trio.WouldBlock, trio.EndOfChannel):
        return None


async def _deliver(
    lane: _Lane,
    transition: AlertTransition,
    store_channel: trio.MemorySendChannel,
    metrics: ServiceMetrics,
    clock: Callable[[], float],
    rng: random.Random,
    failures: RateLimitedLog,
) -> None:
    """Attempt one notification until it is delivered, rejected, or out of retries."""
    sink, policy, breaker = lane.sink, lane.policy, lane.breaker
    circuit_open = lane.circuit_open
    for attempt in range(1, policy.retries + 2):
        now = clock()
        if not breaker.allow(now):
            metrics.dispatch_dropped.labels("breaker_open").inc()
            record = _record(transition, sink, "dropped", attempt - 1, 0.0, "circuit open", now)
            await _store(store_channel, record)
            return
        started = time.perf_counter()
        error = None
        rejected = False
        try:
            await sink.deliver(transition)
        except DeliveryRejected as exc:
            error, rejected = f"{type(exc).__name__}: {exc}", True
        except Exception as exc:  # a sink's failure must not stop the others
            error = f"{type(exc).__name__}: {exc}"
        latency_ms = (time.perf_counter() - started) * 1000.0
        breaker.record(error is None, clock())
        circuit_open.set(1 if breaker.is_open else 0)
        outcome = "failed" if error else "delivered"
        lane.attempts[outcome].inc()
        await _store(
            store_channel, _record(transition, sink, outcome, attempt, latency_ms, error, now)
        )
        if error is None:
            return
        failures.warning(sink.name, "sink %s failed (attempt %d): %s", sink.name, attempt, error)
        if rejected:
            return
        if attempt <= policy.retries:
            await trio.sleep(policy.backoff(attempt, rng))


async def _store(store_channel: trio.MemorySendChannel, record: DispatchLog) -> None:
    """Hand ``record`` to the store writer; wait only when its channel is full.

    The caller's loop takes its next notification with ``receive``, a checkpoint: sending
    without one saves a scheduler pass per notification."""
    try:
        store_channel.send_nowait(record)
    except trio.WouldBlock:
        await store_channel.send(record)


def _record(
    transition: AlertTransition,
    sink: Sink,
    status: str,
    attempt: int,
    latency_ms: float,
    error: str | None,
    at: float,
) -> DispatchLog:
    return DispatchLog(
        rule_id=transition.rule_id,
        symbol=transition.symbol,
        sink=sink.name,
        status=status,
        attempt=attempt,
        latency_ms=latency_ms,
        error=error,
        at=at,
        state=transition.state,
    )


async def run_silence_refresh(
    store: Store,
    silences: SilenceSet,
    metrics: ServiceMetrics,
    interval: float,
    *,
    clock: Callable[[], float] = time.time,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep ``silences`` equal to the store's silences not yet ended, every ``interval`` s.

    A failing store keeps the last known silences (logged, rate-limited) and tries again.

    Args:
        task_status: ``started()`` after the first read (successful or not).

    Cancellation: stops between reads.
    """
    failures = RateLimitedLog(LOGGER, interval=60.0)
    started = False
    while True:
        now = clock()
        try:
            silences.replace(await store.fetch_silences(not_ended_at=now))
        except (StoreUnavailable, StoreError) as exc:
            failures.warning("silences", "cannot read silences (keeping the last known): %s", exc)
        metrics.silences_active.set(silences.active(now))
        if not started:
            started = True
            task_status.started()
        await sleep_to_tick(interval)
