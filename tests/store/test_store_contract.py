"""The Store contract, run identically on SQLite and PostgreSQL (the ``store`` fixture)."""

from __future__ import annotations

import attrs
import pytest
import trio

from oraculo_trio.errors import StoreUnavailable
from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.store import AlertRow, Store, open_store
from oraculo_trio.store.migrations import load_migrations
from tests.store.store_testing import dispatch_log, histogram_count, sample, transition, write_lock


def assert_metered_once(metrics: ServiceMetrics, rows_by_op: dict[str, int]) -> None:
    """Each op ran one statement, which wrote its number of rows."""
    for op, rows in rows_by_op.items():
        assert histogram_count(metrics.db_insert_ms[op]) == 1
        assert sample(metrics, "oraculo_db_rows_total", op=op) == rows


async def test_migrations_apply_once_and_are_idempotent(store_url: str) -> None:
    with trio.fail_after(20):
        async with open_store(store_url, statement_timeout=2.0, apply_migrations=False) as store:
            shipped = [m.version for m in load_migrations(store.dialect)]
            assert shipped[0] == 1
            assert await store.migrate() == shipped
            assert await store.migrate() == []
        # Opening again (which migrates on start-up) finds nothing to do and a usable schema.
        async with open_store(store_url, statement_timeout=2.0) as store:
            assert await store.migrate() == []
            await store.upsert_rule_alerts([transition(1)])
            assert len(await store.load_alert_states()) == 1


async def test_store_satisfies_protocol(store: Store) -> None:
    assert isinstance(store, Store)
    assert store.dialect in ("sqlite", "postgresql")


async def test_upsert_round_trips_every_field(store: Store) -> None:
    pending = transition(1, rule_id="r1", symbol="ETHUSDT", state="pending", notify=False)
    firing = transition(2, rule_id="r2", labels={"team": "desk", "env": "prod", "ñ": "ü"})
    await store.upsert_rule_alerts([pending, firing])
    rows = await store.load_alert_states()
    assert rows == [
        AlertRow(
            rule_id="r1",
            symbol="ETHUSDT",
            state="pending",
            started_at=None,
            last_change=pending.at,
            fire_count=1,
            last_value=pending.value,
            labels={"team": "desk"},
            last_notified_at=None,
            severity="critical",
            message="event 1",
        ),
        AlertRow(
            rule_id="r2",
            symbol="BTCUSDT",
            state="firing",
            started_at=firing.started_at,
            last_change=firing.at,
            fire_count=1,
            last_value=firing.value,
            labels={"team": "desk", "env": "prod", "ñ": "ü"},
            last_notified_at=firing.at,
            severity="critical",
            message="event 2",
        ),
    ]


async def test_upsert_is_idempotent(store: Store) -> None:
    batch = [transition(i, symbol=f"S{i}") for i in range(20)]
    await store.upsert_rule_alerts(batch)
    first = await store.load_alert_states()
    await store.upsert_rule_alerts(batch)
    assert await store.load_alert_states() == first
    assert len(first) == 20


async def test_last_transition_of_a_batch_wins(store: Store) -> None:
    batch = [
        transition(1, state="pending", previous_state="inactive", notify=False, fire_count=0),
        transition(2, state="firing", previous_state="pending", fire_count=1),
        transition(3, state="firing", previous_state="firing", fire_count=1, repeat=True),
        transition(4, symbol="ETHUSDT", state="pending", previous_state="inactive", notify=False),
        transition(5, state="resolved", previous_state="firing", fire_count=1, notify=False),
    ]
    await store.upsert_rule_alerts(batch)
    btc, eth = await store.load_alert_states()
    assert (eth.symbol, eth.state) == ("ETHUSDT", "pending")
    assert btc.state == "resolved"
    assert btc.last_change == batch[4].at
    assert btc.last_value == batch[4].value
    assert btc.fire_count == 1
    # The last transition was not notified: the latest notified one of the batch counts.
    assert btc.last_notified_at == batch[2].at


async def test_fire_count_and_state_follow_the_lifecycle(store: Store) -> None:
    lifecycle = [
        ("pending", "inactive", 0, False),
        ("firing", "pending", 1, True),
        ("resolved", "firing", 1, True),
        ("inactive", "resolved", 1, False),
        ("firing", "inactive", 2, True),
    ]
    for i, (state, previous, fire_count, notify) in enumerate(lifecycle):
        t = transition(
            i, state=state, previous_state=previous, fire_count=fire_count, notify=notify
        )
        await store.upsert_rule_alerts([t])
        (row,) = await store.load_alert_states()
        assert (row.state, row.fire_count, row.last_change) == (state, fire_count, t.at)
    # last_notified_at survives transitions that are not notified, then moves on.
    assert row.last_notified_at == transition(4).at


