"""Trade ids per symbol: the next one, a duplicate, a gap, a renumbering."""

from __future__ import annotations

import pytest

from oraculo_trio.core.trade_ids import DUPLICATE, RENUMBER_JUMP, RENUMBERED, TradeIds

CASES = [
    # (ids taken in order, what the last one answers, the last id recorded after it)
    ([7], 0, 7),
    ([7, 8], 0, 8),
    ([7, 8, 8], DUPLICATE, 8),
    ([7, 9, 8], DUPLICATE, 9),
    ([7, 10], 2, 10),
    ([7, 7 + RENUMBER_JUMP], RENUMBER_JUMP - 1, 7 + RENUMBER_JUMP),
    ([7, 8 + RENUMBER_JUMP], RENUMBERED, 8 + RENUMBER_JUMP),
    ([2 * RENUMBER_JUMP, 1], RENUMBERED, 1),
    ([2 * RENUMBER_JUMP, RENUMBER_JUMP + 1], DUPLICATE, 2 * RENUMBER_JUMP),
]


@pytest.mark.parametrize(("taken", "answer", "last"), CASES)
def test_each_trade_id_is_judged_against_the_last_one(
    taken: list[int], answer: int, last: int
) -> None:
    ids = TradeIds()
    for trade_id in taken[:-1]:
        ids.take("trade", "BTCUSDT", trade_id)
    assert ids.take("trade", "BTCUSDT", taken[-1]) == answer
    assert ids.last("trade", "BTCUSDT") == last


def test_symbols_and_kinds_are_numbered_apart() -> None:
    ids = TradeIds()
    assert ids.take("trade", "BTCUSDT", 100) == 0
    assert ids.take("aggTrade", "BTCUSDT", 5) == 0
    assert ids.take("trade", "ETHUSDT", 3) == 0
    assert ids.take("trade", "BTCUSDT", 101) == 0
    assert ids.take("aggTrade", "BTCUSDT", 5) == DUPLICATE
    assert ids.take("trade", "ETHUSDT", 6) == 2
    assert ids.last("aggTrade", "ETHUSDT") is None
