"""The whole pipeline against the mock exchange on 127.0.0.1: frames in, alerts out."""

from __future__ import annotations

import gc
import time
from pathlib import Path

import pytest
import trio

from oraculo_trio.core.rules import parse_rules
from oraculo_trio.pipeline.service import YOUNG_GC_THRESHOLD, _raise_young_gc_threshold
from oraculo_trio.store.opening import open_store
from tests.pipeline.helpers import (
    ManualMarket,
    RecordingSink,
    TradeRecorder,
    depth_frame,
    recorder_rule,
    running_service,
    trade_frame,
    wait_accounted,
)

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT", "DOTUSDT"]
RULES = {
    "rule": [
        {"id": "cross", "kind": "crossing", "symbols": ["BTCUSDT"], "params": {"level": 50_000},
         "trigger": "every_time"},
        {"id": "spread", "kind": "spread_above_bps", "symbols": ["ETHUSDT"], "params": {"bps": 20}},
    ]
}  # fmt: skip


def now_ms() -> int:
    return int(time.time() * 1000)


async def test_frames_in_alerts_out(tmp_path: Path) -> None:
    market = ManualMarket(SYMBOLS[:2])
    sink = RecordingSink()
    with trio.fail_after(20):
        async with running_service(tmp_path, market, parse_rules(RULES), sinks=[sink]) as (
            _,
            handle,
        ):
            market.push([trade_frame("BTCUSDT", 1, 49_990.0, now_ms())])
            market.push([trade_frame("BTCUSDT", 2, 50_010.0, now_ms())])
            market.push([depth_frame("ETHUSDT", 1, 2990.0, 3010.0)])
            fired = await sink.wait_for(2)
            assert {(t.rule_id, t.symbol, t.state) for t in fired} == {
                ("cross", "BTCUSDT", "firing"),
                ("spread", "ETHUSDT", "firing"),
            }
            market.push([trade_frame("BTCUSDT", 3, 50_020.0, now_ms())])
            market.push([depth_frame("ETHUSDT", 2, 2999.0, 3001.0)])
            await sink.wait_for(4)
            terms = await wait_accounted(handle, 5)
        database_url = handle.settings.database.url
    assert sorted((t.rule_id, t.state) for t in sink.transitions[2:]) == [
        ("cross", "resolved"),
        ("spread", "resolved"),
    ]
    assert terms == {
        "received": 5, "backfilled": 0, "evaluated": 5, "stale_drop": 0, "conflated": 0,
        "superseded": 0, "overflow": 0, "unsynced": 0, "duplicate": 0, "bad_frames": 0,
        "in_flight": 0, "unaccounted": 0,
    }  # fmt: skip
    # Every transition reached the store, once.
    async with open_store(database_url, statement_timeout=5) as store:
        events = await store.fetch_alert_events()
    assert sorted((e["rule_id"], e["state"]) for e in events) == [
        ("cross", "firing"), ("cross", "resolved"), ("spread", "firing"), ("spread", "resolved"),
    ]  # fmt: skip


async def test_per_symbol_order_with_four_shards(tmp_path: Path) -> None:
    market = ManualMarket(SYMBOLS)
    recorder = TradeRecorder()
    per_symbol = 300
    pipeline = {"shards": 4, "batch_max": 7}
    with trio.fail_after(30):
        async with running_service(
            tmp_path, market, [recorder_rule(recorder)], pipeline=pipeline
        ) as (_, handle):
            # Interleave symbols in bursts, so every shard sees several symbols at once.
            for burst in range(0, per_symbol, 50):
                market.push(
                    trade_frame(symbol, trade_id, 100.0, now_ms())
                    for trade_id in range(burst, burst + 50)
                    for symbol in SYMBOLS
                )
            await wait_accounted(handle, per_symbol * len(SYMBOLS))
    assert set(recorder.seen) == set(SYMBOLS)
    for symbol in SYMBOLS:
        assert recorder.seen[symbol] == list(range(per_symbol)), symbol
    assert all(engine.markets for engine in handle.engines), "every shard got symbols"


