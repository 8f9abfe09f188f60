"""SIGTERM under load: the service drains, flushes, exits 0 within the grace period, and
every alert it raised before the signal is in the store."""

from __future__ import annotations

import re
import signal
from collections import Counter
from pathlib import Path

import trio

from oraculo_trio.mockexchange import (
    ExchangeSettings,
    MockExchange,
    RandomWalkMarket,
    synthetic_symbols,
)
from oraculo_trio.store.opening import open_store
from oraculo_trio.testing.config import service_sections, write_service_config
from oraculo_trio.testing.processes import service_process
from tests.e2e.flappy import every_tenth_trade_rule

GRACE = 5.0


def config(tmp_path: Path, ws_url: str, symbols: list[str]) -> Path:
    """A service alerting on every tenth trade, printing each transition on stdout."""
    sections = service_sections(
        exchange_url=ws_url,
        symbols=symbols,
        database_url=f"sqlite:///{tmp_path / 'alerts.db'}",
        dump_dir=tmp_path / "dumps",
        overrides={"service": {"shutdown_grace": GRACE}, "dispatch": {"sinks": ["stdout"]}},
    )
    return write_service_config(tmp_path, sections, [every_tenth_trade_rule()])


async def test_sigterm_under_load_drains_and_persists(tmp_path: Path) -> None:
    symbols = synthetic_symbols(20)
    market = RandomWalkMarket(symbols, rate_per_s=3000, trade_ratio=0.3, seed=7)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            exchange = await nursery.start(
                MockExchange(market, ExchangeSettings(ping_interval=None)).serve
            )
            async with service_process(config(tmp_path, exchange.ws_url, symbols)) as service:
                stdout = service.stdout
                await stdout.until(r"^\S+Z FIRING \S+ tenth ")
                # Under load for a moment longer, then the signal.
                seen = len(stdout.lines)
                await stdout.wait_until(lambda: len(stdout.lines) >= seen + 200)
                assert (await service.get("/readyz")).status == 200
                signalled = trio.current_time()
                code = await service.stop(signal.SIGTERM)
                took = trio.current_time() - signalled
            nursery.cancel_scope.cancel()
    assert code == 0, service.log_tail()
    assert took < GRACE + 3.0
    lines = service.stdout.lines
    # TIME STATE SEVERITY RULE SYMBOL VALUE "MESSAGE": (state, rule, symbol) of each line.
    fields = [line.split() for line in lines if re.match(r"^\S+Z (FIRING|RESOLVED) ", line)]
    printed = Counter((f[1].lower(), f[3], f[4]) for f in fields)
    assert sum(printed.values()) > 100
    async with open_store(f"sqlite:///{tmp_path / 'alerts.db'}", statement_timeout=5) as store:
        events = await store.fetch_alert_events()
    # Each transition is stored exactly once...
    keys = [(e["rule_id"], e["symbol"], e["fire_count"], e["state"]) for e in events]
    assert len(keys) == len(set(keys))
    # ...and every alert notified before the exit is among them (the store may hold a few
    # more: transitions whose notification the shutdown cut off).
    stored = Counter((e["state"], e["rule_id"], e["symbol"]) for e in events)
    assert printed <= stored
