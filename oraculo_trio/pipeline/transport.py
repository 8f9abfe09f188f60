"""The WebSocket client seam.

The feed only needs "open a URL, get messages, close". Keeping that behind this small
module lets the transport stay a measured choice (``feed.client``; trio-websocket costs
~12-16 µs per frame against ~6 µs for wsproto driven directly on a trio stream).

Two clients behind ``open_feed_socket(client=...)``:

- ``"native"`` (``feed.client``'s default): :class:`NativeFeedSocket`, a small RFC 6455
  client for reading market data. It parses every complete frame of one socket read at once,
  in the feed's own task, and ``get_message`` returns buffered messages without a checkpoint:
  one Trio checkpoint per socket read (~70 depth20 frames of 64 KiB), or per 32 messages,
  instead of several per message.
  trio-websocket runs a reader task that parses with wsproto and hands each message over a
  channel (a checkpoint per message on each side), so the feed and the shard consumers
  ping-pong one message at a time. ``benchmarks/bench_service_instrument.py --client``
  measures the service's CPU per message with either.
- ``"trio-websocket"``: the library, kept for comparison.

Both raise :data:`ConnectionClosed` (``.reason.code``) when the connection ends.
"""

from __future__ import annotations

import array
import base64
import fcntl
import hashlib
import os
import ssl
import termios
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import trio
import trio_websocket

from oraculo_trio.errors import FeedError

# How far the client's reader task may read ahead of the feed loop, in messages.
MESSAGE_QUEUE_SIZE = 256

ConnectionClosed = trio_websocket.ConnectionClosed
"""Raised by ``get_message`` when the connection ends; ``.reason.code`` says why."""

CLOSE_TOO_LARGE = 1009


CLIENTS = ("native", "trio-websocket")


@asynccontextmanager
async def open_feed_socket(
    url: str,
    *,
    receive_buffer_size: int,
    max_message_size: int,
    connect_timeout: float = 10.0,
    client: str,
) -> AsyncIterator[NativeFeedSocket | LibraryFeedSocket]:
    """Open a WebSocket client connection to ``url``.

    Args:
        url: ``ws://`` or ``wss://`` URL.
        receive_buffer_size: bytes per socket read.
        max_message_size: a larger message closes the connection with 1009.
        connect_timeout: seconds for TCP, TLS and the opening handshake.
        client: one of :data:`CLIENTS`.

    Yields:
        A connection with ``await get_message()`` and ``await send_message(text)``.

    Raises:
        FeedError: the handshake was refused or timed out, or the host is unreachable.

    Cancellation: cancelling the enclosing scope closes the connection.
    """
    if client == "native":
        async with _open_native(
            url,
            receive_buffer_size=receive_buffer_size,
            max_message_size=max_message_size,
            connect_timeout=connect_timeout,
        ) as native:
            yield native
        return
    ssl_context = ssl.create_default_context() if url.startswith("wss://") else None
    try:
        async with trio_websocket.open_websocket_url(
            url,
            ssl_context,
            message_queue_size=MESSAGE_QUEUE_SIZE,
            max_message_size=max_message_size,
            receive_buffer_size=receive_buffer_size,
            connect_timeout=connect_timeout,
            disconnect_timeout=2.0,
        ) as connection:
            try:
                yield LibraryFeedSocket(connection)
            finally:
                # trio-websocket 0.12.2 never closes a client's TCP stream when the peer
                # closed (or aborted) first: aclose() returns early once a close reason is
                # set. Close it ourselves so no socket leaks across reconnects.
                await _close_quietly(connection)
    except (OSError, trio_websocket.HandshakeError, trio.TooSlowError) as exc:
        # Connection-level failures of the handshake or of the socket under the body.
        raise FeedError(f"WebSocket {url} failed: {exc!r}") from exc


class LibraryFeedSocket:
    """trio-websocket's connection with the native client's reading interface: one message
    per :meth:`receive_batch` (the library's reader task reads ahead by itself)."""

    buffered = 0
    read_was_full = False

    def __init__(self, connection: trio_websocket.WebSocketConnection) -> None:
        self._connection = connection

    async def get_message(self) -> bytes | str:
        return await self._connection.get_message()

    async def receive_batch(self, max_messages: int) -> list[bytes | str]:
        return [await self._connection.get_message()]

    async def send_message(self, message: str | bytes) -> None:
        await self._connection.send_message(message)


async def _close_quietly(connection: trio_websocket.WebSocketConnection) -> None:
    stream = getattr(connection, "_stream", None)
    if stream is not None and connection.closed is not None:
        with trio.CancelScope(shield=True):
            try:
                await stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass


# ------------------------------------------------------------------------------------------
# The native client

