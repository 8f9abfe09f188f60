"""A Binance-compatible mock exchange: the WebSocket server the demo, tests and load test use.

Protocol, as Binance spot serves it (``wss://stream.binance.com:9443``; paths, control
requests and error frames in ``protocol.py``):

- More than ``max_requests_per_s`` requests in a second close the connection with 1008
  "Too many requests", like Binance.
- The server pings every ``ping_interval`` seconds (20 s, like spot) and aborts a connection
  whose pong does not come back within ``pong_timeout``. Client pings are answered by
  trio-websocket.
- ``serverShutdown`` events on demand, abrupt (1006) or clean (1001) disconnects, raw frames,
  stalls and refused handshakes for fault tests (see ``MockExchange``).

Publishing: one task ticks every ``tick`` seconds (0.1 s: Binance pushes ``@100ms`` streams in
100 ms bursts) on an absolute schedule, asks the market for the tick's frames, and serialises
each payload once (and its combined envelope once) for all of that stream's subscribers. Each
connection has a bounded outgoing queue drained by its own writer task. When a queue is full
the ``overflow`` policy decides: ``"block"`` (the default) makes the publisher wait for that
connection, so the delay shows as a late tick (``max_tick_lateness``) and as older ``E`` times
(the frames keep their scheduled time), never as a silent loss; ``"drop"`` discards the
frame for that connection and counts it (``frames_dropped``). Under ``"block"`` one client
that stops reading stalls every client, until its pong timeout (at most ``ping_interval +
pong_timeout``) aborts it: that is the point for a load test (nothing is lost, lateness is
measured), and the reason a test of other clients' isolation uses ``"drop"``.

Writes are batched, one ``send_all`` per burst (``connection.py``). Measured on this machine
with one connection and a client draining the socket: frame by frame tops out near
10,000-12,000 frames/s (a syscall and a reader wake-up per frame); batched, 45,000 frames/s of
``RandomWalkMarket`` depth20 + trades take ~31 % of a core and the ceiling is ~120,000
frames/s.
"""

from __future__ import annotations

import contextlib
import logging
import time
import weakref
from collections.abc import Callable, Iterable, Mapping

import attrs
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, WebSocketServer

from oraculo_trio.feeds.binance_markets import binance_market
from oraculo_trio.mockexchange.config import ExchangeSettings
from oraculo_trio.mockexchange.connection import (
    ABRUPT_CLOSE,
    GONE,
    Connection,
    Item,
    Subscriptions,
    TrackingListener,
    control_reply,
)
from oraculo_trio.mockexchange.markets.payloads import Frame, Market
from oraculo_trio.mockexchange.protocol import (
    ENCODER,
    Rejected,
    parse_path,
)
from oraculo_trio.mockexchange.rest import RestServer, SnapshotSource
from oraculo_trio.mockexchange.tape import TradeTape, WrittenTrades

LOGGER = logging.getLogger("oraculo_trio.mockexchange.exchange")


@attrs.frozen
class ConnectionStatistics:
    """One live connection, as ``MockExchange.statistics()`` reports it."""

    id: int
    path: str
    combined: bool
    streams: tuple[str, ...]
    queued: int
    frames_sent: int
    overflows: int
    frames_dropped: int


@attrs.frozen
class ExchangeStatistics:
    """A snapshot of the exchange's counters (see the ``MockExchange`` attributes)."""

    ticks: int
    frames_sent: int
    frames_sent_by_stream: Mapping[str, int]
    control_frames_sent: int
    frames_dropped: int
    frames_unwritten: int
    overflows: int
    max_tick_lateness: float
    connections_accepted: int
    connections_refused: int
    pong_timeouts: int
    pongs_received: int
    connections_closed: int
    connections: tuple[ConnectionStatistics, ...]


