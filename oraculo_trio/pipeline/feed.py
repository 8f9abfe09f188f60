"""Feed connections: read an exchange's combined stream, decode, route by shard; reconnect.

One task per connection. Depth and trade streams use separate connections, so trade
backpressure (a trade is never dropped: the reader waits) never stalls depth.
"""

from __future__ import annotations

import logging
import math
import random
import time
from urllib.parse import parse_qs, urlsplit

import attrs
import trio

from oraculo_trio.core.markets import SPOT
from oraculo_trio.errors import FeedError
from oraculo_trio.feeds.binance import BadFrame, BinanceDecoder, Control, raw_final_update_id
from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.observe.ratelimit import RateLimitedLog
from oraculo_trio.pipeline.exchange_clock import ExchangeClock
from oraculo_trio.pipeline.shards import ShardRouter
from oraculo_trio.pipeline.transport import CLOSE_TOO_LARGE, ConnectionClosed, open_feed_socket
from oraculo_trio.settings import FeedSettings, Settings

LOGGER = logging.getLogger("oraculo_trio.pipeline.feed")

# The transport's frame bound of one read-ahead (its byte bound is feed.receive_buffer_size).
MAX_READ_AHEAD_FRAMES = 65_536


@attrs.frozen
class FeedConnectionSettings:
    """How a feed connection reads and reconnects (``feed.*`` keys); no defaults of its own."""

    receive_buffer_size: int
    max_message_size: int
    client: str
    reconnect_initial: float
    reconnect_max: float
    connection_lifetime: float
    stall_timeout: float
    chunk_frames: int

    @classmethod
    def from_settings(cls, settings: Settings) -> FeedConnectionSettings:
        """The first feed's (the only one unless several ``[[feed]]`` tables are given)."""
        return cls.from_feed(settings.feed, settings.pipeline.batch_max)

    @classmethod
    def from_feed(cls, feed: FeedSettings, chunk_frames: int) -> FeedConnectionSettings:
        # Every field is the ``feed`` key of the same name, but how much of the read-ahead
        # the reader hands on per step: a consumer's batch (``pipeline.batch_max``), so that
        # frames are consumed while their memory is still hot.
        return cls(
            **{
                field.name: getattr(feed, field.name)
                for field in attrs.fields(cls)
                if field.name != "chunk_frames"
            },
            chunk_frames=chunk_frames,
        )


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
class RotationGate:
    """Lets connections replace themselves at ``connection_lifetime`` one at a time, at least
    ``spacing`` seconds apart: never all at once, which would resync every book together.

    Shared by every feed connection of the service; a connection keeps reading while it
    waits for its turn (Binance's cut at 24 h leaves 30 min after the default lifetime).
    """

    spacing: float
    _next: float = -math.inf

    async def turn(self) -> None:
        """Wait for this connection's turn to rotate.

        Cancellation: the turn is given up (the next one is not delayed by it).
        """
        slot = max(trio.current_time(), self._next)
        self._next = slot + self.spacing
        await trio.sleep_until(slot)


@attrs.define(eq=False)
class ConnectionStatus:
    """What the rest of the service may know about one feed connection.

    ``market`` is the Binance market it reads (its events are named by it); ``clock`` that
    market's offset to our clock, added to each read's wall-clock stamp.
    """

    name: str
    stream: str
    url: str
    connected: bool = False
    connected_event: trio.Event = attrs.field(factory=trio.Event)
    connects: int = 0
    market: str = SPOT
    clock: ExchangeClock = attrs.field(factory=lambda: ExchangeClock(SPOT))


def subscribed_streams(url: str) -> list[str] | None:
    """The stream names of a combined-stream URL (``...?streams=a/b``); None for another URL."""
    values = parse_qs(urlsplit(url).query).get("streams")
    if not values:
        return None
    return [name for value in values for name in value.split("/") if name]


