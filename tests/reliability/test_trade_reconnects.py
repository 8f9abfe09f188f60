"""No trade lost across a reconnect: every trade id the exchange published while the service
was subscribed is evaluated exactly once, in order, from the stream or from the backfill.

The expectation is the exchange's own record of what it published (its trade tape, which the
REST backfill also answers from), never a figure of the service: per symbol, every id after
the last one published before the service subscribed, up to the last one published before
the exchange was paused at the end. A rule records each trade it evaluates.

- ``feed/trade-ids-server-shutdown-rotation``: ``serverShutdown`` again and again, and
  connections that rotate at their lifetime, under load: the new connection is opened and
  subscribed before the old one stops (make before break); the overlap is dropped by id.
- ``feed/trade-ids-aggtrade-cut-1006``: an ``@aggTrade`` connection cut abruptly (1006, no
  close frame): the trades published until the reconnect are fetched from
  ``/api/v3/aggTrades?fromId=`` before the next trade of their symbol is evaluated.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import trio

from oraculo_trio.core.rules import CompiledRule, RuleState, Signal, parse_rules
from oraculo_trio.pipeline.rules_source import resolve_rule_class
from tests.reliability.conftest import Mode
from tests.reliability.report import Figures
from tests.reliability.rig import (
    RULE_ENTRIES,
    Rig,
    check,
    loaded_service,
    reconnects,
    sample,
    until,
)

RECORD_KIND = "tests.reliability.test_trade_reconnects:RecordTrades"

# Backfilled trades carry their trade time as event time: a long fault must not turn them
# into stale drops (skipped by the rules), which is another policy than the one checked here.
OVERRIDES = {"pipeline": {"stale_after": 600.0}}


def recording_rules(seen: list[tuple[str, int]]) -> list[CompiledRule]:
    """The rig's rules, and one that appends ``(symbol, trade id)`` of each trade it
    evaluates to ``seen``."""

    class RecordTrades:
        kind: ClassVar[str] = RECORD_KIND
        streams: ClassVar[frozenset[str]] = frozenset({"trade"})

        def __init__(self, params: dict[str, Any]) -> None:
            pass

        def initial_data(self) -> Any:
            return None

        def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
            seen.append((event.symbol, event.trade_id))
            return None

    def resolve(reference: str) -> type:
        return RecordTrades if reference == RECORD_KIND else resolve_rule_class(reference)

    entries = [*RULE_ENTRIES, {"id": "record-trades", "kind": RECORD_KIND, "symbols": "*"}]
    return parse_rules({"rule": [dict(entry) for entry in entries]}, resolve)


def published_before(rig: Rig, kind: str) -> dict[str, int | None]:
    """The last id the exchange published of each symbol's ``kind`` (None: none yet)."""
    return {symbol: rig.exchange.tape.last_id(symbol, kind) for symbol in rig.market.symbols}


def first_expected(rig: Rig, kind: str, before: Mapping[str, int | None]) -> dict[str, int]:
    """Per symbol, the first id published after ``before`` (the service was subscribed)."""
    key = "a" if kind == "aggTrade" else "id"
    first = {}
    for symbol, last in before.items():
        if last is not None:
            first[symbol] = last + 1
        else:
            (oldest,) = rig.exchange.tape.query(symbol, kind, 0, 1)
            first[symbol] = oldest[key]
    return first


async def settle(rig: Rig, kind: str, seen: list[tuple[str, int]]) -> dict[str, int]:
    """Pause the exchange and wait until the service evaluated the last trade it published
    of each symbol; returns those last ids."""
    rig.exchange.pause()
    last = {symbol: trade_id or 0 for symbol, trade_id in published_before(rig, kind).items()}

    def caught_up() -> bool:
        newest: dict[str, int] = {}
        for symbol, trade_id in seen:
            newest[symbol] = max(newest.get(symbol, 0), trade_id)
        return all(newest.get(symbol, 0) >= last[symbol] for symbol in last)

    await until(caught_up)
    return last


