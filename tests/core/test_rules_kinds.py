"""Every rule kind, table-driven, with ``now`` injected.

Each kind has five cases: it fires, it does not fire, it resolves, the value equal to the
threshold (the boundary), and what time alone does ("time": a window's entries expire; an
event kind reads false once its moment has passed; a level kind has no time-driven reading,
its last one stands).

A case is a list of steps (a trade, a book, or a tick at time ``now``) and the reading each
step gives: True/False (the signal's ``active``) or None (no reading). Rules run the way the
engine runs them: the market state is updated first; an offloaded rule's ``evaluate`` only
folds data, then ``compute(snapshot(...))`` gives its reading.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from oraculo_trio.core.events import DepthSnapshot, Liquidation, MarkPrice, Trade
from oraculo_trio.core.rules import RULE_KINDS, MarketState, RuleState, Signal
from oraculo_trio.errors import ConfigError


@attrs.frozen
class T:
    """A trade at ``now``; ``buy`` is the aggressor's side."""

    now: float
    price: float
    qty: float = 1.0
    buy: bool = True


@attrs.frozen
class B:
    """A partial book at ``now``: levels best first."""

    now: float
    bids: tuple[tuple[float, float], ...]
    asks: tuple[tuple[float, float], ...]


@attrs.frozen
class K:
    """A tick (time alone) at ``now``."""

    now: float


@attrs.frozen
class M:
    """A futures mark price at ``now``: mark, index, funding rate (None: delivery)."""

    now: float
    mark: float
    index: float = 100.0
    funding: float | None = 0.0001


@attrs.frozen
class L:
    """A futures liquidation at ``now``: the forced order's side and notional."""

    now: float
    notional: float
    side: str = "SELL"


def quote(now: float, bid: float, ask: float, bid_qty: float = 1.0, ask_qty: float = 1.0) -> B:
    return B(now, ((bid, bid_qty),), ((ask, ask_qty),))


def drive(kind: str, params: dict[str, Any], steps: list, symbol: str = "XUSDT") -> list:
    rule = RULE_KINDS[kind](params)
    market = MarketState(symbol, watch_since=0.0)
    state = RuleState(market, rule.initial_data())
    readings = []
    for step in steps:
        signal: Signal | None
        if isinstance(step, K):
            tick = getattr(rule, "tick", None)
            signal = tick(state, step.now) if tick is not None else None
        else:
            if isinstance(step, T):
                event = Trade(symbol, step.price, step.qty, not step.buy, 1, 0, None, 0.0, 0.0)
            elif isinstance(step, M):
                event = MarkPrice(symbol, step.mark, step.index, step.funding, 0, 0, 0.0, 0.0)
            elif isinstance(step, L):
                event = Liquidation(symbol, step.side, 1.0, 1.0, step.notional, 0, 0, 0.0, 0.0)
            else:
                event = DepthSnapshot(symbol, step.bids, step.asks, 1, None, 0.0, 0.0)
            market.apply(event, step.now)
            signal = rule.evaluate(event, state, step.now)
            if getattr(rule, "offload", None):
                assert signal is None  # evaluate only folds
                signal = rule.compute(rule.snapshot(state, step.now))
        readings.append(None if signal is None else signal.active)
    return readings


CASES = ("fires", "does_not_fire", "resolves", "boundary", "time")
_ = None  # no reading

