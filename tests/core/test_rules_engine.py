"""The shard engine: per-batch book rules, ticks, offloaded rules, reloads, expiry,
inhibition; ``now`` injected throughout."""

from __future__ import annotations

from typing import Any, ClassVar

from oraculo_trio.core.engine import ShardEngine, compute_offloaded
from oraculo_trio.core.events import DEPTH, DepthSnapshot, Trade
from oraculo_trio.core.rules import RuleBase, RuleState, Signal, parse_rules


def trade(price: float, symbol: str = "BTCUSDT", qty: float = 1.0) -> Trade:
    return Trade(symbol, price, qty, False, 1, 0, None, 0.0, 0.0)


def book(bid: float, ask: float, symbol: str = "ETHUSDT", qty: float = 1.0) -> DepthSnapshot:
    return DepthSnapshot(symbol, ((bid, qty),), ((ask, qty),), 1, None, 0.0, 0.0)


def engine_with(*entries: dict) -> ShardEngine:
    return ShardEngine(parse_rules({"rule": list(entries)}))


def states(transitions: list | None) -> list[tuple[str, str, str]]:
    return [(t.rule_id, t.symbol, t.state) for t in transitions or []]


class CountingBookRule(RuleBase):
    """A per-batch rule that records which events it judged."""

    kind: ClassVar[str] = "counting"
    streams: ClassVar[frozenset[str]] = frozenset({DEPTH})
    per_batch: ClassVar[bool] = True
    seen: ClassVar[list] = []

    def __init__(self, params: dict[str, Any]) -> None:
        pass

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        CountingBookRule.seen.append((event.symbol, event.bids[0][0]))
        return Signal(False, 0.0)


def test_per_batch_rules_run_once_per_symbol_per_batch() -> None:
    CountingBookRule.seen = []
    engine = engine_with({"id": "count", "kind": CountingBookRule})
    for i in range(10):
        assert engine.process(book(100.0 + i, 200.0), 1.0) is None
        engine.process(book(10.0 + i, 20.0, symbol="BNBUSDT"), 1.0)
    assert CountingBookRule.seen == []
    assert engine.flush(1.0) is None
    assert CountingBookRule.seen == [("ETHUSDT", 109.0), ("BNBUSDT", 19.0)]
    assert engine.flush(1.1) is None
    assert len(CountingBookRule.seen) == 2  # nothing new, nothing judged


def test_book_rules_fire_at_flush() -> None:
    engine = engine_with(
        {"id": "wall", "kind": "liquidity_wall", "symbols": "ETH*",
         "params": {"notional": 500, "bps": 50}},
    )  # fmt: skip
    assert engine.process(book(100.0, 100.2, qty=10), 1.0) is None
    assert states(engine.flush(1.0)) == [("wall", "ETHUSDT", "firing")]
    engine.process(book(100.0, 100.2, qty=1), 2.0)
    assert states(engine.flush(2.0)) == [("wall", "ETHUSDT", "resolved")]


def test_for_elapses_on_ticks_without_messages() -> None:
    engine = engine_with(
        {"id": "above", "kind": "greater_than", "params": {"level": 100}, "for": "5s",
         "repeat_interval": "10s", "trigger": "every_time"},
    )  # fmt: skip
    assert states(engine.process(trade(101), 0.0)) == [("above", "BTCUSDT", "pending")]
    assert engine.tick(4.9) is None
    assert states(engine.tick(5.0)) == [("above", "BTCUSDT", "firing")]
    repeat = engine.tick(15.0)
    assert states(repeat) == [("above", "BTCUSDT", "firing")] and repeat[0].repeat
    assert states(engine.process(trade(99), 16.0)) == [("above", "BTCUSDT", "resolved")]
    assert engine.tick(17.0) is None  # resolved -> inactive is housekeeping
    assert engine.tick(18.0) is None


def test_event_kinds_resolve_on_the_next_tick() -> None:
    engine = engine_with({"id": "big", "kind": "large_trade", "params": {"notional": 1000}})
    assert states(engine.process(trade(100, qty=20), 0.0)) == [("big", "BTCUSDT", "firing")]
    assert states(engine.tick(0.5)) == [("big", "BTCUSDT", "resolved")]


