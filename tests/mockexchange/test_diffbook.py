"""The mock exchange's diff books: true books, diff streams, faults, and the REST endpoint."""

from __future__ import annotations

import itertools
import json

import httpx
import pytest
import trio

from oraculo_trio.core.book import OrderBook
from oraculo_trio.mockexchange import (
    FAULT_KINDS,
    DiffBookMarket,
    ExchangeSettings,
    FaultPlan,
    MockExchange,
    RecordedBooks,
    RestFault,
    RestServer,
)
from tests.data import BINANCE_DATA

SYMBOLS = ("AAAUSDT", "BBBUSDT", "CCCUSDT")


def levels(rows: list[list[str]]) -> tuple[tuple[float, float], ...]:
    return tuple((float(price), float(qty)) for price, qty in rows)


def start_books(market: DiffBookMarket) -> dict[str, OrderBook]:
    books = {}
    for symbol in market.symbols:
        snapshot = market.snapshot(symbol, 5000)
        assert snapshot is not None
        book = books[symbol] = OrderBook(symbol)
        book.apply_snapshot(
            levels(snapshot["bids"]), levels(snapshot["asks"]), snapshot["lastUpdateId"]
        )
    return books


def sides(book: OrderBook) -> tuple:
    return book.levels("bid"), book.levels("ask")


def test_diffs_follow_each_other_and_rebuild_the_true_book() -> None:
    market = DiffBookMarket(SYMBOLS, rate_per_s=300, depth=20, seed=1)
    books = start_books(market)
    frames = 0
    for tick in range(300):
        for stream, payload in market.tick(1_700_000_000 + tick * 0.1, 0.1):
            frames += 1
            book = books[payload["s"]]
            assert stream == payload["s"].lower() + "@depth@100ms"
            assert payload["U"] == book.last_update_id + 1
            assert payload["U"] <= payload["u"]
            book.apply_diff(levels(payload["b"]), levels(payload["a"]), payload["u"])
            assert not book.is_crossed()
    assert frames == 300 * 30
    for symbol, book in books.items():
        assert sides(book) == market.true_book(symbol)
        assert book.last_update_id == market.update_id(symbol)
        assert max(book.depth) <= 20


def test_the_one_second_stream_merges_a_second_of_updates() -> None:
    market = DiffBookMarket(SYMBOLS, rate_per_s=300, depth=20, slow_stream=True, seed=2)
    books = start_books(market)
    slow = 0
    for tick in range(101):
        for stream, payload in market.tick(1_700_000_000 + tick * 0.1, 0.1):
            if not stream.endswith("@depth"):
                continue
            slow += 1
            book = books[payload["s"]]
            assert payload["U"] == book.last_update_id + 1
            book.apply_diff(levels(payload["b"]), levels(payload["a"]), payload["u"])
    assert slow == 10 * len(SYMBOLS)
    for symbol, book in books.items():
        assert sides(book) == market.true_book(symbol)


def ids(frames: list) -> list[tuple[int, int]]:
    return [(payload["U"], payload["u"]) for _, payload in frames]


def test_faults_on_command() -> None:
    market = DiffBookMarket(SYMBOLS[:1], rate_per_s=10, seed=3)
    (symbol,) = SYMBOLS[:1]
    clean = ids(market.tick(0.0, 0.2))
    assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(clean))

    market.inject("gaps", symbol)
    frames = ids(market.tick(0.0, 0.2))
    assert len(frames) == 1
    assert frames[0][0] > clean[-1][1] + 1  # the first diff was made and never sent

    market.inject("dups", symbol)
    frames = market.tick(0.0, 0.2)
    assert frames[0] == frames[1]
    assert len(frames) == 3

    last = frames[-1][1]["u"]
    market.inject("reorder", symbol)
    frames = ids(market.tick(0.0, 0.2))
    assert frames[0][0] > last + 1  # the next diff goes first...
    assert frames[1][0] == last + 1  # ...then the one held back

    market.inject("crossed", symbol)
    frames = market.tick(0.0, 0.1)
    real, bogus = frames[0][1], frames[1][1]
    assert bogus["U"] == bogus["u"] == real["u"] + 1
    best_ask = market.true_book(symbol)[1][0][0]
    assert float(bogus["b"][0][0]) >= best_ask
    assert market.update_id(symbol) == bogus["u"]
    assert market.faults_made == {"gaps": 1, "dups": 1, "reorder": 1, "crossed": 1}

    market.inject("429")
    market.inject("slow")
    assert market.rest_fault(symbol) == RestFault(429, retry_after=1.0)
    assert market.rest_fault(symbol) == RestFault(delay=0.5)
    assert market.rest_fault(symbol) is None


