"""A hanging webhook never slows evaluation: the whole service against a receiver on
127.0.0.1 that never answers, under a stream of alerts."""

from __future__ import annotations

import functools
from pathlib import Path

import trio

from oraculo_trio.core.rules import parse_rules
from oraculo_trio.pipeline.service import run_service
from oraculo_trio.store.opening import open_store
from oraculo_trio.testing import service_settings
from tests.dispatch.receiver import HANG, Receiver

RULES = {
    "rule": [
        {"id": "cross", "kind": "crossing", "symbols": ["BTCUSDT"], "params": {"level": 100},
         "trigger": "every_time"},
    ]
}  # fmt: skip
TRADES = 2_000
# 101, 102, 99, 98, ...: every other trade crosses 100 and the next one resolves it, so
# every trade after the first two is a transition, and a notification.
PRICES = (101.0, 102.0, 99.0, 98.0)


def sample(metrics, name: str, **labels: str) -> float:
    return metrics.inner.get_sample_value(name, labels) or 0.0


async def test_a_hanging_webhook_never_blocks_evaluation(
    tmp_path: Path, nursery: trio.Nursery, mock_exchange, market_script
) -> None:
    receiver = await nursery.start(Receiver(HANG).serve)
    settings = service_settings(
        f"sqlite:///{tmp_path / 'alerts.db'}",
        mock_exchange.ws_url,
        market_script.symbols,
        {
            "dispatch": {
                "sinks": ["webhook"], "webhook_url": receiver.url, "webhook_timeout": 30.0,
                "webhook_concurrency": 2, "channel_capacity": 16,
            },
        },
        dump_dir=tmp_path / "dumps",
    )  # fmt: skip
    with trio.fail_after(30):
        handle = await nursery.start(
            functools.partial(run_service, settings, parse_rules(RULES), handle_signals=False)
        )
        await mock_exchange.wait_for_subscribers("btcusdt@trade")
        for i in range(TRADES):
            market_script.trade("BTCUSDT", PRICES[i % 4])
        metrics = handle.metrics
        # Every message is evaluated while the webhook holds its two requests.
        await receiver.wait_requests(2)
        while sample(metrics, "oraculo_alerts_messages_evaluated_total", stream="trade") < TRADES:  # noqa: ASYNC110
            await trio.sleep(0.02)
        assert receiver.in_flight == 2 and receiver.requests == 2
        # No message waited for the webhook: queue time stayed far below its 30 s hang.
        queue_time = metrics.queue_time["trade"]
        slow = sum(queue_time.counts[metrics_bucket(queue_time, 0.5) :])
        assert slow == 0
        receiver.release()
        handle.request_shutdown()
        await handle.stopped.wait()
    lane = sample(metrics, "oraculo_dispatch_dropped_total", reason="sink_overflow")
    channel = sample(metrics, "oraculo_dispatch_dropped_total", reason="overflow")
    # All but those in flight (2) and queued (16 in the lane, 16 in the dispatch channel)
    # were dropped, and counted.
    assert lane + channel >= TRADES - 2 - 2 - 16 - 16
    # Every transition is stored even though most notifications were dropped.
    async with open_store(settings.database.url, statement_timeout=5) as store:
        events = await store.fetch_alert_events()
        logs = await store.fetch_dispatch_logs()
    assert len(events) == TRADES - 2
    assert sorted({log["status"] for log in logs}) == ["delivered", "dropped"]
    # Each notification that reached the dispatcher has its row; the rest were dropped
    # (counted) before it, when its own channel was full.
    assert len(logs) == len(events) - channel


def metrics_bucket(child, bound: float) -> int:
    """Index of the first bucket above ``bound`` seconds."""
    return next(i for i, b in enumerate(child._bounds) if b > bound)