TABLE: dict[str, dict[str, tuple[dict[str, Any], list, list]]] = {
    "crossing": {
        "fires": ({"level": 100}, [T(0, 99), T(1, 101)], [_, True]),
        "does_not_fire": ({"level": 100}, [T(0, 99), T(1, 99.5)], [_, False]),
        "resolves": ({"level": 100}, [T(0, 101), T(1, 99), T(2, 98)], [_, True, False]),
        # Reaching the level counts; staying on it does not.
        "boundary": ({"level": 100}, [T(0, 99), T(1, 100), T(2, 100)], [_, True, False]),
        "time": ({"level": 100}, [T(0, 99), T(1, 101), K(2)], [_, True, False]),
    },
    "crossing_up": {
        "fires": ({"level": 100}, [T(0, 99), T(1, 101)], [_, True]),
        "does_not_fire": ({"level": 100}, [T(0, 101), T(1, 99)], [_, False]),
        "resolves": ({"level": 100}, [T(0, 99), T(1, 101), T(2, 102)], [_, True, False]),
        "boundary": ({"level": 100}, [T(0, 99), T(1, 100), T(2, 100)], [_, True, False]),
        "time": ({"level": 100}, [T(0, 99), T(1, 101), K(2)], [_, True, False]),
    },
    "crossing_down": {
        "fires": ({"level": 100}, [T(0, 101), T(1, 99)], [_, True]),
        "does_not_fire": ({"level": 100}, [T(0, 99), T(1, 101)], [_, False]),
        "resolves": ({"level": 100}, [T(0, 101), T(1, 99), T(2, 98)], [_, True, False]),
        "boundary": ({"level": 100}, [T(0, 101), T(1, 100), T(2, 100)], [_, True, False]),
        "time": ({"level": 100}, [T(0, 101), T(1, 99), K(2)], [_, True, False]),
    },
    "greater_than": {
        "fires": ({"level": 100}, [T(0, 101)], [True]),
        "does_not_fire": ({"level": 100}, [T(0, 99)], [False]),
        "resolves": ({"level": 100}, [T(0, 101), T(1, 99)], [True, False]),
        # Equal is not greater; with hysteresis 5 it holds until <= 95.
        "boundary": (
            {"level": 100, "hysteresis": 5},
            [T(0, 100), T(1, 101), T(2, 96), T(3, 95), T(4, 99)],
            [False, True, True, False, False],
        ),
        "time": ({"level": 100}, [T(0, 101), K(100)], [True, _]),
    },
    "less_than": {
        "fires": ({"level": 100}, [T(0, 99)], [True]),
        "does_not_fire": ({"level": 100}, [T(0, 101)], [False]),
        "resolves": ({"level": 100}, [T(0, 99), T(1, 101)], [True, False]),
        "boundary": (
            {"level": 100, "hysteresis": 5},
            [T(0, 100), T(1, 99), T(2, 104), T(3, 105), T(4, 101)],
            [False, True, True, False, False],
        ),
        "time": ({"level": 100}, [T(0, 99), K(100)], [True, _]),
    },
    "inside_channel": {
        "fires": ({"low": 90, "high": 110}, [T(0, 100)], [True]),
        "does_not_fire": ({"low": 90, "high": 110}, [T(0, 120)], [False]),
        "resolves": ({"low": 90, "high": 110}, [T(0, 100), T(1, 89)], [True, False]),
        "boundary": (
            {"low": 90, "high": 110},
            [T(0, 90), T(1, 110), T(2, 110.01)],
            [True, True, False],
        ),
        "time": ({"low": 90, "high": 110}, [T(0, 100), K(100)], [True, _]),
    },
    "outside_channel": {
        "fires": ({"low": 90, "high": 110}, [T(0, 120)], [True]),
        "does_not_fire": ({"low": 90, "high": 110}, [T(0, 100)], [False]),
        "resolves": ({"low": 90, "high": 110}, [T(0, 80), T(1, 100)], [True, False]),
        "boundary": (
            {"low": 90, "high": 110},
            [T(0, 90), T(1, 89.99), T(2, 110)],
            [False, True, False],
        ),
        "time": ({"low": 90, "high": 110}, [T(0, 120), K(100)], [True, _]),
    },
    "entering_channel": {
        "fires": ({"low": 90, "high": 110}, [T(0, 120), T(1, 100)], [_, True]),
        "does_not_fire": ({"low": 90, "high": 110}, [T(0, 120), T(1, 115)], [_, False]),
        "resolves": (
            {"low": 90, "high": 110},
            [T(0, 80), T(1, 100), T(2, 101)],
            [_, True, False],
        ),
        "boundary": ({"low": 90, "high": 110}, [T(0, 120), T(1, 110)], [_, True]),
        "time": ({"low": 90, "high": 110}, [T(0, 120), T(1, 100), K(2)], [_, True, False]),
    },
    "exiting_channel": {
        "fires": ({"low": 90, "high": 110}, [T(0, 100), T(1, 120)], [_, True]),
        "does_not_fire": ({"low": 90, "high": 110}, [T(0, 100), T(1, 105)], [_, False]),
        "resolves": (
            {"low": 90, "high": 110},
            [T(0, 100), T(1, 80), T(2, 70)],
            [_, True, False],
        ),
        "boundary": (
            {"low": 90, "high": 110},
            [T(0, 100), T(1, 110), T(2, 110.5)],
            [_, False, True],
        ),
        "time": ({"low": 90, "high": 110}, [T(0, 100), T(1, 120), K(2)], [_, True, False]),
    },
    "moving_up_pct": {
        "fires": ({"pct": 3, "window": "10s"}, [T(0, 100), T(5, 103.5)], [False, True]),
        "does_not_fire": ({"pct": 3, "window": 10}, [T(0, 100), T(5, 102)], [False, False]),
        "resolves": (
            {"pct": 3, "window": 10},
            [T(0, 100), T(5, 104), T(6, 101)],
            [False, True, False],
        ),
        # Exactly 25 %, and the low exactly `window` seconds old, both count.
        "boundary": ({"pct": 25, "window": 10}, [T(0, 64), T(10, 80)], [False, True]),
        # The low leaves the window: 104 alone is no move; then everything expires.
        "time": (
            {"pct": 3, "window": 10},
            [T(0, 100), T(5, 104), K(10.5), K(15.5), T(20, 104)],
            [False, True, False, False, False],
        ),
    },
    "moving_down_pct": {
        "fires": ({"pct": 3, "window": 10}, [T(0, 100), T(5, 96.5)], [False, True]),
        "does_not_fire": ({"pct": 3, "window": 10}, [T(0, 100), T(5, 98)], [False, False]),
        "resolves": (
            {"pct": 3, "window": 10},
            [T(0, 100), T(5, 96), T(6, 99)],
            [False, True, False],
        ),
        "boundary": ({"pct": 25, "window": 10}, [T(0, 64), T(10, 48)], [False, True]),
        "time": (
            {"pct": 3, "window": 10},
            [T(0, 100), T(5, 96), K(10.5), K(15.5)],
            [False, True, False, False],
        ),
    },
    "large_trade": {
        "fires": ({"notional": 1000}, [T(0, 100, qty=11)], [True]),
        "does_not_fire": ({"notional": 1000}, [T(0, 100, qty=5)], [False]),
        "resolves": ({"notional": 1000}, [T(0, 100, qty=11), T(1, 100, qty=1)], [True, False]),
        # Equal notional fires; a sell does not count for side = "buy".
        "boundary": (
            {"notional": 1000, "side": "buy"},
            [T(0, 100, qty=10), T(1, 100, qty=20, buy=False)],
            [True, False],
        ),
        "time": ({"notional": 1000}, [T(0, 100, qty=11), K(1)], [True, False]),
    },
    # window 1 s against the 4 s before it; one trade of 1 a second is the baseline rate.
    "volume_spike": {
        "fires": (
            {"window": 1, "baseline": 4, "factor": 3},
            [*(T(t, 100) for t in range(5)), T(5, 100, qty=3)],
            [_, _, _, _, _, True],  # warming up until window + baseline of history
        ),
        "does_not_fire": (
            {"window": 1, "baseline": 4, "factor": 3},
            [*(T(t, 100) for t in range(5)), T(5, 100, qty=1)],
            [_, _, _, _, _, False],
        ),
        "resolves": (
            {"window": 1, "baseline": 4, "factor": 3},
            [*(T(t, 100) for t in range(5)), T(5, 100, qty=3), T(7, 100, qty=1)],
            [_, _, _, _, _, True, False],
        ),
        # Recent 3/s against a 1/s baseline is exactly 3x; min_volume 4 then forbids it.
        "boundary": (
            {"window": 1, "baseline": 4, "factor": 3},
            [*(T(t, 100) for t in range(5)), T(5, 100, qty=2)],
            [_, _, _, _, _, True],
        ),
        "time": (
            {"window": 1, "baseline": 4, "factor": 3},
            [*(T(t, 100) for t in range(5)), T(5, 100, qty=3), K(5.5), K(6.1)],
            [_, _, _, _, _, True, True, False],
        ),
    },
    "trade_rate": {
        "fires": (
            {"rate": 2, "window": 2},
            [T(t / 2, 100) for t in range(5)],
            [False] * 4 + [True],
        ),
        "does_not_fire": ({"rate": 2, "window": 2}, [T(0, 100), T(1, 100)], [False, False]),
        "resolves": (
            {"rate": 2, "window": 2},
            [*(T(t / 2, 100) for t in range(5)), K(2.6)],
            [False] * 4 + [True, False],
        ),
        # 4 trades in 2 s is exactly 2/s: not above.
        "boundary": ({"rate": 2, "window": 2}, [T(t / 2, 100) for t in range(4)], [False] * 4),
        "time": (
            {"rate": 1, "window": 2},
            [T(0, 100), T(0, 100), T(0, 100), K(2.0), K(2.01)],
            [False, False, True, True, False],
        ),
    },
    "buy_sell_imbalance": {
        "fires": (
            {"threshold": 0.5, "window": 5},
            [T(0, 100, qty=4), T(1, 100, qty=1, buy=False)],
            [True, True],
        ),
        "does_not_fire": (
            {"threshold": 0.5, "window": 5},
            [T(0, 100, qty=1), T(1, 100, qty=1, buy=False)],
            [True, False],
        ),
        "resolves": (
            {"threshold": 0.5, "window": 5, "side": "buy"},
            [T(0, 100, qty=4), T(1, 100, qty=4, buy=False)],
            [True, False],
        ),
        # (3 - 1) / 4 = 0.5 exactly holds; side = "sell" ignores buying; min_volume too.
        "boundary": (
            {"threshold": 0.5, "window": 5, "min_volume": 4},
            [T(0, 100, qty=3), T(1, 100, qty=1, buy=False), T(2, 100, qty=0.5, buy=False)],
            [False, True, False],
        ),
        "time": (
            {"threshold": 0.5, "window": 5, "side": "sell"},
            [T(0, 100, qty=4, buy=False), K(5), K(5.01)],
            [True, True, False],
        ),
    },
    # bid 127 / ask 129: mid 128, spread 2/128 = 156.25 bps exactly.
    "spread_above_bps": {
        "fires": ({"bps": 100}, [quote(0, 127, 129)], [True]),
        "does_not_fire": ({"bps": 200}, [quote(0, 127, 129)], [False]),
        "resolves": ({"bps": 100}, [quote(0, 127, 129), quote(1, 127.9, 128.1)], [True, False]),
        # 156.25 is not above 156.25; once holding (312.5), it holds while > 78.125.
        "boundary": (
            {"bps": 156.25, "hysteresis": 78.125},
            [quote(0, 127, 129), quote(1, 126, 130), quote(2, 127, 129), quote(3, 127.5, 128.5)],
            [False, True, True, False],
        ),
        "time": ({"bps": 100}, [quote(0, 127, 129), K(100)], [True, _]),
    },
    "book_imbalance": {
        "fires": (
            {"ratio": 4, "levels": 2},
            [B(0, ((99, 5), (98, 5)), ((101, 1), (102, 1)))],
            [True],
        ),
        "does_not_fire": (
            {"ratio": 4, "levels": 2},
            [B(0, ((99, 2), (98, 2)), ((101, 1), (102, 1)))],
            [False],
        ),
        "resolves": (
            {"ratio": 4},
            [quote(0, 99, 101, 1, 10), quote(1, 99, 101, 1, 1)],
            [True, False],
        ),
        # Exactly 4x holds; only the top `levels` count; side = "bid" ignores ask-heavy.
        "boundary": (
            {"ratio": 4, "levels": 1, "side": "bid"},
            [
                B(0, ((99, 4), (98, 100)), ((101, 1), (102, 1))),
                quote(1, 99, 101, 1, 4),
            ],
            [True, False],
        ),
        "time": ({"ratio": 4}, [quote(0, 99, 101, 8, 1), K(100)], [True, _]),
    },
    # mid 100, 100 bps: levels at 99..101 count.
    "liquidity_wall": {
        "fires": (
            {"notional": 5000, "bps": 100},
            [B(0, ((99.5, 60),), ((100.5, 1),))],
            [True],
        ),
        "does_not_fire": (
            {"notional": 5000, "bps": 100},
            [B(0, ((99.5, 10),), ((100.5, 10),))],
            [False],
        ),
        "resolves": (
            {"notional": 5000, "bps": 100},
            [B(0, ((99.5, 1),), ((100.5, 60),)), B(1, ((99.5, 1),), ((100.5, 1),))],
            [True, False],
        ),
        # 99 x 10 = 990 exactly, at exactly 100 bps, holds; a bigger level beyond does not.
        "boundary": (
            {"notional": 990, "bps": 100},
            [
                B(0, ((99.5, 1), (99, 10)), ((100.5, 1),)),
                B(1, ((99.5, 1), (98.9, 1000)), ((100.5, 1),)),
            ],
            [True, False],
        ),
        "time": (
            {"notional": 5000, "bps": 100, "side": "bid"},
            [B(0, ((99.5, 60),), ((100.5, 1),)), K(100)],
            [True, _],
        ),
    },
    "thin_book": {
        "fires": ({"notional": 1000, "bps": 100}, [quote(0, 99.5, 100.5)], [True]),
        "does_not_fire": (
            {"notional": 1000, "bps": 100},
            [quote(0, 99.5, 100.5, 10, 10)],
            [False],
        ),
        "resolves": (
            {"notional": 1000, "bps": 100},
            [quote(0, 99.5, 100.5), quote(1, 99.5, 100.5, 20, 0.1)],
            [True, False],
        ),
        # 99 x 10 + 101 x 10 = 2000: not below 2000; the bid side alone (990) is.
        "boundary": (
            {"notional": 2000, "bps": 100},
            [quote(0, 99, 101, 10, 10)],
            [False],
        ),
        "time": ({"notional": 1000, "bps": 100}, [quote(0, 99.5, 100.5), K(100)], [True, _]),
    },
    "no_data": {
        "fires": ({"seconds": 5}, [T(0, 100), K(6)], [_, True]),
        "does_not_fire": (
            {"seconds": 5},
            [T(0, 100), K(4), T(4.5, 100), K(9)],
            [_, False, _, False],
        ),
        "resolves": ({"seconds": 5}, [K(6), T(7, 100), K(7.5)], [True, _, False]),
        # Exactly `seconds` of silence holds (counted from watch_since before any message);
        # with stream = "trade", books do not end the silence.
        "boundary": (
            {"seconds": 5, "stream": "trade"},
            [K(4.99), K(5), quote(6, 99, 101), K(6)],
            [False, True, _, True],
        ),
        "time": ({"seconds": "5s"}, [T(0, 100), K(4), K(5), K(50)], [_, False, True, True]),
    },
    # [100, 100, 100, 100, 105]: mean 101, std 2, z = 2 exactly.
    "zscore": {
        "fires": (
            {"window": 60, "threshold": 2, "min_samples": 5},
            [*(T(t, 100) for t in range(5)), T(5, 105)],
            [_, _, _, _, False, True],
        ),
        "does_not_fire": (
            {"window": 60, "threshold": 2, "min_samples": 5},
            [T(t, 100 + t % 2) for t in range(6)],
            [_, _, _, _, False, False],
        ),
        "resolves": (
            {"window": 60, "threshold": 2, "min_samples": 5},
            [*(T(t, 100) for t in range(5)), T(5, 105), T(6, 101)],
            [_, _, _, _, False, True, False],
        ),
        "boundary": (
            {"window": 60, "threshold": 2, "min_samples": 5},
            [*(T(t, 100) for t in range(4)), T(4, 105)],
            [_, _, _, _, True],
        ),
        # After the window, too few samples remain to judge.
        "time": (
            {"window": 10, "threshold": 2, "min_samples": 5},
            [*(T(t, 100) for t in range(4)), T(4, 105), T(14.5, 105)],
            [_, _, _, _, True, _],
        ),
    },
    "funding_rate_above": {
        "fires": ({"level": 0.0005}, [M(0, 100, funding=0.001)], [True]),
        "does_not_fire": ({"level": 0.0005}, [M(0, 100, funding=0.0001)], [False]),
        "resolves": (
            {"level": 0.0005},
            [M(0, 100, funding=0.001), M(1, 100, funding=0.0)],
            [True, False],
        ),
        # Equal is not above; a delivery contract (no funding rate) is not judged.
        "boundary": (
            {"level": 0.0005, "hysteresis": 0.0002},
            [
                M(0, 100, funding=0.0005),
                M(1, 100, funding=0.0006),
                M(2, 100, funding=0.0004),
                M(3, 100, funding=0.0003),
                M(4, 100, funding=None),
            ],
            [False, True, True, False, _],
        ),
        "time": ({"level": 0.0005}, [M(0, 100, funding=0.001), K(100)], [True, _]),
    },
    "funding_rate_below": {
        "fires": ({"level": -0.0005}, [M(0, 100, funding=-0.001)], [True]),
        "does_not_fire": ({"level": -0.0005}, [M(0, 100, funding=0.0)], [False]),
        "resolves": (
            {"level": -0.0005},
            [M(0, 100, funding=-0.001), M(1, 100, funding=0.0)],
            [True, False],
        ),
        "boundary": ({"level": -0.0005}, [M(0, 100, funding=-0.0005)], [False]),
        "time": ({"level": -0.0005}, [M(0, 100, funding=-0.001), K(100)], [True, _]),
    },
    "basis_bps": {
        "fires": ({"bps": 50}, [M(0, 101, 100)], [True]),
        "does_not_fire": ({"bps": 50}, [M(0, 100.1, 100)], [False]),
        "resolves": ({"bps": 50}, [M(0, 99, 100), M(1, 100, 100)], [True, False]),
        # 100 bps exactly holds; a discount is not a premium.
        "boundary": (
            {"bps": 100, "side": "premium"},
            [M(0, 101, 100), M(1, 99, 100)],
            [True, False],
        ),
        "time": ({"bps": 50}, [M(0, 101, 100), K(100)], [True, _]),
    },
    "liquidation_notional": {
        "fires": (
            {"notional": 1000, "window": 10},
            [L(0, 600), L(1, 500)],
            [False, True],
        ),
        "does_not_fire": (
            {"notional": 1000, "window": 10, "side": "short"},
            [L(0, 600), L(1, 500)],
            [False, False],
        ),
        "resolves": (
            {"notional": 1000, "window": 10},
            [L(0, 600), L(1, 500), K(10.5)],
            [False, True, False],
        ),
        "boundary": ({"notional": 1000, "window": 10}, [L(0, 1000)], [True]),
        "time": (
            {"notional": 1000, "window": 10, "side": "long"},
            [L(0, 1000), K(10.0), K(10.01)],
            [True, True, False],
        ),
    },
}


