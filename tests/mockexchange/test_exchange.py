"""The mock exchange over real sockets: paths, control protocol, faults, policies."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from trio_websocket import CloseReason, ConnectionClosed

from oraculo_trio.mockexchange import (
    ExchangeSettings,
    MockExchange,
    RandomWalkMarket,
    ScriptedMarket,
    parse_path,
    parse_stream_name,
    synthetic_symbols,
)

# Fast ticks keep the tests short; no request limit unless a test is about it.
FAST = ExchangeSettings(tick=0.02, max_requests_per_s=None)


async def start(
    nursery: trio.Nursery, market: Any = None, settings: ExchangeSettings = FAST
) -> MockExchange:
    exchange = MockExchange(market if market is not None else ScriptedMarket(), settings)
    return await nursery.start(exchange.serve)


async def reply(ws: Any) -> str:
    """The next control reply or error frame (a top-level "id"), skipping market frames."""
    while True:
        message = await ws.get_message()
        decoded = json.loads(message)
        if isinstance(decoded, dict) and "id" in decoded:
            return message


async def close_reason(ws: Any) -> CloseReason:
    """Read until the connection closes; return how it closed."""
    while True:
        try:
            await ws.get_message()
        except ConnectionClosed as closed:
            return closed.reason


async def request(ws: Any, payload: Any) -> str:
    await ws.send_message(payload if isinstance(payload, str) else json.dumps(payload))
    return await reply(ws)


async def test_combined_stream_envelope(connect) -> None:
    streams = {"btcusdt@trade", "ethusdt@depth20@100ms"}
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            exchange = await start(nursery)
            async with connect(nursery, exchange.stream_url(sorted(streams))) as ws:
                seen = set()
                for _ in range(6):
                    message = await ws.get_message()
                    assert isinstance(message, str)  # text frames
                    frame = json.loads(message)
                    assert list(frame) == ["stream", "data"]
                    assert message.startswith('{"stream":"' + frame["stream"] + '","data":{')
                    seen.add(frame["stream"])
                assert seen == streams
            nursery.cancel_scope.cancel()


async def test_raw_stream_has_no_envelope(connect) -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            exchange = await start(nursery)
            async with connect(nursery, exchange.raw_url("btcusdt@bookTicker")) as ws:
                for _ in range(3):
                    payload = json.loads(await ws.get_message())
                    assert list(payload) == ["u", "s", "b", "B", "a", "A"]
                    assert payload["s"] == "BTCUSDT"
            nursery.cancel_scope.cancel()


async def test_subscribe_list_unsubscribe_replies_like_binance(connect) -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            exchange = await start(nursery)
            async with connect(nursery, exchange.raw_url()) as ws:
                assert await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 3}) == (
                    '{"result":[],"id":3}'
                )
                subscribe = {"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade"], "id": 1}
                assert await request(ws, subscribe) == '{"result":null,"id":1}'
                assert exchange.subscribers("btcusdt@aggTrade") == 1
                payload = json.loads(await ws.get_message())
                assert payload["e"] == "aggTrade"  # raw: /ws has no envelope
                assert await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 3}) == (
                    '{"result":["btcusdt@aggTrade"],"id":3}'
                )
                unsubscribe = {"method": "UNSUBSCRIBE", "params": ["btcusdt@aggTrade"], "id": 312}
                assert await request(ws, unsubscribe) == '{"result":null,"id":312}'
                assert exchange.subscribers("btcusdt@aggTrade") == 0
                assert await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 4}) == (
                    '{"result":[],"id":4}'
                )
            nursery.cancel_scope.cancel()


async def test_combined_property(connect) -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            exchange = await start(nursery)
            async with connect(nursery, exchange.raw_url("btcusdt@trade")) as ws:
                get = {"method": "GET_PROPERTY", "params": ["combined"], "id": 2}
                assert await request(ws, get) == '{"result":false,"id":2}'
                set_ = {"method": "SET_PROPERTY", "params": ["combined", True], "id": 5}
                assert await request(ws, set_) == '{"result":null,"id":5}'
                assert await request(ws, get) == '{"result":true,"id":2}'
                assert json.loads(await ws.get_message())["stream"] == "btcusdt@trade"
            nursery.cancel_scope.cancel()


INVALID_REQUESTS = [
    (
        "{not json",
        3,
        "Invalid JSON: expecting property name enclosed in double quotes at line 1 column 2",
        None,
    ),
    ({"params": [], "id": 7}, 2, "Invalid request: missing field `method`", 7),
    (
        {"method": "SUBSCRIBED", "params": [], "id": 8},
        2,
        "Invalid request: unknown variant `SUBSCRIBED`, expected one of `SUBSCRIBE`, "
        "`UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`",
        8,
    ),
    (
        {"method": "SUBSCRIBE", "params": []},
        2,
        "Invalid request: request ID must be an unsigned integer",
        None,
    ),
    (
        {"method": "SUBSCRIBE", "params": [], "id": -1},
        2,
        "Invalid request: request ID must be an unsigned integer",
        None,
    ),
    (
        {"method": "SUBSCRIBE", "params": [], "id": True},
        2,
        "Invalid request: request ID must be an unsigned integer",
        None,
    ),
    (
        {"method": "LIST_SUBSCRIPTIONS", "params": ["x"], "id": 9},
        2,
        "Invalid request: too many parameters",
        9,
    ),
    (
        {"method": "SET_PROPERTY", "params": ["combined", 1], "id": 10},
        1,
        "Invalid value type: expected Boolean",
        10,
    ),
    (
        {"method": "SET_PROPERTY", "params": ["compressed", True], "id": 11},
        0,
        "Unknown property",
        11,
    ),
    (
        {"method": "GET_PROPERTY", "params": [1], "id": 12},
        2,
        "Invalid request: property name must be a string",
        12,
    ),
    (
        {"method": "SUBSCRIBE", "params": ["btcusdt@kline_1m"], "id": 2},
        2,
        "Invalid request: invalid stream",
        2,
    ),
]


async def test_invalid_requests_get_binance_error_frames(connect) -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            exchange = await start(nursery)
            async with connect(nursery, exchange.raw_url()) as ws:
                for payload, code, msg, request_id in INVALID_REQUESTS:
                    answer = await request(ws, payload)
                    assert json.loads(answer) == {
                        "error": {"code": code, "msg": msg},
                        "id": request_id,
                    }, payload
                    assert answer.startswith('{"error":{"code":')
                # control_and_errors.jsonl, line 2, byte for byte
                subscribe = {"method": "SUBSCRIBE", "params": ["btcusdt@kline_1m"], "id": 2}
                assert await request(ws, subscribe) == (
                    '{"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":2}'
                )
            nursery.cancel_scope.cancel()


async def test_unknown_stream_subscription_is_refused_whole(connect) -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            exchange = await start(nursery)
            async with connect(nursery, exchange.raw_url()) as ws:
                subscribe = {
                    "method": "SUBSCRIBE",
                    "params": ["btcusdt@trade", "dogeusdt@trade"],  # not a market symbol
                    "id": 4,
                }
                answer = json.loads(await request(ws, subscribe))
                assert answer == {
                    "error": {"code": 2, "msg": "Invalid request: invalid stream"},
                    "id": 4,
                }
                assert await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 5}) == (
                    '{"result":[],"id":5}'
                )
            nursery.cancel_scope.cancel()


async def test_diff_depth_names_are_subscribable(connect) -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            exchange = await start(nursery)
            streams = ["btcusdt@depth@100ms", "btcusdt@depth", "btcusdt@depth5"]
            async with connect(nursery, exchange.raw_url()) as ws:
                subscribe = {"method": "SUBSCRIBE", "params": streams, "id": 1}
                assert await request(ws, subscribe) == '{"result":null,"id":1}'
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("path", "status"),
    [("/ws/btcusdt@nonsense", 400), ("/stream?streams=dogeusdt@trade", 400), ("/api/v3", 404)],
)
async def test_bad_urls_are_rejected(handshake_rejection, path: str, status: int) -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            exchange = await start(nursery)
            rejected = await handshake_rejection(exchange.ws_url + path)
            assert rejected is not None
            assert rejected.status_code == status
            assert exchange.connections_refused == 1
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(("code", "reason"), [(1006, None), (1001, "going away")])
async def test_drop_connections(connect, code: int, reason: str | None) -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            exchange = await start(nursery)
            async with connect(nursery, exchange.raw_url("btcusdt@trade")) as ws:
                await ws.get_message()
                assert await exchange.drop_connections(code, reason or "") == 1
                closed = await close_reason(ws)
                assert closed.code == code
                assert closed.reason == reason
            # Dropped connections stop counting as live at once: a reconnect is waited for.
            async with connect(nursery, exchange.raw_url("btcusdt@trade")):
                await exchange.wait_for_connections(1)
                assert exchange.connections_accepted == 2
            nursery.cancel_scope.cancel()


async def test_send_raw_reaches_every_connection_in_order(connect) -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            exchange = await start(nursery)
            async with (
                connect(nursery, exchange.raw_url()) as first,
                connect(nursery, exchange.stream_url([])) as second,
            ):
                await exchange.wait_for_connections(2)
                assert await exchange.send_raw('{"stream":"btcusdt@trade","data":') == 2
                assert await exchange.send_raw(b"\x00\xff binary") == 2
                for ws in (first, second):
                    assert await ws.get_message() == '{"stream":"btcusdt@trade","data":'
                    assert await ws.get_message() == b"\x00\xff binary"
                assert exchange.frames_sent == 0
                assert exchange.control_frames_sent == 4
            nursery.cancel_scope.cancel()


async def test_server_shutdown_event(connect) -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            exchange = await start(nursery)
            async with (
                connect(nursery, exchange.raw_url()) as raw,
                connect(nursery, exchange.stream_url([])) as combined,
            ):
                await exchange.wait_for_connections(2)
                assert await exchange.server_shutdown() == 2
                event = json.loads(await raw.get_message())
                assert list(event) == ["e", "E"]
                assert event["e"] == "serverShutdown"
                assert isinstance(event["E"], int)
                assert json.loads(await combined.get_message()) == {
                    "stream": "!serverShutdown",
                    "data": event,
                }
            nursery.cancel_scope.cancel()


async def test_pause_stops_publishing_and_resume_restarts(connect) -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            exchange = await start(nursery)
            async with connect(nursery, exchange.raw_url("btcusdt@trade")) as ws:
                await ws.get_message()
                exchange.pause()
                assert exchange.paused
                ticks = exchange.ticks
                received = 1
                # Drain what was queued before the pause, then expect silence (the stall).
                while True:
                    with trio.move_on_after(0.3) as silence:
                        await ws.get_message()
                        received += 1
                    if silence.cancelled_caught:
                        break
                assert exchange.ticks == ticks
                assert exchange.frames_sent == received
                exchange.resume()
                assert json.loads(await ws.get_message())["e"] == "trade"
                assert exchange.ticks > ticks
            nursery.cancel_scope.cancel()


async def test_record_written_keeps_every_trade_frame_a_client_got(connect) -> None:
    settings = ExchangeSettings(tick=0.02, max_requests_per_s=None, record_written=True)
    streams = ["btcusdt@trade", "ethusdt@depth20@100ms"]
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            exchange = await start(nursery, settings=settings)
            async with connect(nursery, exchange.stream_url(streams)) as ws:
                trades = []
                while len(trades) < 5:
                    frame = json.loads(await ws.get_message())
                    if frame["stream"] == "btcusdt@trade":
                        trades.append(frame["data"]["t"])
                exchange.pause()
                # Drain what was written before the pause, then expect silence.
                while True:
                    with trio.move_on_after(0.3) as silence:
                        frame = json.loads(await ws.get_message())
                        if frame["stream"] == "btcusdt@trade":
                            trades.append(frame["data"]["t"])
                    if silence.cancelled_caught:
                        break
            await exchange.wait_until(lambda ex: ex.connections_closed == 1)
            nursery.cancel_scope.cancel()
    assert exchange.written is not None
    written = exchange.written.trades()
    assert [t.trade_id for t in written] == trades  # depth frames are not kept
    assert {(t.connection, t.symbol) for t in written} == {(1, "BTCUSDT")}
    assert written[-1].at <= exchange.written.closed_at[1]


async def test_refuse_connections(connect, handshake_rejection) -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            exchange = await start(nursery)
            exchange.refuse_connections(True)
            rejected = await handshake_rejection(exchange.raw_url("btcusdt@trade"))
            assert rejected is not None
            assert rejected.status_code == 503
            assert exchange.connections_refused == 1
            assert exchange.connections_accepted == 0
            exchange.refuse_connections(False)
            assert await handshake_rejection(exchange.raw_url("btcusdt@trade")) is None
            async with connect(nursery, exchange.raw_url("btcusdt@trade")) as ws:
                await ws.get_message()
            assert exchange.connections_accepted == 2
            nursery.cancel_scope.cancel()


async def test_wait_for_connections_wakes_on_connect(connect) -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            exchange = await start(nursery)
            done = trio.Event()

            async def waiter() -> None:
                await exchange.wait_for_connections(2)
                done.set()

            nursery.start_soon(waiter)
            async with connect(nursery, exchange.raw_url()):
                await exchange.wait_for_connections(1)
                assert not done.is_set()
                async with connect(nursery, exchange.raw_url()):
                    await done.wait()
            await exchange.wait_until(lambda e: e.connections_closed == 2)
            nursery.cancel_scope.cancel()


async def test_too_many_requests_closes_with_1008(connect) -> None:
    settings = ExchangeSettings(tick=0.02, max_requests_per_s=5)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            exchange = await start(nursery, settings=settings)
            async with connect(nursery, exchange.raw_url()) as ws:
                for request_id in range(6):
                    list_ = {"method": "LIST_SUBSCRIPTIONS", "id": request_id}
                    await ws.send_message(json.dumps(list_))
                closed = await close_reason(ws)
                assert closed.code == 1008
                assert closed.reason == "Too many requests"
            nursery.cancel_scope.cancel()


async def test_server_pings_are_answered(connect) -> None:
    settings = ExchangeSettings(tick=0.02, ping_interval=0.02, pong_timeout=1.0)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            exchange = await start(nursery, settings=settings)
            async with connect(nursery, exchange.raw_url()):
                # trio-websocket's client answers pings from its reader task.
                await exchange.wait_until(lambda e: e.pongs_received >= 3)
                assert exchange.pong_timeouts == 0
            nursery.cancel_scope.cancel()


async def test_missing_pong_aborts_the_connection(connect) -> None:
    settings = ExchangeSettings(tick=0.02, ping_interval=0.05, pong_timeout=0.1)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            exchange = await start(nursery, settings=settings)
            # A client that never reads: its one-message queue fills, its reader task blocks,
            # and no pong goes back.
            async with connect(nursery, exchange.raw_url("btcusdt@trade")) as ws:
                await exchange.wait_until(lambda e: e.connections_closed == 1)
                assert exchange.pong_timeouts == 1
                closed = await close_reason(ws)
                assert closed.code == 1006
            nursery.cancel_scope.cancel()


async def test_slow_client_with_drop_policy_never_stalls_others(connect) -> None:
    market = RandomWalkMarket(synthetic_symbols(2), rate_per_s=10_000.0, trade_ratio=0.0)
    # The queue holds a whole tick's burst (200 frames), so only a client that stops reading
    # overflows it.
    settings = ExchangeSettings(
        tick=0.02, overflow="drop", queue_size=1_000, ping_interval=None, max_requests_per_s=None
    )
    streams = ["sym000usdt@depth20@100ms", "sym001usdt@depth20@100ms"]
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            exchange = await start(nursery, market, settings)
            async with connect(nursery, exchange.stream_url(streams)):  # never read
                await exchange.wait_for_connections(1)
                async with connect(nursery, exchange.stream_url(streams)) as fast:
                    # Enough frames that the slow client's socket buffers are long full.
                    for _ in range(8_000):
                        await fast.get_message()
                    slow_stats, fast_stats = exchange.statistics().connections
                    assert slow_stats.frames_dropped > 0
                    assert fast_stats.frames_dropped == 0
                    assert exchange.frames_dropped == slow_stats.frames_dropped
            nursery.cancel_scope.cancel()


async def test_slow_client_with_block_policy_makes_the_publisher_late(connect) -> None:
    market = RandomWalkMarket(synthetic_symbols(2), rate_per_s=10_000.0, trade_ratio=0.0)
    settings = ExchangeSettings(
        tick=0.02, overflow="block", queue_size=1_000, ping_interval=None, max_requests_per_s=None
    )
    streams = ["sym000usdt@depth20@100ms", "sym001usdt@depth20@100ms"]
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            exchange = await start(nursery, market, settings)
            async with connect(nursery, exchange.stream_url(streams)) as slow:  # never read
                await exchange.wait_for_connections(1)
                async with connect(nursery, exchange.stream_url(streams)) as fast:
                    # The publisher ends up waiting on the slow client: everyone stalls.
                    while True:
                        with trio.move_on_after(0.5) as stall:
                            await fast.get_message()
                        if stall.cancelled_caught:
                            break
                    assert exchange.overflows >= 1
                    assert exchange.frames_dropped == 0
                    # Nothing was lost: the frames are late, and the lateness is measured.
                    lateness = exchange.max_tick_lateness
                    await slow.aclose()
                    await exchange.wait_until(lambda e: e.connections_closed == 1)
                    await fast.get_message()
                    while exchange.max_tick_lateness == lateness:
                        await fast.get_message()
                    assert exchange.max_tick_lateness > 0.3  # about the 0.5 s stall
            nursery.cancel_scope.cancel()


def test_parse_stream_name_and_path() -> None:
    assert parse_stream_name("btcusdt@depth20@100ms") == ("btcusdt", "depth20@100ms")
    assert parse_stream_name("btcusdt@depth") == ("btcusdt", "depth")
    assert parse_stream_name("btcusdt@aggTrade") == ("btcusdt", "aggTrade")
    assert parse_stream_name("BTCUSDT@trade") is None  # symbols are lower case
    assert parse_stream_name("btcusdt@depth15") is None
    assert parse_path("/stream?streams=a@trade/b@bookTicker") == (
        True,
        ["a@trade", "b@bookTicker"],
    )
    assert parse_path("/stream?streams=a%40trade") == (True, ["a@trade"])
    assert parse_path("/ws") == (False, [])
    assert parse_path("/ws/a@trade/a@trade") == (False, ["a@trade"])


def test_settings_validate() -> None:
    with pytest.raises(ValueError, match="overflow"):
        ExchangeSettings(overflow="queue")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tick"):
        ExchangeSettings(tick=0)
