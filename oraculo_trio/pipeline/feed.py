"""Feed connections: read an exchange's combined stream, decode, route by shard; reconnect.

One task per connection. Depth and trade streams use separate connections, so trade
backpressure (a trade is never dropped: the reader waits) never stalls depth.

A connection replaced on purpose (``serverShutdown``, its lifetime, a stall) is replaced
make before break: each WebSocket is a session in a task of its own, the new one opens and
subscribes while the old one reads on, and takes over once it delivers. One reader hands
every session's frames on, one session at a time, and on trade connections it keeps the
last trade id per symbol: duplicates of the overlap are dropped, gaps backfilled over REST
(``pipeline/backfill.py``) before the trade after them.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from urllib.parse import parse_qs, urlsplit

import attrs
import trio

from oraculo_trio.core.events import TRADE, Trade
from oraculo_trio.core.markets import SPOT
from oraculo_trio.core.trade_ids import DUPLICATE, RENUMBERED, TradeIds
from oraculo_trio.errors import FeedError
from oraculo_trio.feeds.binance import BadFrame, BinanceDecoder, Control, raw_final_update_id
from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.observe.ratelimit import RateLimitedLog
from oraculo_trio.pipeline.backfill import TradeBackfill
from oraculo_trio.pipeline.exchange_clock import ExchangeClock
from oraculo_trio.pipeline.shards import ShardRouter
from oraculo_trio.pipeline.transport import CLOSE_TOO_LARGE, ConnectionClosed, open_feed_socket
from oraculo_trio.settings import FeedSettings, PipelineSettings, Settings

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
    behind_budget: float

    @classmethod
    def from_settings(cls, settings: Settings) -> FeedConnectionSettings:
        """The first feed's (the only one unless several ``[[feed]]`` tables are given)."""
        return cls.from_feed(settings.feed, settings.pipeline)

    @classmethod
    def from_feed(cls, feed: FeedSettings, pipeline: PipelineSettings) -> FeedConnectionSettings:
        # Every field is the ``feed`` key of the same name, but how much of the read-ahead
        # the reader hands on per step: a consumer's batch (``pipeline.batch_max``), so that
        # frames are consumed while their memory is still hot; while behind, as many such
        # chunks as a consumer's time budget (``pipeline.batch_budget_ms``) holds.
        own = ("chunk_frames", "behind_budget")
        return cls(
            **{
                field.name: getattr(feed, field.name)
                for field in attrs.fields(cls)
                if field.name not in own
            },
            chunk_frames=pipeline.batch_max,
            behind_budget=pipeline.batch_budget_ms / 1000.0,
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


PLANNED = ("lifetime", "server_shutdown", "stall")
"""Reasons to replace a connection that still reads: make before break."""


@attrs.define(eq=False)
class _Session:
    """One WebSocket connection of a feed connection task, from its opening to its end.

    ``predecessor``: the session it replaces, which reads on until this one delivers.
    ``outcome`` is set once, when the session asks to be replaced (``reason`` in
    :data:`PLANNED`) or ends without asking (``closed_<code>``, ``connect_failed``).
    """

    predecessor: _Session | None
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    outcome: trio.Event = attrs.field(factory=trio.Event)
    stopped: trio.Event = attrs.field(factory=trio.Event)
    reason: str = ""
    delivered: bool = False

    def decide(self, reason: str) -> None:
        if not self.outcome.is_set():
            self.reason = reason
            self.outcome.set()


async def run_feed_connection(
    status: ConnectionStatus,
    router: ShardRouter,
    metrics: ServiceMetrics,
    settings: FeedConnectionSettings,
    *,
    on_change: object = None,
    rotation: RotationGate | None = None,
    lifetime_offset: float = 0.0,
    backfill: TradeBackfill | None = None,
) -> None:
    """Read one combined-stream URL forever, reconnecting with backoff and jitter.

    The connection is replaced on purpose after ``connection_lifetime`` (before the
    exchange's 24 h cut), after ``stall_timeout`` without a frame, and on ``serverShutdown``:
    make before break. The new connection is opened and subscribed while the old one reads
    on; once it delivers, the old one stops and closes, and the overlap is dropped by trade
    id (``duplicate``; depth by update id, in the books). A gap in a symbol's trade ids (a
    cut, or within the stream) is backfilled from REST by ``backfill`` before the trade
    after it goes on. Malformed or unknown frames are counted and skipped; the connection
    survives them.

    Args:
        status: this connection's name, stream and URL; updated as it connects.
        router: routes decoded messages to shard channels (its owner closes it).
        on_change: called with no argument whenever ``status.connected`` changes.
        rotation: shared by the service's connections, so that they rotate one at a time.
        lifetime_offset: the first connection's lifetime is this much shorter (at most half
            of it), to stagger connections started together.
        backfill: the market's trade backfill (None: gaps are only counted, as missed).

    Cancellation: closes the sockets.
    """
    backoff = Backoff(settings.reconnect_initial, settings.reconnect_max)
    bad_log = RateLimitedLog(LOGGER)
    reader = _BatchReader(
        BinanceDecoder(subscribed_streams(status.url), market=status.market),
        router, metrics, bad_log, settings.chunk_frames, status.clock,
        ids=TradeIds() if router.stream == TRADE else None, backfill=backfill,
        behind_budget=settings.behind_budget,
    )  # fmt: skip
    link = _Link(status, router, metrics, settings, reader, rotation, on_change)
    lifetime = max(settings.connection_lifetime / 2, settings.connection_lifetime - lifetime_offset)
    reading: _Session | None = None
    router.reading = reader.batch
    try:
        async with trio.open_nursery() as nursery:
            while True:
                alive = reading is not None and not reading.stopped.is_set()
                session = _Session(reading if alive else None)
                nursery.start_soon(link.hold, session, lifetime)
                lifetime = settings.connection_lifetime
                await session.outcome.wait()
                if session.delivered:
                    reading = session
                reason = session.reason
                metrics.feed_reconnects.labels(status.stream, reason).inc()
                if reason in PLANNED and not session.stopped.is_set():
                    # It reads on until its successor, started now, delivers.
                    backoff.reset()
                    continue
                delay = backoff.next_delay()
                LOGGER.info("feed %s reconnecting in %.2fs (%s)", status.name, delay, reason)
                await trio.sleep(delay)
    finally:
        router.reading = None


@attrs.define(eq=False)
class _Link:
    """What the sessions of one feed connection share: its status, reader and settings."""

    status: ConnectionStatus
    router: ShardRouter
    metrics: ServiceMetrics
    settings: FeedConnectionSettings
    reader: _BatchReader
    rotation: RotationGate | None
    on_change: object
    _open: int = 0

    def _connected(self, change: int) -> None:
        # Connected while any session is open (two overlap during a make-before-break).
        status = self.status
        self._open += change
        value = self._open > 0
        if value == status.connected:
            return
        status.connected = value
        self.metrics.feed_connected.labels(status.stream, status.name).set(1 if value else 0)
        if value:
            status.connected_event.set()
        elif status.connected_event.is_set():
            status.connected_event = trio.Event()
        if callable(self.on_change):
            self.on_change()

    async def hold(self, session: _Session, lifetime: float) -> None:
        """Open, subscribe and read one connection until it ends or a successor takes over."""
        status, settings, metrics = self.status, self.settings, self.metrics
        try:
            with session.scope:
                async with open_feed_socket(
                    status.url,
                    receive_buffer_size=settings.receive_buffer_size,
                    max_message_size=settings.max_message_size,
                    client=settings.client,
                ) as socket:
                    status.connects += 1
                    self._connected(+1)
                    try:
                        first = await self._take_over(session, socket)
                        if first is None:
                            return
                        LOGGER.info("feed %s connected (%s)", status.name, status.stream)
                        await _read(socket, self.reader, settings, lifetime, self.rotation,
                                    session.decide, first)  # fmt: skip
                    finally:
                        session.stopped.set()
                        self._connected(-1)
        except ConnectionClosed as exc:
            code = exc.reason.code if exc.reason is not None else None
            if code == CLOSE_TOO_LARGE:
                metrics.received[self.router.stream].inc()
                metrics.bad_frames["too_large"].inc()
            session.decide(f"closed_{code}")
            self.reader.bad_log.warning(
                "closed", "feed %s closed by peer: %s", status.name, exc.reason
            )
        except FeedError as exc:
            session.decide("connect_failed")
            self.reader.bad_log.warning("connect", "feed %s: %s", status.name, exc)
        finally:
            session.stopped.set()
            # Replaced by a successor: its end is no reconnect of its own.
            session.decide("replaced")

    async def _take_over(self, session: _Session, socket: object) -> list[bytes] | None:
        """The frames of the first read; once they are in, the predecessor stops reading
        (it finishes the read-ahead in its hands) and this session reads from then on.
        None: no frame within ``stall_timeout`` (the session asks to be replaced)."""
        predecessor = session.predecessor
        if predecessor is None:
            session.delivered = True
            return []
        first = None
        with trio.move_on_after(self.settings.stall_timeout):
            first = await socket.receive_batch(MAX_READ_AHEAD_FRAMES)
        if first is None:
            session.decide("stall")
            return None
        predecessor.scope.cancel()
        await predecessor.stopped.wait()
        session.delivered = True
        return first


SERVER_SHUTDOWN = object()
"""What :meth:`_BatchReader._unkeyed` returns for the exchange's ``serverShutdown`` notice."""


@attrs.define(eq=False)
class FrameBatch:
    """The read-ahead: the frames of one socket read that the reader has not handed on yet.
    Its market frames are counted as received at once, and as ``in_flight`` until each is
    routed, conflated or found bad (the accounting of ``docs/architecture.md``)."""

    keys: list[bytes | None] = attrs.field(factory=list)
    position: int = 0
    backfilled: int = 0
    """Trades of a backfill counted as ``backfilled`` and not yet handed on."""

    def held(self) -> int:
        """Market frames of the read-ahead counted as received and not yet handed on, and
        backfilled trades counted and not yet handed on."""
        keys = self.keys
        frames = sum(1 for index in range(self.position, len(keys)) if keys[index] is not None)
        return frames + self.backfilled


async def _read(
    socket: object,
    reader: _BatchReader,
    settings: FeedConnectionSettings,
    lifetime_seconds: float,
    rotation: RotationGate | None,
    replace: Callable[[str], None],
    first: list[bytes],
) -> None:
    """Hand on ``first``, then read until the connection ends (raises ConnectionClosed) or
    the caller's scope is cancelled; ``replace(reason)`` asks for a successor (the end of its
    lifetime, a stall, ``serverShutdown``), and reading goes on until it takes over."""
    router = reader.router
    current_time = trio.current_time
    last_frame = current_time()
    closed: ConnectionClosed | None = None

    async def watch_for_stall() -> None:
        while True:
            # Time spent waiting for room in a shard channel (our own backpressure) or for a
            # backfill is not silence from the exchange.
            quiet_since = max(last_frame, router.resumed_at, reader.filled_at)
            busy = router.waiting or reader.filling
            idle = 0.0 if busy else current_time() - quiet_since
            if idle >= settings.stall_timeout:
                replace("stall")
                return
            await trio.sleep(settings.stall_timeout - idle)

    async def rotate_when_due() -> None:
        await trio.sleep(lifetime_seconds)
        if rotation is not None:
            await rotation.turn()
        replace("lifetime")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_for_stall)
        nursery.start_soon(rotate_when_due)
        if first and await reader.handle(first):
            replace("server_shutdown")
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
                replace("server_shutdown")
        nursery.cancel_scope.cancel()
    if closed is not None:
        raise closed


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

    Behind, the consumers run only once ``behind_budget`` seconds of reading have passed
    (checked every ``chunk`` frames). Each time they run they apply every symbol's merged
    diff to its book, at a cost of about the merge's levels, and a merge of more diffs has
    fewer levels per diff (the same prices change again and again): fewer, larger merges
    leave more of the CPU to reading, which is what keeps the backlog out of the kernel.
    """

    decoder: BinanceDecoder
    router: ShardRouter
    metrics: ServiceMetrics
    bad_log: RateLimitedLog
    chunk: int
    clock: ExchangeClock = attrs.field(factory=lambda: ExchangeClock(SPOT))
    batch: FrameBatch = attrs.field(factory=FrameBatch)
    ids: TradeIds | None = None
    """The last trade id handed on per symbol (trade connections): duplicates are dropped,
    gaps backfilled by ``backfill`` (or counted missed)."""
    backfill: TradeBackfill | None = None
    filling: bool = False
    """While a backfill runs (the stall detector does not count it as silence)."""
    filled_at: float = -math.inf
    behind_budget: float = 0.0
    """While behind, seconds of reading between two turns of the consumers (0: every
    ``chunk`` frames, as when not behind)."""

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
        # Each stream has the series it can move: depth has no duplicate, a trade stream
        # neither conflated nor superseded (their branches below are never taken for it).
        conflated = metrics.dropped.get((stream, "conflated"))
        superseded = metrics.dropped.get((stream, "superseded"))
        duplicate = metrics.dropped.get((stream, "duplicate"))
        ids = self.ids
        now = trio.current_time()
        # On the exchange's clock, as E is: ages do not drift with our clock.
        now_wall = time.time() + self.clock.offset
        shutdown = False
        budget = self.behind_budget if behind else 0.0
        perf_counter = time.perf_counter
        turn_started = perf_counter()
        try:
            for index, frame in enumerate(frames):
                batch.position = index
                if index and not index % chunk and perf_counter() - turn_started >= budget:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    turn_started = perf_counter()
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
                if ids is not None and type(result) is Trade:
                    missing = ids.take(result.kind, result.symbol, result.trade_id)
                    if missing:
                        if missing == DUPLICATE:
                            duplicate.inc()
                            continue
                        await self._fill(result, missing)
                await route(result, behind)
        finally:
            batch.keys, batch.position = [], 0
        return shutdown

    async def _fill(self, trade: Trade, missing: int) -> None:
        """Backfill the ``missing`` trades before ``trade``, in order, or count them missed
        (:data:`~oraculo_trio.core.trade_ids.RENUMBERED`: only logged).

        Shielded, like the rest of :meth:`handle`: a read-ahead is handed on whole (the
        backfill's own deadline, ``feed.snapshot_timeout``, bounds the wait).
        """
        kind, symbol = trade.kind, trade.symbol
        if missing == RENUMBERED:
            self.bad_log.warning(
                "renumbered", "trade ids of %s (%s) jumped to %d: followed from there",
                symbol, kind, trade.trade_id,
            )  # fmt: skip
            return
        first = trade.trade_id - missing
        backfill = self.backfill
        if backfill is None:
            self.metrics.trades_missed["rest_failed"].inc(missing)
            self.bad_log.warning(
                "missed", "%d trades of %s missed (ids %d..%d): no backfill",
                missing, symbol, first, trade.trade_id - 1,
            )  # fmt: skip
            return
        self.filling = True
        try:
            with trio.CancelScope(shield=True):
                await backfill.fill(
                    kind, symbol, first, trade.trade_id - 1, self.clock.offset, self._deliver
                )
        finally:
            self.filling = False
            self.filled_at = trio.current_time()

    async def _deliver(self, trades: Sequence[Trade]) -> None:
        """Hand on backfilled trades: counted ``backfilled`` now, in flight until routed."""
        batch = self.batch
        stream = self.router.stream
        self.metrics.backfilled[stream].inc(len(trades))
        batch.backfilled += len(trades)
        route = self.router.route
        for trade in trades:
            await route(trade)
            batch.backfilled -= 1

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
