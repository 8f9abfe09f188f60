"""One shard's rule evaluation: market state per symbol, rules bound per symbol and stream.

The pipeline drives a :class:`ShardEngine` through four calls, all synchronous and made
from the one Trio thread (depth and trade consumers of a shard share its engine, so a book
rule and a trade rule see the same symbol; nothing awaits inside a call):

- :meth:`ShardEngine.process` for every message: folds it into the symbol's state and
  evaluates the cheap rules right away;
- :meth:`ShardEngine.flush` after every micro-batch: evaluates ``per_batch`` rules (costly
  book queries) once per symbol and stream with the batch's last message;
- :meth:`ShardEngine.tick` every ``rules.tick_interval``: readings driven by time alone
  (``no_data``, windows that empty, ``for`` / ``keep_firing_for`` / ``repeat_interval``
  timers of alerts whose symbol went quiet), and expired rules;
- :meth:`ShardEngine.offload_jobs` / :meth:`ShardEngine.complete_offload` around a worker
  thread or process for CPU-heavy rules (``offload``): inputs are copied out, computed
  elsewhere, and the results fed back, per batch, never per message.

Each call returns the :class:`~oraculo_trio.core.alerts.AlertTransition` s it raised (or
None when there are none, the common case).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from oraculo_trio.core.alerts import (
    FIRING,
    INACTIVE,
    PENDING,
    RESOLVED,
    AlertTracker,
    AlertTransition,
)
from oraculo_trio.core.events import RULE_STREAMS
from oraculo_trio.core.rules import CompiledRule, MarketState, RuleState, Signal, rules_for


@attrs.define(eq=False, slots=True)
class Binding:
    """One rule applied to one symbol: the rule, its state and its alert tracker.

    ``ticks``: the rule has a ``tick`` method; ``always``: tick it even while the alert
    is inactive. ``inhibited_by``: the rule that inhibited this alert's last firing
    notification, so that the resolution of that episode is inhibited too.
    """

    compiled: CompiledRule
    state: RuleState
    tracker: AlertTracker
    ticks: bool = False
    always: bool = False
    inhibited_by: str | None = None


@attrs.define(eq=False, slots=True)
class _Route:
    """The bindings of one (symbol, stream), split by how they are evaluated."""

    immediate: list[Binding] = attrs.field(factory=list)
    batched: list[Binding] = attrs.field(factory=list)
    offloaded: list[Binding] = attrs.field(factory=list)
    stateful: list[Binding] = attrs.field(factory=list)


@attrs.frozen(eq=False)
class OffloadJob:
    """Inputs of one CPU-heavy evaluation, copied out of the engine.

    ``mode`` is the rule's ``offload`` (``"thread"`` or ``"process"``).
    """

    binding: Binding
    rule: Any
    snapshot: Any
    mode: str


def compute_offloaded(work: Sequence[tuple[Any, Any]]) -> list[Signal | None]:
    """Run ``rule.compute(snapshot)`` for each pair; meant for a worker thread or process."""
    return [rule.compute(snapshot) for rule, snapshot in work]


@attrs.define(eq=False)
class ShardEngine:
    """Market state and rule bindings of the symbols one shard owns."""

    rules: list[CompiledRule] = attrs.field(factory=list)
    markets: dict[str, MarketState] = attrs.field(factory=dict)
    _routes: dict[tuple[str, str], _Route] = attrs.field(factory=dict)
    _by_key: dict[tuple[str, str], Binding] = attrs.field(factory=dict)
    # Ordered sets (dicts) of bindings, so ticks run in a stable order. `_always`: the
    # bindings ticked even while inactive; `_live`: those whose alert is not inactive.
    _always: dict[Binding, None] = attrs.field(factory=dict)
    _live: dict[Binding, None] = attrs.field(factory=dict)
    _offload_dirty: dict[Binding, None] = attrs.field(factory=dict)
    _inhibitors: dict[str, list[Binding]] = attrs.field(factory=dict)
    _dirty: dict[tuple[str, str], object] = attrs.field(factory=dict)
    _retired: list[AlertTransition] = attrs.field(factory=list)
    _next_expiry: float = math.inf

    def __attrs_post_init__(self) -> None:
        self.rules = list(self.rules)
        self._next_expiry = _next_expiry(self.rules, None)

    def market(self, symbol: str) -> MarketState:
        market = self.markets.get(symbol)
        if market is None:
            market = self.markets[symbol] = MarketState(symbol)
        return market

    def expect(self, symbols: Iterable[str], now: float) -> None:
        """Bind the rules of symbols this shard will own, before their first message, so
        that time-driven rules (``no_data``) judge a symbol that never sends anything."""
        for symbol in symbols:
            market = self.market(symbol)
            if market.watch_since is None:
                market.watch_since = now
            for stream in RULE_STREAMS:
                if (symbol, stream) not in self._routes:
                    self._bind(symbol, stream, now)

    def process(
        self, event: object, now: float, evaluate: bool = True
    ) -> list[AlertTransition] | None:
        """Fold ``event`` into its symbol's state and, if ``evaluate``, run its rules.

        Args:
            event: a market event of a symbol this shard owns.
            now: wall-clock Unix seconds.
            evaluate: False for stale messages: the state (and the windows of ``stateful``
                rules) is updated, signals are discarded.

        Returns:
            The transitions raised, or None when there are none (the common case).
        """
        symbol = event.symbol
        market = self.markets.get(symbol)
        if market is None:
            market = self.market(symbol)
        market.apply(event, now)
        key = (symbol, event.stream)
        route = self._routes.get(key)
        if route is None:
            route = self._bind(symbol, event.stream, now)
        if not evaluate:
            for binding in route.stateful:
                binding.compiled.rule.evaluate(event, binding.state, now)
            return None
        transitions = None
        for binding in route.immediate:
            signal = binding.compiled.rule.evaluate(event, binding.state, now)
            if signal is None:
                continue
            transition = binding.tracker.update(
                signal.active, signal.value, now, binding.compiled.spec
            )
            if transition is not None:
                transition = self._settle(binding, transition)
                if transitions is None:
                    transitions = [transition]
                else:
                    transitions.append(transition)
        if route.batched:
            self._dirty[key] = event
        if route.offloaded:
            for binding in route.offloaded:
                binding.compiled.rule.evaluate(event, binding.state, now)
                self._offload_dirty[binding] = None
        return transitions

    def flush(self, now: float) -> list[AlertTransition] | None:
        """Evaluate ``per_batch`` rules once per (symbol, stream) seen since the last flush,
        with the last message of each; call it after every micro-batch."""
        if not self._dirty:
            return None
        dirty, self._dirty = self._dirty, {}
        transitions: list[AlertTransition] = []
        for key, event in dirty.items():
            route = self._routes.get(key)
            if route is None:
                route = self._bind(key[0], key[1], now)
            for binding in route.batched:
                signal = binding.compiled.rule.evaluate(event, binding.state, now)
                if signal is not None:
                    self._feed(binding, signal.active, signal.value, now, transitions)
        return transitions or None

    def tick(self, now: float) -> list[AlertTransition] | None:
        """Take the readings driven by time alone; call it every ``rules.tick_interval``.

        Expired rules are retired (a firing alert resolves); rules that time alone can
        make hold (``ticks_when_inactive``) are judged; every alert that is not inactive is
        judged by its rule's ``tick``, or gets its last reading again, so its timers run
        even when its symbol sends nothing. The cost is one call per such binding: alerts
        that are inactive cost nothing here unless their kind ticks always.
        """
        transitions: list[AlertTransition] = []
        if now >= self._next_expiry:
            self._rebind(now)
        if self._retired:
            transitions.extend(self._retired)
            self._retired.clear()
        for binding in self._always:
            signal = binding.compiled.rule.tick(binding.state, now)
            if signal is not None:
                self._feed(binding, signal.active, signal.value, now, transitions)
        for binding in list(self._live):
            tracker = binding.tracker
            if tracker.state == INACTIVE:
                del self._live[binding]
            elif binding.always:
                continue  # judged above
            elif binding.ticks:
                signal = binding.compiled.rule.tick(binding.state, now)
                if signal is not None:
                    self._feed(binding, signal.active, signal.value, now, transitions)
            else:
                self._feed(binding, tracker.last_active, tracker.last_value, now, transitions)
        return transitions or None

    def offload_jobs(self, now: float) -> list[OffloadJob]:
        """Copy out the inputs of every ``offload`` rule that saw data since the last call."""
        if not self._offload_dirty:
            return []
        dirty, self._offload_dirty = self._offload_dirty, {}
        jobs = []
        for binding in dirty:
            rule = binding.compiled.rule
            snapshot = rule.snapshot(binding.state, now)
            if snapshot is not None:
                jobs.append(OffloadJob(binding, rule, snapshot, rule.offload))
        return jobs

    def complete_offload(
        self, jobs: Sequence[OffloadJob], results: Sequence[Signal | None], now: float
    ) -> list[AlertTransition] | None:
        """Feed the results of :meth:`offload_jobs` (same order) to their alerts.

        A job whose binding was dropped meanwhile (rules reloaded) is ignored.
        """
        transitions: list[AlertTransition] = []
        for job, signal in zip(jobs, results, strict=True):
            binding = job.binding
            spec = binding.compiled.spec
            if signal is None or self._by_key.get((spec.id, binding.tracker.symbol)) is not binding:
                continue
            self._feed(binding, signal.active, signal.value, now, transitions)
        return transitions or None

    def replace_rules(self, rules: Iterable[CompiledRule], now: float | None = None) -> None:
        """Swap the rule set; (rule, symbol) pairs whose spec is unchanged keep their state.

        Args:
            rules: the new rules.
            now: wall-clock seconds; when given, a firing alert of a rule that is removed,
                changed, disabled or expired resolves, and that transition is returned by
                the next :meth:`tick`.
        """
        self.rules = list(rules)
        wanted = {r.spec.id: r for r in self.rules}
        for key, binding in list(self._by_key.items()):
            new = wanted.get(key[0])
            if new is None or new.spec != binding.compiled.spec:
                self._drop(key, binding, now)
            else:
                binding.compiled = new
        self._rebind(now)

    def trackers(self) -> Iterable[AlertTracker]:
        """Every alert tracker, for metrics and persistence."""
        return (binding.tracker for binding in self._by_key.values())

    def restore(self, rows: Iterable[Any], now: float) -> int:
        """Take over stored alert states (``AlertRow`` s) of symbols this shard now owns, so
        that an alert moving between processes neither repeats nor loses a notification.

        Rows of rules this engine does not have are ignored. Returns how many were restored.
        """
        restored = 0
        for row in rows:
            self.expect((row.symbol,), now)
            binding = self._by_key.get((row.rule_id, row.symbol))
            if binding is None:
                continue
            tracker = binding.tracker
            notified_at = row.last_notified_at
            tracker.state = row.state
            tracker.fire_count = row.fire_count
            tracker.started_at = row.started_at
            tracker.last_notified_at = notified_at
            tracker.last_value = math.nan if row.last_value is None else row.last_value
            tracker.last_active = row.state in (PENDING, FIRING)
            tracker.condition_since = row.last_change if tracker.last_active else None
            tracker.clear_since = None
            tracker.episode_notified = (
                row.state == FIRING
                and notified_at is not None
                and notified_at >= (row.started_at or 0.0)
            )
            tracker.once_spent = notified_at is not None
            if row.state != INACTIVE:
                self._live[binding] = None
            restored += 1
        return restored

    def forget(self, symbols: Iterable[str]) -> None:
        """Drop all state of ``symbols`` (another process owns them now): nothing is raised
        for them afterwards, not even a resolution."""
        gone = set(symbols)
        for key, binding in list(self._by_key.items()):
            if key[1] in gone:
                self._drop(key, binding, None)
        for symbol in gone:
            self.markets.pop(symbol, None)
            self._inhibitors.pop(symbol, None)
            for stream in RULE_STREAMS:
                self._routes.pop((symbol, stream), None)
                self._dirty.pop((symbol, stream), None)

    # --- internals ------------------------------------------------------------------

    def _feed(
        self,
        binding: Binding,
        active: bool,
        value: float,
        now: float,
        transitions: list[AlertTransition],
    ) -> None:
        transition = binding.tracker.update(active, value, now, binding.compiled.spec)
        if transition is not None:
            transitions.append(self._settle(binding, transition))

    def _settle(self, binding: Binding, transition: AlertTransition) -> AlertTransition:
        """Keep the alert ticking while it is not inactive; apply inhibition."""
        self._live[binding] = None
        if not transition.notify or not self._inhibitors:
            return transition
        if transition.state == RESOLVED:
            source, binding.inhibited_by = binding.inhibited_by, None
        else:
            source = binding.inhibited_by = self._inhibitor(binding)
        if source is None:
            return transition
        return attrs.evolve(transition, inhibited_by=source)

    def _inhibitor(self, binding: Binding) -> str | None:
        """The first other rule firing on the same symbol whose ``inhibits`` match."""
        sources = self._inhibitors.get(binding.tracker.symbol)
        if not sources:
            return None
        labels = None
        for source in sources:
            if source is binding or source.tracker.state != FIRING:
                continue
            if labels is None:
                labels = binding.compiled.spec.match_labels()
            matchers = source.compiled.spec.inhibits
            if all(labels.get(name) == value for name, value in matchers.items()):
                return source.compiled.spec.id
        return None

    def _bind(self, symbol: str, stream: str, now: float | None) -> _Route:
        route = _Route()
        for compiled in rules_for(symbol, self.rules, now):
            rule = compiled.rule
            if stream not in rule.streams:
                continue
            key = (compiled.spec.id, symbol)
            binding = self._by_key.get(key)
            if binding is None or binding.compiled.spec != compiled.spec:
                if binding is not None:
                    self._drop(key, binding, None)
                ticks = callable(getattr(rule, "tick", None))
                binding = Binding(
                    compiled,
                    RuleState(self.market(symbol), rule.initial_data()),
                    AlertTracker(compiled.spec.id, symbol),
                    ticks=ticks,
                    always=ticks and bool(getattr(rule, "ticks_when_inactive", False)),
                )
                self._by_key[key] = binding
                if binding.always:
                    self._always[binding] = None
                if compiled.spec.inhibits:
                    self._inhibitors.setdefault(symbol, []).append(binding)
            if getattr(rule, "offload", None):
                route.offloaded.append(binding)
            elif getattr(rule, "per_batch", False):
                route.batched.append(binding)
            else:
                route.immediate.append(binding)
            if getattr(rule, "stateful", False):
                route.stateful.append(binding)
        self._routes[(symbol, stream)] = route
        return route

    def _drop(self, key: tuple[str, str], binding: Binding, now: float | None) -> None:
        del self._by_key[key]
        self._always.pop(binding, None)
        self._live.pop(binding, None)
        self._offload_dirty.pop(binding, None)
        sources = self._inhibitors.get(key[1])
        if sources and binding in sources:
            sources.remove(binding)
        if now is not None:
            transition = binding.tracker.retire(now, binding.compiled.spec)
            if transition is not None:
                self._retired.append(self._settle(binding, transition))
                self._live.pop(binding, None)

    def _rebind(self, now: float | None) -> None:
        """Drop bindings of expired rules, then bind every known symbol afresh."""
        if now is not None:
            for key, binding in list(self._by_key.items()):
                expires_at = binding.compiled.spec.expires_at
                if expires_at is not None and expires_at <= now:
                    self._drop(key, binding, now)
        self._routes.clear()
        self._dirty.clear()
        for symbol in list(self.markets):
            for stream in RULE_STREAMS:
                self._bind(symbol, stream, now)
        self._next_expiry = _next_expiry(self.rules, now)


def _next_expiry(rules: Iterable[CompiledRule], now: float | None) -> float:
    times = [
        r.spec.expires_at
        for r in rules
        if r.spec.enabled
        and r.spec.expires_at is not None
        and (now is None or r.spec.expires_at > now)
    ]
    return min(times, default=math.inf)
