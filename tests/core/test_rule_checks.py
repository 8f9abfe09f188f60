"""What ``rules check`` reports: every error of a file at once, with "did you mean", and
the warnings (no rules, symbols not subscribed, templates); each kind's default messages."""

import pytest

from oraculo_trio.core.alerts import AlertTracker
from oraculo_trio.core.rules import (
    RULE_KINDS,
    collect_rules,
    default_messages,
    parse_rules,
    rule_warnings,
    template_problems,
)
from oraculo_trio.errors import ConfigError


def entry(**fields) -> dict:
    return {"id": "r", "kind": "crossing", "symbols": ["BTCUSDT"], "params": {"level": 1}, **fields}


def test_every_error_of_a_file_is_reported_with_did_you_mean() -> None:
    document = {
        "rule": [
            entry(id="a", kind="crosing"),
            entry(id="b", severty="critical"),
            entry(id="c", symbols=["btc usdt"]),
            entry(id="d"),
            entry(id="d"),
        ]
    }
    rules, errors = collect_rules(document)
    assert [r.spec.id for r in rules] == ["d"]
    assert len(errors) == 4
    assert "kind = 'crosing' is not allowed (did you mean 'crossing'?)" in errors[0]
    assert "unknown key 'severty' (did you mean 'severity'?)" in errors[1]
    assert "'btc usdt' is not a symbol" in errors[2]
    assert "rule 'd': id is used twice" in errors[3]
    with pytest.raises(ConfigError, match=r"crosing.*\(and 3 more: see oraculo-trio rules check\)"):
        parse_rules(document)


def test_market_qualified_symbols_are_checked_and_normalised() -> None:
    document = {
        "rule": [
            entry(id="a", symbols=["USDM:btcusdt", "coinm:BTCUSD_PERP", "usdm:*", "spot:eth*"]),
            entry(id="b", symbols=["usd:BTCUSDT"]),
            entry(id="c", symbols=["usdm:BTC/USDT"]),
        ]
    }
    rules, errors = collect_rules(document)
    assert rules[0].spec.symbols == ("usdm:BTCUSDT", "coinm:BTCUSD_PERP", "usdm:*", "ETH*")
    assert len(errors) == 2
    assert "names the market 'usd' (did you mean 'usdm'?)" in errors[0]
    assert "'usdm:BTC/USDT' is not a symbol" in errors[1]
    subscribed = ["BTCUSDT", "usdm:BTCUSDT", "coinm:BTCUSD_PERP"]
    warnings = rule_warnings(rules, subscribed)
    assert len(warnings) == 1
    assert "'ETH*' matches no symbol of feed.symbols" in warnings[0]


@pytest.mark.parametrize(
    ("template", "problems"),
    [
        ("{symbol} crossed {value:,.2f}", []),
        (
            "{symbl} crossed {value:.2q}",
            ["unknown field {symbl} (did you mean 'symbol'?)", "bad format {value:.2q}"],
        ),
        ("{symbol", ["is not a valid template"]),
    ],
)
def test_template_problems(template: str, problems: list[str]) -> None:
    found = template_problems(template)
    assert len(found) == len(problems)
    for text, expected in zip(found, problems, strict=True):
        assert expected in text


def test_warnings_name_empty_files_unsubscribed_symbols_and_templates() -> None:
    assert rule_warnings([], ["BTCUSDT"]) == ["the file holds no rules: nothing will ever fire"]
    rules = parse_rules(
        {
            "rule": [
                entry(id="a", symbols=["BTCUSD", "ETH*"]),
                entry(id="b", message="{symbl} {value:.2q}"),
                entry(id="c", symbols="*"),
            ]
        }
    )
    warnings = rule_warnings(rules, ["BTCUSDT", "SOLUSDT"])
    assert len(warnings) == 4
    assert "'BTCUSD' is not a symbol of feed.symbols" in warnings[0]
    assert "(did you mean 'BTCUSDT'?)" in warnings[0]
    assert "'ETH*' matches no symbol of feed.symbols" in warnings[1]
    assert warnings[2].startswith("rule 'b': message: ")
    assert rule_warnings(rules[2:], None) == []


@pytest.mark.parametrize("kind", sorted(RULE_KINDS))
def test_every_kind_has_default_messages_that_format(kind: str) -> None:
    rule = next(r for r in parse_rules({"rule": [sample_entry(kind)]}))
    firing, resolved = default_messages(kind, rule.rule)
    assert rule.spec.message == firing and rule.spec.message_resolved == resolved
    assert template_problems(firing) == [] and template_problems(resolved) == []


def test_a_resolution_uses_its_own_template() -> None:
    (rule,) = parse_rules({"rule": [sample_entry("no_data")]})
    tracker = AlertTracker("r", "XRPUSDT")
    fired = tracker.update(True, 3.5, 100.0, rule.spec)
    resolved = tracker.update(False, 0.0, 101.0, rule.spec)
    assert fired.message == "no data from XRPUSDT for 3.5 s"
    assert resolved.message == "XRPUSDT is sending data again"


SAMPLE_PARAMS = {
    "crossing": {"level": 1},
    "crossing_up": {"level": 1},
    "crossing_down": {"level": 1},
    "greater_than": {"level": 1},
    "less_than": {"level": 1},
    "inside_channel": {"low": 1, "high": 2},
    "outside_channel": {"low": 1, "high": 2},
    "entering_channel": {"low": 1, "high": 2},
    "exiting_channel": {"low": 1, "high": 2},
    "moving_up_pct": {"pct": 1, "window": "5s"},
    "moving_down_pct": {"pct": 1, "window": "5s"},
    "large_trade": {"notional": 1000},
    "volume_spike": {"window": "1s", "baseline": "5s", "factor": 2},
    "trade_rate": {"rate": 2, "window": "1s"},
    "buy_sell_imbalance": {"window": "1s", "threshold": 0.5},
    "spread_above_bps": {"bps": 5},
    "book_imbalance": {"ratio": 2},
    "liquidity_wall": {"notional": 1000, "bps": 5},
    "thin_book": {"notional": 1000, "bps": 5},
    "no_data": {"seconds": 3},
    "zscore": {"window": "10s", "threshold": 2},
    "funding_rate_above": {"level": 0.0005},
    "funding_rate_below": {"level": -0.0003},
    "basis_bps": {"bps": 20},
    "liquidation_notional": {"notional": 100000, "window": "1m"},
}


def sample_entry(kind: str) -> dict:
    return {"id": "r", "kind": kind, "symbols": ["BTCUSDT"], "params": SAMPLE_PARAMS[kind]}
