"""A Binance-compatible mock exchange: the WebSocket server the demo, tests and load test use.

Protocol, as Binance spot serves it (``wss://stream.binance.com:9443``):

- ``/stream?streams=a@trade/b@depth20@100ms``: combined streams, every frame is
  ``{"stream":"<name>","data":<payload>}``; ``/ws/<name>[/<name>...]`` and ``/ws``: raw
  payloads (``/ws`` starts with no streams). Other paths are rejected with HTTP 404, invalid
  stream names in a URL with HTTP 400.
- Control requests ``SUBSCRIBE``, ``UNSUBSCRIBE``, ``LIST_SUBSCRIPTIONS``, ``SET_PROPERTY`` /
  ``GET_PROPERTY`` (``combined``) with Binance's replies and error frames
  ``{"error":{"code":..,"msg":".."},"id":..}``. More than ``max_requests_per_s`` requests in
  a second close the connection with 1008 "Too many requests", like Binance.
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

Writes: each writer gathers what is queued (up to 256 KiB) and sends it with one ``send_all``,
framing the messages itself (RFC 6455 server frames are unmasked, and no extension is
negotiated). It takes trio-websocket's private ``_stream_lock`` (0.12.2) so its writes never
interleave with the library's pongs and close frames; when that lock or the TCP stream is not
available, or with ``batch_writes=False``, it falls back to ``send_message`` per frame.
Measured on this machine with one connection and a client draining the socket: frame by frame
tops out near 10,000-12,000 frames/s (a syscall and a reader wake-up per frame); batched,
45,000 frames/s of ``RandomWalkMarket`` depth20 + trades take ~31 % of a core and the
ceiling is ~120,000 frames/s.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import struct
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from ipaddress import ip_address
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import attrs
import msgspec
import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
)

from oraculo_trio.mockexchange.markets import Frame, Market
from oraculo_trio.mockexchange.rest import RestServer, SnapshotSource

LOGGER = logging.getLogger("oraculo_trio.loadtest.exchange")

OverflowPolicy = Literal["block", "drop"]

#: Stream kinds the mock accepts: trades, best bid/ask, partial books (100 ms and 1000 ms) and
#: diff depth (subscribable even when the market does not produce diffs).
STREAM_NAME_RE = re.compile(
    r"^(?P<symbol>[a-z0-9]+)@(?P<kind>trade|aggTrade|bookTicker"
    r"|depth(?:5|10|20)?(?:@100ms)?)$"
)

#: Binance's methods, in the order its "unknown variant" error lists them.
METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")

#: Abrupt close: no close frame, the TCP connection is reset.
ABRUPT_CLOSE = 1006

_ENCODER = msgspec.json.Encoder()

# What a memory channel raises once the connection on the other end is gone.
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError)

# An outgoing frame: (market stream name or None for control/raw frames, bytes, is text).
_Item = tuple[str | None, bytes, bool]

# Most bytes one batched write gathers (frames are concatenated into one send_all).
_BATCH_BYTES = 256 * 1024


def parse_stream_name(name: str) -> tuple[str, str] | None:
    """Split a Binance stream name into its lower-case symbol and kind.

    Args:
        name: e.g. ``btcusdt@depth20@100ms``.

    Returns:
        ``(symbol, kind)`` such as ``("btcusdt", "depth20@100ms")``, or ``None`` when the name
        is not one the mock serves.
    """
    match = STREAM_NAME_RE.match(name)
    if match is None:
        return None
    return match["symbol"], match["kind"]


class InvalidRequest(Exception):
    """A control request the exchange answers with an error frame (code and message)."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(code, msg)
        self.code = code
        self.msg = msg


