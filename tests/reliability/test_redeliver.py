"""Which notifications a starting pipeline sends again (dispatch/redeliver.py), on both
stores: the latest notification of an alert that some sink has not settled."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from oraculo_trio.core.alerts import AlertTransition
from oraculo_trio.dispatch.redeliver import unconfirmed_notifications
from oraculo_trio.store.base import DispatchLog, Store
from oraculo_trio.store.opening import open_store


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    # Synchronous: the database is created outside the Trio run (plain asyncio).
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'alerts.db'}"
    return request.getfixturevalue("private_database")


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    async with open_store(store_url, statement_timeout=5.0) as opened:
        yield opened


def transition(rule: str, state: str, at: float, *, notify: bool = True) -> AlertTransition:
    previous = "inactive" if state == "firing" else "firing"
    return AlertTransition(
        rule, "BTCUSDT", state, previous, 101.5, at, 10.0, 1, message=f"{rule} {state}",
        labels={"team": "a"}, notify=notify,
    )  # fmt: skip


def log(rule: str, state: str, at: float, status: str, sink: str = "webhook") -> DispatchLog:
    return DispatchLog(rule, "BTCUSDT", sink, status, 1, 1.0, None, at, state)


async def test_only_unsettled_latest_notifications_are_sent_again(store: Store) -> None:
    history = [
        transition("delivered", "firing", 10.0),
        transition("in-flight", "firing", 10.0),
        transition("failed", "firing", 10.0),
        transition("one-sink", "firing", 10.0),
        transition("superseded", "firing", 10.0),
        transition("superseded", "resolved", 20.0),
        transition("silent-after", "firing", 10.0),
        transition("silent-after", "resolved", 20.0, notify=False),
        transition("old-delivery", "firing", 30.0),
    ]
    await store.upsert_rule_alerts(history)
    await store.insert_alert_events(history)
    await store.insert_dispatch_logs(
        [
            log("delivered", "firing", 10.5, "delivered"),
            log("delivered", "firing", 10.5, "delivered", sink="log"),
            log("failed", "firing", 10.5, "failed"),
            log("failed", "firing", 10.5, "delivered", sink="log"),
            log("one-sink", "firing", 10.5, "delivered", sink="log"),
            log("superseded", "firing", 10.5, "delivered"),
            log("superseded", "resolved", 20.5, "dropped"),
            log("superseded", "resolved", 20.5, "silenced", sink="log"),
            # A delivery of an earlier firing of this alert does not settle this one.
            log("old-delivery", "firing", 5.0, "delivered"),
            log("old-delivery", "firing", 30.5, "delivered", sink="log"),
        ]
    )
    again = await unconfirmed_notifications(store, ["webhook", "log"], {"BTCUSDT"})
    assert sorted((t.rule_id, t.state) for t in again) == [
        ("failed", "firing"),
        ("in-flight", "firing"),
        ("old-delivery", "firing"),
        ("one-sink", "firing"),
    ]
    sent = next(t for t in again if t.rule_id == "in-flight")
    assert sent == transition("in-flight", "firing", 10.0)
    # Not this process's symbols, or no sink: nothing.
    assert await unconfirmed_notifications(store, ["webhook"], {"ETHUSDT"}) == []
    assert await unconfirmed_notifications(store, [], {"BTCUSDT"}) == []
