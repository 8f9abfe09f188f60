"""Trade ids in the reader: duplicates dropped, gaps backfilled from the mock exchange's REST
trades (in order, before the trade after the gap, within the weight budget), and what cannot
be backfilled counted as missed by reason."""

from __future__ import annotations

import json
import logging
import time

import attrs
import trio

from oraculo_trio.core.events import TRADE
from oraculo_trio.core.trade_ids import TradeIds
from oraculo_trio.feeds.binance import BinanceDecoder
from oraculo_trio.feeds.binance_markets import binance_market
from oraculo_trio.feeds.binance_rest import decode_rest_trades
from oraculo_trio.mockexchange import ExchangeSettings, MockExchange, agg_trade_payload
from oraculo_trio.mockexchange.markets.payloads import Frame, trade_payload
from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.observe.ratelimit import RateLimitedLog
from oraculo_trio.pipeline.backfill import TradeBackfill
from oraculo_trio.pipeline.feed import _BatchReader
from oraculo_trio.pipeline.rest import RestBudget, RestEndpoint, WeightLedger
from oraculo_trio.pipeline.shards import ShardRouter

AGG = "btcusdt@aggTrade"
RAW = "btcusdt@trade"
NOW_MS = int(time.time() * 1000)


@attrs.define(eq=False)
class Tape:
    """A market that publishes only what a test hands to ``exchange.publish``."""

    symbols: list[str]

    def tick(self, now: float, dt: float) -> list[Frame]:
        return []


def agg(trade_id: int) -> tuple[str, dict]:
    return AGG, agg_trade_payload("BTCUSDT", trade_id, trade_id, "10.0", "1.0", NOW_MS, False)


def raw(trade_id: int) -> tuple[str, dict]:
    return RAW, trade_payload("BTCUSDT", trade_id, "10.0", "1.0", NOW_MS, False)


def wire(frames: list[tuple[str, dict]]) -> list[bytes]:
    return [json.dumps({"stream": s, "data": d}).encode() for s, d in frames]


class Reader:
    """A trade reader of ``streams`` whose gaps are backfilled from ``exchange``'s REST."""

    def __init__(self, exchange: MockExchange, streams: list[str], market: str = "spot") -> None:
        self.metrics = ServiceMetrics(shards=1)
        self.send, self.receive = trio.open_memory_channel(1000)
        router = ShardRouter(TRADE, [self.send], None, self.metrics)
        spec = binance_market(market)
        endpoint = RestEndpoint(spec, exchange.rest_url, 100, 5, timeout=5.0)
        budget = RestBudget(spec, WeightLedger(1000, 60.0), 0.0, self.metrics)
        self.backfill = TradeBackfill(endpoint, budget, self.metrics, max_trades=10)
        self.reader = _BatchReader(
            BinanceDecoder(streams, market=market), router, self.metrics,
            RateLimitedLog(logging.getLogger("test")), 256,
            ids=TradeIds(), backfill=self.backfill,
        )  # fmt: skip

    def routed(self) -> list[int]:
        ids = []
        while True:
            try:
                ids.append(self.receive.receive_nowait().trade_id)
            except trio.WouldBlock:
                return ids

    def count(self, name: str, **labels: str) -> float:
        return self.metrics.inner.get_sample_value(name, labels) or 0.0


async def test_a_gap_is_backfilled_in_order_and_duplicates_are_dropped() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            exchange = await nursery.start(
                MockExchange(Tape(["BTCUSDT"]), ExchangeSettings(ping_interval=None)).serve
            )
            # The exchange published 1..9; the reader hears 1, 2, 2 again, 3, then 7, 8, 6.
            await exchange.publish([agg(i) for i in range(1, 10)])
            reader = Reader(exchange, [AGG])
            await reader.reader.handle(wire([agg(1), agg(2), agg(2), agg(3), agg(7), agg(8)]))
            await reader.reader.handle(wire([agg(6)]))
            nursery.cancel_scope.cancel()
    assert reader.routed() == [1, 2, 3, 4, 5, 6, 7, 8]
    assert reader.count("oraculo_feed_trades_backfilled_total", stream="trade") == 3
    assert reader.count("oraculo_feed_messages_received_total", stream="trade") == 7
    duplicates = {"stream": "trade", "reason": "duplicate"}
    assert reader.count("oraculo_alerts_queue_dropped_total", **duplicates) == 2
    # One request, of aggTrades' weight, from the first missing id.
    (request,) = exchange.rest.requests
    assert (request.path, request.weight) == ("/api/v3/aggTrades", 4)
    assert reader.reader.batch.held() == 0


async def test_what_cannot_be_backfilled_is_counted_missed_by_reason() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            exchange = await nursery.start(
                MockExchange(Tape(["BTCUSDT"]), ExchangeSettings(ping_interval=None)).serve
            )
            await exchange.publish([agg(i) for i in (1, 2, 3, 5)])
            reader = Reader(exchange, [AGG])
            # 4 was never published (not served); 6..20 is more than max_trades=10.
            await reader.reader.handle(wire([agg(1), agg(5), agg(21)]))
            nursery.cancel_scope.cancel()
    assert reader.routed() == [1, 2, 3, 5, 21]
    missed = "oraculo_feed_trades_missed_total"
    assert reader.count(missed, reason="not_served") == 1 + 10
    assert reader.count(missed, reason="over_limit") == 5


async def test_raw_trades_backfill_on_spot_only() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            spot = await nursery.start(
                MockExchange(Tape(["BTCUSDT"]), ExchangeSettings(ping_interval=None)).serve
            )
            us_exchange = await nursery.start(
                MockExchange(
                    Tape(["BTCUSDT"]), ExchangeSettings(ping_interval=None, market="us")
                ).serve
            )
            for exchange in (spot, us_exchange):
                await exchange.publish([raw(i) for i in range(1, 6)])
            on_spot = Reader(spot, [RAW])
            on_us = Reader(us_exchange, [RAW], market="us")
            for reader in (on_spot, on_us):
                await reader.reader.handle(wire([raw(1), raw(5)]))
            nursery.cancel_scope.cancel()
    assert on_spot.routed() == [1, 2, 3, 4, 5]
    assert [r.path for r in spot.rest.requests] == ["/api/v3/historicalTrades"]
    # Binance.US wants an API key for historicalTrades: counted, not asked.
    assert on_us.routed() == [1, 5]
    missed = "oraculo_feed_trades_missed_total"
    assert on_us.count(missed, reason="no_keyless_history") == 3
    assert us_exchange.rest.requests == []


def test_rest_trades_decode_as_stream_trades() -> None:
    body = json.dumps(
        [{"id": 28457, "price": "4.00000100", "qty": "12.00000000", "quoteQty": "48.000012",
          "time": 1499865549590, "isBuyerMaker": True, "isBestMatch": True}]
    ).encode()  # fmt: skip
    (trade,) = decode_rest_trades(body, "trade", "BTCUSDT", 1.0, 2.0)
    assert (trade.trade_id, trade.price, trade.quantity, trade.buyer_is_maker) == (
        28457, 4.000001, 12.0, True,
    )  # fmt: skip
    assert trade.trade_time_ms == trade.event_time_ms == 1499865549590
    assert trade.kind == "trade"
