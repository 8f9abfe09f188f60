"""Feed connections: read an exchange's combined stream, decode, route by shard; reconnect.

One task per connection. Depth and trade streams use separate connections, so trade
backpressure (a trade is never dropped: the reader waits) never stalls depth.
"""

from __future__ import annotations

import logging
import random
import time

import attrs
import trio

from oraculo_trio.errors import FeedError
from oraculo_trio.feeds.binance import BadFrame, BinanceDecoder, Control
from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.observe.ratelimit import RateLimitedLog
from oraculo_trio.pipeline.shards import ShardRouter
from oraculo_trio.pipeline.transport import CLOSE_TOO_LARGE, ConnectionClosed, open_feed_socket

LOGGER = logging.getLogger("oraculo_trio.pipeline.feed")


@attrs.frozen
class FeedConnectionSettings:
    receive_buffer_size: int = 65536
    max_message_size: int = 1024 * 1024
    reconnect_initial: float = 0.5
    reconnect_max: float = 30.0
    connection_lifetime: float = 23.5 * 3600
    stall_timeout: float = 30.0


@attrs.define(eq=False)
class Backoff:
    """Exponential backoff with full jitter; ``reset`` after a healthy connection."""

    initial: float
    maximum: float
    _attempt: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * (2**self._attempt))
        self._attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self._attempt = 0


@attrs.define(eq=False)
class ConnectionStatus:
    """What the rest of the service may know about one feed connection."""

    name: str
    stream: str
    url: str
    connected: bool = False
    connected_event: trio.Event = attrs.field(factory=trio.Event)
    connects: int = 0


async def run_feed_connection(
    status: ConnectionStatus,
    router: ShardRouter,
    metrics: ServiceMetrics,
    settings: FeedConnectionSettings,
    *,
    on_change: object = None,
) -> None:
    """Read one combined-stream URL forever, reconnecting with backoff and jitter.

    The connection is replaced on purpose after ``connection_lifetime`` (before the
    exchange's 24 h cut), after ``stall_timeout`` without a frame, and on ``serverShutdown``.
    Malformed or unknown frames are counted and skipped; the connection survives them.

    Args:
        status: this connection's name, stream and URL; updated as it connects.
        router: routes decoded messages to shard channels (its owner closes it).
        on_change: called with no argument whenever ``status.connected`` changes.

    Cancellation: closes the socket.
    """
    backoff = Backoff(settings.reconnect_initial, settings.reconnect_max)
    connected_gauge = metrics.feed_connected.labels(status.stream, status.name)
    bad_log = RateLimitedLog(LOGGER)

    def set_connected(value: bool) -> None:
        status.connected = value
        connected_gauge.set(1 if value else 0)
        if value:
            status.connected_event.set()
        elif status.connected_event.is_set():
            status.connected_event = trio.Event()
        if callable(on_change):
            on_change()

    while True:
        try:
            async with open_feed_socket(
                status.url,
                receive_buffer_size=settings.receive_buffer_size,
                max_message_size=settings.max_message_size,
            ) as socket:
                status.connects += 1
                set_connected(True)
                LOGGER.info("feed %s connected (%s)", status.name, status.stream)
                try:
                    reason = await _read(socket, router, metrics, settings, bad_log)
                finally:
                    set_connected(False)
        except ConnectionClosed as exc:
            code = exc.reason.code if exc.reason is not None else None
            if code == CLOSE_TOO_LARGE:
                metrics.received[router.stream].inc()
                metrics.bad_frames["too_large"].inc()
            reason = f"closed_{code}"
            bad_log.warning("closed", "feed %s closed by peer: %s", status.name, exc.reason)
        except FeedError as exc:
            reason = "connect_failed"
            bad_log.warning("connect", "feed %s: %s", status.name, exc)
        metrics.feed_reconnects.labels(status.stream, reason).inc()
        if reason in ("lifetime", "server_shutdown"):
            backoff.reset()
            continue
        delay = backoff.next_delay()
        LOGGER.info("feed %s reconnecting in %.2fs (%s)", status.name, delay, reason)
        await trio.sleep(delay)


async def _read(
    socket: object,
    router: ShardRouter,
    metrics: ServiceMetrics,
    settings: FeedConnectionSettings,
    bad_log: RateLimitedLog,
) -> str:
    """Read until the connection should be replaced; return why."""
    decoder = BinanceDecoder()
    decode = decoder.decode
    route = router.route
    received = metrics.received[router.stream]
    current_time = trio.current_time
    wall_time = time.time
    last_frame = current_time()
    stalled = False
    closed: ConnectionClosed | None = None

    async def watch_for_stall(cancel_scope: trio.CancelScope) -> None:
        nonlocal stalled
        while True:
            idle = current_time() - last_frame
            if idle >= settings.stall_timeout:
                stalled = True
                cancel_scope.cancel()
                return
            await trio.sleep(settings.stall_timeout - idle)

    async with trio.open_nursery() as nursery:
        with trio.move_on_after(settings.connection_lifetime) as lifetime:
            nursery.start_soon(watch_for_stall, nursery.cancel_scope)
            while True:
                try:
                    message = await socket.get_message()
                except ConnectionClosed as exc:
                    # Re-raised outside the nursery, so the caller sees it unwrapped.
                    closed = exc
                    break
                last_frame = now = current_time()
                result = decode(message, now, wall_time())
                if isinstance(result, Control):
                    if result.kind == "error":
                        # The exchange refused something of ours: a frame we cannot use.
                        received.inc()
                        metrics.bad_frames["exchange_error"].inc()
                        bad_log.warning("error", "exchange error frame: %s", result.payload)
                        continue
                    metrics.control_frames.labels(result.kind).inc()
                    if result.kind == "server_shutdown":
                        nursery.cancel_scope.cancel()
                        return "server_shutdown"
                    continue
                received.inc()
                if isinstance(result, BadFrame):
                    metrics.bad_frames[result.reason].inc()
                    bad_log.warning(
                        result.reason, "bad frame (%s): %s", result.reason, result.detail
                    )
                    continue
                await route(result)
        nursery.cancel_scope.cancel()
    if closed is not None:
        raise closed
    if lifetime.cancelled_caught:
        return "lifetime"
    return "stall" if stalled else "closed"