async def run_feed_connection(
    status: ConnectionStatus,
    router: ShardRouter,
    metrics: ServiceMetrics,
    settings: FeedConnectionSettings,
    *,
    on_change: object = None,
    rotation: RotationGate | None = None,
    lifetime_offset: float = 0.0,
) -> None:
    """Read one combined-stream URL forever, reconnecting with backoff and jitter.

    The connection is replaced on purpose after ``connection_lifetime`` (before the
    exchange's 24 h cut), after ``stall_timeout`` without a frame, and on ``serverShutdown``.
    Malformed or unknown frames are counted and skipped; the connection survives them.

    Args:
        status: this connection's name, stream and URL; updated as it connects.
        router: routes decoded messages to shard channels (its owner closes it).
        on_change: called with no argument whenever ``status.connected`` changes.
        rotation: shared by the service's connections, so that they rotate one at a time.
        lifetime_offset: the first connection's lifetime is this much shorter (at most half
            of it), to stagger connections started together.

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

    lifetime = max(settings.connection_lifetime / 2, settings.connection_lifetime - lifetime_offset)
    while True:
        try:
            async with open_feed_socket(
                status.url,
                receive_buffer_size=settings.receive_buffer_size,
                max_message_size=settings.max_message_size,
                client=settings.client,
            ) as socket:
                status.connects += 1
                set_connected(True)
                LOGGER.info("feed %s connected (%s)", status.name, status.stream)
                this_lifetime, lifetime = lifetime, settings.connection_lifetime
                try:
                    reason = await _read(
                        socket,
                        router,
                        metrics,
                        settings,
                        bad_log,
                        this_lifetime,
                        rotation,
                        subscribed_streams(status.url),
                        status,
                    )
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


SERVER_SHUTDOWN = object()
"""What :meth:`_BatchReader._unkeyed` returns for the exchange's ``serverShutdown`` notice."""


@attrs.define(eq=False)
class FrameBatch:
    """The read-ahead: the frames of one socket read that the reader has not handed on yet.
    Its market frames are counted as received at once, and as ``in_flight`` until each is
    routed, conflated or found bad (the accounting of ``docs/architecture.md``)."""

    keys: list[bytes | None] = attrs.field(factory=list)
    position: int = 0

    def held(self) -> int:
        """Market frames of the read-ahead counted as received and not yet handed on."""
        keys = self.keys
        return sum(1 for index in range(self.position, len(keys)) if keys[index] is not None)


async def _read(
    socket: object,
    router: ShardRouter,
    metrics: ServiceMetrics,
    settings: FeedConnectionSettings,
    bad_log: RateLimitedLog,
    lifetime_seconds: float,
    rotation: RotationGate | None,
    streams: list[str] | None = None,
    status: ConnectionStatus | None = None,
) -> str:
    """Read until the connection should be replaced; return why."""
    # Only the streams this connection subscribed to are known: a frame of any other stream
    # (a trade on the depth connection, say) is unknown_stream, never routed to the wrong
    # stream's shards (where a depth channel would conflate a trade).
    market = SPOT if status is None else status.market
    clock = ExchangeClock(market) if status is None else status.clock
    reader = _BatchReader(
        BinanceDecoder(streams, market=market), router, metrics, bad_log,
        settings.chunk_frames, clock,
    )  # fmt: skip
    current_time = trio.current_time
    last_frame = current_time()
    stalled = False
    closed: ConnectionClosed | None = None

    async def watch_for_stall(cancel_scope: trio.CancelScope) -> None:
        nonlocal stalled
        while True:
            # Time spent waiting for room in a shard channel (our own backpressure) is not
            # silence from the exchange.
            quiet_since = max(last_frame, router.resumed_at)
            idle = 0.0 if router.waiting else current_time() - quiet_since
            if idle >= settings.stall_timeout:
                stalled = True
                cancel_scope.cancel()
                return
            await trio.sleep(settings.stall_timeout - idle)

    async def rotate_when_due(cancel_scope: trio.CancelScope) -> None:
        await trio.sleep(lifetime_seconds)
        if rotation is not None:
            await rotation.turn()
        cancel_scope.cancel()

    router.reading = reader.batch
    try:
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as lifetime:
                nursery.start_soon(watch_for_stall, nursery.cancel_scope)
                nursery.start_soon(rotate_when_due, lifetime)
                while True:
                    try:
                        frames = await socket.receive_batch(MAX_READ_AHEAD_FRAMES)
                    except ConnectionClosed as exc:
                        # Re-raised outside the nursery, so the caller sees it unwrapped.
                        closed = exc
                        break
                    last_frame = current_time()
                    behind = socket.read_was_full
                    router.pressure.read(behind, last_frame)
                    if await reader.handle(frames, behind=behind):
                        nursery.cancel_scope.cancel()
                        return "server_shutdown"
            nursery.cancel_scope.cancel()
    finally:
        router.reading = None
    if closed is not None:
        raise closed
    if lifetime.cancelled_caught:
        return "lifetime"
    return "stall" if stalled else "closed"