def test_every_kind_has_every_case() -> None:
    assert set(TABLE) == set(RULE_KINDS)
    for kind, cases in TABLE.items():
        assert set(cases) == set(CASES), kind


@pytest.mark.parametrize(
    ("kind", "case"),
    [(kind, case) for kind in TABLE for case in CASES],
    ids=[f"{kind}-{case}" for kind in TABLE for case in CASES],
)
def test_kind(kind: str, case: str) -> None:
    params, steps, expected = TABLE[kind][case]
    assert len(steps) == len(expected)
    assert drive(kind, params, steps) == expected


BAD_PARAMS = [
    ("crossing", {}, "params.level is required"),
    ("crossing_up", {"level": -1}, "params.level"),
    ("crossing_down", {"level": 1, "hysteresis": 1}, "params.hysteresis"),
    ("greater_than", {"level": 1, "hysteresis": -1}, "params.hysteresis"),
    ("less_than", {"level": True}, "params.level"),
    ("inside_channel", {"low": 2, "high": 1}, "params.high"),
    ("outside_channel", {"low": 1}, "params.high is required"),
    ("entering_channel", {"low": 1, "high": 2, "mid": 3}, "params.mid"),
    ("exiting_channel", {"low": "a", "high": 2}, "params.low"),
    ("moving_up_pct", {"pct": 0, "window": 10}, "params.pct"),
    ("moving_down_pct", {"pct": 1, "window": "soon"}, "params.window"),
    ("large_trade", {"notional": 1, "side": "up"}, "params.side"),
    ("volume_spike", {"window": 1, "baseline": 0, "factor": 2}, "params.baseline"),
    ("trade_rate", {"rate": 1}, "params.window is required"),
    ("buy_sell_imbalance", {"threshold": 1.5, "window": 1}, "params.threshold"),
    ("spread_above_bps", {"bps": float("inf")}, "params.bps"),
    ("book_imbalance", {"ratio": 1}, "params.ratio"),
    ("book_imbalance", {"ratio": 2, "levels": 0}, "params.levels"),
    ("liquidity_wall", {"notional": 1, "bps": 0}, "params.bps"),
    ("thin_book", {"notional": 1, "bps": 1, "side": "middle"}, "params.side"),
    ("no_data", {"seconds": 0}, "params.seconds"),
    ("zscore", {"window": 10, "threshold": 2, "min_samples": 2}, "params.min_samples"),
    ("funding_rate_above", {}, "params.level is required"),
    ("funding_rate_below", {"level": 0.1, "hysteresis": -1}, "params.hysteresis"),
    ("basis_bps", {"bps": 10, "side": "up"}, "params.side"),
    ("liquidation_notional", {"notional": 1}, "params.window is required"),
]


@pytest.mark.parametrize(("kind", "params", "named"), BAD_PARAMS)
def test_bad_params_name_the_rule_and_the_parameter(kind: str, params: dict, named: str) -> None:
    from oraculo_trio.core.rules import parse_rule

    with pytest.raises(ConfigError, match=f"rule 'bad': {named}"):
        parse_rule({"id": "bad", "kind": kind, "params": params})


def test_every_kind_validates_its_params() -> None:
    assert {kind for kind, _, _ in BAD_PARAMS} == set(RULE_KINDS)