class _Rejected(Exception):
    """A handshake path the exchange refuses with an HTTP status."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body


def parse_path(target: str) -> tuple[bool, list[str]]:
    """Read a handshake target the way Binance routes it.

    Args:
        target: the request target, path and query (``/stream?streams=a@trade/b@trade``).

    Returns:
        ``(combined, streams)``: ``True`` for ``/stream``, ``False`` for ``/ws``; the streams
        named in the URL, in order, without duplicates.

    Raises:
        _Rejected: 404 for an unknown path, 400 for an invalid stream name.
    """
    parts = urlsplit(target)
    path = parts.path.rstrip("/")
    if path == "/stream":
        combined = True
        query = parse_qs(parts.query)
        names = [n for value in query.get("streams", []) for n in value.split("/") if n]
    elif path == "/ws" or path.startswith("/ws/"):
        combined = False
        names = [n for n in path[len("/ws") :].split("/") if n]
    else:
        raise _Rejected(404, "Not Found")
    for name in names:
        if parse_stream_name(name) is None:
            raise _Rejected(400, f"Invalid request: invalid stream {name!r}")
    return combined, list(dict.fromkeys(names))


def _reply(result: Any, request_id: Any) -> bytes:
    return _ENCODER.encode({"result": result, "id": request_id})


def error_frame(code: int, msg: str, request_id: Any = None) -> bytes:
    """Binance's error frame, ``{"error":{"code":2,"msg":"Invalid request: ..."},"id":1}``.

    Args:
        code: Binance's code (0 unknown property, 1 bad value type, 2 invalid request,
            3 invalid JSON).
        msg: the message.
        request_id: the request's id, ``None`` when it could not be read.

    Returns:
        The frame's UTF-8 text.
    """
    return _ENCODER.encode({"error": {"code": code, "msg": msg}, "id": request_id})


@attrs.frozen
class ExchangeSettings:
    """How the mock exchange behaves.

    Attributes:
        tick: publishing period in seconds (Binance's 100 ms bursts).
        ping_interval: seconds between server pings; ``None`` disables them.
        pong_timeout: seconds a ping may wait for its pong before the connection is aborted.
        queue_size: frames each connection's outgoing queue holds.
        overflow: ``"block"`` (default: the publisher waits for a full queue, lateness is
            visible) or ``"drop"`` (the frame is discarded for that connection and counted).
        max_streams: streams one connection may hold (Binance spot: 1024).
        max_requests_per_s: incoming messages per second before the connection is closed
            with 1008 (Binance spot: 5); ``None`` disables the limit.
        strict_symbols: reject subscriptions to symbols the market does not publish (error
            frame "invalid stream"), so a typo fails loudly.
        close_timeout: seconds a clean close may wait for the client's close frame before
            the TCP connection is aborted.
        connect_timeout: seconds a client has to finish the opening handshake.
        batch_writes: write each connection's queued frames with one ``send_all`` per burst
            (default), framing them here; ``False`` sends frame by frame through
            trio-websocket's ``send_message`` (about 10,000 frames/s at most).
    """

    tick: float = attrs.field(default=0.1, validator=attrs.validators.gt(0))
    ping_interval: float | None = attrs.field(
        default=20.0, validator=attrs.validators.optional(attrs.validators.gt(0))
    )
    pong_timeout: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))
    queue_size: int = attrs.field(default=16384, validator=attrs.validators.ge(1))
    overflow: OverflowPolicy = attrs.field(
        default="block", validator=attrs.validators.in_(("block", "drop"))
    )
    max_streams: int = attrs.field(default=1024, validator=attrs.validators.ge(1))
    max_requests_per_s: int | None = attrs.field(
        default=5, validator=attrs.validators.optional(attrs.validators.ge(1))
    )
    strict_symbols: bool = True
    close_timeout: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))
    connect_timeout: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    batch_writes: bool = True


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
    overflows: int
    max_tick_lateness: float
    connections_accepted: int
    connections_refused: int
    pong_timeouts: int
    pongs_received: int
    connections_closed: int
    connections: tuple[ConnectionStatistics, ...]


@attrs.define(eq=False)
class _Connection:
    id: int
    ws: WebSocketConnection
    path: str
    combined: bool
    send_channel: trio.MemorySendChannel[_Item]
    tcp: trio.SocketStream | None
    streams: dict[str, None] = attrs.Factory(dict)
    frames_sent: int = 0
    overflows: int = 0
    frames_dropped: int = 0
    requests: deque[float] = attrs.Factory(deque)


class _TrackingListener(trio.abc.Listener[trio.SocketStream]):
    """Wraps a socket listener and remembers each accepted stream by peer address.

    trio-websocket hides the TCP stream behind the connection; an abrupt disconnect (1006)
    needs it to reset the socket without a close frame.
    """

    def __init__(
        self,
        inner: trio.SocketListener,
        streams: weakref.WeakValueDictionary[tuple[str, int], trio.SocketStream],
    ) -> None:
        self._inner = inner
        self._streams = streams

    async def accept(self) -> trio.SocketStream:
        stream = await self._inner.accept()
        with contextlib.suppress(OSError):
            host, port = stream.socket.getpeername()[:2]
            self._streams[(str(ip_address(host)), port)] = stream
        return stream

    async def aclose(self) -> None:
        await self._inner.aclose()


@attrs.define(eq=False)
class MockExchange:
    """A Binance-compatible WebSocket exchange publishing a ``Market``.

    Start it with ``exchange = await nursery.start(MockExchange(market).serve)``; connect to
    ``exchange.ws_url + "/stream?streams=..."`` (or ``exchange.stream_url([...])``).

    Counters (read them directly or via ``statistics()``): ``frames_sent`` market frames
    written to sockets (``frames_sent_by_stream`` per stream name; control replies, raw and
    ``serverShutdown`` frames are ``control_frames_sent``), ``frames_dropped`` and
    ``overflows`` (queue-full events), ``ticks``, ``max_tick_lateness`` (seconds a tick
    started after its schedule), ``connections_accepted``, ``connections_refused``,
    ``connections_closed`` (handlers finished, for any reason), ``pongs_received``,
    ``pong_timeouts``. ``wait_until`` waits on any of them except the per-frame ones.

    Attributes:
        market: what to publish.
        settings: behaviour (tick, pings, queue and overflow policy, limits).
        clock: epoch-seconds clock anchoring the tick schedule (the frames' ``E``).
        snapshots: REST depth snapshots to serve (``GET /api/v3/depth``, mockexchange/rest.py);
            by default the market's own when it has ``snapshot()``. Then ``rest`` is the
            REST server (faults, requests seen) and ``rest_url`` its base URL.
    """

    market: Market = attrs.field(repr=lambda market: type(market).__name__)
    settings: ExchangeSettings = attrs.field(factory=ExchangeSettings)
    clock: Callable[[], float] = time.time
    snapshots: SnapshotSource | None = attrs.field(default=None, repr=False)
    port: int = attrs.field(init=False, default=0)
    ws_url: str = attrs.field(init=False, default="")
    rest: RestServer | None = attrs.field(init=False, default=None, repr=False)
    rest_url: str = attrs.field(init=False, default="")
    ticks: int = attrs.field(init=False, default=0)
    frames_sent: int = attrs.field(init=False, default=0)
    frames_sent_by_stream: dict[str, int] = attrs.field(init=False, repr=False, factory=dict)
    control_frames_sent: int = attrs.field(init=False, default=0)
    frames_dropped: int = attrs.field(init=False, default=0)
    overflows: int = attrs.field(init=False, default=0)
    max_tick_lateness: float = attrs.field(init=False, default=0.0)
    connections_accepted: int = attrs.field(init=False, default=0)
    connections_refused: int = attrs.field(init=False, default=0)
    pong_timeouts: int = attrs.field(init=False, default=0)
    pongs_received: int = attrs.field(init=False, default=0)
    connections_closed: int = attrs.field(init=False, default=0)
    _connections: dict[int, _Connection] = attrs.field(init=False, repr=False, factory=dict)
    _subscribers: dict[str, set[_Connection]] = attrs.field(init=False, repr=False, factory=dict)
    _tcp_streams: weakref.WeakValueDictionary[tuple[str, int], trio.SocketStream] = attrs.field(
        init=False, repr=False, factory=weakref.WeakValueDictionary
    )
    _changed: trio.Event = attrs.field(init=False, repr=False, factory=trio.Event)
    _resumed: trio.Event = attrs.field(init=False, repr=False, factory=trio.Event)
    _refusing: bool = attrs.field(init=False, repr=False, default=False)
    _next_id: int = attrs.field(init=False, repr=False, default=0)
    _symbols: frozenset[str] = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._resumed.set()
        self._symbols = frozenset(symbol.lower() for symbol in self.market.symbols)

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
            [_TrackingListener(listener, self._tcp_streams) for listener in listeners],
            connect_timeout=self.settings.connect_timeout,
            disconnect_timeout=self.settings.close_timeout,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            source = self.snapshots if self.snapshots is not None else self.market
            if callable(getattr(source, "snapshot", None)):
                self.rest = await nursery.start(RestServer(source).serve, host)
                self.rest_url = self.rest.url
            nursery.start_soon(self._publish_loop)
            LOGGER.info(
                "mock exchange listening on %s (tick %.3f s, overflow %s)",
                self.ws_url,
                self.settings.tick,
                self.settings.overflow,
            )
            task_status.started(self)

    def stream_url(self, streams: Iterable[str]) -> str:
        """The combined-stream URL for ``streams`` (``ws://host:port/stream?streams=a/b``)."""
        return f"{self.ws_url}/stream?streams={'/'.join(streams)}"

    def raw_url(self, stream: str | None = None) -> str:
        """The raw-stream URL: ``ws://host:port/ws/<stream>``, or ``/ws`` with no streams."""
        return f"{self.ws_url}/ws/{stream}" if stream else f"{self.ws_url}/ws"

    async def publish(self, frames: Iterable[Frame]) -> None:
        """Publish ``frames`` now, as one tick would, for a generator keeping its own schedule.

        ``pause()`` the tick loop first so the market is not also ticked
        (``loadtest.generator`` does this). Frames of streams nobody subscribes to are skipped.

        Args:
            frames: ``(stream_name, payload)`` pairs, each serialised once for all subscribers.

        Cancellation: safe; under ``overflow="block"`` it may wait for a full queue, and a
        cancel then leaves the rest of ``frames`` unpublished.
        """
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
                nursery.start_soon(self._close, connection, code, reason)
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
        raw = _ENCODER.encode({"e": "serverShutdown", "E": int(self.clock() * 1000)}).decode()
        envelope = '{"stream":"!serverShutdown","data":' + raw + "}"
        return await self._broadcast(lambda connection: envelope if connection.combined else raw)

    async def wait_until(self, predicate: Callable[[MockExchange], bool]) -> None:
        """Return once ``predicate(self)`` is true.

        The predicate is checked now and again whenever connections, subscriptions, closes,
        refusals or pongs change (not on every frame: ``frames_sent`` alone wakes nobody).

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
        while len(self._subscribers.get(stream, ())) < count:
            await self._changed.wait()

    def subscribers(self, stream: str) -> int:
        """How many live connections subscribe to ``stream``."""
        return len(self._subscribers.get(stream, ()))

    def statistics(self) -> ExchangeStatistics:
        """A snapshot of the counters and of every live connection."""
        return ExchangeStatistics(
            ticks=self.ticks,
            frames_sent=self.frames_sent,
            frames_sent_by_stream=dict(self.frames_sent_by_stream),
            control_frames_sent=self.control_frames_sent,
            frames_dropped=self.frames_dropped,
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
            wall = self.clock()
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
                await self._publish(self.market.tick(wall + count * tick, tick))

    async def _publish(self, frames: Iterable[Frame]) -> None:
        subscribers = self._subscribers
        block = self.settings.overflow == "block"
        for stream, payload in frames:
            connections = subscribers.get(stream)
            if not connections:
                continue
            # Serialised once per tick for every subscriber (and the envelope once too).
            raw = _ENCODER.encode(payload)
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
                except trio.WouldBlock:
                    connection.overflows += 1
                    self.overflows += 1
                    if block:
                        with contextlib.suppress(*_GONE):
                            await connection.send_channel.send(item)
                    else:
                        connection.frames_dropped += 1
                        self.frames_dropped += 1
                except _GONE:
                    pass  # the connection is going away; its handler unregisters it

    async def _broadcast(self, message_for: Callable[[_Connection], str | bytes]) -> int:
        sent = 0
        for connection in list(self._connections.values()):
            message = message_for(connection)
            if isinstance(message, str):
                item = (None, message.encode(), True)
            else:
                item = (None, message, False)
            try:
                await connection.send_channel.send(item)
            except _GONE:
                continue
            sent += 1
        return sent

    # ------------------------------------------------------------------------- connections

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _subscribe(self, connection: _Connection, streams: Iterable[str]) -> None:
        for stream in streams:
            if stream not in connection.streams:
                connection.streams[stream] = None
                self._subscribers.setdefault(stream, set()).add(connection)
        self._notify()

    def _unsubscribe(self, connection: _Connection, streams: Iterable[str]) -> None:
        for stream in streams:
            if connection.streams.pop(stream, 0) is None:
                subscribers = self._subscribers.get(stream)
                if subscribers is not None:
                    subscribers.discard(connection)
                    if not subscribers:
                        del self._subscribers[stream]
        self._notify()

    def _unregister(self, connection: _Connection) -> None:
        if self._connections.pop(connection.id, None) is not None:
            self._unsubscribe(connection, list(connection.streams))

    def _check_streams(self, names: Iterable[str]) -> str | None:
        """The first name that is not a stream this exchange serves, or None."""
        strict = self.settings.strict_symbols and self._symbols
        for name in names:
            parsed = parse_stream_name(name)
            if parsed is None or (strict and parsed[0] not in self._symbols):
                return name
        return None

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
            if self._check_streams(streams) is not None:
                raise _Rejected(400, "Invalid request: invalid stream")
            if len(streams) > self.settings.max_streams:
                raise _Rejected(400, "Invalid request: too many streams")
        except _Rejected as rejected:
            self.connections_refused += 1
            self._notify()
            await request.reject(rejected.status, body=rejected.body.encode())
            return
        remote = request.remote
        tcp = None
        if not isinstance(remote, str):
            tcp = self._tcp_streams.pop((str(remote.address), remote.port), None)
        ws = await request.accept()
        send_channel, receive_channel = trio.open_memory_channel[_Item](self.settings.queue_size)
        self._next_id += 1
        connection = _Connection(self._next_id, ws, request.path, combined, send_channel, tcp)
        self._connections[connection.id] = connection
        self.connections_accepted += 1
        self._subscribe(connection, streams)
        try:
            async with send_channel, trio.open_nursery() as nursery:
                scope = nursery.cancel_scope
                nursery.start_soon(self._write_loop, connection, receive_channel, scope)
                nursery.start_soon(self._read_loop, connection, scope)
                if self.settings.ping_interval is not None:
                    nursery.start_soon(self._ping_loop, connection, scope)
        finally:
            self._unregister(connection)
            self.connections_closed += 1
            self._notify()

    async def _write_loop(
        self,
        connection: _Connection,
        receive_channel: trio.MemoryReceiveChannel[_Item],
        scope: trio.CancelScope,
    ) -> None:
        # trio-websocket serialises its own writes (pongs, close frames) with this lock; the
        # batched path takes it too. Without it (or without the TCP stream) write one frame
        # at a time through the public API.
        lock = getattr(connection.ws, "_stream_lock", None)
        batched = self.settings.batch_writes and connection.tcp is not None and lock is not None
        async with receive_channel:
            try:
                if batched:
                    await self._write_batches(connection, receive_channel, lock)
                else:
                    await self._write_frames(connection, receive_channel)
            except ConnectionClosed:
                pass
            finally:
                # Cancel the connection's other tasks before the channel closes, so the
                # reader blocked on a reply is cancelled rather than handed BrokenResourceError.
                scope.cancel()

    def _count(self, connection: _Connection, stream: str | None) -> None:
        if stream is None:
            self.control_frames_sent += 1
        else:
            connection.frames_sent += 1
            self.frames_sent += 1
            by_stream = self.frames_sent_by_stream
            by_stream[stream] = by_stream.get(stream, 0) + 1

    async def _write_frames(
        self, connection: _Connection, receive_channel: trio.MemoryReceiveChannel[_Item]
    ) -> None:
        async for stream, data, text in receive_channel:
            await connection.ws.send_message(data.decode() if text else data)
            self._count(connection, stream)

    async def _write_batches(
        self,
        connection: _Connection,
        receive_channel: trio.MemoryReceiveChannel[_Item],
        lock: trio.Lock,
    ) -> None:
        # One send_all per burst instead of one per frame: a syscall (and a wake-up of the
        # reader) per frame caps trio-websocket's send_message near 10,000 frames/s.
        tcp = connection.tcp
        assert tcp is not None
        ws = connection.ws
        async for first in receive_channel:
            batch = [first]
            size = len(first[1])
            while size < _BATCH_BYTES:
                try:
                    item = receive_channel.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                batch.append(item)
                size += len(item[1])
            chunks: list[bytes] = []
            for _, data, text in batch:
                chunks.append(_frame_header(len(data), text))
                chunks.append(data)
            async with lock:
                if ws.closed is not None:
                    return  # a close frame went out (or came in): nothing may follow it
                try:
                    await tcp.send_all(b"".join(chunks))
                except _GONE:
                    return  # the reader task notices the dead stream too
            for stream, _, _ in batch:
                self._count(connection, stream)

    async def _read_loop(self, connection: _Connection, scope: trio.CancelScope) -> None:
        limit = self.settings.max_requests_per_s
        try:
            while True:
                message = await connection.ws.get_message()
                if limit is not None and self._too_many(connection, limit):
                    LOGGER.warning(
                        "connection %d sent more than %d messages in a second: closing",
                        connection.id,
                        limit,
                    )
                    # Shielded: the writer's ConnectionClosed cancels this task, and a TCP
                    # close before the client read our close frame would turn 1008 into 1006.
                    with trio.CancelScope(shield=True):
                        await self._close(connection, 1008, "Too many requests")
                    return
                reply = self._control(connection, message)
                await connection.send_channel.send((None, reply, True))
        except ConnectionClosed:
            pass
        finally:
            scope.cancel()

    @staticmethod
    def _too_many(connection: _Connection, limit: int) -> bool:
        now = trio.current_time()
        requests = connection.requests
        requests.append(now)
        while requests and requests[0] <= now - 1.0:
            requests.popleft()
        return len(requests) > limit

    async def _ping_loop(self, connection: _Connection, scope: trio.CancelScope) -> None:
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
                    await self._abort(connection)
                    return
        except ConnectionClosed:
            pass
        finally:
            scope.cancel()

    async def _close(self, connection: _Connection, code: int, reason: str) -> None:
        if code == ABRUPT_CLOSE:
            await self._abort(connection)
            return
        with trio.move_on_after(self.settings.close_timeout) as waiting:
            await connection.ws.aclose(code, reason or None)
        if waiting.cancelled_caught:
            await self._abort(connection)

    async def _abort(self, connection: _Connection) -> None:
        tcp = connection.tcp
        if tcp is None:
            # Not a TCP socket we could find (should not happen): close the WebSocket instead.
            LOGGER.warning("connection %d: no TCP stream to abort, closing", connection.id)
            with trio.move_on_after(self.settings.close_timeout):
                await connection.ws.aclose(1011, "abort")
            return
        with contextlib.suppress(OSError):
            # SO_LINGER 0: close() sends RST, like a crashed peer, with no close frame.
            tcp.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await tcp.aclose()

    # ------------------------------------------------------------------------ control plane

    def _control(self, connection: _Connection, message: str | bytes) -> bytes:
        """Apply one control request and return the reply frame (or Binance's error frame)."""
        if isinstance(message, bytes):
            try:
                message = message.decode()
            except UnicodeDecodeError:
                return error_frame(3, "Invalid JSON: invalid UTF-8")
        try:
            request = json.loads(message)
        except json.JSONDecodeError as error:
            text = error.msg[:1].lower() + error.msg[1:]
            return error_frame(
                3, f"Invalid JSON: {text} at line {error.lineno} column {error.colno}"
            )
        if not isinstance(request, dict):
            return error_frame(2, "Invalid request: expected a JSON object")
        request_id = request.get("id")
        if "id" not in request or not _valid_id(request_id):
            return error_frame(2, "Invalid request: request ID must be an unsigned integer")
        try:
            result = self._apply(connection, request)
        except InvalidRequest as invalid:
            return error_frame(invalid.code, invalid.msg, request_id)
        return _reply(result, request_id)

    def _apply(self, connection: _Connection, request: dict[str, Any]) -> Any:
        method = request.get("method")
        if method is None:
            raise InvalidRequest(2, "Invalid request: missing field `method`")
        if method not in METHODS:
            expected = ", ".join(f"`{name}`" for name in METHODS)
            raise InvalidRequest(
                2, f"Invalid request: unknown variant `{method}`, expected one of {expected}"
            )
        params = request.get("params", [])
        if not isinstance(params, list):
            raise InvalidRequest(2, "Invalid request: params must be an array")
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not all(isinstance(name, str) for name in params):
                raise InvalidRequest(2, "Invalid request: invalid stream")
            invalid = self._check_streams(params)
            if invalid is not None:
                raise InvalidRequest(2, "Invalid request: invalid stream")
            if method == "SUBSCRIBE":
                new = [name for name in dict.fromkeys(params) if name not in connection.streams]
                if len(connection.streams) + len(new) > self.settings.max_streams:
                    raise InvalidRequest(2, "Invalid request: too many streams")
                self._subscribe(connection, new)
            else:
                self._unsubscribe(connection, params)
            return None
        if method == "LIST_SUBSCRIPTIONS":
            if params:
                raise InvalidRequest(2, "Invalid request: too many parameters")
            return list(connection.streams)
        # SET_PROPERTY / GET_PROPERTY: "combined" is the only property.
        expected_params = 2 if method == "SET_PROPERTY" else 1
        if len(params) > expected_params:
            raise InvalidRequest(2, "Invalid request: too many parameters")
        if not params or not isinstance(params[0], str):
            raise InvalidRequest(2, "Invalid request: property name must be a string")
        if params[0] != "combined":
            raise InvalidRequest(0, "Unknown property")
        if method == "GET_PROPERTY":
            return connection.combined
        if len(params) < 2 or not isinstance(params[1], bool):
            raise InvalidRequest(1, "Invalid value type: expected Boolean")
        connection.combined = params[1]
        return None


def _valid_id(value: Any) -> bool:
    # Binance spot takes an unsigned integer, a string or null as the request id.
    if value is None or isinstance(value, str):
        return True
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**64


def _frame_header(length: int, text: bool) -> bytes:
    """RFC 6455 header of an unmasked, final server frame (text or binary) of ``length``."""
    first = 0x81 if text else 0x82
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)
