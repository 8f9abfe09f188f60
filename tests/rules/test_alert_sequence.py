"""End to end: a scripted market on the mock exchange, the whole service in process, and the
exact sequence of ``alert_events`` (firing, repeats, resolved) it must store, with exact
counts, and the notifications that match it."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import trio

from oraculo_trio.core.rules import parse_rules
from oraculo_trio.mockexchange import (
    ExchangeSettings,
    Instrument,
    MockExchange,
    Phase,
    Script,
    ScriptedMarket,
)
from oraculo_trio.pipeline.service import run_service
from oraculo_trio.store.opening import open_store
from oraculo_trio.testing import AlertService, RecordingSink, service_settings

# AAAUSDT sits at 100 and jumps to 110 between 1.0 s and 4.75 s of the script, with one
# block trade of 100 x ~110 at 2 s; BBBUSDT publishes nothing between 1 s and 3 s.
SCRIPT = Script(
    [
        Instrument("AAAUSDT", mid=100.0, tick_size=0.01, spread_bps=2.0, noise_bps=0.0,
                   trade_qty=1.0),
        Instrument("BBBUSDT", mid=10.0, tick_size=0.001, noise_bps=0.0),
    ],
    [
        Phase("AAAUSDT", 1.0, 4.75, mid_from=110.0, mid_to=110.0, note="above 105"),
        Phase("AAAUSDT", 2.0, 2.5, block_trade_qty=100.0, note="one 11,000 USDT trade"),
        Phase("BBBUSDT", 1.0, 3.0, silent=True, note="silent 2 s"),
    ],
    period=600.0,
)  # fmt: skip

RULES = {
    "rule": [
        # Holds 3.75 s: fires, repeats every 1.5 s (twice), resolves.
        {"id": "above", "kind": "greater_than", "symbols": ["AAAUSDT"],
         "params": {"level": 105}, "trigger": "every_time", "repeat_interval": 1.5},
        # Up at 1 s and down at 4.75 s: two episodes, each resolved by the next trade.
        {"id": "cross", "kind": "crossing", "symbols": ["AAA*"], "params": {"level": 105},
         "trigger": "every_time"},
        {"id": "block", "kind": "large_trade", "symbols": "*", "params": {"notional": 10_000}},
        {"id": "silent", "kind": "no_data", "symbols": ["BBBUSDT"], "params": {"seconds": 1}},
    ]
}  # fmt: skip

EXPECTED = {
    ("above", "AAAUSDT"): [
        ("firing", False, 1), ("firing", True, 1), ("firing", True, 1), ("resolved", False, 1),
    ],
    ("cross", "AAAUSDT"): [
        ("firing", False, 1), ("resolved", False, 1), ("firing", False, 2), ("resolved", False, 2),
    ],
    ("block", "AAAUSDT"): [("firing", False, 1), ("resolved", False, 1)],
    ("silent", "BBBUSDT"): [("firing", False, 1), ("resolved", False, 1)],
}  # fmt: skip


async def test_a_scripted_market_stores_the_exact_alert_sequence(tmp_path: Path) -> None:
    market = ScriptedMarket(SCRIPT)
    sink = RecordingSink()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            exchange = await nursery.start(
                MockExchange(market, ExchangeSettings(tick=0.05, ping_interval=None)).serve
            )
            settings = service_settings(
                f"sqlite:///{tmp_path / 'alerts.db'}",
                exchange.ws_url,
                market.symbols,
                dump_dir=tmp_path / "dumps",
            )
            handle = await nursery.start(
                functools.partial(
                    run_service, settings, parse_rules(RULES), sinks=[sink], handle_signals=False
                )
            )
            for symbol in market.symbols:
                await exchange.wait_for_subscribers(f"{symbol.lower()}@trade")
                await exchange.wait_for_subscribers(f"{symbol.lower()}@depth20@100ms")
            # The script starts now that the service listens to every stream.
            market.start = time.time()
            async with open_store(settings.database.url, statement_timeout=5) as reader:
                service = AlertService(handle, reader, sink, settings)
                for (rule_id, symbol), states in EXPECTED.items():
                    for state, _, _ in states:
                        await service.wait_for_alert(rule_id, symbol, state)
            handle.request_shutdown()
            await handle.stopped.wait()
            nursery.cancel_scope.cancel()

    async with open_store(settings.database.url, statement_timeout=5) as store:
        events = await store.fetch_alert_events()
        rows = {(row.rule_id, row.symbol): row for row in await store.load_alert_states()}
    stored: dict[tuple[str, str], list] = {}
    for event in events:
        key = (event["rule_id"], event["symbol"])
        stored.setdefault(key, []).append((event["state"], event["repeat"], event["fire_count"]))
    assert stored == EXPECTED
    assert len(events) == 12
    # One row per (rule, symbol), in its last state.
    assert {key: (row.state, row.fire_count) for key, row in rows.items()} == {
        key: (states[-1][0], states[-1][2]) for key, states in EXPECTED.items()
    }
    # Every one of them was notified (once_per_interval notifies "block" once: its only
    # episode), in the order stored.
    notified = {}
    for t in sink.transitions:
        notified.setdefault((t.rule_id, t.symbol), []).append((t.state, t.repeat, t.fire_count))
    assert notified == EXPECTED
    # The repeats came repeat_interval apart.
    above = [e["at"] for e in events if e["rule_id"] == "above"]
    assert 1.5 <= above[1] - above[0] < 2.0 and 1.5 <= above[2] - above[1] < 2.0
