"""Several Binance markets in one service: the same symbol on spot and USD-M stays two
symbols (alerts, store rows, metric labels), futures streams reach their rule kinds, and ages
run on the exchange's clock, measured from its REST ``/time``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from oraculo_trio.core.rules import parse_rules
from oraculo_trio.mockexchange import MockExchange, agg_trade_payload, trade_payload
from oraculo_trio.pipeline.service import ServiceHandle
from oraculo_trio.store.opening import open_store
from oraculo_trio.testing import RecordingSink
from oraculo_trio.testing.config import service_settings
from oraculo_trio.testing.service import running_service
from tests.pipeline.helpers import FAST_EXCHANGE, ManualMarket, wait_accounted


def now_ms(exchange: MockExchange) -> int:
    return int(exchange.exchange_time() * 1000)


def spot_trade(exchange: MockExchange, trade_id: int, price: float) -> tuple[str, dict]:
    payload = trade_payload("BTCUSDT", trade_id, f"{price:.2f}", "1.0", now_ms(exchange), False)
    return "btcusdt@trade", payload


def usdm_trade(exchange: MockExchange, agg_id: int, price: float) -> tuple[str, dict]:
    payload = agg_trade_payload(
        "BTCUSDT", agg_id, agg_id, f"{price:.2f}", "1.0", now_ms(exchange), False
    )
    return "btcusdt@aggTrade", payload


def mark_price(exchange: MockExchange, funding: str) -> tuple[str, dict]:
    at = now_ms(exchange)
    payload = {
        "e": "markPriceUpdate", "E": at, "s": "BTCUSDT", "p": "60010.00", "i": "60000.00",
        "P": "60005.00", "r": funding, "T": at + 3_600_000,
    }  # fmt: skip
    return "btcusdt@markPrice@1s", payload


@asynccontextmanager
async def two_markets(
    tmp_path: Path,
    rules: Sequence[dict[str, Any]],
    *,
    usdm_offset: float = 0.0,
    usdm_feed: dict[str, Any] | None = None,
    pipeline: dict[str, Any] | None = None,
) -> AsyncIterator[tuple[dict[str, tuple[MockExchange, ManualMarket]], ServiceHandle, Any]]:
    """A spot mock and a USD-M mock (its clock ``usdm_offset`` s ahead), both with BTCUSDT,
    and one service following both."""
    sink = RecordingSink()
    async with trio.open_nursery() as nursery:
        markets = {}
        for name, offset in (("spot", 0.0), ("usdm", usdm_offset)):
            market = ManualMarket(["BTCUSDT"])
            settings = attrs.evolve(FAST_EXCHANGE, market=name, clock_offset=offset)
            markets[name] = (await nursery.start(MockExchange(market, settings).serve), market)
        spot, usdm = markets["spot"][0], markets["usdm"][0]
        feeds = [
            {"market": "spot", "url": spot.ws_url, "rest_url": spot.rest_url,
             "symbols": ["BTCUSDT"], "depth_streams": [], "trade_streams": ["trade"]},
            {"market": "usdm", "url": usdm.ws_url, "rest_url": usdm.rest_url,
             "symbols": ["BTCUSDT"], "depth_streams": [], "trade_streams": ["aggTrade"],
             "futures_streams": ["markPrice"], **(usdm_feed or {})},
        ]  # fmt: skip
        settings = service_settings(
            f"sqlite:///{tmp_path / 'alerts.db'}",
            spot.ws_url,
            ["BTCUSDT"],
            {"feed": feeds, "pipeline": pipeline or {}},
            dump_dir=tmp_path / "dumps",
        )
        compiled = parse_rules({"rule": list(rules)})
        async with running_service(settings, compiled, sinks=[sink]) as handle:
            await handle.wait_connected()
            await spot.wait_for_subscribers("btcusdt@trade")
            await usdm.wait_for_subscribers("btcusdt@aggTrade")
            await usdm.wait_for_subscribers("btcusdt@markPrice@1s")
            yield markets, handle, sink
        nursery.cancel_scope.cancel()


RULES = [
    # Both markets' BTCUSDT, one level: only USD-M's price (60,000) is above it.
    {"id": "above-55k", "kind": "greater_than", "symbols": ["BTCUSDT", "usdm:BTCUSDT"],
     "params": {"level": 55_000}},
    # Spot's alone, although USD-M's price is above it too.
    {"id": "spot-above-40k", "kind": "greater_than", "symbols": ["BTCUSDT"],
     "params": {"level": 40_000}},
    {"id": "funding", "kind": "funding_rate_above", "symbols": ["usdm:*"],
     "params": {"level": 0.0005}},
]  # fmt: skip


async def test_spot_and_usdm_btcusdt_are_two_symbols(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with two_markets(tmp_path, RULES) as (markets, handle, sink):
            (spot, spot_market), (usdm, usdm_market) = markets["spot"], markets["usdm"]
            spot_market.push([spot_trade(spot, 1, 50_000.0)])
            usdm_market.push([usdm_trade(usdm, 1, 60_000.0), mark_price(usdm, "0.00100000")])
            fired = await sink.wait_for(3)
            connected = {
                labels["connection"]
                for labels, value in _samples(handle, "oraculo_feed_connected")
                if value == 1
            }
            database_url = handle.settings.database.url
    assert sorted((t.rule_id, t.symbol, t.state) for t in fired) == [
        ("above-55k", "usdm:BTCUSDT", "firing"),
        ("funding", "usdm:BTCUSDT", "firing"),
        ("spot-above-40k", "BTCUSDT", "firing"),
    ]
    assert {"trade-0", "usdm-trade-0"} <= connected
    async with open_store(database_url, statement_timeout=5) as store:
        rows = {(row.rule_id, row.symbol): row.state for row in await store.load_alert_states()}
        events = await store.fetch_alert_events(symbol="usdm:BTCUSDT")
    assert rows[("above-55k", "usdm:BTCUSDT")] == "firing"
    assert rows.get(("above-55k", "BTCUSDT"), "inactive") == "inactive"
    assert ("spot-above-40k", "usdm:BTCUSDT") not in rows
    assert {e["rule_id"] for e in events} == {"above-55k", "funding"}


def _samples(handle: ServiceHandle, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (sample.labels, sample.value)
        for family in handle.metrics.inner.collect()
        for sample in family.samples
        if sample.name == name
    ]


async def test_ages_run_on_the_exchange_clock(tmp_path: Path) -> None:
    """USD-M's clock is 3 s behind ours: uncorrected, every message of it would be 3 s old,
    stale at stale_after = 2 s. Measured, the offset gauge says -3 and nothing is stale."""
    usdm_feed = {"clock_check_interval": 60.0, "clock_offset_warning": 1.0}
    with trio.fail_after(20):
        async with two_markets(
            tmp_path, RULES, usdm_offset=-3.0, usdm_feed=usdm_feed, pipeline={"stale_after": 2.0}
        ) as (markets, handle, sink):
            (usdm, usdm_market) = markets["usdm"]
            assert handle.clocks["usdm"].measured.is_set()
            for agg_id in range(1, 21):
                usdm_market.push([usdm_trade(usdm, agg_id, 60_000.0)])
            await sink.wait_for(1)
            await wait_accounted(handle, 20)
            offset = handle.metrics.inner.get_sample_value(
                "oraculo_exchange_clock_offset_seconds", {"market": "usdm"}
            )
            spot_offset = handle.metrics.inner.get_sample_value(
                "oraculo_exchange_clock_offset_seconds", {"market": "spot"}
            )
            terms = handle.metrics.accounting()
            ages = handle.metrics.evaluated_age["trade"]
            age_sum, age_count = ages.sum, sum(ages.counts)
    assert abs(offset - (-3.0)) < 0.2
    assert spot_offset is None  # not measured (clock_check_interval 0 on spot)
    assert terms["stale_drop"] == 0
    assert terms["evaluated"] == 20
    assert abs(age_sum / age_count) < 0.5  # ages near 0, not 3 s


async def test_a_clock_ahead_shows_in_the_gauge_and_drops_nothing(tmp_path: Path) -> None:
    """USD-M's clock is 3 s ahead of ours: its events would look 3 s younger than they are
    (negative ages); measured, the gauge says +3, every message is evaluated, none stale, and
    ages are near 0."""
    usdm_feed = {"clock_check_interval": 60.0}
    with trio.fail_after(20):
        async with two_markets(
            tmp_path, RULES, usdm_offset=3.0, usdm_feed=usdm_feed, pipeline={"stale_after": 2.0}
        ) as (markets, handle, sink):
            usdm, usdm_market = markets["usdm"]
            for agg_id in range(1, 21):
                usdm_market.push([usdm_trade(usdm, agg_id, 60_000.0)])
            await sink.wait_for(1)
            await wait_accounted(handle, 20)
            offset = handle.metrics.inner.get_sample_value(
                "oraculo_exchange_clock_offset_seconds", {"market": "usdm"}
            )
            terms = handle.metrics.accounting()
            ages = handle.metrics.evaluated_age["trade"]
            age_sum, age_count = ages.sum, sum(ages.counts)
    assert abs(offset - 3.0) < 0.2
    assert terms["received"] == 20  # a count the test made, not the service
    assert terms["stale_drop"] == 0
    assert terms["evaluated"] == 20
    assert abs(age_sum / age_count) < 0.5  # near 0, not -3 s
