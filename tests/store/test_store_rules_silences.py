"""The Store contract for rules kept in the database, silences and event queries, run
identically on SQLite and PostgreSQL (the ``store`` fixture)."""

from __future__ import annotations

import pytest
import trio

from oraculo_trio.core.rules import parse_rules
from oraculo_trio.core.silences import Matcher, Silence, alert_labels, parse_matchers
from oraculo_trio.errors import StoreError
from oraculo_trio.store import Store
from tests.store.store_testing import dispatch_log, transition

RULES = {
    "rule": [
        {"id": "b-cross", "kind": "crossing", "symbols": ["BTCUSDT"], "params": {"level": 50000},
         "message": "{symbol} crossed", "trigger": "every_time", "repeat_interval": "1m",
         "labels": {"team": "desk", "ñ": "ü"}, "inhibits": {"severity": "warning"},
         "severity": "critical"},
        {"id": "a-spread", "kind": "spread_above_bps", "symbols": "*", "params": {"bps": 20.5},
         "for": "2s", "keep_firing_for": 1.5, "expires_at": 2_000_000_000.0, "enabled": False},
    ]
}  # fmt: skip


async def test_rules_round_trip_through_the_table(store: Store) -> None:
    specs = [rule.spec for rule in parse_rules(RULES)]
    with trio.fail_after(10):
        assert await store.fetch_rules() == []
        await store.replace_rules(specs)
        entries = await store.fetch_rules()
    assert [entry["id"] for entry in entries] == ["a-spread", "b-cross"]
    # What comes back validates to the very same rules.
    again = parse_rules({"rule": entries})
    assert sorted((r.spec for r in again), key=lambda s: s.id) == sorted(specs, key=lambda s: s.id)


async def test_replace_rules_replaces_everything(store: Store) -> None:
    specs = [rule.spec for rule in parse_rules(RULES)]
    with trio.fail_after(10):
        await store.replace_rules(specs)
        await store.replace_rules(specs[:1])
        assert [entry["id"] for entry in await store.fetch_rules()] == ["b-cross"]
        await store.replace_rules([])
        assert await store.fetch_rules() == []


async def test_a_repeated_rule_id_fails_and_keeps_the_table(store: Store) -> None:
    specs = [rule.spec for rule in parse_rules(RULES)]
    with trio.fail_after(10):
        await store.replace_rules(specs)
        with pytest.raises(StoreError):
            await store.replace_rules([specs[0], specs[0]])
        assert len(await store.fetch_rules()) == 2


CROSS_BTC = parse_matchers(["rule_id=cross", "symbol=BTCUSDT"])
CRITICAL_SOL = parse_matchers(['severity="critical"', 'symbol=~"SOL.*"', "desk!=ops"])


async def test_silences_are_added_listed_and_expired(store: Store) -> None:
    with trio.fail_after(10):
        first = await store.add_silence(CROSS_BTC, 100.0, 200.0, "deploy", "ana")
        second = await store.add_silence(CRITICAL_SOL, 150.0, 400.0)
        assert first == Silence(first.id, CROSS_BTC, 100.0, 200.0, "deploy", "ana")
        assert second.id > first.id
        assert await store.fetch_silences() == [first, second]
        assert await store.fetch_silences(not_ended_at=200.0) == [second]
        assert await store.expire_silence(second.id, 300.0)
        assert not await store.expire_silence(second.id, 310.0)  # already ended
        assert not await store.expire_silence(first.id, 300.0)
        assert not await store.expire_silence(999_999, 300.0)
        assert await store.fetch_silences(not_ended_at=300.0) == []
        ended = (await store.fetch_silences())[1]
        assert (ended.starts_at, ended.ends_at) == (150.0, 300.0)


