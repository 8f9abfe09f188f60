"""The native WebSocket client of pipeline/transport.py, over real sockets on 127.0.0.1:
against the mock exchange, and against a hand-made server for what no exchange sends."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from collections.abc import Awaitable, Callable

import pytest
import trio

from oraculo_trio.errors import FeedError
from oraculo_trio.mockexchange import ExchangeSettings, MockExchange, trade_payload
from oraculo_trio.pipeline.transport import (
    CHECKPOINT_EVERY,
    CLOSE_TOO_LARGE,
    ConnectionClosed,
    open_feed_socket,
)
from tests.pipeline.helpers import ManualMarket

OPTIONS = {"receive_buffer_size": 65536, "max_message_size": 4096}
NATIVE = {**OPTIONS, "client": "native"}


def trade(trade_id: int) -> tuple[str, dict]:
    return "btcusdt@trade", trade_payload("BTCUSDT", trade_id, "1.0", "1.0", 1, False)


async def start_exchange(
    nursery: trio.Nursery, **settings: object
) -> tuple[MockExchange, ManualMarket]:
    market = ManualMarket(["BTCUSDT"])
    options = {"tick": 0.01, "ping_interval": None, "max_requests_per_s": None, **settings}
    exchange = await nursery.start(MockExchange(market, ExchangeSettings(**options)).serve)
    return exchange, market


async def test_messages_in_order_and_few_trips_through_the_scheduler() -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            exchange, market = await start_exchange(nursery)
            url = exchange.stream_url(["btcusdt@trade"])
            async with open_feed_socket(url, **NATIVE) as socket:
                await exchange.wait_for_subscribers("btcusdt@trade")
                market.push([trade(i) for i in range(200)])
                ids = [json.loads(await socket.get_message())["data"]["t"]]
                nursery.start_soon(ticker)
                while len(ids) < 200:
                    ids.append(json.loads(await socket.get_message())["data"]["t"])
                assert ids == list(range(200))
                # One checkpoint per socket read or per CHECKPOINT_EVERY messages, not one
                # (or more) per message: the other task ran a handful of times.
                assert ticks <= 200 // CHECKPOINT_EVERY + 10
            nursery.cancel_scope.cancel()


async def test_pings_are_answered_and_control_requests_sent() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            exchange, _ = await start_exchange(nursery, ping_interval=0.02, pong_timeout=1.0)
            async with open_feed_socket(exchange.raw_url(), **NATIVE) as socket:
                await socket.send_message(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 7}))
                reply = json.loads(await socket.get_message())
                assert reply == {"result": [], "id": 7}
                with trio.move_on_after(0.3):
                    while True:  # reading is what answers the pings
                        await socket.get_message()
                assert exchange.pongs_received >= 3
                assert exchange.pong_timeouts == 0
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(("code", "expected"), [(1001, 1001), (1006, 1006)])
async def test_the_server_ending_the_connection(code: int, expected: int) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            exchange, market = await start_exchange(nursery)
            url = exchange.stream_url(["btcusdt@trade"])
            async with open_feed_socket(url, **NATIVE) as socket:
                await exchange.wait_for_subscribers("btcusdt@trade")
                market.push([trade(1)])
                await socket.get_message()
                # In the background: a clean close waits for our reply, which reading sends.
                nursery.start_soon(exchange.drop_connections, code, "going away")
                with pytest.raises(ConnectionClosed) as closed:
                    await socket.get_message()
                assert closed.value.reason.code == expected
            nursery.cancel_scope.cancel()


async def test_a_refused_handshake_is_a_feed_error() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            exchange, _ = await start_exchange(nursery)
            with pytest.raises(FeedError, match="404"):
                async with open_feed_socket(exchange.ws_url + "/nowhere", **NATIVE):
                    pass
            exchange.refuse_connections()
            with pytest.raises(FeedError, match="503"):
                async with open_feed_socket(exchange.raw_url(), **NATIVE):
                    pass
            nursery.cancel_scope.cancel()


def frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = False) -> bytes:
    first = (0x80 if fin else 0) | opcode
    length = len(payload)
    if length < 126:
        header = bytes((first, (0x80 if masked else 0) | length))
    else:
        header = bytes((first, (0x80 if masked else 0) | 126)) + length.to_bytes(2, "big")
    return header + (b"\0\0\0\0" if masked else b"") + payload


Script = Callable[[trio.SocketStream], Awaitable[None]]


async def serve_script(
    nursery: trio.Nursery, script: Script, received: list[bytes], *, with_response: bool = False
) -> str:
    """A server that completes the handshake, runs ``script``, then records what it reads.

    ``with_response``: ``script`` writes into the same segment as the handshake response (a
    server may send its first frames right behind the 101).
    """

    async def handler(stream: trio.SocketStream) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += await stream.receive_some(4096)
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key")
        )
        accept = base64.b64encode(
            hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
        )
        response = (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        if with_response:
            await script(_Prefixed(stream, response))
        else:
            await stream.send_all(response)
            await script(stream)
        while True:
            data = await stream.receive_some(4096)
            if not data:
                return
            received.append(data)

    listeners = await nursery.start(functools.partial(trio.serve_tcp, host="127.0.0.1"), handler, 0)
    port = listeners[0].socket.getsockname()[1]
    return f"ws://127.0.0.1:{port}/ws"


async def test_fragments_are_joined_and_a_too_large_message_closes_with_1009() -> None:
    async def script(stream: trio.SocketStream) -> None:
        await stream.send_all(
            frame(1, b'{"a":', fin=False) + frame(9, b"hi") + frame(0, b"1}")
            + frame(2, b"x" * 5000)
        )  # fmt: skip

    received: list[bytes] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            url = await serve_script(nursery, script, received)
            async with open_feed_socket(url, **NATIVE) as socket:
                assert await socket.get_message() == b'{"a":1}'
                with pytest.raises(ConnectionClosed) as closed:
                    await socket.get_message()
                assert closed.value.reason.code == CLOSE_TOO_LARGE
            nursery.cancel_scope.cancel()
    sent = b"".join(received)
    # A pong for the ping (masked: 0x8A, 0x82), then the close frame with 1009.
    assert sent[:2] == bytes((0x8A, 0x82))
    close = sent[8:]
    assert close[0] == 0x88
    key, payload = close[2:6], close[6:8]
    assert bytes(b ^ key[i] for i, b in enumerate(payload)) == CLOSE_TOO_LARGE.to_bytes(2, "big")


class _Prefixed:
    """Sends ``prefix`` in front of the first write (one segment with the handshake)."""

    def __init__(self, stream: trio.SocketStream, prefix: bytes) -> None:
        self._stream = stream
        self._prefix = prefix

    async def send_all(self, data: bytes) -> None:
        data, self._prefix = self._prefix + data, b""
        await self._stream.send_all(data)


@pytest.mark.parametrize("with_response", [False, True])
async def test_a_masked_server_frame_is_a_protocol_error(with_response: bool) -> None:
    async def script(stream: trio.SocketStream) -> None:
        await stream.send_all(frame(1, b"{}", masked=True))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            url = await serve_script(nursery, script, [], with_response=with_response)
            async with open_feed_socket(url, **NATIVE) as socket:
                with pytest.raises(ConnectionClosed) as closed:
                    await socket.get_message()
                assert closed.value.reason.code == 1002
            nursery.cancel_scope.cancel()


async def test_trio_websocket_stays_available() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            exchange, market = await start_exchange(nursery)
            url = exchange.stream_url(["btcusdt@trade"])
            async with open_feed_socket(url, client="trio-websocket", **OPTIONS) as socket:
                await exchange.wait_for_subscribers("btcusdt@trade")
                market.push([trade(5)])
                assert json.loads(await socket.get_message())["data"]["t"] == 5
            nursery.cancel_scope.cancel()