def judge(
    figures: Figures,
    seen: list[tuple[str, int]],
    first: Mapping[str, int],
    last: Mapping[str, int],
    metrics_of: Callable[[str], float],
) -> None:
    """Fill ``figures`` from the trade ids evaluated against those published, and assert
    each was evaluated once, in order."""
    by_symbol: dict[str, list[int]] = collections.defaultdict(list)
    for symbol, trade_id in seen:
        by_symbol[symbol].append(trade_id)
    expected = missing = repeated = out_of_order = 0
    for symbol, final in last.items():
        ids = by_symbol[symbol]
        counts = collections.Counter(ids)
        wanted = range(first[symbol], final + 1)
        expected += len(wanted)
        missing += sum(1 for trade_id in wanted if trade_id not in counts)
        repeated += sum(count - 1 for count in counts.values())
        out_of_order += sum(1 for a, b in itertools.pairwise(ids) if b <= a)
    figures.messages = expected
    figures.counts = "trade ids"
    figures.measured(
        "trade_ids", (figures.lost or 0) + missing, (figures.duplicates or 0) + repeated
    )
    figures.detail["trade_ids"] = {
        "expected": expected,
        "evaluated": len(seen),
        "missing": missing,
        "evaluated_twice": repeated,
        "out_of_order": out_of_order,
        "backfilled": int(metrics_of("oraculo_feed_trades_backfilled_total")),
        "duplicate_dropped": int(metrics_of("duplicate")),
        "trades_missed": int(metrics_of("oraculo_feed_trades_missed_total")),
    }
    assert expected > 0, "no trade was published while the service was subscribed"
    assert missing == 0, f"{missing} of {expected} published trade ids never evaluated"
    assert repeated == 0, f"{repeated} trade ids evaluated more than once"
    assert out_of_order == 0, f"{out_of_order} trades evaluated after a later one"


def counters(rig: Rig) -> Callable[[str], float]:
    """The service's trade counters by name (``duplicate``: the drops of that reason)."""
    metrics = rig.metrics

    def value(name: str) -> float:
        if name == "duplicate":
            return sample(
                metrics, "oraculo_alerts_queue_dropped_total", stream="trade", reason="duplicate"
            )
        if name == "oraculo_feed_trades_backfilled_total":
            return sample(metrics, name, stream="trade")
        return sum(
            sample(metrics, name, reason=reason)
            for reason in ("no_keyless_history", "not_served", "over_limit", "rest_failed")
        )

    return value


async def test_server_shutdown_and_rotation_lose_no_trade_id(
    tmp_path: Path, mode: Mode, scenario
) -> None:
    figures = scenario("feed/trade-ids-server-shutdown-rotation")
    shutdowns = mode.count(3, 20)
    lifetime = mode.pick(0.8, 3.0)
    seen: list[tuple[str, int]] = []
    overrides = {
        **OVERRIDES,
        "feed": {"connection_lifetime": lifetime, "rotation_spacing": 0.1},
    }
    with trio.fail_after(mode.pick(40, 300)):
        async with loaded_service(
            tmp_path, mode.rate, rules=recording_rules(seen), overrides=overrides
        ) as rig:
            kind = "trade"
            after = published_before(rig, kind)
            for _ in range(shutdowns):
                await rig.wait_received(mode.count(150, 2000))
                moved = reconnects(rig.metrics, "server_shutdown")
                assert await rig.exchange.server_shutdown() >= 2
                # A connection already being replaced (its lifetime) moves on anyway.
                await until(lambda moved=moved: reconnects(rig.metrics, "server_shutdown") > moved)
            await until(lambda: reconnects(rig.metrics, "lifetime") >= mode.count(4, 30))
            await rig.wait_transitions(2)
            last = await settle(rig, kind, seen)
        rotations = reconnects(rig.metrics, "lifetime")
        told = reconnects(rig.metrics, "server_shutdown")
        await check(rig, figures, faults=told + rotations)
    judge(figures, seen, first_expected(rig, kind, after), last, counters(rig))
    figures.detail.update(server_shutdowns=told, rotations=rotations)
    # Make before break: a replaced connection was never missed.
    assert rig.exchange.connections_accepted >= 2 + told + rotations


async def test_an_aggtrade_connection_cut_abruptly_is_backfilled(
    tmp_path: Path, mode: Mode, scenario
) -> None:
    figures = scenario("feed/trade-ids-aggtrade-cut-1006")
    cuts = mode.count(2, 20)
    seen: list[tuple[str, int]] = []
    recoveries = []
    with trio.fail_after(mode.pick(40, 300)):
        async with loaded_service(
            tmp_path,
            mode.rate,
            rules=recording_rules(seen),
            overrides=OVERRIDES,
            trade_kind="aggTrade",
        ) as rig:
            kind = "aggTrade"
            after = published_before(rig, kind)
            for _ in range(cuts):
                await rig.wait_received(mode.count(150, 2000))
                accepted = rig.exchange.connections_accepted
                cut_at = trio.current_time()
                assert await rig.exchange.drop_connections(1006) >= 2
                await rig.wait_reconnected(accepted)
                recoveries.append(trio.current_time() - cut_at)
            await rig.wait_transitions(2)
            last = await settle(rig, kind, seen)
        await check(rig, figures, faults=cuts)
    judge(figures, seen, first_expected(rig, kind, after), last, counters(rig))
    figures.recovery_s = max(recoveries)
    assert reconnects(rig.metrics, "closed_1006") >= 2 * cuts
    # Trades were published while the connection was down: the backfill fetched them.
    assert figures.detail["trade_ids"]["backfilled"] > 0
    assert figures.detail["trade_ids"]["trades_missed"] == 0
