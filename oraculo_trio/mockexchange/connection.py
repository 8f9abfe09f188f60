"""One client of the mock exchange: its queue and writer, its subscriptions, its control
requests, and how it is closed or aborted.

Writes: each writer gathers what is queued (up to 256 KiB) and sends it with one ``send_all``,
framing the messages itself (RFC 6455 server frames are unmasked, and no extension is
negotiated). It takes trio-websocket's private ``_stream_lock`` (0.12.2) so its writes never
interleave with the library's pongs and close frames; when that lock or the TCP stream is not
available, or with ``batch_writes=False``, it falls back to ``send_message`` per frame.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import struct
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from ipaddress import ip_address
from typing import Any

import attrs
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from oraculo_trio.mockexchange.config import ExchangeSettings
from oraculo_trio.mockexchange.protocol import (
    METHODS,
    InvalidRequest,
    error_frame,
    frame_header,
    parse_stream_name,
    reply_frame,
    valid_id,
)

LOGGER = logging.getLogger("oraculo_trio.mockexchange.connection")

#: Abrupt close: no close frame, the TCP connection is reset.
ABRUPT_CLOSE = 1006

# What a memory channel raises once the connection on the other end is gone.
GONE = (trio.BrokenResourceError, trio.ClosedResourceError)

# An outgoing frame: (market stream name or None for control/raw frames, bytes, is text).
Item = tuple[str | None, bytes, bool]

# Most bytes one batched write gathers (frames are concatenated into one send_all).
_BATCH_BYTES = 256 * 1024


@attrs.define(eq=False)
class Connection:
    """A live client: what it subscribes to, its outgoing queue, and its counters."""

    id: int
    ws: WebSocketConnection
    path: str
    combined: bool
    send_channel: trio.MemorySendChannel[Item]
    tcp: trio.SocketStream | None
    settings: ExchangeSettings
    streams: dict[str, None] = attrs.Factory(dict)
    frames_sent: int = 0
    overflows: int = 0
    frames_dropped: int = 0
    frames_unwritten: int = 0
    requests: deque[float] = attrs.Factory(deque)

    def too_many(self, limit: int) -> bool:
        """Record a request now; whether more than ``limit`` came within the last second."""
        now = trio.current_time()
        requests = self.requests
        requests.append(now)
        while requests and requests[0] <= now - 1.0:
            requests.popleft()
        return len(requests) > limit

    async def write_loop(
        self,
        receive_channel: trio.MemoryReceiveChannel[Item],
        scope: trio.CancelScope,
        count: Callable[[Connection, str | None, bytes], None],
    ) -> None:
        """Write what is queued until the channel or the connection closes, then cancel
        ``scope`` (the connection's other tasks). ``count`` is told of every frame written
        (its stream and bytes).

        Cancellation: safe; the queued frames are lost with the connection, and the market
        frames among them counted (``frames_unwritten``).
        """
        # trio-websocket serialises its own writes (pongs, close frames) with this lock; the
        # batched path takes it too. Without it (or without the TCP stream) write one frame
        # at a time through the public API.
        lock = getattr(self.ws, "_stream_lock", None)
        batched = self.settings.batch_writes and self.tcp is not None and lock is not None
        async with receive_channel:
            try:
                if batched:
                    await self._write_batches(receive_channel, lock, count)
                else:
                    await self._write_frames(receive_channel, count)
            except ConnectionClosed:
                pass
            finally:
                # Cancel the connection's other tasks before the channel closes, so the
                # reader blocked on a reply is cancelled rather than handed BrokenResourceError.
                scope.cancel()
                self.frames_unwritten += _discard(receive_channel)

    async def _write_frames(
        self,
        receive_channel: trio.MemoryReceiveChannel[Item],
        count: Callable[[Connection, str | None, bytes], None],
    ) -> None:
        async for stream, data, text in receive_channel:
            await self.ws.send_message(data.decode() if text else data)
            count(self, stream, data)

    async def _write_batches(
        self,
        receive_channel: trio.MemoryReceiveChannel[Item],
        lock: trio.Lock,
        count: Callable[[Connection, str | None, bytes], None],
    ) -> None:
        # One send_all per burst instead of one per frame: a syscall (and a wake-up of the
        # reader) per frame caps trio-websocket's send_message near 10,000 frames/s.
        tcp = self.tcp
        assert tcp is not None
        ws = self.ws
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
                chunks.append(frame_header(len(data), text))
                chunks.append(data)
            async with lock:
                if ws.closed is not None:
                    return  # a close frame went out (or came in): nothing may follow it
                try:
                    await tcp.send_all(b"".join(chunks))
                except GONE:
                    return  # the reader task notices the dead stream too
            for stream, data, _ in batch:
                count(self, stream, data)

    async def close(self, code: int, reason: str) -> None:
        """Close with ``code`` (1006: abort), waiting up to ``close_timeout`` for the client.

        Cancellation: safe; the handler closes the connection when the exchange stops.
        """
        if code == ABRUPT_CLOSE:
            await self.abort()
            return
        with trio.move_on_after(self.settings.close_timeout) as waiting:
            await self.ws.aclose(code, reason or None)
        if waiting.cancelled_caught:
            await self.abort()

    async def abort(self) -> None:
        """Reset the TCP connection with no close frame, like a crashed peer."""
        tcp = self.tcp
        if tcp is None:
            # Not a TCP socket we could find (should not happen): close the WebSocket instead.
            LOGGER.warning("connection %d: no TCP stream to abort, closing", self.id)
            with trio.move_on_after(self.settings.close_timeout):
                await self.ws.aclose(1011, "abort")
            return
        with contextlib.suppress(OSError):
            # SO_LINGER 0: close() sends RST, like a crashed peer, with no close frame.
            tcp.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await tcp.aclose()


def _discard(receive_channel: trio.MemoryReceiveChannel[Item]) -> int:
    """Empty a closing connection's queue; how many market frames it held."""
    discarded = 0
    while True:
        try:
            stream, _, _ = receive_channel.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            return discarded
        discarded += stream is not None


@attrs.define(eq=False)
class Subscriptions:
    """Which live connections subscribe to each stream.

    Attributes:
        symbols: lower-case symbols the market publishes (with ``strict``, the only ones a
            stream may name).
        strict: refuse streams of other symbols.
        on_change: called after every change (wakes the exchange's waiters).
        by_stream: stream name -> its subscribers.
    """

    symbols: frozenset[str]
    strict: bool
    on_change: Callable[[], None]
    by_stream: dict[str, set[Connection]] = attrs.field(factory=dict)

    def invalid(self, names: Iterable[str]) -> str | None:
        """The first name that is not a stream this exchange serves, or None."""
        strict = self.strict and self.symbols
        for name in names:
            parsed = parse_stream_name(name)
            if parsed is None or (strict and parsed[0] not in self.symbols):
                return name
        return None

    def add(self, connection: Connection, streams: Iterable[str]) -> None:
        """Subscribe ``connection`` to ``streams`` (those it already has are kept)."""
        for stream in streams:
            if stream not in connection.streams:
                connection.streams[stream] = None
                self.by_stream.setdefault(stream, set()).add(connection)
        self.on_change()

    def remove(self, connection: Connection, streams: Iterable[str]) -> None:
        """Unsubscribe ``connection`` from ``streams`` (those it does not have are ignored)."""
        for stream in streams:
            if connection.streams.pop(stream, 0) is None:
                subscribers = self.by_stream.get(stream)
                if subscribers is not None:
                    subscribers.discard(connection)
                    if not subscribers:
                        del self.by_stream[stream]
        self.on_change()


class TrackingListener(trio.abc.Listener[trio.SocketStream]):
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
        """Accept the next connection and remember its stream."""
        stream = await self._inner.accept()
        with contextlib.suppress(OSError):
            host, port = stream.socket.getpeername()[:2]
            self._streams[(str(ip_address(host)), port)] = stream
        return stream

    async def aclose(self) -> None:
        """Close the wrapped listener."""
        await self._inner.aclose()


def control_reply(
    connection: Connection, subscriptions: Subscriptions, message: str | bytes
) -> bytes:
    """Apply one control request of ``connection`` and return the reply frame (or Binance's
    error frame)."""
    if isinstance(message, bytes):
        try:
            message = message.decode()
        except UnicodeDecodeError:
            return error_frame(3, "Invalid JSON: invalid UTF-8")
    try:
        request = json.loads(message)
    except json.JSONDecodeError as error:
        text = error.msg[:1].lower() + error.msg[1:]
        return error_frame(3, f"Invalid JSON: {text} at line {error.lineno} column {error.colno}")
    if not isinstance(request, dict):
        return error_frame(2, "Invalid request: expected a JSON object")
    request_id = request.get("id")
    if "id" not in request or not valid_id(request_id):
        return error_frame(2, "Invalid request: request ID must be an unsigned integer")
    try:
        result = _apply(connection, subscriptions, request)
    except InvalidRequest as invalid:
        return error_frame(invalid.code, invalid.msg, request_id)
    return reply_frame(result, request_id)


def _apply(connection: Connection, subscriptions: Subscriptions, request: dict[str, Any]) -> Any:
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
        if subscriptions.invalid(params) is not None:
            raise InvalidRequest(2, "Invalid request: invalid stream")
        if method == "SUBSCRIBE":
            new = [name for name in dict.fromkeys(params) if name not in connection.streams]
            if len(connection.streams) + len(new) > connection.settings.max_streams:
                raise InvalidRequest(2, "Invalid request: too many streams")
            subscriptions.add(connection, new)
        else:
            subscriptions.remove(connection, params)
        return None
    if method == "LIST_SUBSCRIPTIONS":
        if params:
            raise InvalidRequest(2, "Invalid request: too many parameters")
        return list(connection.streams)
    return _property(connection, method, params)


def _property(connection: Connection, method: str, params: list[Any]) -> Any:
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
