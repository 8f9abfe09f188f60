"""What the store must hold, counted without the service: the marker rule, and the verdict
that compares its stored firings with the trades the mock exchange wrote.

The marker rule (:class:`TradeIdMarker`, rule ``flappy`` in the rig) fires on every trade
whose id is a multiple of ten, with the trade id as its value, and resolves on the next
trade. The exchange's trade ids are consecutive per symbol, and the exchange keeps every
``@trade`` frame it wrote to each connection (``ExchangeSettings(record_written=True)``), so
each trade id written that is a multiple of ten must be one stored firing whose value is
that id: the expectation (``exchange_sent``) never comes from the service's counters.

What the Guarantees let go is a tail: the frames still in flight when a connection broke
(never read), and, after a SIGKILL, the transitions raised and not yet committed. So per
connection and symbol, a firing missing before the last one stored (of those written to
that connection alone) is lost; one missing
after it is *in flight* if it was written within ``allowance`` seconds of the connection's
end (its close, or the moment the test began stopping the service), and lost otherwise.
Trades written after the test began stopping the service are not expected.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import attrs

from oraculo_trio.core.alerts import FIRING
from oraculo_trio.core.rules import RuleState, Signal
from oraculo_trio.mockexchange.tape import WrittenTrade, WrittenTrades
from tests.e2e.flappy import ParameterlessRule

MARKER_RULE = "flappy"
MARKER_EVERY = 10

IN_FLIGHT_S = 1.0
"""How long before a connection's end a frame may have been written and still be lost in
flight (unread in the sockets at a cut or a stop), unless a scenario says otherwise."""


class TradeIdMarker(ParameterlessRule):
    """Fires on every trade whose id is a multiple of ten (value: the trade id) and
    resolves on the next one, so the trades written say which firings the store holds."""

    kind: ClassVar[str] = "trade_id_marker"
    streams: ClassVar[frozenset[str]] = frozenset({"trade"})

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        return Signal(event.trade_id % MARKER_EVERY == 0, float(event.trade_id))


def marker_rule(rule_id: str = MARKER_RULE) -> dict[str, Any]:
    """The rule-file entry of the marker rule, on every symbol."""
    return {
        "id": rule_id,
        "kind": "tests.reliability.expected:TradeIdMarker",
        "symbols": "*",
        "trigger": "every_time",
    }


@attrs.frozen
class TradeVerdict:
    """The marker firings stored against those the trades written imply.

    Attributes:
        trades: trade frames written (up to the stop), every connection.
        expected: distinct (symbol, trade id) firings those trades imply.
        stored: distinct marker firings stored among them.
        lost: expected firings missing, and not excused as in flight.
        in_flight: expected firings missing at the end of a connection, written within the
            allowance before that end.
        in_flight_s: the longest time from writing an in-flight frame to its connection's
            end (0 when none).
        undetermined: marker trades that need not fire: the first of their symbol on a
            connection, or right after another marker (the trades between dropped by the
            exchange), when the alert may still be firing.
        duplicates: marker firings stored more than once for one trade id.
        unexpected: marker firings stored that no trade written or published implies.
    """

    trades: int
    expected: int
    stored: int
    lost: int
    in_flight: int
    in_flight_s: float
    undetermined: int
    duplicates: int
    unexpected: int

    def detail(self) -> dict[str, Any]:
        return attrs.asdict(self)


def _firings(events: Iterable[Mapping[str, Any]], rule_id: str) -> Counter[tuple[str, int]]:
    return Counter(
        (event["symbol"], int(event["value"]))
        for event in events
        if event["rule_id"] == rule_id and event["state"] == FIRING and not event["repeat"]
    )


def judge_trades(
    written: WrittenTrades | None,
    events: Iterable[Mapping[str, Any]],
    *,
    stopping_at: float,
    allowance: float = IN_FLIGHT_S,
    rule_id: str = MARKER_RULE,
    published: set[tuple[str, int]] = frozenset(),
) -> TradeVerdict:
    """Judge the stored marker firings against the trades the exchange wrote.

    Args:
        written: the exchange's record (``MockExchange.written``).
        events: ``alert_events`` rows.
        stopping_at: trio time the test began stopping the service (later trades are not
            expected, and no connection's end is later).
        allowance: see the module doc.
        rule_id: the marker rule's id.
        published: every (symbol, trade id) the exchange published (its tape): a trade
            never written to a connection may still be evaluated, backfilled from REST.
    """
    assert written is not None, "the exchange does not record what it writes"
    stored = _firings(events, rule_id)
    every = written.trades()
    trades = [t for t in every if t.at <= stopping_at]
    # Per connection and symbol, in the order written: each symbol's transitions are raised
    # and stored in order (one shard), whatever the other symbols' shards do meanwhile.
    runs: dict[tuple[int, str], list[WrittenTrade]] = defaultdict(list)
    undetermined = 0
    previous: dict[tuple[int, str], WrittenTrade] = {}
    for trade in trades:
        key = (trade.connection, trade.symbol)
        before = previous.get(key)
        previous[key] = trade
        if trade.trade_id % MARKER_EVERY:
            continue
        if before is None or before.trade_id % MARKER_EVERY == 0:
            # The alert may still be firing from an earlier marker (on another connection,
            # or the trades between were dropped): this one need not fire again.
            undetermined += 1
            continue
        runs[key].append(trade)
    # Every connection each trade went to (the undetermined ones included).
    connections_of: dict[tuple[str, int], set[int]] = defaultdict(set)
    for trade in trades:
        connections_of[(trade.symbol, trade.trade_id)].add(trade.connection)
    lost: set[tuple[str, int]] = set()
    in_flight: dict[tuple[str, int], float] = {}
    for (connection, _), run in runs.items():
        end = min(written.closed_at.get(connection, stopping_at), stopping_at)
        # The last firing stored that only this connection can have brought: a trade also
        # written to a newer connection (an overlap, a half-open one left behind) says
        # nothing about how far the service read this one.
        last = max(
            (
                i
                for i, t in enumerate(run)
                if (key := (t.symbol, t.trade_id)) in stored and len(connections_of[key]) == 1
            ),
            default=-1,
        )
        for i, trade in enumerate(run):
            key = (trade.symbol, trade.trade_id)
            if key in stored:
                continue
            age = end - trade.at
            if i > last and age <= allowance:
                in_flight[key] = max(age, in_flight.get(key, 0.0))
            else:
                lost.add(key)
    expected = {(t.symbol, t.trade_id) for run in runs.values() for t in run}
    # A trade written on two connections (a rotation's overlap) counts once, and is lost
    # only if no connection excuses it.
    lost -= in_flight.keys()
    return TradeVerdict(
        trades=len(trades),
        expected=len(expected),
        stored=len(expected & stored.keys()),
        lost=len(lost),
        in_flight=len(in_flight),
        in_flight_s=max(in_flight.values(), default=0.0),
        undetermined=undetermined,
        duplicates=sum(count - 1 for count in stored.values()),
        unexpected=len(stored.keys() - {(t.symbol, t.trade_id) for t in every} - published),
    )