@attrs.define(eq=False)
class MockExchange:
    """A Binance-compatible WebSocket exchange publishing a ``Market``.

    Start it with ``exchange = await nursery.start(MockExchange(market).serve)``; connect to
    ``exchange.ws_url + "/stream?streams=..."`` (or ``exchange.stream_url([...])``).

    Counters (read them directly or via ``statistics()``): ``frames_queued`` market frames
    put in a connection's queue, ``frames_sent`` market frames written to sockets
    (``frames_sent_by_stream`` per stream name; control replies, raw and ``serverShutdown``
    frames are ``control_frames_sent``), ``frames_dropped`` and ``overflows`` (queue-full
    events), ``frames_unwritten`` (market frames still queued for a
    connection when it closed), ``ticks``, ``max_tick_lateness`` (seconds a tick
    started after its schedule), ``connections_accepted``, ``connections_refused``,
    ``connections_closed`` (handlers finished, for any reason), ``pongs_received``,
    ``pong_timeouts``. ``wait_until`` waits on any of them except the per-frame ones.

    Attributes:
        market: what to publish.
        settings: behaviour (tick, pings, queue and overflow policy, limits), and which
            Binance market the exchange plays (``settings.market``) with what clock offset.
        clock: epoch-seconds clock of this host; the exchange's own is it plus
            ``settings.clock_offset`` (:meth:`exchange_time`, the frames' ``E``).
        snapshots: REST depth snapshots to serve (``GET <prefix>/depth``, mockexchange/rest.py);
            by default the market's own when it has ``snapshot()``.
        rest: the REST server (exchangeInfo, time, depth, trades; faults, requests seen),
            started with the exchange; ``rest_url`` its base URL.
        tape: every trade and aggTrade published, for the REST trades endpoints.
        written: with ``settings.record_written``, every ``@trade`` frame written to a
            socket, by connection, and when each connection closed (else None).
    """

    market: Market = attrs.field(repr=lambda market: type(market).__name__)
    settings: ExchangeSettings = attrs.field(factory=ExchangeSettings)
    clock: Callable[[], float] = time.time
    snapshots: SnapshotSource | None = attrs.field(default=None, repr=False)
    port: int = attrs.field(init=False, default=0)
    ws_url: str = attrs.field(init=False, default="")
    rest: RestServer | None = attrs.field(init=False, default=None, repr=False)
    rest_url: str = attrs.field(init=False, default="")
    tape: TradeTape = attrs.field(init=False, factory=TradeTape, repr=False)
    written: WrittenTrades | None = attrs.field(init=False, default=None, repr=False)
    ticks: int = attrs.field(init=False, default=0)
    frames_queued: int = attrs.field(init=False, default=0)
    frames_sent: int = attrs.field(init=False, default=0)
    frames_sent_by_stream: dict[str, int] = attrs.field(init=False, repr=False, factory=dict)
    control_frames_sent: int = attrs.field(init=False, default=0)
    frames_dropped: int = attrs.field(init=False, default=0)
    frames_unwritten: int = attrs.field(init=False, default=0)
    overflows: int = attrs.field(init=False, default=0)
    max_tick_lateness: float = attrs.field(init=False, default=0.0)
    connections_accepted: int = attrs.field(init=False, default=0)
    connections_refused: int = attrs.field(init=False, default=0)
    pong_timeouts: int = attrs.field(init=False, default=0)
    pongs_received: int = attrs.field(init=False, default=0)
    connections_closed: int = attrs.field(init=False, default=0)
    _connections: dict[int, Connection] = attrs.field(init=False, repr=False, factory=dict)
    _subscriptions: Subscriptions = attrs.field(init=False, repr=False)
    _tcp_streams: weakref.WeakValueDictionary[tuple[str, int], trio.SocketStream] = attrs.field(
        init=False, repr=False, factory=weakref.WeakValueDictionary
    )
    _changed: trio.Event = attrs.field(init=False, repr=False, factory=trio.Event)
    _resumed: trio.Event = attrs.field(init=False, repr=False, factory=trio.Event)
    # One publisher at a time, in turn (a Trio lock is fair): a tick blocked on a full queue
    # when the load generator takes over must finish before the generator's frames, which were
    # made after it, or a diff book would see its diffs out of order (a gap, then old ones).
    _publishing: trio.Lock = attrs.field(init=False, repr=False, factory=trio.Lock)
    _refusing: bool = attrs.field(init=False, repr=False, default=False)
    _next_id: int = attrs.field(init=False, repr=False, default=0)

    def __attrs_post_init__(self) -> None:
        self._resumed.set()
        symbols = frozenset(symbol.lower() for symbol in self.market.symbols)
        self._subscriptions = Subscriptions(symbols, self.settings.strict_symbols, self._notify)
        if self.settings.record_written:
            self.written = WrittenTrades()

    # ---------------------------------------------------------------------------- serving

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[MockExchange] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Bind, start publishing, report readiness, then serve until cancelled.

        Args:
            host: interface to bind.
            port: TCP port; 0 picks a free one (read ``.port`` / ``.ws_url`` afterwards).
            task_status: ``nursery.start`` protocol; receives this exchange once bound.

        Cancellation: cancelling the caller stops the publisher and the listener and closes
        every connection (clients see the TCP connection go away).
        """
        listeners = await trio.open_tcp_listeners(port, host=host)
        sockname = listeners[0].socket.getsockname()
        self.port = sockname[1]
        shown = f"[{sockname[0]}]" if ":" in sockname[0] else sockname[0]
        self.ws_url = f"ws://{shown}:{self.port}"
        server = WebSocketServer(
            self._handle,
            [TrackingListener(listener, self._tcp_streams) for listener in listeners],
            connect_timeout=self.settings.connect_timeout,
            disconnect_timeout=self.settings.close_timeout,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            source = self.snapshots if self.snapshots is not None else self.market
            rest = RestServer(
                source if callable(getattr(source, "snapshot", None)) else None,
                binance_market(self.settings.market),
                symbols=self.market.symbols,
                tape=self.tape,
                clock=self.exchange_time,
            )
            self.rest = await nursery.start(rest.serve, host)
            self.rest_url = self.rest.url
            nursery.start_soon(self._publish_loop)
            LOGGER.info(
                "mock exchange listening on %s (tick %.3f s, overflow %s)",
                self.ws_url,
                self.settings.tick,
                self.settings.overflow,
            )
            task_status.started(self)

    def exchange_time(self) -> float:
        """The exchange's clock, epoch seconds: this host's plus ``settings.clock_offset``."""
        return self.clock() + self.settings.clock_offset

    def stream_url(self, streams: Iterable[str]) -> str:
        """The combined-stream URL for ``streams`` (``ws://host:port/stream?streams=a/b``)."""
        return f"{self.ws_url}/stream?streams={'/'.join(streams)}"

    def raw_url(self, stream: str | None = None) -> str:
        """The raw-stream URL: ``ws://host:port/ws/<stream>``, or ``/ws`` with no streams."""
        return f"{self.ws_url}/ws/{stream}" if stream else f"{self.ws_url}/ws"

    async def publish(self, frames: Iterable[Frame]) -> None:
        """Publish ``frames`` now, as one tick would, for a generator keeping its own schedule.

        ``pause()`` the tick loop first so the market is not also ticked
        (the load tool's generator does this). Frames of streams nobody subscribes to are skipped.

        Args:
            frames: ``(stream_name, payload)`` pairs, each serialised once for all subscribers.

        Cancellation: safe; under ``overflow="block"`` it may wait for a full queue, and a
        cancel then leaves the rest of ``frames`` unpublished. It waits for a tick still
        being published (one that ``pause()`` came too late to stop) to finish first.
        """
        async with self._publishing:
            await self._publish(frames)

    # ----------------------------------------------------------------------- fault control

    def pause(self) -> None:
        """Stop publishing (a stall): no tick runs until ``resume()``; connections stay open.

        Frames already queued before the call are still delivered.
        """
        if self._resumed.is_set():
            self._resumed = trio.Event()
            LOGGER.info("publishing paused")

    def resume(self) -> None:
        """Resume publishing after ``pause()``; the schedule restarts from now (no catch-up)."""
        if not self._resumed.is_set():
            self._resumed.set()
            LOGGER.info("publishing resumed")

    @property
    def paused(self) -> bool:
        """Whether ``pause()`` is in effect."""
        return not self._resumed.is_set()

    def refuse_connections(self, refuse: bool = True) -> None:
        """Reject new handshakes with HTTP 503 (``True``) or accept them again (``False``).

        Existing connections are not touched.
        """
        self._refusing = refuse

    async def drop_connections(self, code: int = ABRUPT_CLOSE, reason: str = "") -> int:
        """Disconnect every live connection.

        Args:
            code: 1006 aborts the TCP connection with a reset and no close frame (a crash or a
                network cut); any other code (1001 "going away", 1000, 1011...) sends a close
                frame with that code and waits up to ``close_timeout`` for the client's reply.
            reason: close reason text (ignored for 1006).

        Returns:
            How many connections were dropped. They stop counting as live immediately, so a
            following ``wait_for_connections(n)`` waits for new connections only.

        Cancellation: safe; a connection whose close was interrupted is closed by its
        handler when the exchange stops.
        """
        connections = list(self._connections.values())
        for connection in connections:
            self._unregister(connection)
        LOGGER.info("dropping %d connections with code %d", len(connections), code)
        async with trio.open_nursery() as nursery:
            for connection in connections:
                nursery.start_soon(connection.close, code, reason)
        return len(connections)

    async def send_raw(self, message: str | bytes) -> int:
        """Queue ``message`` to every live connection as is (``bytes`` go as a binary frame).

        Args:
            message: the frame, e.g. malformed JSON.

        Returns:
            How many connections it was queued to (after their queued market frames).

        Cancellation: safe; some connections may not have received it.
        """
        return await self._broadcast(lambda _connection: message)

    async def server_shutdown(self) -> int:
        """Send Binance's ``serverShutdown`` event to every live connection.

        Raw connections get ``{"e":"serverShutdown","E":<ms>}``; combined ones get it in the
        envelope ``{"stream":"!serverShutdown","data":{...}}``. Connections stay open: follow
        with ``drop_connections`` to complete the story.

        Returns:
            How many connections it was queued to.

        Cancellation: safe; some connections may not have received it.
        """
        raw = ENCODER.encode(
            {"e": "serverShutdown", "E": int(self.exchange_time() * 1000)}
        ).decode()
        envelope = '{"stream":"!serverShutdown","data":' + raw + "}"
        return await self._broadcast(lambda connection: envelope if connection.combined else raw)

    async def wait_until(self, predicate: Callable[[MockExchange], bool]) -> None:
        """Return once ``predicate(self)`` is true.

        The predicate is checked now and again whenever connections, subscriptions, closes,
        refusals, pongs or ``overflows`` change (not on every frame: ``frames_sent`` alone
        wakes nobody).

        Args:
            predicate: a cheap, side-effect-free test of the exchange's counters.

        Cancellation: safe; put a ``trio.fail_after`` around it in tests.
        """
        while not predicate(self):
            await self._changed.wait()

    async def wait_for_connections(self, count: int) -> None:
        """Return once at least ``count`` connections are live (accepted and not dropped).

        Args:
            count: live connections to wait for.

        Cancellation: safe; put a ``trio.fail_after`` around it in tests.
        """
        while len(self._connections) < count:
            await self._changed.wait()

    async def wait_for_accepted(self, count: int) -> None:
        """Return once ``connections_accepted`` (a running total) reaches ``count``.

        Args:
            count: total accepted connections to wait for.

        Cancellation: safe.
        """
        while self.connections_accepted < count:
            await self._changed.wait()

    async def wait_for_subscribers(self, stream: str, count: int = 1) -> None:
        """Return once at least ``count`` live connections subscribe to ``stream``.

        Args:
            stream: stream name, e.g. ``btcusdt@trade``.
            count: subscribers to wait for.

        Cancellation: safe.
        """
        while len(self._subscriptions.by_stream.get(stream, ())) < count:
            await self._changed.wait()

    def subscribers(self, stream: str) -> int:
        """How many live connections subscribe to ``stream``."""
        return len(self._subscriptions.by_stream.get(stream, ()))

    def statistics(self) -> ExchangeStatistics:
        """A snapshot of the counters and of every live connection."""
        return ExchangeStatistics(
            ticks=self.ticks,
            frames_sent=self.frames_sent,
            frames_sent_by_stream=dict(self.frames_sent_by_stream),
            control_frames_sent=self.control_frames_sent,
            frames_dropped=self.frames_dropped,
            frames_unwritten=self.frames_unwritten,
            overflows=self.overflows,
            max_tick_lateness=self.max_tick_lateness,
            connections_accepted=self.connections_accepted,
            connections_refused=self.connections_refused,
            pong_timeouts=self.pong_timeouts,
            pongs_received=self.pongs_received,
            connections_closed=self.connections_closed,
            connections=tuple(
                ConnectionStatistics(
                    id=c.id,
                    path=c.path,
                    combined=c.combined,
                    streams=tuple(c.streams),
                    queued=c.send_channel.statistics().current_buffer_used,
                    frames_sent=c.frames_sent,
                    overflows=c.overflows,
                    frames_dropped=c.frames_dropped,
                )
                for c in self._connections.values()
            ),
        )

    # ------------------------------------------------------------------------- publishing

    async def _publish_loop(self) -> None:
        tick = self.settings.tick
        while True:
            await self._resumed.wait()
            # Absolute schedule: a late tick does not push the next ones back, so the
            # market's rate holds; lateness is recorded, and ``now`` stays the scheduled time.
            anchor = trio.current_time()
            wall = self.exchange_time()
            count = 0
            while self._resumed.is_set():
                count += 1
                deadline = anchor + count * tick
                await trio.sleep_until(deadline)
                if not self._resumed.is_set():
                    break
                lateness = trio.current_time() - deadline
                if lateness > self.max_tick_lateness:
                    self.max_tick_lateness = lateness
                self.ticks += 1
                frames = self.market.tick(wall + count * tick, tick)
                async with self._publishing:
                    await self._publish(frames)

    async def _publish(self, frames: Iterable[Frame]) -> None:
        subscribers = self._subscriptions.by_stream
        block = self.settings.overflow == "block"
        record = self.tape.record
        queued = 0  # added once at the end: a per-frame attribute write costs (attrs setattr)
        try:
            for stream, payload in frames:
                # Kept whether anyone listens or not: what a backfill asks for after a cut.
                record(stream, payload)
                connections = subscribers.get(stream)
                if not connections:
                    continue
                # Serialised once per tick for every subscriber (and the envelope once too).
                raw = ENCODER.encode(payload)
                envelope: bytes | None = None
                for connection in tuple(connections):
                    if connection.combined:
                        if envelope is None:
                            envelope = b'{"stream":"%s","data":%s}' % (stream.encode(), raw)
                        item = (stream, envelope, True)
                    else:
                        item = (stream, raw, True)
                    try:
                        connection.send_channel.send_nowait(item)
                        queued += 1
                    except trio.WouldBlock:
                        connection.overflows += 1
                        self.overflows += 1
                        self._notify()
                        if block:
                            with contextlib.suppress(*GONE):
                                await connection.send_channel.send(item)
                                queued += 1
                        else:
                            connection.frames_dropped += 1
                            self.frames_dropped += 1
                    except GONE:
                        pass  # the connection is going away; its handler unregisters it
        finally:
            self.frames_queued += queued

    async def _broadcast(self, message_for: Callable[[Connection], str | bytes]) -> int:
        sent = 0
        for connection in list(self._connections.values()):
            message = message_for(connection)
            if isinstance(message, str):
                item = (None, message.encode(), True)
            else:
                item = (None, message, False)
            try:
                await connection.send_channel.send(item)
            except GONE:
                continue
            sent += 1
        return sent

    # ------------------------------------------------------------------------- connections

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _unregister(self, connection: Connection) -> None:
        if self._connections.pop(connection.id, None) is not None:
            self._subscriptions.remove(connection, list(connection.streams))

    async def _handle(self, request: WebSocketRequest) -> None:
        # Every handler must swallow ConnectionClosed (even a normal close): one escaping
        # stops the whole trio-websocket server.
        try:
            await self._handle_request(request)
        except ConnectionClosed:
            pass

    async def _handle_request(self, request: WebSocketRequest) -> None:
        if self._refusing:
            self.connections_refused += 1
            self._notify()
            await request.reject(503, body=b"Service Unavailable")
            return
        try:
            combined, streams = parse_path(request.path)
            if self._subscriptions.invalid(streams) is not None:
                raise Rejected(400, "Invalid request: invalid stream")
            if len(streams) > self.settings.max_streams:
                raise Rejected(400, "Invalid request: too many streams")
        except Rejected as rejected:
            self.connections_refused += 1
            self._notify()
            await request.reject(rejected.status, body=rejected.body.encode())
            return
        remote = request.remote
        tcp = None
        if not isinstance(remote, str):
            tcp = self._tcp_streams.pop((str(remote.address), remote.port), None)
        ws = await request.accept()
        send_channel, receive_channel = trio.open_memory_channel[Item](self.settings.queue_size)
        self._next_id += 1
        connection = Connection(
            self._next_id, ws, request.path, combined, send_channel, tcp, self.settings
        )
        self._connections[connection.id] = connection
        self.connections_accepted += 1
        self._subscriptions.add(connection, streams)
        try:
            async with send_channel, trio.open_nursery() as nursery:
                scope = nursery.cancel_scope
                nursery.start_soon(connection.write_loop, receive_channel, scope, self._count)
                nursery.start_soon(self._read_loop, connection, scope)
                if self.settings.ping_interval is not None:
                    nursery.start_soon(self._ping_loop, connection, scope)
        finally:
            self._unregister(connection)
            self.frames_unwritten += connection.frames_unwritten
            self.connections_closed += 1
            if self.written is not None:
                self.written.close(connection.id, trio.current_time())
            self._notify()

    def _count(self, connection: Connection, stream: str | None, data: bytes) -> None:
        if stream is None:
            self.control_frames_sent += 1
        else:
            connection.frames_sent += 1
            self.frames_sent += 1
            by_stream = self.frames_sent_by_stream
            by_stream[stream] = by_stream.get(stream, 0) + 1
            if self.written is not None:
                self.written.record(connection.id, stream, data, trio.current_time())

    async def _read_loop(self, connection: Connection, scope: trio.CancelScope) -> None:
        limit = self.settings.max_requests_per_s
        try:
            while True:
                message = await connection.ws.get_message()
                if limit is not None and connection.too_many(limit):
                    LOGGER.warning(
                        "connection %d sent more than %d messages in a second: closing",
                        connection.id,
                        limit,
                    )
                    # Shielded: the writer's ConnectionClosed cancels this task, and a TCP
                    # close before the client read our close frame would turn 1008 into 1006.
                    with trio.CancelScope(shield=True):
                        await connection.close(1008, "Too many requests")
                    return
                reply = control_reply(connection, self._subscriptions, message)
                await connection.send_channel.send((None, reply, True))
        except ConnectionClosed:
            pass
        finally:
            scope.cancel()

    async def _ping_loop(self, connection: Connection, scope: trio.CancelScope) -> None:
        interval = self.settings.ping_interval
        assert interval is not None
        try:
            while True:
                await trio.sleep(interval)
                with trio.move_on_after(self.settings.pong_timeout) as waiting:
                    await connection.ws.ping()
                if not waiting.cancelled_caught:
                    self.pongs_received += 1
                    self._notify()
                if waiting.cancelled_caught:
                    self.pong_timeouts += 1
                    self._notify()
                    LOGGER.warning(
                        "connection %d: no pong within %.1f s, aborting",
                        connection.id,
                        self.settings.pong_timeout,
                    )
                    await connection.abort()
                    return
        except ConnectionClosed:
            pass
        finally:
            scope.cancel()
