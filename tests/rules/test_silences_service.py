"""A silence in the running service: the alert is still evaluated and stored, its
notification is not delivered, and that is recorded and counted."""

from __future__ import annotations

import time
from typing import Any

import pytest
import trio

from oraculo_trio.core.silences import parse_matchers


@pytest.fixture
def alert_rules() -> list[dict[str, Any]]:
    return [
        {"id": "big", "kind": "large_trade", "params": {"notional": 1000}, "trigger": "every_time"}
    ]


async def wait_silences(handle, count: int) -> None:
    # The service reads the silences table every dispatch.silence_refresh (0.1 s here).
    now = time.time()
    while handle.silences.active(now) != count:
        await trio.sleep(0.02)
        now = time.time()


async def test_a_silence_mutes_notifications_but_the_alert_is_recorded(
    alert_service, market_script
):
    handle = alert_service.handle
    store = alert_service.store
    now = time.time()
    with trio.fail_after(15):
        matchers = parse_matchers(["rule_id=big", "symbol=BTCUSDT"])
        silence = await store.add_silence(matchers, now - 1, now + 3600, "test", "me")
        await wait_silences(handle, 1)
        market_script.trade("BTCUSDT", 100.0, qty=20)  # silenced
        market_script.trade("ETHUSDT", 100.0, qty=20)  # another symbol: delivered
        await alert_service.wait_for_alert("big", "BTCUSDT", "firing")
        await alert_service.wait_for_alert("big", "BTCUSDT", "resolved")
        await alert_service.wait_for_alert("big", "ETHUSDT", "resolved")
        notified = await alert_service.notifications.wait_for(2)
        assert {(t.symbol, t.state) for t in notified} == {
            ("ETHUSDT", "firing"),
            ("ETHUSDT", "resolved"),
        }
        # Expired, it mutes nothing more.
        assert await store.expire_silence(silence.id, time.time())
        await wait_silences(handle, 0)
        market_script.trade("BTCUSDT", 100.0, qty=20)
        await alert_service.wait_for_alert("big", "BTCUSDT", "firing")
        await alert_service.notifications.wait_for(3)
        # Every notification, silenced or not, is a dispatch_logs row.
        while len(await store.fetch_dispatch_logs()) < 5:  # noqa: ASYNC110
            await trio.sleep(0.02)
    assert notified[2].symbol == "BTCUSDT"
    logs = [
        (log["symbol"], log["state"], log["status"], log["error"])
        for log in await store.fetch_dispatch_logs()
        if log["symbol"] == "BTCUSDT"
    ]
    assert logs[:3] == [
        ("BTCUSDT", "firing", "silenced", f"silence {silence.id}"),
        ("BTCUSDT", "resolved", "silenced", f"silence {silence.id}"),
        ("BTCUSDT", "firing", "delivered", None),
    ]
    metrics = handle.metrics
    assert (
        metrics.inner.get_sample_value("oraculo_dispatch_dropped_total", {"reason": "silenced"})
        == 2
    )
