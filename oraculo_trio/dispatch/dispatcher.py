"""The dispatcher: delivers notifications to every sink, records each attempt.

It has its own bounded channel, fed with ``send_nowait`` by the shard consumers, so a slow
or hanging sink never slows evaluation: when the channel is full the notification is
dropped and counted, while the alert state itself was already sent to the store.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import trio

from oraculo_trio.core.alerts import AlertTransition
from oraculo_trio.dispatch.sinks import Sink
from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.observe.ratelimit import RateLimitedLog
from oraculo_trio.store.base import DispatchLog

LOGGER = logging.getLogger("oraculo_trio.dispatch.dispatcher")


async def run_dispatcher(
    receive_channel: trio.MemoryReceiveChannel,
    sinks: Sequence[Sink],
    store_channel: trio.MemorySendChannel,
    metrics: ServiceMetrics,
) -> None:
    """Deliver each notification to every sink until the channel closes.

    Each attempt becomes a ``dispatch_logs`` row sent to the store writer.

    Cancellation: stops at once; notifications still queued are not delivered (they are
    recorded as alert transitions already).
    """
    failures = RateLimitedLog(LOGGER)
    stage_in = metrics.stage_in["dispatch"]
    stage_out = metrics.stage_out["dispatch"]
    async with receive_channel, store_channel:
        async for transition in receive_channel:
            stage_in.inc()
            for sink in sinks:
                log = await _attempt(sink, transition, metrics, failures)
                await store_channel.send(log)
            stage_out.inc()


async def _attempt(
    sink: Sink, transition: AlertTransition, metrics: ServiceMetrics, failures: RateLimitedLog
) -> DispatchLog:
    started = time.perf_counter()
    error = None
    try:
        await sink.deliver(transition)
    except Exception as exc:  # a sink's failure must not stop the others
        error = f"{type(exc).__name__}: {exc}"
        failures.warning(sink.name, "sink %s failed: %s", sink.name, error)
    outcome = "failed" if error else "delivered"
    metrics.dispatch_attempts.labels(sink.name, outcome).inc()
    return DispatchLog(
        rule_id=transition.rule_id,
        symbol=transition.symbol,
        sink=sink.name,
        status=outcome,
        attempt=1,
        latency_ms=(time.perf_counter() - started) * 1000.0,
        error=error,
        at=time.time(),
        state=transition.state,
    )
