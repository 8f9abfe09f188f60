"""One shard's rule evaluation: market state per symbol, rules bound per symbol and stream.

The pipeline's consumers call :meth:`ShardEngine.process` for every message of their shard;
depth and trade consumers of one shard share one engine (they run on the same Trio thread
and never await inside ``process``), so a book rule and a trade rule see the same symbol.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from oraculo_trio.core.alerts import AlertTracker, AlertTransition
from oraculo_trio.core.rules import CompiledRule, MarketState, RuleState, rules_for


@attrs.define(eq=False, slots=True)
class Binding:
    """One rule applied to one symbol: the rule, its state and its alert tracker."""

    compiled: CompiledRule
    state: RuleState
    tracker: AlertTracker


@attrs.define(eq=False)
class ShardEngine:
    """Market state and rule bindings of the symbols one shard owns."""

    rules: list[CompiledRule] = attrs.field(factory=list)
    markets: dict[str, MarketState] = attrs.field(factory=dict)
    _bindings: dict[tuple[str, str], list[Binding]] = attrs.field(factory=dict)
    _by_key: dict[tuple[str, str], Binding] = attrs.field(factory=dict)

    def market(self, symbol: str) -> MarketState:
        market = self.markets.get(symbol)
        if market is None:
            market = self.markets[symbol] = MarketState(symbol)
        return market

    def process(
        self, event: object, now: float, evaluate: bool = True
    ) -> list[AlertTransition] | None:
        """Fold ``event`` into its symbol's state and, if ``evaluate``, run its rules.

        Args:
            event: a market event of a symbol this shard owns.
            now: wall-clock Unix seconds.
            evaluate: False for stale messages: the state is updated, rules are skipped.

        Returns:
            The transitions raised, or None when there are none (the common case).
        """
        symbol = event.symbol
        market = self.markets.get(symbol)
        if market is None:
            market = self.market(symbol)
        market.apply(event, now)
        if not evaluate:
            return None
        key = (symbol, event.stream)
        bindings = self._bindings.get(key)
        if bindings is None:
            bindings = self._bind(symbol, event.stream, now)
        transitions = None
        for binding in bindings:
            signal = binding.compiled.rule.evaluate(event, binding.state, now)
            if signal is None:
                continue
            transition = binding.tracker.update(
                signal.active, signal.value, now, binding.compiled.spec
            )
            if transition is not None:
                if transitions is None:
                    transitions = [transition]
                else:
                    transitions.append(transition)
        return transitions

    def _bind(self, symbol: str, stream: str, now: float) -> list[Binding]:
        bindings = []
        for compiled in rules_for(symbol, self.rules, now):
            if stream not in compiled.rule.streams:
                continue
            key = (compiled.spec.id, symbol)
            binding = self._by_key.get(key)
            if binding is None or binding.compiled.spec != compiled.spec:
                binding = Binding(
                    compiled,
                    RuleState(self.market(symbol), compiled.rule.initial_data()),
                    AlertTracker(compiled.spec.id, symbol),
                )
                self._by_key[key] = binding
            bindings.append(binding)
        self._bindings[(symbol, stream)] = bindings
        return bindings

    def replace_rules(self, rules: Iterable[CompiledRule]) -> None:
        """Swap the rule set; (rule, symbol) pairs whose spec is unchanged keep their state."""
        self.rules = list(rules)
        wanted = {r.spec.id: r for r in self.rules}
        for key, binding in list(self._by_key.items()):
            new = wanted.get(key[0])
            if new is None or new.spec != binding.compiled.spec:
                del self._by_key[key]
            else:
                binding.compiled = new
        self._bindings.clear()

    def trackers(self) -> Iterable[AlertTracker]:
        """Every alert tracker, for metrics and persistence."""
        return (binding.tracker for binding in self._by_key.values())