def test_keep_firing_for_runs_on_ticks() -> None:
    engine = engine_with(
        {"id": "cross", "kind": "crossing", "params": {"level": 100}, "keep_firing_for": "3s"}
    )
    engine.process(trade(99), 0.0)
    assert states(engine.process(trade(101), 1.0)) == [("cross", "BTCUSDT", "firing")]
    assert engine.tick(2.0) is None
    assert engine.tick(4.9) is None
    assert states(engine.tick(5.0)) == [("cross", "BTCUSDT", "resolved")]


def test_no_data_judges_expected_symbols_that_never_spoke() -> None:
    engine = engine_with({"id": "silent", "kind": "no_data", "params": {"seconds": 3}})
    engine.expect(["XRPUSDT", "BTCUSDT"], 100.0)
    engine.process(trade(1.0), 101.0)
    assert engine.tick(102.9) is None
    assert states(engine.tick(103.0)) == [("silent", "XRPUSDT", "firing")]
    assert states(engine.tick(104.0)) == [("silent", "BTCUSDT", "firing")]
    engine.process(trade(0.5, symbol="XRPUSDT"), 104.5)
    assert states(engine.tick(105.0)) == [("silent", "XRPUSDT", "resolved")]


def test_stale_messages_still_fill_windows() -> None:
    engine = engine_with({"id": "rate", "kind": "trade_rate", "params": {"rate": 2, "window": 1}})
    for _ in range(2):
        assert engine.process(trade(100), 10.0, evaluate=False) is None
    # The third trade is fresh: 3 trades in the last second is above 2/s.
    assert states(engine.process(trade(100), 10.5)) == [("rate", "BTCUSDT", "firing")]


def test_offloaded_rules_run_per_batch_through_compute() -> None:
    engine = engine_with(
        {"id": "z", "kind": "zscore", "params": {"window": 60, "threshold": 2, "min_samples": 5}},
    )
    for i in range(4):
        assert engine.process(trade(100.0), float(i)) is None
    assert engine.process(trade(105.0), 4.0) is None  # evaluate only folds
    jobs = engine.offload_jobs(4.0)
    assert [(job.mode, job.snapshot.tolist()) for job in jobs] == [
        ("thread", [100.0, 100.0, 100.0, 100.0, 105.0])
    ]
    assert engine.offload_jobs(4.0) == []  # nothing new since
    results = compute_offloaded([(job.rule, job.snapshot) for job in jobs])
    assert results[0].value == 2.0
    assert states(engine.complete_offload(jobs, results, 4.1)) == [("z", "BTCUSDT", "firing")]


def test_offloaded_results_of_a_dropped_rule_are_ignored() -> None:
    rule = {"id": "z", "kind": "zscore", "params": {"window": 60, "threshold": 2, "min_samples": 3}}
    engine = engine_with(rule)
    for price in (100.0, 100.0, 130.0):
        engine.process(trade(price), 1.0)
    jobs = engine.offload_jobs(1.0)
    engine.replace_rules(parse_rules({"rule": []}), now=1.5)
    results = compute_offloaded([(job.rule, job.snapshot) for job in jobs])
    assert engine.complete_offload(jobs, results, 2.0) is None


def test_reload_resolves_removed_firing_alerts_and_keeps_unchanged_ones() -> None:
    keep = {"id": "keep", "kind": "greater_than", "params": {"level": 100}}
    drop = {"id": "drop", "kind": "greater_than", "params": {"level": 50}}
    engine = engine_with(keep, drop)
    assert len(engine.process(trade(101), 1.0)) == 2
    kept = next(t for t in engine.trackers() if t.rule_id == "keep")
    engine.replace_rules(parse_rules({"rule": [keep]}), now=2.0)
    assert states(engine.tick(2.0)) == [("drop", "BTCUSDT", "resolved")]
    assert [t.rule_id for t in engine.trackers()] == ["keep"]
    assert next(iter(engine.trackers())) is kept and kept.state == "firing"
    assert engine.tick(3.0) is None


def test_reload_binds_new_time_rules_for_silent_symbols() -> None:
    engine = engine_with({"id": "x", "kind": "greater_than", "params": {"level": 1}})
    engine.process(trade(100.0, symbol="XRPUSDT"), 0.0)
    rules = parse_rules({"rule": [{"id": "quiet", "kind": "no_data", "params": {"seconds": 5}}]})
    engine.replace_rules(rules, now=1.0)
    assert states(engine.tick(5.0)) == [
        ("x", "XRPUSDT", "resolved"),  # removed while firing
        ("quiet", "XRPUSDT", "firing"),
    ]