@attrs.define(eq=False)
class _BatchReader:
    """Hands on the frames of one socket read (the read-ahead) under the overload policy.

    Behind its feed (a socket read that filled ``feed.receive_buffer_size``), it spends
    the least work on what a newer message supersedes: frames of a latest-only stream
    (partial books, book tickers) followed by a newer frame of the same stream are counted
    ``conflated`` and never decoded, and depth diffs merge per symbol in the shard's
    conflation buffer. Every ``chunk`` frames the consumers run, so that what was decoded is
    consumed while its memory is hot, at a scheduling point that a cancellation does not
    interrupt: a read-ahead is always handed on whole, so no frame read is ever lost.
    """

    decoder: BinanceDecoder
    router: ShardRouter
    metrics: ServiceMetrics
    bad_log: RateLimitedLog
    chunk: int
    clock: ExchangeClock = attrs.field(factory=lambda: ExchangeClock(SPOT))
    batch: FrameBatch = attrs.field(factory=FrameBatch)

    async def handle(self, frames: list[bytes], behind: bool = False) -> bool:
        """Hand on every frame of ``frames``; True when the exchange announced its shutdown.

        ``behind``: the read filled the read-ahead (the kernel held at least as much).

        Cancellation: not interrupted (see the class); the caller's next read raises it.
        """
        decoder = self.decoder
        stream_key = decoder.stream_key
        keys = [stream_key(frame) for frame in frames]
        batch = self.batch
        batch.keys, batch.position = keys, 0
        metrics = self.metrics
        stream = self.router.stream
        market = len(keys) - keys.count(None)
        if market:
            metrics.received[stream].inc(market)
        newest = self._newest_of_latest_only(keys) if behind and decoder.latest_only else None
        decode_keyed = decoder.decode_keyed
        route = self.router.route
        chunk = self.chunk
        caught_up_to = self.router.caught_up_to
        conflated = metrics.dropped[stream, "conflated"]
        superseded = metrics.dropped[stream, "superseded"]
        now = trio.current_time()
        # On the exchange's clock, as E is: ages do not drift with our clock.
        now_wall = time.time() + self.clock.offset
        shutdown = False
        try:
            for index, frame in enumerate(frames):
                batch.position = index
                if index and not index % chunk:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                key = keys[index]
                if key is None:
                    event = self._unkeyed(frame, now, now_wall)
                    if event is SERVER_SHUTDOWN:
                        shutdown = True
                    elif event is not None:
                        keys[index] = b""  # received now: held while it is routed
                        await route(event)
                    continue
                if newest is not None and newest.get(key, index) != index:
                    conflated.inc()
                    continue
                if caught_up_to and self._held_by_snapshot(key, frame):
                    superseded.inc()
                    continue
                result = decode_keyed(key, frame, now, now_wall)
                if type(result) is BadFrame:
                    self._bad(result)
                    continue
                await route(result, behind)
        finally:
            batch.keys, batch.position = [], 0
        return shutdown

    def _held_by_snapshot(self, key: bytes, frame: bytes) -> bool:
        """Whether ``frame`` is a diff of a book shed and made live again from a snapshot
        that holds it: superseded, skipped without decoding."""
        symbol = self.decoder.diff_symbols.get(key)
        caught_up_to = self.router.caught_up_to
        if symbol is None or symbol not in caught_up_to:
            return False
        final = raw_final_update_id(frame)
        if final is not None and final <= caught_up_to[symbol]:
            return True
        # Past the snapshot: the book takes the diffs again, decoded.
        del caught_up_to[symbol]
        return False

    def _newest_of_latest_only(self, keys: list[bytes | None]) -> dict[bytes, int] | None:
        """Index of the last frame of each latest-only stream, when one has several."""
        latest_only = self.decoder.latest_only
        newest: dict[bytes, int] = {}
        for index, key in enumerate(keys):
            if key in latest_only:
                newest[key] = index
        return newest if len(newest) < sum(1 for key in keys if key in latest_only) else None

    def _unkeyed(self, frame: bytes, now: float, now_wall: float) -> object:
        """A frame whose stream the raw bytes did not name, decoded whole: the market event to
        route, :data:`SERVER_SHUTDOWN` for the exchange's notice, or None (counted here)."""
        result = self.decoder.decode(frame, now, now_wall)
        metrics = self.metrics
        if isinstance(result, Control):
            if result.kind == "error":
                # The exchange refused something of ours: a frame we cannot use.
                metrics.received[self.router.stream].inc()
                metrics.bad_frames["exchange_error"].inc()
                self.bad_log.warning("error", "exchange error frame: %s", result.payload)
                return None
            metrics.control_frames.labels(result.kind).inc()
            return SERVER_SHUTDOWN if result.kind == "server_shutdown" else None
        metrics.received[self.router.stream].inc()
        if isinstance(result, BadFrame):
            self._bad(result)
            return None
        return result

    def _bad(self, result: BadFrame) -> None:
        self.metrics.bad_frames[result.reason].inc()
        self.bad_log.warning(result.reason, "bad frame (%s): %s", result.reason, result.detail)