def test_a_fault_plan_makes_each_kind_at_its_rate() -> None:
    plan = FaultPlan.parse("gaps, dups,429", per_second=2.0)
    assert plan.kinds == {"gaps", "dups", "429"}
    market = DiffBookMarket(SYMBOLS, rate_per_s=300, faults=plan, seed=4)
    for tick in range(50):  # 5 s
        market.tick(tick * 0.1, 0.1)
    assert market.faults_made == {"gaps": 10, "dups": 10}
    assert sum(market.rest_fault("X") is not None for _ in range(20)) == 10
    market.calm()
    assert market.faults is None
    with pytest.raises(ValueError, match="fault 'lag'"):
        FaultPlan.parse("gaps,lag")
    assert set(FAULT_KINDS) == {"gaps", "dups", "reorder", "crossed", "429", "slow"}


def test_the_frame_source_gives_exact_counts() -> None:
    market = DiffBookMarket(SYMBOLS, rate_per_s=100, faults=FaultPlan.parse("gaps,dups"), seed=5)
    assert [len(market.frames(count, 0)) for count in (7, 0, 13, 1)] == [7, 0, 13, 1]
    assert market.depth_kinds == ("depth",)
    assert market.streams() == [s.lower() + "@depth@100ms" for s in SYMBOLS]


# --------------------------------------------------------------------------------------
# The REST endpoint over a real socket


async def get(client: httpx.AsyncClient, symbol: str, limit: int | None = None) -> httpx.Response:
    params = {"symbol": symbol} if limit is None else {"symbol": symbol, "limit": limit}
    return await client.get("/api/v3/depth", params=params)


async def test_rest_serves_snapshots_with_binances_weights_and_errors() -> None:
    market = DiffBookMarket(SYMBOLS, depth=30, seed=6)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(RestServer(market).serve)
            async with httpx.AsyncClient(base_url=server.url) as client:
                answer = await get(client, "AAAUSDT", 10)
                assert answer.status_code == 200
                assert answer.json() == market.snapshot("AAAUSDT", 10)
                assert answer.headers["X-MBX-USED-WEIGHT-1M"] == "5"
                full = await get(client, "BBBUSDT", 1000)
                assert len(full.json()["bids"]) == 30
                assert full.headers["X-MBX-USED-WEIGHT-1M"] == "55"
                default = await get(client, "CCCUSDT")  # limit 100
                assert default.headers["X-MBX-USED-WEIGHT-1M"] == "60"
                unknown = await get(client, "NOPE")
                assert (unknown.status_code, unknown.json()["code"]) == (400, -1121)
                too_deep = await get(client, "AAAUSDT", 5001)
                assert (too_deep.status_code, too_deep.json()["code"]) == (400, -1100)
                elsewhere = await client.get("/api/v3/ticker")
                assert elsewhere.status_code == 404
            nursery.cancel_scope.cancel()
    assert [r.weight for r in server.requests] == [5, 50, 5, 5]
    assert server.weight_used() == 65


async def test_rest_refuses_past_its_weight_limit_then_bans_who_does_not_back_off() -> None:
    market = DiffBookMarket(SYMBOLS, seed=7)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                RestServer(market, weight_limit=100, window=60.0, ban_after=1, ban_seconds=30).serve
            )
            async with httpx.AsyncClient(base_url=server.url) as client:
                statuses = [(await get(client, "AAAUSDT", 1000)).status_code for _ in range(3)]
                assert statuses == [200, 200, 429]
                refused = await get(client, "AAAUSDT", 1000)  # within Retry-After: 1st
                assert refused.status_code == 429
                assert 59 < float(refused.headers["Retry-After"]) <= 60
                banned = await get(client, "AAAUSDT", 1000)  # 2nd: banned
                assert banned.status_code == 418
                assert float(banned.headers["Retry-After"]) == 30
                assert (await get(client, "AAAUSDT", 5)).status_code == 418
            nursery.cancel_scope.cancel()
    assert server.count(418) == 2


