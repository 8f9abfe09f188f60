"""Rule kinds inside the running service (the plugin's fixtures: mock exchange on
127.0.0.1, the real pipeline, a temporary SQLite store): per-batch book rules, no_data on a
symbol that never speaks, zscore offloaded to the ``rules`` limiter, inhibition."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import trio

from oraculo_trio.core.events import DEPTH
from oraculo_trio.core.rules import RuleBase, RuleState, Signal


class CountingWall(RuleBase):
    """A per-batch book rule that counts how often it is judged."""

    kind: ClassVar[str] = "counting_wall"
    streams: ClassVar[frozenset[str]] = frozenset({DEPTH})
    per_batch: ClassVar[bool] = True
    evaluations: ClassVar[int] = 0

    def __init__(self, params: dict[str, Any]) -> None:
        self.qty = params["qty"]

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        CountingWall.evaluations += 1
        top = state.market.book.levels("bid", 1)[0]
        return Signal(top[1] >= self.qty, top[1])


@pytest.fixture
def market_symbols() -> tuple[str, ...]:
    return ("BTCUSDT", "ETHUSDT", "XRPUSDT")


@pytest.fixture
def alert_rules() -> list[dict[str, Any]]:
    return [
        {"id": "wall", "kind": CountingWall, "symbols": ["ETHUSDT"], "params": {"qty": 50}},
        {"id": "silent", "kind": "no_data", "symbols": ["XRPUSDT"], "params": {"seconds": 0.5}},
        {"id": "z", "kind": "zscore", "symbols": ["BTCUSDT"],
         "params": {"window": 60, "threshold": 3, "min_samples": 10}},
        {"id": "crash", "kind": "less_than", "symbols": ["BTCUSDT"], "params": {"level": 100},
         "severity": "critical", "inhibits": {"severity": "warning"}},
        {"id": "dip", "kind": "less_than", "symbols": ["BTCUSDT"], "params": {"level": 150},
         "trigger": "every_time"},
    ]  # fmt: skip


async def test_book_rules_run_once_per_batch_not_per_message(alert_service, market_script):
    CountingWall.evaluations = 0
    with trio.fail_after(10):
        for qty in range(1, 101):  # published together: a few batches, 100 messages
            market_script.quote("ETHUSDT", 3000.0, 3001.0, bid_qty=float(qty))
        event = await alert_service.wait_for_alert("wall", "ETHUSDT", "firing")
    assert event["value"] >= 50
    assert 1 <= CountingWall.evaluations < 100


async def test_no_data_fires_for_a_symbol_that_never_spoke(alert_service, market_script):
    with trio.fail_after(10):
        fired = await alert_service.wait_for_alert("silent", "XRPUSDT", "firing")
        assert fired["value"] >= 0.5
        market_script.trade("XRPUSDT", 0.5)
        await alert_service.wait_for_alert("silent", "XRPUSDT", "resolved")


async def test_zscore_runs_in_the_rules_thread_limiter(alert_service, market_script):
    metrics = alert_service.handle.metrics
    with trio.fail_after(10):
        for _ in range(30):
            market_script.trade("BTCUSDT", 200.0 + (_ % 2) * 0.01)
        await market_script.sent()
        market_script.trade("BTCUSDT", 260.0)
        event = await alert_service.wait_for_alert("z", "BTCUSDT", "firing")
    assert event["value"] > 3

    # Process stats export the limiter's statistics (sampled once a second).
    def max_workers() -> float | None:
        return metrics.inner.get_sample_value(
            "oraculo_to_thread_executor_max_workers", {"limiter": "rules"}
        )

    with trio.fail_after(5):
        while max_workers() != 2.0:  # noqa: ASYNC110 (a gauge has no event)
            await trio.sleep(0.05)
    for name in ("threads", "queue_depth"):
        value = metrics.inner.get_sample_value(
            f"oraculo_to_thread_executor_{name}", {"limiter": "rules"}
        )
        assert value is not None


async def test_a_firing_rule_inhibits_the_notifications_of_others(alert_service, market_script):
    with trio.fail_after(10):
        market_script.trade("BTCUSDT", 140.0)  # only dip: notified
        await alert_service.wait_for_alert("dip", "BTCUSDT", "firing")
        market_script.trade("BTCUSDT", 200.0)
        await alert_service.wait_for_alert("dip", "BTCUSDT", "resolved")
        market_script.trade("BTCUSDT", 90.0)  # crash and dip: dip is inhibited
        await alert_service.wait_for_alert("crash", "BTCUSDT", "firing")
        await alert_service.wait_for_alert("dip", "BTCUSDT", "firing")
        market_script.trade("BTCUSDT", 200.0)
        await alert_service.wait_for_alert("dip", "BTCUSDT", "resolved")
        await alert_service.wait_for_alert("crash", "BTCUSDT", "resolved")
        await alert_service.notifications.wait_for(4)
    notified = [(t.rule_id, t.state) for t in alert_service.notifications.transitions]
    assert notified[:2] == [("dip", "firing"), ("dip", "resolved")]
    assert sorted(notified[2:]) == [("crash", "firing"), ("crash", "resolved")]
    metrics = alert_service.handle.metrics
    assert (
        metrics.inner.get_sample_value("oraculo_dispatch_dropped_total", {"reason": "inhibited"})
        == 2
    )
