"""The verdict against the trades written (expected.py) counts what it must: a hole is lost,
a recent tail is in flight, an old tail is lost, a repeat is a duplicate."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable

import pytest

from oraculo_trio.mockexchange.tape import WrittenTrades
from tests.reliability.expected import MARKER_RULE, judge_trades


def written(
    trades: Iterable[tuple[int, float, str, int]], closed: dict[int, float]
) -> WrittenTrades:
    record = WrittenTrades()
    for connection, at, symbol, trade_id in trades:
        data = json.dumps({"stream": "x@trade", "data": {"s": symbol, "t": trade_id}})
        record.record(connection, f"{symbol.lower()}@trade", data.encode(), at)
    for connection, at in closed.items():
        record.close(connection, at)
    return record


def firing(symbol: str, trade_id: int) -> dict[str, object]:
    return {
        "rule_id": MARKER_RULE,
        "symbol": symbol,
        "state": "firing",
        "value": float(trade_id),
        "repeat": False,
    }


# Trades 1..40 of BTCUSDT on connection 1, one per 0.1 s from t=0 (id 10 at t=0.9...).
RUN = [(1, 0.1 * (i - 1), "BTCUSDT", i) for i in range(1, 41)]


@pytest.mark.parametrize(
    ("stored", "closed_at", "figures"),
    [
        ([10, 20, 30, 40], 10.0, {"expected": 4, "lost": 0, "in_flight": 0}),
        # 20 missing before 30: a hole.
        ([10, 30, 40], 10.0, {"lost": 1, "in_flight": 0}),
        # 40 missing at the end, written 0.1 s before the close: in flight.
        ([10, 20, 30], 4.0, {"lost": 0, "in_flight": 1}),
        # ... written 6 s before the close: lost.
        ([10, 20, 30], 10.0, {"lost": 1, "in_flight": 0}),
        # 10 twice: a duplicate.
        ([10, 10, 20, 30, 40], 10.0, {"lost": 0, "duplicates": 1}),
        # A firing no trade written implies.
        ([10, 20, 30, 40, 50], 10.0, {"unexpected": 1}),
    ],
)
def test_the_verdict(stored: list[int], closed_at: float, figures: dict[str, int]) -> None:
    verdict = judge_trades(
        written(RUN, {1: closed_at}),
        [firing("BTCUSDT", i) for i in stored],
        stopping_at=100.0,
        allowance=1.0,
    )
    assert {key: getattr(verdict, key) for key in figures} == figures


def test_a_marker_first_on_its_connection_or_after_another_is_not_expected() -> None:
    # Connection 2 starts at id 20 (the alert may still fire from 10 on connection 1), and
    # the exchange dropped 21..29 there, so 30 follows 20.
    trades = [*RUN[:12], (2, 2.0, "BTCUSDT", 20), (2, 2.1, "BTCUSDT", 30)]
    trades += [(2, 2.2, "BTCUSDT", 31), (2, 3.0, "BTCUSDT", 39), (2, 3.1, "BTCUSDT", 40)]
    verdict = judge_trades(
        written(trades, {1: 1.5, 2: 10.0}), [firing("BTCUSDT", 10)], stopping_at=100.0
    )
    assert (verdict.expected, verdict.undetermined, verdict.lost) == (2, 2, 1)


def test_trades_written_after_the_stop_are_not_expected() -> None:
    verdict = judge_trades(
        written(RUN, {1: 10.0}), [firing("BTCUSDT", 10), firing("BTCUSDT", 20)], stopping_at=2.5
    )
    assert (verdict.expected, verdict.lost, verdict.trades) == (2, 0, 26)


def test_a_trade_also_written_to_a_newer_connection_does_not_end_the_old_ones_run() -> None:
    # Connection 1 went half-open after id 12 (20 and 30 never read); connection 2 starts
    # at id 40, which both got: 40 stored says nothing of how far connection 1 was read.
    trades = [(1, 0.1 * i, "ETHUSDT", i) for i in range(1, 46)]
    trades += [(2, 4.0 + 0.1 * i, "ETHUSDT", 40 + i) for i in range(6)]
    verdict = judge_trades(
        written(trades, {1: 10.0, 2: 10.0}),
        [firing("ETHUSDT", 10), firing("ETHUSDT", 40)],
        stopping_at=100.0,
        allowance=math.inf,
    )
    assert (verdict.lost, verdict.in_flight) == (0, 2)