#: Most buffered messages ``get_message`` returns in a row before it checkpoints anyway.
CHECKPOINT_EVERY = 32

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_HANDSHAKE = 65536
_FIRST_READ = 65_536
"""Bytes asked for by a read-ahead's first read; later reads ask for what the kernel holds."""
_OP_CONTINUATION, _OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 0, 1, 2, 8, 9, 10
_CLOSE_NORMAL, _CLOSE_PROTOCOL, _CLOSE_ABNORMAL, _CLOSE_NO_STATUS = 1000, 1002, 1006, 1005
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class _ProtocolError(Exception):
    """A frame this client must refuse: close with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


def _client_frame(opcode: int, payload: bytes) -> bytes:
    """A final, masked client frame (RFC 6455 5.3); only control frames and small texts."""
    key = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = bytes((0x80 | opcode, 0x80 | length))
    elif length < 65536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + length.to_bytes(8, "big")
    masked = bytes(byte ^ key[index & 3] for index, byte in enumerate(payload))
    return header + key + masked


class NativeFeedSocket:
    """A WebSocket client connection that parses server frames inline (see the module doc).

    Server frames must be unmasked, without RSV bits (no extension is negotiated); text and
    binary messages come back as ``bytes`` (the decoder reads UTF-8 bytes directly). Pings
    are answered with pongs as they are parsed; a close frame is answered and ends the
    connection once the messages before it were read.

    Attributes:
        closed: the :class:`trio_websocket.CloseReason` once the connection ended, else None.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        receive_buffer_size: int,
        max_message_size: int,
        buffered: bytes = b"",
    ) -> None:
        self._stream = stream
        self._receive_size = receive_buffer_size
        self._max_message = max_message_size
        self._buffer = bytearray(buffered)
        self._handshake_leftover = bool(buffered)
        self._messages: deque[bytes] = deque()
        self._fragments: list[bytes] | None = None
        self._fragments_size = 0
        self._outgoing: list[bytes] = []
        self._send_lock = trio.Lock()
        self._close_sent = False
        self._unyielded = 0
        self.closed: trio_websocket.CloseReason | None = None
        self.read_was_full = False
        """Whether the last socket read filled ``receive_buffer_size``: the kernel held at
        least that much, so the service is behind its feed."""
        self._fd = _socket_fd(stream)

    async def get_message(self) -> bytes:
        """The next message; reads the socket only when none is buffered.

        Raises:
            ConnectionClosed: the connection ended (after every message before the end).

        Cancellation: safe between reads; a message is never half taken.
        """
        messages = self._messages
        if messages:
            # Buffered messages come without a trip through the scheduler, but never more
            # than CHECKPOINT_EVERY in a row: the feed's step stays short (other tasks, the
            # consumers first, run at least that often).
            self._unyielded += 1
            if self._unyielded >= CHECKPOINT_EVERY:
                self._unyielded = 0
                await trio.lowlevel.checkpoint()
            if messages:
                return messages.popleft()
        await self._read_until_message()
        return messages.popleft()

    async def receive_batch(self, max_messages: int) -> list[bytes]:
        """The messages already read, at most ``max_messages``; when none is left, one socket
        read first, of as much as the socket holds (up to ``receive_buffer_size`` bytes).

        This is the read-ahead: whatever the exchange sent while the service was busy moves
        from the kernel into the service in one read, where the overload policy applies to
        it. Exactly one checkpoint per call, so the feed's step ends after each batch.

        Raises:
            ConnectionClosed: the connection ended (after every message before the end).

        Cancellation: safe; a message is never half taken.
        """
        messages = self._messages
        if messages:
            await trio.lowlevel.checkpoint()
        else:
            await self._read_until_message()
        if len(messages) <= max_messages:
            batch = list(messages)
            messages.clear()
            return batch
        return [messages.popleft() for _ in range(max_messages)]

    async def _read_until_message(self) -> None:
        messages = self._messages
        while not messages:
            if self.closed is not None:
                raise ConnectionClosed(self.closed)
            if self._handshake_leftover:
                # Frames that came with the handshake response: parse them before reading.
                self._handshake_leftover = False
            else:
                self._unyielded = 0
                try:
                    data = await self._read_ahead()
                except _GONE as exc:
                    self._ended(_CLOSE_ABNORMAL, f"read failed: {exc!r}")
                    continue
                if not data:
                    self._ended(_CLOSE_ABNORMAL, "the peer closed the TCP connection")
                    continue
                self._buffer += data
            try:
                self._parse()
            except _ProtocolError as error:
                await self._fail(error.code, error.reason)
            if self._outgoing:
                await self._flush()

    async def _read_ahead(self) -> bytes:
        """What the socket holds, up to ``receive_buffer_size`` bytes: one read of a plain
        TCP stream takes it all; a TLS stream gives one record (16 KiB) per read, so reads
        go on while the kernel holds more. Empty bytes: the peer closed.

        Sets :attr:`read_was_full` when the read-ahead filled: the kernel held at least
        ``receive_buffer_size`` bytes.
        """
        wanted = self._receive_size
        # Each read asks for what the kernel holds, not for the whole read-ahead: a read
        # allocates the size it asks for (a 4 MiB read costs ~60 µs before any byte is
        # copied), which at a few reads per burst was most of the service's idle cost.
        data = await self._stream.receive_some(min(wanted, _FIRST_READ))
        if len(data) >= wanted or not data:
            self.read_was_full = bool(data)
            return data
        parts = [data]
        size = len(data)
        while size < wanted and (holds := self._kernel_holds()) > 0:
            more = await self._stream.receive_some(min(wanted - size, max(holds, _FIRST_READ)))
            if not more:
                break
            parts.append(more)
            size += len(more)
        self.read_was_full = size >= wanted
        return b"".join(parts) if len(parts) > 1 else data

    def _kernel_holds(self) -> int:
        """Bytes waiting in the kernel's receive buffer (FIONREAD); 0 when unknown."""
        if self._fd is None:
            return 0
        count = array.array("i", [0])
        try:
            fcntl.ioctl(self._fd, termios.FIONREAD, count, True)
        except OSError:
            return 0
        return count[0]

    @property
    def buffered(self) -> int:
        """Messages read from the socket and not yet taken (part of the read-ahead)."""
        return len(self._messages)

    async def send_message(self, message: str | bytes) -> None:
        """Send a text message (a control request to the exchange).

        Raises:
            ConnectionClosed: the connection has ended.
        """
        if self.closed is not None:
            raise ConnectionClosed(self.closed)
        payload = message.encode() if isinstance(message, str) else message
        self._outgoing.append(_client_frame(_OP_TEXT, payload))
        await self._flush()

    async def aclose(self, code: int = _CLOSE_NORMAL, reason: str = "") -> None:
        """Send a close frame (best effort, one second at most) and close the TCP stream.

        Cancellation: shielded; always closes the stream.
        """
        with trio.CancelScope(shield=True):
            if not self._close_sent and self.closed is None:
                self._queue_close(code, reason)
                with trio.move_on_after(1.0):
                    await self._flush()
            if self.closed is None:
                self.closed = trio_websocket.CloseReason(code, reason or None)
            try:
                await self._stream.aclose()
            except _GONE:
                pass

    def _ended(self, code: int, reason: str) -> None:
        if self.closed is None:
            self.closed = trio_websocket.CloseReason(code, reason)

    def _queue_close(self, code: int, reason: str) -> None:
        self._close_sent = True
        payload = code.to_bytes(2, "big") + reason.encode()[:120]
        self._outgoing.append(_client_frame(_OP_CLOSE, payload))

    async def _fail(self, code: int, reason: str) -> None:
        # Messages parsed before the bad frame are still delivered, then ConnectionClosed.
        self._queue_close(code, reason)
        with trio.move_on_after(1.0):
            await self._flush()
        self._ended(code, reason)

    async def _flush(self) -> None:
        async with self._send_lock:
            outgoing, self._outgoing = self._outgoing, []
            if outgoing:
                try:
                    await self._stream.send_all(b"".join(outgoing))
                except _GONE as exc:
                    self._ended(_CLOSE_ABNORMAL, f"write failed: {exc!r}")

    def _parse(self) -> None:
        """Take every complete frame out of the buffer (messages, pongs to send, a close)."""
        buffer = self._buffer
        size = len(buffer)
        position = 0
        limit = self._max_message
        messages = self._messages
        while size - position >= 2 and self.closed is None:
            first = buffer[position]
            second = buffer[position + 1]
            length = second & 0x7F
            header = 2
            if length == 126:
                if size - position < 4:
                    break
                length = int.from_bytes(buffer[position + 2 : position + 4], "big")
                header = 4
            elif length == 127:
                if size - position < 10:
                    break
                length = int.from_bytes(buffer[position + 2 : position + 10], "big")
                header = 10
            if second & 0x80:
                raise _ProtocolError(_CLOSE_PROTOCOL, "masked frame from the server")
            if first & 0x70:
                raise _ProtocolError(_CLOSE_PROTOCOL, "RSV bits set (no extension agreed)")
            opcode = first & 0x0F
            if length > limit and opcode < _OP_CLOSE:
                raise _ProtocolError(CLOSE_TOO_LARGE, f"message of {length} bytes > {limit}")
            end = position + header + length
            if end > size:
                break
            payload = bytes(buffer[position + header : end])
            position = end
            if opcode in (_OP_TEXT, _OP_BINARY):
                if self._fragments is not None:
                    raise _ProtocolError(_CLOSE_PROTOCOL, "new message inside a fragmented one")
                if first & 0x80:
                    messages.append(payload)
                else:
                    self._fragments = [payload]
                    self._fragments_size = length
            elif opcode == _OP_CONTINUATION:
                if self._fragments is None:
                    raise _ProtocolError(_CLOSE_PROTOCOL, "continuation without a message")
                self._fragments.append(payload)
                self._fragments_size += length
                if self._fragments_size > limit:
                    raise _ProtocolError(CLOSE_TOO_LARGE, f"message larger than {limit} bytes")
                if first & 0x80:
                    messages.append(b"".join(self._fragments))
                    self._fragments = None
            elif opcode >= _OP_CLOSE:
                if not first & 0x80 or length > 125:
                    raise _ProtocolError(_CLOSE_PROTOCOL, "fragmented or long control frame")
                if opcode == _OP_PING:
                    self._outgoing.append(_client_frame(_OP_PONG, payload))
                elif opcode == _OP_CLOSE:
                    code = int.from_bytes(payload[:2], "big") if length >= 2 else _CLOSE_NO_STATUS
                    if not self._close_sent:
                        self._queue_close(code if length >= 2 else _CLOSE_NORMAL, "")
                    self._ended(code, payload[2:].decode("utf-8", "replace"))
                elif opcode != _OP_PONG:
                    raise _ProtocolError(_CLOSE_PROTOCOL, f"unknown opcode {opcode}")
            else:
                raise _ProtocolError(_CLOSE_PROTOCOL, f"unknown opcode {opcode}")
        del buffer[:position]


