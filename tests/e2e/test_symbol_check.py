"""``oraculo-trio run`` checks feed.symbols against each market's exchangeInfo first: a typo or
a symbol that no longer trades stops the start with one line (exit 2) naming it, and what it
may have meant; ``--offline`` skips the check."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

from oraculo_trio.mockexchange import MockExchange
from oraculo_trio.testing.config import service_sections, write_service_config
from oraculo_trio.testing.processes import service_process
from tests.pipeline.helpers import FAST_EXCHANGE, ManualMarket


@asynccontextmanager
async def usdm_exchange() -> AsyncIterator[MockExchange]:
    """A USD-M mock listing BTCUSDT and ETHUSDT as trading, OLDUSDT as settling."""
    async with trio.open_nursery() as nursery:
        settings = attrs.evolve(FAST_EXCHANGE, market="usdm")
        market = ManualMarket(["BTCUSDT", "ETHUSDT"])
        exchange = await nursery.start(MockExchange(market, settings).serve)
        exchange.rest.statuses["OLDUSDT"] = "SETTLING"
        yield exchange
        nursery.cancel_scope.cancel()


def config(tmp_path: Path, exchange: MockExchange, symbols: list[str]) -> Path:
    sections = service_sections(
        exchange_url=exchange.ws_url,
        symbols=symbols,
        database_url=f"sqlite:///{tmp_path / 'alerts.db'}",
        dump_dir=tmp_path / "dumps",
        overrides={
            "feed": {
                "market": "usdm",
                "rest_url": exchange.rest_url,
                "depth_streams": [],
                "trade_streams": ["aggTrade"],
            }
        },
    )
    rules = [{"id": "up", "kind": "greater_than", "symbols": ["usdm:*"], "params": {"level": 1}}]
    return write_service_config(tmp_path, sections, rules)


async def test_unknown_and_settling_symbols_stop_the_start(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with usdm_exchange() as exchange:
            path = config(tmp_path, exchange, ["BTCUSTD", "OLDUSDT", "ETHUSDT"])
            async with service_process(path, offline=False) as service:
                code = await service.wait()
                await service.wait_output()
    assert code == 2, service.log_tail()
    errors = [line for line in service.lines if line.startswith("oraculo-trio:")]
    assert len(errors) == 1, service.log_tail()
    assert "'BTCUSTD' is not a Binance USD-M futures symbol; did you mean 'BTCUSDT'?" in errors[0]
    assert "'OLDUSDT' does not trade on Binance USD-M futures (status SETTLING)" in errors[0]
    assert "Traceback" not in service.stderr.text


async def test_listed_symbols_start_and_offline_skips_the_check(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with usdm_exchange() as exchange:
            path = config(tmp_path, exchange, ["BTCUSDT", "ETHUSDT"])
            async with service_process(path, offline=False) as service:
                await service.wait_ready()
                assert await service.stop() == 0
            assert service.stderr.count("2 symbols checked against") == 1
            exchange.rest.statuses["ETHUSDT"] = "SETTLING"  # not checked: it starts
            path = config(tmp_path, exchange, ["ETHUSDT"])
            async with service_process(path) as offline:  # --offline
                await offline.wait_ready()
                assert await offline.stop() == 0
    assert offline.stderr.count("symbols checked") == 0
