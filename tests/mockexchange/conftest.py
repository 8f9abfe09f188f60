"""Fixtures for the mock exchange tests: a client that owns its TCP stream, recorded data."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import trio
from trio_websocket import ConnectionRejected, WebSocketConnection, wrap_client_stream

from tests.data import BINANCE_DATA

#: Recorded Binance frames shipped with the tests (see its README.md).
DATA_DIR = BINANCE_DATA

Connect = Callable[..., AbstractAsyncContextManager[WebSocketConnection]]


@asynccontextmanager
async def _connect(
    nursery: trio.Nursery, url: str, *, message_queue_size: int = 1
) -> AsyncIterator[WebSocketConnection]:
    # trio-websocket 0.12.2's client never closes its socket when the SERVER closes first
    # (clean close or reset): aclose() returns early once a close reason is set, and the
    # socket is only closed by the garbage collector, with a ResourceWarning that our
    # warnings-as-errors turn into a failure. So the test client owns the TCP stream.
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    resource = parts.path + (f"?{parts.query}" if parts.query else "")
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    try:
        ws = await wrap_client_stream(
            nursery,
            stream,
            f"{parts.hostname}:{parts.port}",
            resource,
            message_queue_size=message_queue_size,
        )
        try:
            yield ws
        finally:
            with trio.move_on_after(2):
                await ws.aclose()
    finally:
        await stream.aclose()


async def _rejection(url: str) -> ConnectionRejected | None:
    # Same socket ownership as _connect (a rejected trio-websocket client leaks its socket too).
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    resource = parts.path + (f"?{parts.query}" if parts.query else "")
    rejected: ConnectionRejected | None = None
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    try:
        try:
            async with trio.open_nursery() as nursery:
                ws = await wrap_client_stream(
                    nursery, stream, f"{parts.hostname}:{parts.port}", resource
                )
                await ws.aclose()
        except* ConnectionRejected as group:
            rejected = group.exceptions[0]  # type: ignore[assignment]
    finally:
        await stream.aclose()
    return rejected


@pytest.fixture
def handshake_rejection() -> Callable[[str], Awaitable[ConnectionRejected | None]]:
    """``await handshake_rejection(url)``: the ``ConnectionRejected`` a trio-websocket client
    gets for ``url``, or ``None`` when the handshake was accepted."""
    return _rejection


@pytest.fixture
def connect() -> Connect:
    """``async with connect(nursery, url) as ws``: a WebSocket client whose reader task runs in
    ``nursery`` and whose socket is always closed on exit."""
    return _connect


@pytest.fixture
def binance_data() -> Path:
    """The recorded Binance frames directory (skips when it is not on this machine)."""
    return DATA_DIR