async def test_alert_events_are_append_only_and_ordered(store: Store) -> None:
    first = [transition(i, symbol="BTCUSDT" if i % 2 else "ETHUSDT") for i in range(5)]
    second = [transition(i, rule_id="depth", labels={}) for i in range(5, 8)]
    await store.insert_alert_events(first)
    await store.insert_alert_events(second)
    events = await store.fetch_alert_events()
    assert [(e["rule_id"], e["symbol"], e["at"]) for e in events] == [
        (t.rule_id, t.symbol, t.at) for t in first + second
    ]
    ids = [e["id"] for e in events]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert events[0] == {
        "id": ids[0],
        "rule_id": "spread",
        "symbol": "ETHUSDT",
        "state": "firing",
        "previous_state": "pending",
        "value": first[0].value,
        "at": first[0].at,
        "started_at": first[0].started_at,
        "fire_count": 1,
        "repeat": False,
        "severity": "critical",
        "message": "event 0",
        "labels": {"team": "desk"},
    }
    assert events[-1]["labels"] == {}
    # Filters.
    assert [e["at"] for e in await store.fetch_alert_events(rule_id="depth")] == [
        t.at for t in second
    ]
    assert len(await store.fetch_alert_events(rule_id="spread", symbol="BTCUSDT")) == 2
    assert len(await store.fetch_alert_events(symbol="ETHUSDT")) == 3


async def test_retried_event_batch_is_stored_once(store: Store) -> None:
    batch = [transition(i) for i in range(10)]
    repeat = attrs.evolve(transition(3), repeat=True)
    await store.insert_alert_events(batch)
    await store.insert_alert_events([*batch, repeat])  # a retry after an in-doubt commit
    events = await store.fetch_alert_events()
    assert [(e["at"], e["repeat"]) for e in events] == [
        *((t.at, False) for t in batch),
        (repeat.at, True),
    ]


async def test_dispatch_logs_are_inserted_in_order(store: Store) -> None:
    logs = [dispatch_log(0), dispatch_log(1, status="failed", error="HTTP 503"), dispatch_log(2)]
    await store.insert_dispatch_logs(logs)
    rows = await store.fetch_dispatch_logs()
    assert [{k: v for k, v in row.items() if k != "id"} for row in rows] == [
        attrs.asdict(log) for log in logs
    ]
    assert [row["id"] for row in rows] == sorted(row["id"] for row in rows)


async def test_a_batch_records_states_events_and_logs_together(
    store: Store, metrics: ServiceMetrics
) -> None:
    # What the writer sends once per batch: one transaction, each statement metered.
    transitions = [transition(1), transition(2, symbol="ETHUSDT")]
    logs = [dispatch_log(0), dispatch_log(1)]
    await store.record_transitions(transitions, logs)
    assert [(row.rule_id, row.symbol) for row in await store.load_alert_states()] == [
        ("spread", "BTCUSDT"),
        ("spread", "ETHUSDT"),
    ]
    assert len(await store.fetch_alert_events()) == 2
    assert len(await store.fetch_dispatch_logs()) == 2
    assert_metered_once(
        metrics, {"upsert_rule_alert": 2, "insert_alert_events": 2, "insert_dispatch_logs": 2}
    )
    # Logs alone (no transition in the batch) are one statement.
    await store.record_transitions([], [dispatch_log(2)])
    assert len(await store.fetch_dispatch_logs()) == 3
    assert histogram_count(metrics.db_insert_ms["insert_alert_events"]) == 1


async def test_empty_batches_touch_nothing(store: Store, metrics: ServiceMetrics) -> None:
    await store.upsert_rule_alerts([])
    await store.insert_alert_events([])
    await store.insert_dispatch_logs([])
    assert histogram_count(metrics.db_insert_ms["upsert_rule_alert"]) == 0
    assert await store.fetch_alert_events() == []


async def test_statements_are_metered(store: Store, metrics: ServiceMetrics) -> None:
    await store.ping()
    await store.upsert_rule_alerts([transition(1), transition(2, symbol="ETHUSDT")])
    await store.insert_alert_events([transition(1), transition(2)])
    await store.insert_dispatch_logs([dispatch_log(1)])
    assert_metered_once(
        metrics, {"upsert_rule_alert": 2, "insert_alert_events": 2, "insert_dispatch_logs": 1}
    )
    assert histogram_count(metrics.db_insert_ms["ping"]) == 1
    assert histogram_count(metrics.db_insert_ms["migrate"]) == 1
    assert sample(metrics, "oraculo_db_up") == 1


async def test_locked_database_raises_store_unavailable_and_counts_a_timeout(
    store_url: str, metrics: ServiceMetrics
) -> None:
    with trio.fail_after(20):
        async with open_store(store_url, statement_timeout=0.3, metrics=metrics) as store:
            async with write_lock(store_url):
                with pytest.raises(StoreUnavailable) as caught:
                    await store.upsert_rule_alerts([transition(1)])
            assert "upsert_rule_alert" in str(caught.value)
            assert sample(metrics, "oraculo_db_errors_total", op="upsert_rule_alert") == 1
            assert sample(metrics, "oraculo_db_timeouts_total", op="upsert_rule_alert") == 1
            assert sample(metrics, "oraculo_db_up") == 0
            # The lock is gone: the same store works again.
            await store.upsert_rule_alerts([transition(1)])
            assert sample(metrics, "oraculo_db_up") == 1
            assert len(await store.load_alert_states()) == 1
