"""Process faults: SIGTERM under load (drain, flush, every transition persisted); SIGKILL
while trades flow and transitions are being written, on SQLite and PostgreSQL (what is lost
is a tail: the transitions raised and not yet committed, and the frames unread in the
socket; measured); and SIGKILL then a restart (alert state comes back from the store: a
firing alert stays firing, a notification recorded as delivered is not sent again, one in
flight is sent again). Every row counts against the trades the exchange wrote."""

from __future__ import annotations

import json
import math
import random
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from oraculo_trio.mockexchange.tape import WrittenTrades
from oraculo_trio.settings.schema import DatabaseSettings
from oraculo_trio.testing.processes import ServiceProcess
from tests.reliability.conftest import Mode
from tests.reliability.expected import MARKER_RULE, judge_trades
from tests.reliability.rig import RULE_ENTRIES, check_store, deploy, record, until, until_async
from tests.reliability.webhook import Webhook

KILL_ALLOWANCE_S = 1.0
"""The longest a transition may have been on its way (its trade written, the transition
not committed) when SIGKILL came and still be excused: the store's commit interval (500 ms
by default) and batch window (50 ms), its channel (nearly empty when the writer keeps up),
and the frames unread in the socket. Measured: ``in_flight_s`` in each row's detail."""

PRODUCT_STORE = DatabaseSettings()
"""The store writer's settings as users run it (the test defaults write sooner): the kill
scenarios measure what a crash loses with them."""

WRITER_CYCLE_S = PRODUCT_STORE.commit_interval_ms / 1000.0
"""The store writer's cycle under a steady flow: its commit interval."""


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
        exchange = deployment.exchange
        verdict = judge_trades(exchange.written, result.events, stopping_at=signalled)
        record(figures, terms, result, verdict, exchange, faults=1)
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
            stopping_at = trio.current_time()
            assert await second.stop(signal.SIGTERM) == 0, second.log_tail()
        terms = second.final_terms("accounting")
        # Raised: unknown (the first process died before it could say); the count is the
        # exchange's: the trades it wrote to either process.
        result = await check_store(url, None)
    verdict = judge_trades(
        exchange.written, result.events, stopping_at=stopping_at, allowance=KILL_ALLOWANCE_S
    )
    record(figures, terms, result, verdict, exchange, faults=1)
    figures.detail["in_flight_at_kill"] = verdict.in_flight
    # A firing alert stays firing: one firing, never resolved, never fired again.
    assert events_of(database, "sticky") == [("firing", 1)]
    assert events_of(database, "held") == [("firing", 1)]
    # Delivered and recorded before the kill: not sent again.
    assert len(bodies_of(webhook, "sticky")) == 1
    # In flight at the kill: sent again (delivered once here; the first try hung).
    assert len(bodies_of(webhook, "held")) == 1
    assert sum(1 for b in webhook.bodies if b["groupLabels"]["alertname"] == "held") == 2
    figures.detail["restored"] = second.final_terms("alerts")


async def store_written(service: ServiceProcess) -> float:
    """Rows the store writer of ``service`` committed, from its /metrics."""
    exposition = (await service.get("/metrics")).body
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if (
                sample.name == "oraculo_stage_messages_out_total"
                and sample.labels.get("stage") == "store"
            ):
                return sample.value
    return 0.0


async def written_past(service: ServiceProcess, target: float) -> bool:
    return await store_written(service) >= target


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def kill_store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    # Synchronous: the database is created outside the Trio run (plain asyncio).
    if request.param == "sqlite":
        return "sqlite", f"sqlite:///{tmp_path / 'alerts.db'}"
    return "postgres", request.getfixturevalue("private_database")


async def test_sigkill_in_flight_loses_only_the_uncommitted_tail(
    tmp_path: Path, mode: Mode, scenario, nursery: trio.Nursery, kill_store: tuple[str, str]
) -> None:
    name, url = kill_store
    figures = scenario(f"process/sigkill-in-flight-{name}")
    kills = mode.count(3, 10)
    killed_at = []
    with trio.fail_after(mode.pick(90, 600)):
        writer = {
            "batch_window_ms": PRODUCT_STORE.batch_window_ms,
            "commit_interval_ms": PRODUCT_STORE.commit_interval_ms,
        }
        deployment = await deploy(
            nursery,
            tmp_path,
            rate=mode.pick(1000.0, 3000.0),
            database_url=url,
            extra={"database": writer},
        )
        for _ in range(kills):
            async with deployment.service() as service:
                # Killed while trades flow and the writer commits (a batch every commit
                # interval under this load): past a mark, then anywhere in the writer's cycle.
                target = await store_written(service) + mode.count(200, 2000)
                await until_async(lambda s=service, t=target: written_past(s, t))
                await trio.sleep(random.uniform(0.0, WRITER_CYCLE_S))  # part of the fault
                killed_at.append(trio.current_time())
                assert await service.stop(signal.SIGKILL) == -signal.SIGKILL
        async with deployment.service() as last:
            await trio.sleep(mode.pick(1.0, 5.0))  # the last process under load a while
            stopping_at = trio.current_time()
            assert await last.stop(signal.SIGTERM) == 0, last.log_tail()
        terms = last.final_terms("accounting")
        result = await check_store(url, None)
    exchange = deployment.exchange
    verdict = judge_trades(
        exchange.written, result.events, stopping_at=stopping_at, allowance=KILL_ALLOWANCE_S
    )
    record(figures, terms, result, verdict, exchange, faults=kills)
    figures.detail.update(
        in_flight_at_kills=verdict.in_flight,
        in_flight_s=verdict.in_flight_s,
        uncommitted_window_s=uncommitted_window(exchange.written, result.events, killed_at),
        allowance_s=KILL_ALLOWANCE_S,
    )


def uncommitted_window(
    written: WrittenTrades | None, events: list[dict[str, Any]], killed_at: list[float]
) -> float:
    """The longest, over the kills, from the newest trade written to the killed process
    whose marker firing is stored to the kill: how far back what was not committed goes (an
    upper bound: markers come every tenth trade of a symbol)."""
    assert written is not None
    stored = {(e["symbol"], int(e["value"])) for e in events if e["rule_id"] == MARKER_RULE}
    trades = written.trades()
    windows = []
    for kill in killed_at:
        # The killed process's trade connection closed as it died.
        killed = {c for c, at in written.closed_at.items() if kill <= at <= kill + 1.0}
        newest = max(
            (t.at for t in trades if t.connection in killed and (t.symbol, t.trade_id) in stored),
            default=math.nan,
        )
        windows.append(kill - newest)
    return max(windows)