async def test_expiring_a_future_silence_leaves_it_muting_nothing(store: Store) -> None:
    with trio.fail_after(10):
        future = await store.add_silence(parse_matchers(["rule=cross"]), 500.0, 600.0)
        assert await store.expire_silence(future.id, 300.0)
        (ended,) = await store.fetch_silences()
        assert ended.ends_at == 300.0 and ended.starts_at < ended.ends_at
        labels = alert_labels("cross", "X", "warning")
        assert not any(ended.matches(labels, now) for now in (300.0, 500.0, 550.0))


async def test_a_silence_must_end_after_it_starts(store: Store) -> None:
    with trio.fail_after(10), pytest.raises(StoreError):
        await store.add_silence(CROSS_BTC, 200.0, 200.0)


async def test_alert_events_can_be_read_after_an_id(store: Store) -> None:
    with trio.fail_after(10):
        await store.insert_alert_events([transition(i, symbol=f"S{i % 2}") for i in range(6)])
        events = await store.fetch_alert_events()
        third = events[2]["id"]
        later = await store.fetch_alert_events(after_id=third)
        assert [e["id"] for e in later] == [e["id"] for e in events[3:]]
        assert [
            e["symbol"] for e in await store.fetch_alert_events(symbol="S1", after_id=third)
        ] == ["S1"] * len([e for e in events[3:] if e["symbol"] == "S1"])


async def test_matchers_round_trip_and_old_rows_read_as_equality(store: Store) -> None:
    with trio.fail_after(10):
        added = await store.add_silence(CRITICAL_SOL, 100.0, 200.0, "why", "who")
        (read,) = await store.fetch_silences()
        assert read == added and read.matchers == CRITICAL_SOL
        # A row an earlier release wrote: rule_id and symbol only, no matchers.
        await legacy_silence(store, "cross", "BTCUSDT")
        legacy = (await store.fetch_silences())[1]
    assert legacy.matchers == (Matcher("rule_id", "=", "cross"), Matcher("symbol", "=", "BTCUSDT"))


async def legacy_silence(store: Store, rule_id: str, symbol: str) -> None:
    values = (rule_id, symbol, 100.0, 200.0)
    if store.dialect == "sqlite":
        sql = "INSERT INTO silences (rule_id, symbol, starts_at, ends_at) VALUES (?, ?, ?, ?)"
        await store._run(None, lambda conn: conn.execute(sql, values))
    else:
        sql = "INSERT INTO silences (rule_id, symbol, starts_at, ends_at) VALUES ($1, $2, $3, $4)"
        await store._run(None, lambda conn: conn.execute(sql, *values), what="legacy")


async def test_history_since_and_limit(store: Store) -> None:
    with trio.fail_after(10):
        await store.insert_alert_events([transition(i) for i in range(10)])
        events = await store.fetch_alert_events()
        since = await store.fetch_alert_events(since=events[6]["at"])
        last = await store.fetch_alert_events(limit=3)
    assert [e["id"] for e in since] == [e["id"] for e in events[6:]]
    assert [e["id"] for e in last] == [e["id"] for e in events[7:]]


async def test_prune_deletes_old_history_in_batches_and_keeps_alert_states(store: Store) -> None:
    transitions = [transition(i, symbol=f"S{i % 3}") for i in range(10)]
    with trio.fail_after(10):
        await store.insert_alert_events(transitions)
        await store.upsert_rule_alerts(transitions)
        await store.insert_dispatch_logs([dispatch_log(i) for i in range(10)])
        cutoff = transitions[7].at
        assert await store.prune(cutoff, 4) == {"alert_events": 4, "dispatch_logs": 4}
        assert await store.prune(cutoff, 4) == {"alert_events": 3, "dispatch_logs": 3}
        assert await store.prune(cutoff, 4) == {"alert_events": 0, "dispatch_logs": 0}
        assert [e["at"] for e in await store.fetch_alert_events()] == [
            t.at for t in transitions[7:]
        ]
        assert len(await store.fetch_dispatch_logs()) == 3
        assert {row.symbol for row in await store.load_alert_states()} == {"S0", "S1", "S2"}
