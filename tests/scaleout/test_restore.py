"""A partition changing hands mid-alert: the next owner's engine restores the alert states
the previous one stored (a real SQLite store between them) and carries on from there, with
no notification repeated or lost; ``forget`` leaves nothing of a released symbol behind."""

from __future__ import annotations

from pathlib import Path

from oraculo_trio.core.alerts import AlertTransition
from oraculo_trio.core.engine import ShardEngine
from oraculo_trio.core.events import Trade
from oraculo_trio.core.rules import parse_rules
from oraculo_trio.store import open_store


def trade(price: float, symbol: str = "BTCUSDT") -> Trade:
    return Trade(symbol, price, 1.0, False, 1, 0, None, 0.0, 0.0)


def engine_with(**rule: object) -> ShardEngine:
    entry = {"id": "above", "kind": "greater_than", "params": {"level": 100}, **rule}
    return ShardEngine(parse_rules({"rule": [entry]}))


def seen(transitions: list[AlertTransition] | None) -> list[tuple[str, int, bool, bool]]:
    return [(t.state, t.fire_count, t.notify, t.repeat) for t in transitions or []]


async def hand_over(
    db: Path, old: ShardEngine, new: ShardEngine, stored: list[AlertTransition]
) -> int:
    """Store what ``old`` raised, as the store writer does, and restore it into ``new``."""
    async with open_store(f"sqlite:///{db}", statement_timeout=5) as store:
        await store.upsert_rule_alerts(stored)
        rows = await store.load_alert_states()
    old.forget(["BTCUSDT"])
    return new.restore(rows, now=stored[-1].at)


async def test_a_firing_alert_resolves_and_fires_again_on_the_new_owner(tmp_path: Path) -> None:
    old, new = engine_with(trigger="every_time"), engine_with(trigger="every_time")
    raised = old.process(trade(101), 10.0)
    assert seen(raised) == [("firing", 1, True, False)]
    assert await hand_over(tmp_path / "alerts.db", old, new, raised) == 1
    # Without the stored state the new owner would see nothing to resolve, then fire #1 again.
    assert seen(new.process(trade(99), 20.0)) == [("resolved", 1, True, False)]
    assert seen(new.process(trade(102), 30.0)) == [("firing", 2, True, False)]


async def test_pending_keeps_its_for_timer(tmp_path: Path) -> None:
    old, new = engine_with(**{"for": "10s"}), engine_with(**{"for": "10s"})
    raised = old.process(trade(101), 100.0)
    assert seen(raised) == [("pending", 0, False, False)]
    await hand_over(tmp_path / "alerts.db", old, new, raised)
    assert new.process(trade(101), 105.0) is None  # 5 s of 10 s: still pending
    assert seen(new.process(trade(101), 110.0)) == [("firing", 1, True, False)]


async def test_once_is_not_notified_twice_and_repeats_keep_their_interval(tmp_path: Path) -> None:
    old = engine_with(trigger="once")
    new = engine_with(trigger="once")
    raised = old.process(trade(101), 0.0)
    raised += old.process(trade(99), 1.0)
    assert seen(raised) == [("firing", 1, True, False), ("resolved", 1, True, False)]
    await hand_over(tmp_path / "alerts.db", old, new, raised)
    assert seen(new.process(trade(101), 2.0)) == [("firing", 2, False, False)]

    old = engine_with(trigger="every_time", repeat_interval="60s")
    new = engine_with(trigger="every_time", repeat_interval="60s")
    raised = old.process(trade(101), 1000.0)
    await hand_over(tmp_path / "repeat.db", old, new, raised)
    assert new.tick(1030.0) is None  # 30 s after the firing: no repeat yet
    assert seen(new.tick(1060.0)) == [("firing", 1, True, True)]


async def test_forgotten_symbols_raise_nothing_more(tmp_path: Path) -> None:
    engine = ShardEngine(
        parse_rules(
            {
                "rule": [
                    {"id": "quiet", "kind": "no_data", "params": {"seconds": 5}},
                    {"id": "above", "kind": "greater_than", "params": {"level": 100}},
                ]
            }
        )
    )
    engine.expect(["BTCUSDT", "ETHUSDT"], 0.0)
    engine.process(trade(101), 1.0)
    engine.forget(["BTCUSDT"])
    assert "BTCUSDT" not in engine.markets
    assert all(t.symbol != "BTCUSDT" for t in engine.trackers())
    assert [(t.rule_id, t.symbol, t.state) for t in engine.tick(10.0) or []] == [
        ("quiet", "ETHUSDT", "firing")
    ]
