"""The foundation's rule kinds and the shard engine, table-driven, with ``now`` injected."""

import math

import pytest

from oraculo_trio.core.engine import ShardEngine
from oraculo_trio.core.events import BookTicker, DepthSnapshot, Trade
from oraculo_trio.core.rules import (
    Crossing,
    MarketState,
    RuleState,
    SpreadAboveBps,
    parse_rule,
    parse_rules,
)
from oraculo_trio.errors import ConfigError


def trade(price: float, symbol: str = "BTCUSDT", qty: float = 1.0) -> Trade:
    return Trade(symbol, price, qty, False, 1, 0, None, 0.0, 0.0)


def snapshot(bid: float, ask: float, symbol: str = "ETHUSDT") -> DepthSnapshot:
    return DepthSnapshot(symbol, ((bid, 1.0),), ((ask, 1.0),), 1, None, 0.0, 0.0)


def evaluate_trades(rule: Crossing, prices: list[float]) -> list:
    market = MarketState("BTCUSDT")
    state = RuleState(market, rule.initial_data())
    out = []
    for price in prices:
        event = trade(price)
        market.apply(event, 0.0)
        signal = rule.evaluate(event, state, 0.0)
        out.append(None if signal is None else signal.active)
    return out


@pytest.mark.parametrize(
    ("prices", "expected"),
    [
        ([49_999, 50_001], [None, True]),  # crosses up
        ([50_001, 49_999], [None, True]),  # crosses down
        ([49_999, 50_000], [None, True]),  # reaching the level from below is a cross
        ([50_000, 50_000], [None, False]),  # sitting on the level is not
        ([49_000, 49_999, 49_998], [None, False, False]),  # never reaches it
        ([49_999, 50_001, 50_002], [None, True, False]),  # resolves on the next trade
    ],
)
def test_crossing(prices: list[float], expected: list) -> None:
    assert evaluate_trades(Crossing({"level": 50_000}), prices) == expected


def spread_of(bid: float, ask: float) -> float:
    return (ask - bid) / ((ask + bid) / 2) * 10_000


@pytest.mark.parametrize(
    ("bid", "ask", "active"),
    [
        (2999.0, 3001.0, False),  # 6.7 bps
        (2990.0, 3010.0, True),  # 66.7 bps
        (2997.0, 3003.0, False),  # exactly 20 bps is not "above"
        (2996.0, 3004.0, True),
    ],
)
def test_spread_above_bps(bid: float, ask: float, active: bool) -> None:
    rule = SpreadAboveBps({"bps": 20})
    market = MarketState("ETHUSDT")
    event = snapshot(bid, ask)
    market.apply(event, 0.0)
    signal = rule.evaluate(event, RuleState(market), 0.0)
    assert signal.active is active
    assert math.isclose(signal.value, spread_of(bid, ask))


def test_spread_from_book_ticker() -> None:
    market = MarketState("ETHUSDT")
    market.apply(BookTicker("ETHUSDT", 2990.0, 1.0, 3010.0, 1.0, 7, 0.0, 0.0), 0.0)
    assert math.isclose(market.spread_bps(), spread_of(2990.0, 3010.0))


def test_spread_unknown_on_an_empty_side() -> None:
    market = MarketState("ETHUSDT")
    event = DepthSnapshot("ETHUSDT", (), ((3000.0, 1.0),), 1, None, 0.0, 0.0)
    market.apply(event, 0.0)
    assert SpreadAboveBps({"bps": 1}).evaluate(event, RuleState(market), 0.0) is None


@pytest.mark.parametrize(
    ("entry", "named"),
    [
        ({"kind": "crossing", "params": {"level": 1}}, "id is required"),
        ({"id": "a", "kind": "crossing", "params": {}}, "'a': params.level is required"),
        ({"id": "a", "kind": "crossing", "params": {"level": "x"}}, "'a': params.level"),
        ({"id": "a", "kind": "crossing", "params": {"level": 1, "lvl": 2}}, "'a': params.lvl"),
        ({"id": "a", "kind": "nope"}, "'a': kind = 'nope'"),
        ({"id": "a", "kind": "crossing", "params": {"level": 1}, "for": "5 parsecs"}, "'a': for"),
        (
            {"id": "a", "kind": "crossing", "params": {"level": 1}, "severity": "meh"},
            "'a': severity",
        ),
        ({"id": "a", "kind": "crossing", "params": {"level": 1}, "trigger": "x"}, "'a': trigger"),
        (
            {"id": "a", "kind": "crossing", "params": {"level": 1}, "colour": 1},
            "'a': unknown key 'colour'",
        ),
        ({"id": "a", "kind": "crossing", "params": {"level": 1}, "symbols": []}, "'a': symbols"),
    ],
)
def test_bad_rules_name_the_rule_and_the_key(entry: dict, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace("(", r"\(")):
        parse_rule(entry)


def test_durations_and_defaults() -> None:
    rule = parse_rule(
        {"id": "a", "kind": "crossing", "params": {"level": 1}, "for": "1m", "keep_firing_for": 2.5}
    ).spec
    assert (rule.for_, rule.keep_firing_for, rule.repeat_interval) == (60.0, 2.5, 300.0)
    assert rule.symbols == ("*",) and rule.trigger == "once_per_interval" and rule.enabled


def test_duplicate_ids_are_refused() -> None:
    entry = {"id": "a", "kind": "crossing", "params": {"level": 1}}
    with pytest.raises(ConfigError, match="'a': id is used twice"):
        parse_rules({"rule": [entry, entry]})