async def test_rest_faults_on_command() -> None:
    market = DiffBookMarket(SYMBOLS, seed=8)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(RestServer(market).serve)
            async with httpx.AsyncClient(base_url=server.url) as client:
                server.fail_next(1, 429, retry_after=0.2)
                refused = await get(client, "AAAUSDT")
                assert (refused.status_code, refused.headers["Retry-After"]) == (429, "0.2")
                await trio.sleep(0.2)  # the Retry-After itself
                server.delay = 0.3
                started = trio.current_time()
                slow = await get(client, "AAAUSDT")
                assert slow.status_code == 200
                assert trio.current_time() - started >= 0.3
                server.delay = 0.0
                market.inject("slow")
                started = trio.current_time()
                assert (await get(client, "AAAUSDT")).status_code == 200
                assert trio.current_time() - started >= 0.5
            nursery.cancel_scope.cancel()
    assert [r.status for r in server.requests] == [429, 200, 200]


# --------------------------------------------------------------------------------------
# The exchange with both sides


async def test_exchange_serves_diff_streams_and_their_snapshots(connect) -> None:
    market = DiffBookMarket(SYMBOLS, rate_per_s=600, seed=9)
    streams = [s.lower() + "@depth@100ms" for s in SYMBOLS]
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            exchange = MockExchange(market, ExchangeSettings(tick=0.02, max_requests_per_s=None))
            await nursery.start(exchange.serve)
            assert exchange.rest is not None
            assert exchange.rest_url == exchange.rest.url
            async with connect(nursery, exchange.stream_url(streams)) as ws:
                first = json.loads(await ws.get_message())["data"]
                async with httpx.AsyncClient(base_url=exchange.rest_url) as client:
                    snapshot = (await get(client, first["s"], 1000)).json()
                book = OrderBook(first["s"])
                book.apply_snapshot(
                    levels(snapshot["bids"]), levels(snapshot["asks"]), snapshot["lastUpdateId"]
                )
                assert snapshot["lastUpdateId"] >= first["u"]
                exchange.pause()
                while book.last_update_id < market.update_id(first["s"]):
                    data = json.loads(await ws.get_message())["data"]
                    if data["s"] == first["s"] and data["u"] > book.last_update_id:
                        assert data["U"] <= book.last_update_id + 1
                        book.apply_diff(levels(data["b"]), levels(data["a"]), data["u"])
                assert sides(book) == market.true_book(first["s"])
            nursery.cancel_scope.cancel()


async def test_a_generator_taking_over_from_a_blocked_tick_keeps_every_book_in_order(
    connect,
) -> None:
    # The load tool primes diff books with the exchange's own ticks, then pauses them and
    # publishes its schedule. A tick blocked on a full queue at that moment must finish first:
    # the generator's frames were made after it, and interleaved they showed as gaps.
    market = DiffBookMarket(SYMBOLS, rate_per_s=30_000, seed=4)
    streams = [s.lower() + "@depth@100ms" for s in SYMBOLS]
    settings = ExchangeSettings(tick=0.05, queue_size=8, max_requests_per_s=None)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            exchange = MockExchange(market, settings)
            await nursery.start(exchange.serve)
            async with connect(nursery, exchange.stream_url(streams)) as ws:
                # The client reads nothing yet: the tick's publish fills the queue and waits.
                await exchange.wait_until(lambda exchange: exchange.overflows > 0)
                exchange.pause()
                frames = market.frames(300, 1_700_000_000_000)
                last = frames[-1][1]
                nursery.start_soon(exchange.publish, frames)
                previous: dict[str, int] = {}
                while previous.get(last["s"]) != last["u"]:
                    data = json.loads(await ws.get_message())["data"]
                    if data["s"] in previous:
                        assert data["U"] == previous[data["s"]] + 1, data["s"]
                    previous[data["s"]] = data["u"]
            nursery.cancel_scope.cancel()


def test_recorded_books_play_once_and_serve_their_sessions_snapshots() -> None:
    recorded = RecordedBooks(
        [BINANCE_DATA / "us_depth_diff.jsonl"],
        [BINANCE_DATA / "us_rest_depth_snapshot.jsonl"],
        rate_per_s=100,
        retime=False,
    )
    # Two recorded symbols have no snapshot: they are not played.
    assert "XEMUSDT" not in recorded.symbols
    assert len(recorded.symbols) == 7
    played = []
    while not recorded.done:
        played.extend(recorded.tick(0.0, 1.0))
    assert len(played) == len(recorded.frames)
    assert recorded.tick(0.0, 1.0) == []
    for (_, symbol), snapshot in recorded.snapshots.items():
        served = recorded.snapshot(symbol, 5)
        assert served is not None
        assert served["lastUpdateId"] == snapshot["lastUpdateId"]
        assert served["bids"] == snapshot["bids"][:5]
    assert recorded.snapshot("NOPE", 5) is None