def test_expired_rules_resolve_and_stop() -> None:
    engine = engine_with(
        {"id": "temp", "kind": "greater_than", "params": {"level": 100}, "expires_at": 10.0}
    )
    assert states(engine.process(trade(101), 1.0)) == [("temp", "BTCUSDT", "firing")]
    assert engine.tick(9.0) is None
    assert states(engine.tick(10.0)) == [("temp", "BTCUSDT", "resolved")]
    assert engine.process(trade(99), 11.0) is None
    assert engine.process(trade(101), 12.0) is None
    assert list(engine.trackers()) == []


def test_a_firing_rule_inhibits_matching_alerts_of_its_symbol() -> None:
    critical = {
        "id": "crash", "kind": "less_than", "params": {"level": 50}, "severity": "critical",
        "inhibits": {"severity": "warning", "team": "desk"},
    }  # fmt: skip
    warning = {
        "id": "low", "kind": "less_than", "params": {"level": 90}, "labels": {"team": "desk"},
        "repeat_interval": "10s", "trigger": "every_time",
    }  # fmt: skip
    other_team = {"id": "other", "kind": "less_than", "params": {"level": 90}}
    engine = engine_with(critical, warning, other_team)
    fired = engine.process(trade(40), 0.0)
    assert [(t.rule_id, t.inhibited_by) for t in fired] == [
        ("crash", None),
        ("low", "crash"),
        ("other", None),  # its labels do not match
    ]
    # Where the inhibitor does not fire, nothing is inhibited.
    fired = engine.process(trade(60, symbol="ETHUSDT"), 0.0)
    assert [t.inhibited_by for t in fired if t.rule_id == "low"] == [None]
    # The inhibitor resolves; the next repeat of the inhibited alert gets through ...
    engine.process(trade(60), 5.0)
    repeat = [t for t in engine.tick(10.0) or [] if t.symbol == "BTCUSDT" and t.rule_id == "low"]
    assert [(t.repeat, t.inhibited_by) for t in repeat] == [(True, None)]
    # ... and so does its resolution.
    resolved = engine.process(trade(95), 11.0)
    assert [(t.rule_id, t.state, t.inhibited_by) for t in resolved] == [
        ("low", "resolved", None),
        ("other", "resolved", None),
    ]


def test_the_resolution_of_an_inhibited_episode_is_inhibited_too() -> None:
    critical = {"id": "crash", "kind": "less_than", "params": {"level": 50},
                "inhibits": {"rule_id": "low"}}  # fmt: skip
    warning = {"id": "low", "kind": "less_than", "params": {"level": 90}}
    engine = engine_with(critical, warning)
    engine.process(trade(40), 0.0)
    resolved = engine.process(trade(95), 1.0)
    assert [(t.rule_id, t.inhibited_by) for t in resolved] == [("crash", None), ("low", "crash")]


class TickCounter(RuleBase):
    """Holds while ``hold`` says so; counts the ticks it gets."""

    kind: ClassVar[str] = "tick_counter"
    streams: ClassVar[frozenset[str]] = frozenset({"trade"})

    def __init__(self, params: dict[str, Any]) -> None:
        self.ticks = 0

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        return Signal(event.price > 100, event.price)

    def tick(self, state: RuleState, now: float) -> Signal | None:
        self.ticks += 1
        return Signal(False, 0.0)


class AlwaysTickCounter(TickCounter):
    kind: ClassVar[str] = "always_tick_counter"
    ticks_when_inactive: ClassVar[bool] = True


def test_inactive_alerts_cost_nothing_per_tick_unless_their_kind_ticks_always() -> None:
    engine = engine_with(
        {"id": "lazy", "kind": TickCounter}, {"id": "eager", "kind": AlwaysTickCounter}
    )
    lazy, eager = (compiled.rule for compiled in engine.rules)
    for i in range(10):
        engine.process(trade(90, symbol=f"S{i}USDT"), 0.0)
    for now in (1.0, 2.0):
        engine.tick(now)
    assert (lazy.ticks, eager.ticks) == (0, 20)
    fired = engine.process(trade(110, symbol="S0USDT"), 3.0)
    assert [t.rule_id for t in fired] == ["lazy", "eager"]
    resolved = engine.tick(4.0)  # the firing ones are judged by their tick
    assert sorted(t.rule_id for t in resolved) == ["eager", "lazy"]
    assert (lazy.ticks, eager.ticks) == (1, 30)
