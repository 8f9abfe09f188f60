"""A user's test of a custom rule, through the oraculo_trio pytest plugin alone."""

import pytest


@pytest.fixture
def alert_rules():
    return [
        {"id": "jump", "kind": "rules_under_test:BigJump", "symbols": ["BTCUSDT"],
         "params": {"pct": 5}, "trigger": "every_time"},
    ]  # fmt: skip


async def test_big_jump_fires_and_resolves(alert_service, market_script, wait_for_alert):
    market_script.trade("BTCUSDT", 100.0)
    market_script.trade("BTCUSDT", 110.0)  # +10 %
    fired = await wait_for_alert("jump", "BTCUSDT", "firing")
    assert fired["value"] == pytest.approx(10.0)
    market_script.trade("BTCUSDT", 110.5)  # +0.45 %
    await wait_for_alert("jump", "BTCUSDT", "resolved")
    notified = [t.state for t in alert_service.notifications.transitions]
    assert notified == ["firing", "resolved"]


async def test_the_mock_exchange_is_local(mock_exchange, market_script):
    assert mock_exchange.ws_url.startswith("ws://127.0.0.1:")
    market_script.quote("ETHUSDT", 2999.0, 3001.0)
    await market_script.sent()
    assert market_script.published == 1
