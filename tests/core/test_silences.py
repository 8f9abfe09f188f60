"""Silences: matchers (=, !=, =~, !~) on an alert's labels, and when a silence is in effect."""

import pytest

from oraculo_trio.core.silences import (
    Matcher,
    Silence,
    SilenceSet,
    alert_labels,
    check_matchers,
    parse_matchers,
)

SOL_CRITICAL = alert_labels("sol-block-trade", "SOLUSDT", "critical", {"desk": "crypto"})
ETH_CRITICAL = alert_labels("eth-wide-spread", "ETHUSDT", "critical")
SOL_WARNING = alert_labels("sol-up-2pct-5s", "SOLUSDT", "warning")


@pytest.mark.parametrize(
    ("text", "labels", "matches"),
    [
        ("severity=critical", SOL_CRITICAL, True),
        ("severity=critical", SOL_WARNING, False),
        ("severity!=critical", SOL_WARNING, True),
        ('symbol=~"SOL.*"', SOL_CRITICAL, True),
        ('symbol=~"SOL.*"', ETH_CRITICAL, False),
        ("symbol=~OL", SOL_CRITICAL, False),  # anchored at both ends, as Alertmanager's
        ("symbol!~SOL.*", ETH_CRITICAL, True),
        ("rule=sol-block-trade", SOL_CRITICAL, True),
        ("alertname=sol-block-trade", SOL_CRITICAL, True),
        ("rule_id=sol-block-trade", SOL_CRITICAL, True),
        ("desk=crypto", SOL_CRITICAL, True),
        ("desk=crypto", ETH_CRITICAL, False),
        ('desk=""', ETH_CRITICAL, True),  # a missing label reads as ""
    ],
)
def test_a_matcher_matches_labels(text: str, labels: dict, matches: bool) -> None:
    (matcher,) = parse_matchers([text])
    assert matcher.matches(labels) is matches


def test_several_matchers_in_one_string_braces_and_quotes() -> None:
    matchers = parse_matchers(['{severity="critical", symbol=~"SOL.*"}', "rule = x"])
    assert matchers == (
        Matcher("severity", "=", "critical"),
        Matcher("symbol", "=~", "SOL.*"),
        Matcher("rule", "=", "x"),
    )
    assert [str(m) for m in matchers] == ['severity="critical"', 'symbol=~"SOL.*"', 'rule="x"']


@pytest.mark.parametrize(
    ("texts", "named"),
    [
        (["symbol"], "is not a matcher"),
        (["symbol=~("], "bad regular expression"),
        (["9x=1"], "is not a matcher"),
        (['symbol="SOL'], "not closed"),
    ],
)
def test_bad_matchers_are_refused(texts: list[str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        parse_matchers(texts)


@pytest.mark.parametrize("texts", [[], ["symbol!=X"], ['desk=""']])
def test_matchers_that_would_mute_everything_are_refused(texts: list[str]) -> None:
    with pytest.raises(ValueError, match="matcher"):
        check_matchers(parse_matchers(texts))


@pytest.mark.parametrize(
    ("now", "status", "covered"),
    [
        (99.99, "pending", False),
        (100.0, "active", True),
        (199.99, "active", True),
        (200.0, "expired", False),
    ],
)
def test_a_silence_is_in_effect_from_start_to_end(now: float, status: str, covered: bool) -> None:
    silence = Silence(1, parse_matchers(["severity=critical"]), 100.0, 200.0)
    assert silence.status(now) == status
    assert silence.matches(SOL_CRITICAL, now) is covered


def test_the_set_finds_the_first_matching_silence() -> None:
    silences = SilenceSet()
    silences.replace(
        [
            Silence(1, parse_matchers(["symbol=ETHUSDT"]), 0.0, 10.0),
            Silence(2, parse_matchers(['severity="critical"', 'symbol=~"SOL.*"']), 5.0, 20.0),
        ]
    )
    assert silences.match(ETH_CRITICAL, 1.0).id == 1
    assert silences.match(SOL_CRITICAL, 15.0).id == 2
    assert silences.match(SOL_WARNING, 15.0) is None
    assert silences.match(SOL_CRITICAL, 1.0) is None
    assert [silences.active(now) for now in (1.0, 7.0, 15.0, 25.0)] == [1, 2, 1, 0]
