"""The mock exchange's REST side per Binance market: paths, exchangeInfo, time (with the
exchange's clock offset), aggTrades and historicalTrades with fromId, weights and limits."""

from __future__ import annotations

import json
import time

import attrs
import httpx
import pytest
import trio

from oraculo_trio.feeds.binance_rest import parse_exchange_info, parse_server_time
from oraculo_trio.mockexchange import ExchangeSettings, MockExchange, agg_trade_payload
from oraculo_trio.mockexchange.markets.payloads import Frame, trade_payload

FAST = ExchangeSettings(tick=0.01, ping_interval=None)


@attrs.define(eq=False)
class Tape:
    """Publishes the queued frames on the next tick."""

    symbols: list[str]
    queued: list[Frame] = attrs.field(factory=list)

    def tick(self, now: float, dt: float) -> list[Frame]:
        frames, self.queued = self.queued, []
        return frames


@pytest.mark.parametrize(
    ("market", "prefix", "status_key"),
    [("spot", "/api/v3", "status"), ("usdm", "/fapi/v1", "status"),
     ("coinm", "/dapi/v1", "contractStatus")],
)  # fmt: skip
async def test_exchange_info_and_time_under_the_markets_paths(
    market: str, prefix: str, status_key: str
) -> None:
    symbol = "BTCUSD_PERP" if market == "coinm" else "BTCUSDT"
    settings = attrs.evolve(FAST, market=market, clock_offset=3.0)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            exchange = await nursery.start(MockExchange(Tape([symbol]), settings).serve)
            exchange.rest.statuses["OLD"] = "BREAK"
            async with httpx.AsyncClient(base_url=exchange.rest_url) as client:
                info = await client.get(f"{prefix}/exchangeInfo")
                clock = await client.get(f"{prefix}/time")
                wrong = await client.get("/sapi/v1/time")
            nursery.cancel_scope.cancel()
    assert info.status_code == 200
    assert json.loads(info.content)["symbols"][0][status_key] == "TRADING"
    assert parse_exchange_info(info.content, market) == {symbol: "TRADING", "OLD": "BREAK"}
    assert parse_server_time(clock.content) / 1000 - time.time() == pytest.approx(3.0, abs=0.5)
    assert wrong.status_code == 404


async def test_agg_trades_from_id_serve_what_was_published_even_unheard() -> None:
    tape = Tape(["BTCUSDT"])
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            exchange = await nursery.start(MockExchange(tape, FAST).serve)
            now = int(time.time() * 1000)
            # Nobody subscribes: the trades are kept all the same.
            await exchange.publish(
                [
                    (
                        "btcusdt@aggTrade",
                        agg_trade_payload("BTCUSDT", i, i, "1.0", "2.0", now, False),
                    )
                    for i in range(100, 110)
                ]
                + [("btcusdt@trade", trade_payload("BTCUSDT", 7, "1.0", "2.0", now, True))]
            )
            async with httpx.AsyncClient(base_url=exchange.rest_url) as client:
                page = await client.get(
                    "/api/v3/aggTrades", params={"symbol": "BTCUSDT", "fromId": 105, "limit": 3}
                )
                latest = await client.get("/api/v3/aggTrades", params={"symbol": "BTCUSDT"})
                trades = await client.get(
                    "/api/v3/historicalTrades", params={"symbol": "BTCUSDT", "fromId": 0}
                )
                unknown = await client.get("/api/v3/aggTrades", params={"symbol": "ETHUSDT"})
            nursery.cancel_scope.cancel()
    assert [t["a"] for t in page.json()] == [105, 106, 107]
    assert page.json()[0] == {
        "a": 105, "p": "1.0", "q": "2.0", "f": 105, "l": 105, "T": now, "m": False, "M": True,
    }  # fmt: skip
    assert [t["a"] for t in latest.json()] == list(range(100, 110))
    # Spot's historicalTrades needs no API key.
    assert [t["id"] for t in trades.json()] == [7]
    assert unknown.status_code == 400 and unknown.json()["code"] == -1121
    assert [r.weight for r in exchange.rest.requests] == [4, 4, 25, 4]


async def test_futures_historical_trades_want_an_api_key_and_weigh_theirs() -> None:
    settings = attrs.evolve(FAST, market="usdm")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            exchange = await nursery.start(MockExchange(Tape(["BTCUSDT"]), settings).serve)
            async with httpx.AsyncClient(base_url=exchange.rest_url) as client:
                keyless = await client.get(
                    "/fapi/v1/historicalTrades", params={"symbol": "BTCUSDT"}
                )
                agg = await client.get("/fapi/v1/aggTrades", params={"symbol": "BTCUSDT"})
                depth = await client.get("/fapi/v1/depth", params={"symbol": "X", "limit": 200})
            nursery.cancel_scope.cancel()
    assert keyless.status_code == 401 and keyless.json()["code"] == -2014
    assert agg.status_code == 200
    assert depth.status_code == 400  # futures serve limits 5..1000 of a fixed list only
    assert [r.weight for r in exchange.rest.requests] == [20, 20]


async def test_the_per_ip_limit_is_the_markets() -> None:
    settings = attrs.evolve(FAST, market="usdm")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            exchange = await nursery.start(MockExchange(Tape(["BTCUSDT"]), settings).serve)
            assert exchange.rest.weight_limit == 2400
            async with httpx.AsyncClient(base_url=exchange.rest_url) as client:
                statuses = [
                    (
                        await client.get("/fapi/v1/aggTrades", params={"symbol": "BTCUSDT"})
                    ).status_code
                    for _ in range(121)
                ]
            nursery.cancel_scope.cancel()
    assert statuses[:120] == [200] * 120  # 120 x 20 = 2400
    assert statuses[120] == 429
