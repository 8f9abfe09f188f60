"""The rule clock: CPU-heavy rules per batch in a worker thread (numpy, ``rules`` limiter) or
a worker process (trio_parallel, ``rules_process`` limiter), never in the event loop."""

from __future__ import annotations

import os
import threading
from typing import Any, ClassVar

import trio

from oraculo_trio.core.engine import ShardEngine
from oraculo_trio.core.events import TRADE, Trade
from oraculo_trio.core.rules import RuleBase, RuleState, Signal, parse_rules
from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.pipeline.rule_clock import RuleLimiters, run_rule_clock
from oraculo_trio.pipeline.shards import AlertOutlet


class WhereAmI(RuleBase):
    """Fires on any data; its value says where ``compute`` ran (a pid or a thread id)."""

    kind: ClassVar[str] = "where_am_i"
    streams: ClassVar[frozenset[str]] = frozenset({TRADE})
    stateful: ClassVar[bool] = True
    offload: ClassVar[str | None] = "process"

    def __init__(self, params: dict[str, Any]) -> None:
        pass

    def initial_data(self) -> Any:
        return []

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        state.data.append(event.price)
        return None

    def snapshot(self, state: RuleState, now: float) -> Any:
        prices, state.data[:] = list(state.data), []
        return prices or None

    def compute(self, prices: list[float]) -> Signal:
        # Pure Python: holds the GIL, hence a process.
        return Signal(sum(prices) > 0, float(os.getpid()))


class WhichThread(WhereAmI):
    kind: ClassVar[str] = "which_thread"
    offload: ClassVar[str | None] = "thread"

    def compute(self, prices: list[float]) -> Signal:
        return Signal(sum(prices) > 0, float(threading.get_ident()))


def trade(price: float, symbol: str = "BTCUSDT") -> Trade:
    return Trade(symbol, price, 1.0, False, 1, 0, None, 0.0, 0.0)


async def test_offloaded_rules_run_in_a_worker_process_and_thread() -> None:
    rules = parse_rules(
        {"rule": [{"id": "proc", "kind": WhereAmI}, {"id": "thread", "kind": WhichThread}]}
    )
    engines = [ShardEngine(rules), ShardEngine(rules)]
    metrics = ServiceMetrics()
    store_send, store_receive = trio.open_memory_channel(100)
    dispatch_send, dispatch_receive = trio.open_memory_channel(100)
    limiters = RuleLimiters.create(1)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                run_rule_clock,
                engines,
                AlertOutlet(store_send, dispatch_send, metrics),
                0.05,
                limiters,
            )
            engines[0].process(trade(1.0), 1.0)
            engines[1].process(trade(2.0, "ETHUSDT"), 1.0)
            fired = [await store_receive.receive() for _ in range(4)]
            nursery.cancel_scope.cancel()
    by_rule: dict[str, set] = {}
    for transition in fired:
        assert transition.state == "firing"
        by_rule.setdefault(transition.rule_id, set()).add(transition.symbol)
        if transition.rule_id == "proc":
            assert transition.value != os.getpid()
        else:
            assert transition.value != threading.get_ident()
    assert by_rule == {"proc": {"BTCUSDT", "ETHUSDT"}, "thread": {"BTCUSDT", "ETHUSDT"}}
    dispatch_receive.close()
