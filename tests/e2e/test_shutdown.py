"""SIGTERM under load: the service drains, flushes, exits 0 within the grace period, and
every alert it raised before the signal is in the store."""

from __future__ import annotations

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
from oraculo_trio.store.base import open_store
from tests.e2e.processes import (
    LineReader,
    clean_env,
    command,
    free_port,
    http_get,
    start_process,
    write_service_config,
)

GRACE = 5.0


def config(tmp_path: Path, ws_url: str, symbols: list[str], port: int) -> Path:
    return write_service_config(
        tmp_path,
        {
            "service": {"shutdown_grace": GRACE},
            "feed": {
                "url": ws_url,
                "symbols": symbols,
                "depth_streams": ["depth20"],
                "trade_streams": ["trade"],
            },
            "database": {"url": f"sqlite:///{tmp_path / 'alerts.db'}"},
            "dispatch": {"sinks": ["stdout"]},
            "http": {"port": port},
            "observe": {"dump_dir": str(tmp_path / "dumps")},
        },
    )


async def test_sigterm_under_load_drains_and_persists(tmp_path: Path) -> None:
    symbols = synthetic_symbols(20)
    market = RandomWalkMarket(symbols, rate_per_s=3000, trade_ratio=0.3, seed=7)
    port = free_port()
    stderr = (tmp_path / "stderr.log").open("wb")
    with stderr, trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            exchange = await nursery.start(
                MockExchange(market, ExchangeSettings(ping_interval=None)).serve
            )
            cfg = config(tmp_path, exchange.ws_url, symbols, port)
            process = await start_process(
                nursery,
                command("run", "--config", str(cfg)),
                cwd=tmp_path.parent,
                env=clean_env(),
                stdout=-1,
                stderr=stderr,
            )
            stdout = LineReader(process.stdout)
            await stdout.until(r"^ALERT firing tenth ")
            # Under load for a moment longer, then the signal.
            for _ in range(200):
                await stdout.next_line()
            status, _ = await http_get(f"http://127.0.0.1:{port}/readyz")
            assert status == 200
            signalled = trio.current_time()
            process.send_signal(signal.SIGTERM)
            lines = await stdout.rest()
            await process.wait()
            took = trio.current_time() - signalled
            nursery.cancel_scope.cancel()
    assert process.returncode == 0, (tmp_path / "stderr.log").read_text()[-3000:]
    assert took < GRACE + 3.0
    printed = Counter(tuple(line.split()[1:4]) for line in lines if line.startswith("ALERT "))
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
