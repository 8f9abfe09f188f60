"""The fixtures of the pytest plugin (see :mod:`oraculo_trio.testing`; their names are
``oraculo_trio.testing.FIXTURES``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio

from oraculo_trio.core.rules import parse_rules
from oraculo_trio.mockexchange import ExchangeSettings, MockExchange
from oraculo_trio.pipeline.rules_source import resolve_rule_class
from oraculo_trio.store.opening import open_store
from oraculo_trio.testing.config import service_settings
from oraculo_trio.testing.market import MarketScript
from oraculo_trio.testing.service import AlertService, RecordingSink, start_service, stop_service

EXCHANGE_TICK = 0.02
"""Seconds between the mock exchange's publishing ticks in these fixtures."""


@pytest.fixture
def market_symbols() -> Sequence[str]:
    """The symbols of ``market_script`` (override this fixture to change them)."""
    return ("BTCUSDT", "ETHUSDT")


@pytest.fixture
def market_script(market_symbols: Sequence[str]) -> MarketScript:
    """Trades and books to publish; see :class:`MarketScript`."""
    return MarketScript(market_symbols)


@pytest.fixture
async def mock_exchange(nursery: trio.Nursery, market_script: MarketScript) -> MockExchange:
    """The mock exchange on 127.0.0.1 (port 0) publishing ``market_script``."""
    settings = ExchangeSettings(tick=EXCHANGE_TICK, ping_interval=None, strict_symbols=False)
    return await nursery.start(MockExchange(market_script, settings).serve)


@pytest.fixture
def alert_rules() -> Sequence[Mapping[str, Any]]:
    """The rules of ``alert_service``, as rule-file entries (override this fixture)."""
    return ()


@pytest.fixture
def alert_service_config() -> Mapping[str, Mapping[str, Any]]:
    """Configuration overrides for ``alert_service``: ``{section: {key: value}}``."""
    return {}


@pytest.fixture
async def alert_service(
    nursery: trio.Nursery,
    tmp_path: Path,
    mock_exchange: MockExchange,
    market_script: MarketScript,
    alert_rules: Sequence[Mapping[str, Any]],
    alert_service_config: Mapping[str, Mapping[str, Any]],
) -> AsyncIterator[AlertService]:
    """The service on the mock exchange with a temporary SQLite store, subscribed to every
    symbol's trades and books; shut down gracefully after the test."""
    database_url = f"sqlite:///{tmp_path / 'oraculo-test.db'}"
    settings = service_settings(
        database_url,
        mock_exchange.ws_url,
        market_script.symbols,
        alert_service_config,
        dump_dir=tmp_path / "dumps",
    )
    rules = parse_rules({"rule": [dict(rule) for rule in alert_rules]}, resolve_rule_class)
    sink = RecordingSink()
    with trio.fail_after(30):
        handle = await start_service(nursery, settings, rules, sinks=[sink], exchange=mock_exchange)
    try:
        async with open_store(database_url, statement_timeout=5.0) as store:
            yield AlertService(handle, store, sink, settings)
    finally:
        await stop_service(handle)


@pytest.fixture
def wait_for_alert(
    alert_service: AlertService,
) -> Callable[..., Awaitable[dict[str, Any]]]:
    """``await wait_for_alert(rule_id, symbol, state, timeout=10)``: see
    :meth:`AlertService.wait_for_alert`."""
    return alert_service.wait_for_alert
