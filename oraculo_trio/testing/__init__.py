"""Testing oraculo-trio: pytest fixtures for alert rules, and the harness the project's own
tests (and its load tool) run the service with.

The pytest plugin
-----------------

Registered as a pytest plugin (entry point ``pytest11``: ``oraculo_trio``), so installing
oraculo-trio makes these fixtures available to any test suite; without the entry point,
``pytest -p oraculo_trio.testing`` loads it. The fixtures are async: they need pytest-trio
(``trio_mode = true``, or ``@pytest.mark.trio`` on each test). Everything runs on
127.0.0.1 with port 0 and the real clock; nothing leaves the machine.

Fixtures:

- ``market_symbols``: the symbols the market publishes (override it; default BTCUSDT and
  ETHUSDT).
- ``market_script``: a :class:`MarketScript` to send trades and books, published on the
  mock exchange's next tick (every 20 ms).
- ``mock_exchange``: the Binance-compatible mock exchange
  (:class:`oraculo_trio.mockexchange.exchange.MockExchange`) publishing ``market_script``.
- ``alert_rules``: the rules under test, as rule-file entries (override it; ``kind`` may be
  a built-in name, ``"module:Class"`` or the class itself). Default: none.
- ``alert_service_config``: configuration overrides ``{section: {key: value}}``.
- ``alert_service``: an :class:`AlertService`: the whole service wired to the mock exchange
  and a temporary SQLite store, subscribed and ready.
- ``wait_for_alert``: ``await wait_for_alert(rule_id, symbol, state)`` returns the next
  ``alert_events`` row of that (rule, symbol) in that state.

Example::

    @pytest.fixture
    def alert_rules():
        return [{"id": "big", "kind": "large_trade", "params": {"notional": 1e6}}]

    async def test_big_trade(market_script, wait_for_alert):
        market_script.trade("BTCUSDT", 50_000, qty=30)
        event = await wait_for_alert("big", "BTCUSDT", "firing")
        assert event["value"] == 1_500_000

The harness
-----------

- :mod:`~oraculo_trio.testing.config`: one service configuration (test defaults plus
  overrides), as :class:`~oraculo_trio.settings.Settings` or as ``oraculo.toml`` and
  ``rules.toml``.
- :mod:`~oraculo_trio.testing.processes`: the service (or the ``run --workers N``
  supervisor) as a subprocess that reports the port it bound.
- :mod:`~oraculo_trio.testing.service`: the service in this process, on a mock exchange.
- :mod:`~oraculo_trio.testing.postgres`: admin statements and fresh databases.
- :mod:`~oraculo_trio.testing.net`: HTTP GETs, and a port that refuses connections.

Only :mod:`~oraculo_trio.testing.fixtures` imports pytest: the rest serves tools that run
without it.
"""

from __future__ import annotations

from typing import Any

from oraculo_trio.testing.config import service_settings
from oraculo_trio.testing.market import MarketScript
from oraculo_trio.testing.service import AlertService, RecordingSink

FIXTURES = (
    "alert_rules",
    "alert_service",
    "alert_service_config",
    "market_script",
    "market_symbols",
    "mock_exchange",
    "wait_for_alert",
)
"""The names of the plugin's fixtures (in :mod:`~oraculo_trio.testing.fixtures`)."""

__all__ = ["FIXTURES", "AlertService", "MarketScript", "RecordingSink", "service_settings"]
__all__ += FIXTURES

# pytest registers the fixtures of this module when it loads the plugin.
pytest_plugins = ["oraculo_trio.testing.fixtures"]


def __getattr__(name: str) -> Any:
    # The fixtures import pytest: only on demand, so the harness works without it.
    if name in FIXTURES:
        from oraculo_trio.testing import fixtures

        return getattr(fixtures, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