def _socket_fd(stream: trio.abc.Stream) -> int | None:
    """The TCP socket's file descriptor under ``stream`` (plain or TLS), to ask the kernel
    how much it holds; None for any other stream (tests' in-memory streams)."""
    transport = getattr(stream, "transport_stream", stream)
    socket = getattr(transport, "socket", None)
    try:
        return socket.fileno() if socket is not None else None
    except OSError:
        return None


async def _handshake(stream: trio.abc.Stream, host: str, resource: str) -> tuple[bytes, str]:
    """Send the opening handshake; return the bytes after the response and the status line.

    Raises:
        FeedError: the server refused (not 101), answered nonsense, or closed.
    """
    key = base64.b64encode(os.urandom(16))
    await stream.send_all(
        b"GET " + resource.encode() + b" HTTP/1.1\r\nHost: " + host.encode()
        + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key
        + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )  # fmt: skip
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = await stream.receive_some(_MAX_HANDSHAKE)
        if not chunk:
            raise FeedError("the server closed the connection during the handshake")
        response += chunk
        if len(response) > _MAX_HANDSHAKE:
            raise FeedError("handshake response too long")
    head, _, rest = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or parts[1] != "101":
        raise FeedError(f"handshake refused: {lines[0]!r} {rest[:200]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode()
    if headers.get("sec-websocket-accept") != accept:
        raise FeedError("handshake: wrong Sec-WebSocket-Accept")
    if headers.get("sec-websocket-extensions"):
        raise FeedError(f"handshake: unexpected extensions {headers['sec-websocket-extensions']}")
    return rest, lines[0]


@asynccontextmanager
async def _open_native(
    url: str, *, receive_buffer_size: int, max_message_size: int, connect_timeout: float
) -> AsyncIterator[NativeFeedSocket]:
    parts = urlsplit(url)
    secure = parts.scheme == "wss"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = host if parts.port is None else f"{host}:{port}"
    stream: trio.abc.Stream | None = None
    try:
        with trio.fail_after(connect_timeout):
            if secure:
                stream = await trio.open_ssl_over_tcp_stream(
                    host, port, ssl_context=ssl.create_default_context(), https_compatible=True
                )
            else:
                stream = await trio.open_tcp_stream(host, port)
            buffered, _ = await _handshake(stream, host_header, resource)
    except (OSError, trio.TooSlowError, trio.BrokenResourceError, FeedError) as exc:
        if stream is not None:
            with trio.CancelScope(shield=True):
                try:
                    await stream.aclose()
                except _GONE:
                    pass
        if isinstance(exc, FeedError):
            raise FeedError(f"WebSocket {url} failed: {exc}") from None
        raise FeedError(f"WebSocket {url} failed: {exc!r}") from exc
    connection = NativeFeedSocket(
        stream,
        receive_buffer_size=receive_buffer_size,
        max_message_size=max_message_size,
        buffered=buffered,
    )
    try:
        yield connection
    finally:
        await connection.aclose()
