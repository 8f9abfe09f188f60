"""Silences: which notifications a silence covers, and when."""

import pytest

from oraculo_trio.core.silences import Silence, SilenceSet


@pytest.mark.parametrize(
    ("rule_id", "symbol", "now", "covered"),
    [
        ("spread", "ETHUSDT", 100.0, True),  # starts_at is inside
        ("spread", "ETHUSDT", 199.99, True),
        ("spread", "ETHUSDT", 200.0, False),  # ends_at is outside
        ("spread", "ETHUSDT", 99.99, False),
        ("spread", "BTCUSDT", 150.0, False),
        ("cross", "ETHUSDT", 150.0, False),
    ],
)
def test_silence_covers_its_rule_symbol_and_time(
    rule_id: str, symbol: str, now: float, covered: bool
) -> None:
    silence = Silence(1, "spread", "ETHUSDT", 100.0, 200.0)
    assert silence.matches(rule_id, symbol, now) is covered


def test_none_means_any_rule_or_symbol() -> None:
    silences = SilenceSet()
    silences.replace([Silence(1, None, "ETHUSDT", 0.0, 10.0), Silence(2, "cross", None, 5.0, 20.0)])
    assert silences.match("anything", "ETHUSDT", 1.0).id == 1
    assert silences.match("cross", "BTCUSDT", 15.0).id == 2
    assert silences.match("cross", "BTCUSDT", 1.0) is None
    assert [silences.active(now) for now in (1.0, 7.0, 15.0, 25.0)] == [1, 2, 1, 0]