async def test_slow_shard_conflates_depth_and_never_drops_trades(tmp_path: Path) -> None:
    symbols = SYMBOLS[:4]
    market = ManualMarket(symbols)
    recorder = TradeRecorder()
    # One slow shard with a tiny channel: the feed outruns it on purpose.
    pipeline = {"shards": 1, "channel_capacity": 8, "batch_max": 4, "debug_batch_delay_ms": 20.0}
    updates = 100
    with trio.fail_after(40):
        async with running_service(
            tmp_path, market, [recorder_rule(recorder)], pipeline=pipeline
        ) as (_, handle):
            for index in range(updates):
                market.push(
                    depth_frame(symbol, index + 1, 100.0 + index, 101.0 + index)
                    for symbol in symbols
                )
                market.push(trade_frame(s, index, 100.0, now_ms()) for s in symbols)
            total = 2 * updates * len(symbols)
            terms = await wait_accounted(handle, total)
    assert terms["received"] == total
    assert terms["conflated"] > 0
    assert terms["evaluated"] + terms["conflated"] == total
    # Every trade was evaluated, in order: backpressure, never a drop.
    evaluated_trades = handle.metrics.inner.get_sample_value(
        "oraculo_alerts_messages_evaluated_total", {"stream": "trade"}
    )
    assert evaluated_trades == updates * len(symbols)
    for symbol in symbols:
        assert recorder.seen[symbol] == list(range(updates))
    # The newest depth of every symbol survives conflation: the book shows the last update.
    engine = handle.engines[0]
    for symbol in symbols:
        assert engine.markets[symbol].best_bid == 100.0 + updates - 1


def reconnect_reasons(handle) -> dict[str, float]:
    reasons: dict[str, float] = {}
    for family in handle.metrics.inner.collect():
        if family.name == "oraculo_feed_reconnects":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    reason = sample.labels["reason"]
                    reasons[reason] = reasons.get(reason, 0) + sample.value
    return reasons


async def test_reconnects_after_the_server_drops_it(tmp_path: Path) -> None:
    market = ManualMarket(SYMBOLS[:1])
    sink = RecordingSink()
    with trio.fail_after(20):
        async with running_service(tmp_path, market, parse_rules(RULES), sinks=[sink]) as (
            exchange,
            handle,
        ):
            for code in (1006, 1001):
                accepted = exchange.connections_accepted
                await exchange.drop_connections(code=code)
                await exchange.wait_until(
                    lambda ex, n=accepted: ex.connections_accepted >= n + len(handle.connections)
                )
                await handle.wait_connected()
            await exchange.wait_for_subscribers("btcusdt@trade")
            # Still processing after two reconnects.
            market.push([trade_frame("BTCUSDT", 1, 49_990.0, now_ms())])
            market.push([trade_frame("BTCUSDT", 2, 50_010.0, now_ms())])
            await sink.wait_for(1)
    reasons = reconnect_reasons(handle)
    assert reasons.get("closed_1001", 0) >= len(handle.connections), reasons
    assert reasons.get("closed_1006", 0) >= len(handle.connections), reasons


async def test_malformed_frames_are_counted_and_the_service_stays_up(tmp_path: Path) -> None:
    market = ManualMarket(SYMBOLS[:1])
    sink = RecordingSink()
    bad = [
        '{"stream":"btcusdt@trade","data":{"e":"trade"',  # truncated
        "not json at all",
        '{"stream":"nosuch@stream","data":{}}',
        '{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":1,'
        '"p":"NaN","q":"1","T":1,"m":true,"M":true}}',
        b"\xff\xfe\x00binary",
    ]
    with trio.fail_after(20):
        async with running_service(tmp_path, market, parse_rules(RULES), sinks=[sink]) as (
            exchange,
            handle,
        ):
            for frame in bad:
                await exchange.send_raw(frame)
            expected_bad = len(bad) * len(handle.connections)
            await wait_accounted(handle, expected_bad)
            market.push([trade_frame("BTCUSDT", 1, 49_990.0, now_ms())])
            market.push([trade_frame("BTCUSDT", 2, 50_010.0, now_ms())])
            await sink.wait_for(1)
            terms = await wait_accounted(handle, expected_bad + 2)
    assert terms["bad_frames"] == expected_bad
    assert terms["evaluated"] == 2 and terms["unaccounted"] == 0
    for reason in ("malformed_json", "unknown_stream", "invalid_value", "binary_frame"):
        count = handle.metrics.inner.get_sample_value(
            "oraculo_feed_bad_frames_total", {"reason": reason}
        )
        assert count and count > 0, reason


@pytest.mark.parametrize(
    ("before", "after"),
    [(700, YOUNG_GC_THRESHOLD), (5 * YOUNG_GC_THRESHOLD, 5 * YOUNG_GC_THRESHOLD), (0, 0)],
    ids=["python-default-raised", "higher-kept", "disabled-kept"],
)
def test_the_service_raises_only_a_lower_young_gc_threshold(before: int, after: int) -> None:
    saved = gc.get_threshold()
    try:
        gc.set_threshold(before, *saved[1:])
        _raise_young_gc_threshold()
        assert gc.get_threshold() == (after, *saved[1:])
    finally:
        gc.set_threshold(*saved)
