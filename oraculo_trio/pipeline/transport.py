"""The WebSocket client seam.

The feed only needs "open a URL, get messages, close". Keeping that behind this small
module lets the transport stay a measured choice (DESIGN.md: trio-websocket costs ~12-16 µs
per frame against ~6 µs for wsproto driven directly on a trio stream).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio_websocket

from oraculo_trio.errors import FeedError

# How far the client's reader task may read ahead of the feed loop, in messages.
MESSAGE_QUEUE_SIZE = 256

ConnectionClosed = trio_websocket.ConnectionClosed
"""Raised by ``get_message`` when the connection ends; ``.reason.code`` says why."""

CLOSE_TOO_LARGE = 1009


@asynccontextmanager
async def open_feed_socket(
    url: str,
    *,
    receive_buffer_size: int,
    max_message_size: int,
    connect_timeout: float = 10.0,
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """Open a WebSocket client connection to ``url``.

    Yields:
        A connection with ``await get_message()`` and ``await send_message(text)``.

    Raises:
        FeedError: the handshake was refused or timed out, or the host is unreachable.

    Cancellation: cancelling the enclosing scope closes the connection.
    """
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
                yield connection
            finally:
                # trio-websocket 0.12.2 never closes a client's TCP stream when the peer
                # closed (or aborted) first: aclose() returns early once a close reason is
                # set. Close it ourselves so no socket leaks across reconnects.
                await _close_quietly(connection)
    except (OSError, trio_websocket.HandshakeError, trio.TooSlowError) as exc:
        # Connection-level failures of the handshake or of the socket under the body.
        raise FeedError(f"WebSocket {url} failed: {exc!r}") from exc


async def _close_quietly(connection: trio_websocket.WebSocketConnection) -> None:
    stream = getattr(connection, "_stream", None)
    if stream is not None and connection.closed is not None:
        with trio.CancelScope(shield=True):
            try:
                await stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
