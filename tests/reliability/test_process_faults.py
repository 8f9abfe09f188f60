"""Process faults: SIGTERM under load (drain, flush, every transition persisted), and SIGKILL
then a restart (alert state comes back from the store: a firing alert stays firing, a
notification recorded as delivered is not sent again, one in flight is sent again)."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import trio

from tests.reliability.conftest import Mode
from tests.reliability.rig import RULE_ENTRIES, check_store, deploy, record, until
from tests.reliability.webhook import Webhook


async def test_sigterm_under_load_drains_and_persists_everything(
    tmp_path: Path, mode: Mode, scenario, nursery: trio.Nursery
) -> None:
    figures = scenario("process/sigterm-under-load")
    url = f"sqlite:///{tmp_path / 'alerts.db'}"
    with trio.fail_after(mode.pick(60, 180)):
        deployment = await deploy(
            nursery, tmp_path, rate=mode.pick(1000.0, 5000.0), database_url=url
        )
        async with deployment.service() as service:
            await trio.sleep(mode.pick(2.0, 30.0))  # under load for this long
            signalled = trio.current_time()
            assert await service.stop(signal.SIGTERM) == 0, service.log_tail()
            figures.recovery_s = trio.current_time() - signalled  # the drain and final flush
        terms = service.final_terms("accounting")
        alerts = service.final_terms("alerts")
        result = await check_store(url, alerts["transitions"])
        record(figures, terms, result, faults=1)
    assert alerts["store_items_taken"] == alerts["store_items_written"]
    figures.detail["shutdown_log"] = [line for line in service.lines if "stopp" in line][-4:]


def dispatch_rows(database: Path, rule_id: str) -> list[tuple[str, str]]:
    with sqlite3.connect(database) as conn:
        return conn.execute(
            "SELECT state, status FROM dispatch_logs WHERE rule_id = ?", (rule_id,)
        ).fetchall()


def events_of(database: Path, rule_id: str) -> list[tuple[str, int]]:
    with sqlite3.connect(database) as conn:
        return conn.execute(
            "SELECT state, fire_count FROM alert_events WHERE rule_id = ? ORDER BY id", (rule_id,)
        ).fetchall()


def bodies_of(webhook: Webhook, rule_id: str) -> list[dict[str, Any]]:
    return [body for body in webhook.delivered if body["groupLabels"]["alertname"] == rule_id]


STICKY = {  # fires on the first BTCUSDT trade and stays firing (every price is above 1)
    "id": "sticky",
    "kind": "greater_than",
    "symbols": ["BTCUSDT"],
    "params": {"level": 1.0},
    "trigger": "every_time",
}
HELD = {  # fires on one trade the test sends, and stays firing for an hour
    "id": "held",
    "kind": "greater_than",
    "symbols": ["ETHUSDT"],
    "params": {"level": 5000.0},
    "keep_firing_for": "1h",
    "trigger": "every_time",
}


async def test_sigkill_then_restart_restores_alerts_and_redelivers_in_flight(
    tmp_path: Path, mode: Mode, scenario, nursery: trio.Nursery
) -> None:
    figures = scenario("process/sigkill-restart")
    database = tmp_path / "alerts.db"
    url = f"sqlite:///{database}"
    webhook = await nursery.start(Webhook().serve)
    with trio.fail_after(mode.pick(90, 240)):
        deployment = await deploy(
            nursery,
            tmp_path,
            rate=mode.rate,
            database_url=url,
            rules=[*RULE_ENTRIES, STICKY, HELD],
            extra={
                "dispatch": {
                    "sinks": ["webhook"],
                    "webhook_url": webhook.url,
                    "webhook_timeout": 30.0,
                    "webhook_retries": 3,
                    "webhook_backoff": 0.05,
                    "webhook_breaker_failures": 0,
                }
            },
        )
        exchange = deployment.exchange
        async with deployment.service() as first:
            # The sticky alert fired, was delivered, and its delivery is recorded.
            await until(lambda: ("firing", "delivered") in dispatch_rows(database, "sticky"))
            await trio.sleep(mode.pick(1.0, 10.0))  # under load, many flappy transitions
            # Now the webhook holds every request: notifications stay in flight.
            await webhook.set_mode("hang")
            now_ms = int(time.time() * 1000)
            payload = {"e": "trade", "E": now_ms, "s": "ETHUSDT", "t": 1, "p": "6000.00000000",
                       "q": "1.00000000", "T": now_ms, "m": False, "M": True}  # fmt: skip
            await exchange.send_raw(json.dumps({"stream": "ethusdt@trade", "data": payload}))
            await until(lambda: events_of(database, "held") == [("firing", 1)])
            await until(lambda: any(
                b["groupLabels"]["alertname"] == "held" for b in webhook.bodies
            ))  # fmt: skip
            killed_at = trio.current_time()
            assert await first.stop(signal.SIGKILL) == -signal.SIGKILL
        await webhook.set_mode("ok")
        async with deployment.service() as second:
            # The notification in flight at the kill is delivered by the new process.
            await until(lambda: bodies_of(webhook, "held"))
            figures.recovery_s = trio.current_time() - killed_at
            await trio.sleep(mode.pick(1.0, 10.0))
            assert await second.stop(signal.SIGTERM) == 0, second.log_tail()
        terms = second.final_terms("accounting")
        result = await check_store(url, None)
    record(figures, terms, result, faults=1)
    # A firing alert stays firing: one firing, never resolved, never fired again.
    assert events_of(database, "sticky") == [("firing", 1)]
    assert events_of(database, "held") == [("firing", 1)]
    # Delivered and recorded before the kill: not sent again.
    assert len(bodies_of(webhook, "sticky")) == 1
    # In flight at the kill: sent again (delivered once here; the first try hung).
    assert len(bodies_of(webhook, "held")) == 1
    assert sum(1 for b in webhook.bodies if b["groupLabels"]["alertname"] == "held") == 2
    figures.detail["restored"] = second.final_terms("alerts")