def engine_with(*entries: dict) -> ShardEngine:
    return ShardEngine(parse_rules({"rule": list(entries)}))


CROSS = {"id": "cross", "kind": "crossing", "symbols": ["BTC*"], "params": {"level": 50_000}}
SPREAD = {"id": "spread", "kind": "spread_above_bps", "symbols": "*", "params": {"bps": 20}}


def test_engine_routes_events_to_matching_rules() -> None:
    engine = engine_with(CROSS, SPREAD)
    assert engine.process(trade(49_000), 1.0) is None
    fired = engine.process(trade(51_000), 2.0)
    assert [(t.rule_id, t.symbol, t.state) for t in fired] == [("cross", "BTCUSDT", "firing")]
    # A symbol the glob does not match never binds the crossing rule.
    assert engine.process(trade(49_000, "ETHUSDT"), 3.0) is None
    assert engine.process(trade(51_000, "ETHUSDT"), 4.0) is None
    wide = engine.process(snapshot(2990.0, 3010.0), 5.0)
    assert [(t.rule_id, t.symbol, t.state) for t in wide] == [("spread", "ETHUSDT", "firing")]


def test_stale_messages_update_state_but_skip_rules() -> None:
    engine = engine_with(CROSS)
    engine.process(trade(49_000), 1.0)
    assert engine.process(trade(51_000), 2.0, evaluate=False) is None
    assert engine.markets["BTCUSDT"].last_price == 51_000
    # The state moved on: going back down is a fresh crossing.
    fired = engine.process(trade(49_000), 3.0)
    assert [t.state for t in fired] == ["firing"]


def test_replace_rules_keeps_state_of_unchanged_rules() -> None:
    engine = engine_with(CROSS, SPREAD)
    engine.process(snapshot(2990.0, 3010.0), 1.0)
    tracker = next(t for t in engine.trackers() if t.rule_id == "spread")
    assert tracker.state == "firing"
    changed = dict(CROSS, params={"level": 60_000})
    engine.replace_rules(parse_rules({"rule": [changed, SPREAD]}))
    kept = next(t for t in engine.trackers() if t.rule_id == "spread")
    assert kept is tracker and kept.state == "firing"
    assert engine.process(snapshot(2999.0, 3001.0), 2.0)[0].state == "resolved"


def test_a_class_can_be_the_kind() -> None:
    rule = parse_rule({"id": "c", "kind": Crossing, "params": {"level": 5}})
    assert rule.spec.kind == "oraculo_trio.core.rules.price:Crossing"
    assert isinstance(rule.rule, Crossing)


def test_custom_kinds_resolve_through_the_loader() -> None:
    seen = []

    def resolve(reference: str) -> type:
        seen.append(reference)
        return Crossing

    rule = parse_rule({"id": "c", "kind": "pkg.mod:Cls", "params": {"level": 5}}, resolve)
    assert seen == ["pkg.mod:Cls"] and rule.spec.kind == "pkg.mod:Cls"


class NotARule:
    def __init__(self, params: dict) -> None:
        pass


class BadOffload(SpreadAboveBps):
    offload = "gpu"


@pytest.mark.parametrize(
    ("kind", "named"),
    [
        (NotARule, "streams = None"),
        (BadOffload, "offload = 'gpu'"),
    ],
)
def test_custom_kinds_must_follow_the_protocol(kind: type, named: str) -> None:
    with pytest.raises(ConfigError, match=f"rule 'x': kind = .*{named}"):
        parse_rule({"id": "x", "kind": kind, "params": {"bps": 1}})


def test_a_custom_kind_that_cannot_load_names_the_rule() -> None:
    def resolve(reference: str) -> type:
        raise ImportError("No module named 'nowhere'")

    with pytest.raises(ConfigError, match="rule 'x': kind = 'nowhere:Rule' cannot be loaded"):
        parse_rule({"id": "x", "kind": "nowhere:Rule"}, resolve)


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"inhibits": {"severity": 1}}, "'a': inhibits"),
        ({"labels": ["x"]}, "'a': labels"),
        ({"expires_at": "tomorrow"}, "'a': expires_at"),
        ({"enabled": "yes"}, "'a': enabled"),
        ({"repeat_interval": -1}, "'a': repeat_interval"),
        ({"keep_firing_for": "2 weeks"}, "'a': keep_firing_for"),
        ({"message": 3}, "'a': message"),
        ({"params": [1]}, "'a': params"),
    ],
)
def test_more_bad_keys_name_the_rule_and_the_key(extra: dict, named: str) -> None:
    entry = {"id": "a", "kind": "crossing", "params": {"level": 1}, **extra}
    with pytest.raises(ConfigError, match=named):
        parse_rule(entry)


def test_to_entry_round_trips() -> None:
    import datetime

    entry = {
        "id": "a", "kind": "greater_than", "symbols": ["btc*", "ETHUSDT"],
        "params": {"level": 1, "hysteresis": 0.5}, "severity": "critical",
        "labels": {"team": "desk"}, "message": "{symbol}", "for": "1m", "keep_firing_for": 2,
        "repeat_interval": "1h", "trigger": "once", "enabled": False,
        "expires_at": datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC),
        "inhibits": {"severity": "warning"},
    }  # fmt: skip
    spec = parse_rule(entry).spec
    assert spec.symbols == ("BTC*", "ETHUSDT")
    assert (spec.for_, spec.repeat_interval, spec.expires_at) == (60.0, 3600.0, 1893456000.0)
    assert parse_rule(spec.to_entry()).spec == spec
