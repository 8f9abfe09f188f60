"""Rules: what the rule file declares, and the kinds that evaluate events.

A rule kind is a class with a ``kind`` name, the ``streams`` it looks at, and
``evaluate(event, state, now) -> Signal | None`` (the :class:`Rule` protocol). ``state`` is
the rule's :class:`RuleState` for one symbol: the symbol's shared :class:`MarketState` and
the rule's own scratch data. ``None`` means "this event tells me nothing"; a
:class:`Signal` says whether the condition holds and with what value.

Everything here is pure: no trio, no I/O, ``now`` is passed in.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

import attrs

from oraculo_trio.core.book import Book, OrderBook, PartialBook
from oraculo_trio.core.events import DEPTH, TRADE, BookTicker, DepthDiff, DepthSnapshot, Trade
from oraculo_trio.errors import ConfigError

TRIGGERS = ("once", "every_time", "once_per_interval")
SEVERITIES = ("info", "warning", "critical")


@attrs.frozen(slots=True)
class Signal:
    """A rule's verdict on one event: does the condition hold, and the deciding value."""

    active: bool
    value: float


@attrs.define(eq=False, slots=True)
class MarketState:
    """What the shard knows about one symbol, shared by every rule of that symbol."""

    symbol: str
    book: Book | None = None
    best_bid: float | None = None
    best_ask: float | None = None
    last_price: float | None = None
    previous_price: float | None = None
    last_trade: Trade | None = None
    last_event_wall: float | None = None

    def spread_bps(self) -> float | None:
        bid, ask = self.best_bid, self.best_ask
        if bid is None or ask is None or bid <= 0 or ask <= 0:
            return None
        mid = (bid + ask) / 2.0
        return (ask - bid) / mid * 10_000.0

    def apply(self, event: Any, now_wall: float) -> None:
        """Fold ``event`` into the state (always, stale or not: state must stay right)."""
        self.last_event_wall = now_wall
        if isinstance(event, Trade):
            self.previous_price = self.last_price
            self.last_price = event.price
            self.last_trade = event
        elif isinstance(event, DepthSnapshot):
            book = self.book
            if book is None:
                # Partial books replace the whole top-N: keeping the decoder's level tuples
                # as they come is ~4x cheaper than a sorted book (core/book.py benchmark).
                book = self.book = PartialBook(self.symbol)
            book.apply_snapshot(event.bids, event.asks, event.last_update_id)
            self._top_from_book(book)
        elif isinstance(event, DepthDiff):
            book = self.book
            if not isinstance(book, OrderBook):
                book = self.book = OrderBook(self.symbol)
            book.apply_diff(event.bids, event.asks, event.final_update_id)
            self._top_from_book(book)
        elif isinstance(event, BookTicker):
            self.best_bid = event.bid_price
            self.best_ask = event.ask_price

    def _top_from_book(self, book: Book) -> None:
        bid = book.best_bid
        ask = book.best_ask
        self.best_bid = bid[0] if bid else None
        self.best_ask = ask[0] if ask else None


@attrs.define(eq=False, slots=True)
class RuleState:
    """One rule's state for one symbol."""

    market: MarketState
    data: Any = None


@runtime_checkable
class Rule(Protocol):
    """What a rule kind provides. Custom kinds (``module:Class``) implement the same.

    ``__init__(params)`` validates its parameters and raises ``ValueError`` naming the
    parameter; the loader turns that into a :class:`ConfigError` naming the rule id.
    """

    kind: ClassVar[str]
    streams: ClassVar[frozenset[str]]

    def initial_data(self) -> Any:
        """Scratch data for a new (rule, symbol) pair, kept in ``RuleState.data``."""

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        """Judge one event; ``now`` is wall-clock Unix seconds."""


def _number(params: Mapping[str, Any], key: str, *, minimum: float | None = None) -> float:
    if key not in params:
        raise ValueError(f"params.{key} is required")
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"params.{key} = {value!r}: expected a finite number")
    if minimum is not None and value < minimum:
        raise ValueError(f"params.{key} = {value!r}: expected a number >= {minimum}")
    return float(value)


def _no_extra(params: Mapping[str, Any], *allowed: str) -> None:
    extra = sorted(set(params) - set(allowed))
    if extra:
        raise ValueError(f"params.{extra[0]} is not a parameter of this kind (takes {allowed})")


class Crossing:
    """Fires when the trade price crosses ``params.level`` (either direction)."""

    kind: ClassVar[str] = "crossing"
    streams: ClassVar[frozenset[str]] = frozenset({TRADE})
    direction: ClassVar[int] = 0  # +1 up only, -1 down only, 0 both

    def __init__(self, params: Mapping[str, Any]) -> None:
        _no_extra(params, "level")
        self.level = _number(params, "level", minimum=0)

    def initial_data(self) -> Any:
        return None

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        previous = state.market.previous_price
        price = event.price
        if previous is None:
            return None
        level = self.level
        up = previous < level <= price
        down = previous > level >= price
        crossed = (up and self.direction >= 0) or (down and self.direction <= 0)
        return Signal(crossed, price)


class SpreadAboveBps:
    """Holds while the best bid/ask spread is above ``params.bps`` basis points."""

    kind: ClassVar[str] = "spread_above_bps"
    streams: ClassVar[frozenset[str]] = frozenset({DEPTH})

    def __init__(self, params: Mapping[str, Any]) -> None:
        _no_extra(params, "bps")
        self.bps = _number(params, "bps", minimum=0)

    def initial_data(self) -> Any:
        return None

    def evaluate(self, event: Any, state: RuleState, now: float) -> Signal | None:
        spread = state.market.spread_bps()
        if spread is None:
            return None
        return Signal(spread > self.bps, spread)


RULE_KINDS: dict[str, type] = {cls.kind: cls for cls in (Crossing, SpreadAboveBps)}


@attrs.frozen
class RuleSpec:
    """One ``[[rule]]`` entry of the rule file, validated and normalised."""

    id: str
    kind: str
    symbols: tuple[str, ...]
    params: Mapping[str, Any]
    severity: str = "warning"
    labels: Mapping[str, str] = attrs.field(factory=dict)
    message: str = ""
    for_: float = 0.0
    keep_firing_for: float = 0.0
    repeat_interval: float = 300.0
    trigger: str = "once_per_interval"
    expires_at: float | None = None
    enabled: bool = True

    def matches(self, symbol: str) -> bool:
        return any(fnmatch.fnmatchcase(symbol, pattern) for pattern in self.symbols)


@attrs.frozen(eq=False)
class CompiledRule:
    """A rule spec with its kind instantiated."""

    spec: RuleSpec
    rule: Any


RULE_KEYS = (
    "id", "kind", "symbols", "params", "severity", "labels", "message", "for",
    "keep_firing_for", "repeat_interval", "trigger", "expires_at", "enabled",
)  # fmt: skip


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


def _duration(rule_id: str, key: str, value: Any) -> float:
    """Seconds from a number or a string like ``"30s"``, ``"5m"``, ``"1h"``."""
    seconds = float("nan")
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match[1]) * _DURATION_UNITS[match[2]]
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(
            f"rule {rule_id!r}: {key} = {value!r} is not allowed: expected seconds >= 0 "
            'or a duration such as "30s", "5m", "1h"'
        )
    return seconds


def parse_rule(
    entry: Mapping[str, Any], resolve: Callable[[str], type] | None = None
) -> CompiledRule:
    """Validate one rule entry and build its kind.

    Args:
        entry: the ``[[rule]]`` table.
        resolve: turns ``module:Class`` into a class, for custom kinds (I/O lives with the
            caller); None means built-in kinds only.

    Raises:
        ConfigError: naming the rule id and the key that is wrong.
    """
    rule_id = entry.get("id")
    if not isinstance(rule_id, str) or not rule_id:
        raise ConfigError(f"rule {entry!r}: id is required (a non-empty string)")
    for key in entry:
        if key not in RULE_KEYS:
            raise ConfigError(
                f"rule {rule_id!r}: unknown key {key!r}; keys: {', '.join(RULE_KEYS)}"
            )
    kind = entry.get("kind")
    if not isinstance(kind, str):
        raise ConfigError(f"rule {rule_id!r}: kind is required")
    if kind in RULE_KINDS:
        kind_cls = RULE_KINDS[kind]
    elif ":" in kind and resolve is not None:
        try:
            kind_cls = resolve(kind)
        except Exception as exc:
            raise ConfigError(
                f"rule {rule_id!r}: kind = {kind!r} cannot be loaded: {exc}"
            ) from None
    else:
        allowed = ", ".join(sorted(RULE_KINDS))
        raise ConfigError(
            f"rule {rule_id!r}: kind = {kind!r} is not allowed: expected one of {allowed}, "
            "or module:Class"
        )
    symbols = entry.get("symbols", "*")
    if isinstance(symbols, str):
        symbols = [symbols]
    if not isinstance(symbols, list) or not symbols or not all(isinstance(s, str) for s in symbols):
        raise ConfigError(
            f'rule {rule_id!r}: symbols = {symbols!r} is not allowed: expected "*", a glob '
            "or a list of symbols"
        )
    params = entry.get("params", {})
    if not isinstance(params, dict):
        raise ConfigError(f"rule {rule_id!r}: params must be a table")
    try:
        rule = kind_cls(params)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"rule {rule_id!r}: {exc}") from None
    severity = entry.get("severity", "warning")
    if severity not in SEVERITIES:
        raise ConfigError(
            f"rule {rule_id!r}: severity = {severity!r} is not allowed: expected one of {SEVERITIES}"
        )
    trigger = entry.get("trigger", "once_per_interval")
    if trigger not in TRIGGERS:
        raise ConfigError(
            f"rule {rule_id!r}: trigger = {trigger!r} is not allowed: expected one of {TRIGGERS}"
        )
    labels = entry.get("labels", {})
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise ConfigError(f"rule {rule_id!r}: labels must be a table of strings")
    message = entry.get("message", "")
    if not isinstance(message, str):
        raise ConfigError(f"rule {rule_id!r}: message must be a string")
    enabled = entry.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"rule {rule_id!r}: enabled = {enabled!r}: expected true or false")
    expires_at = entry.get("expires_at")
    if expires_at is not None:
        if hasattr(expires_at, "timestamp"):
            expires_at = expires_at.timestamp()
        elif not isinstance(expires_at, int | float) or isinstance(expires_at, bool):
            raise ConfigError(
                f"rule {rule_id!r}: expires_at = {expires_at!r}: expected a TOML date-time "
                "or Unix seconds"
            )
    spec = RuleSpec(
        id=rule_id,
        kind=kind,
        symbols=tuple(s.upper() if s != "*" else s for s in symbols),
        params=dict(params),
        severity=severity,
        labels=dict(labels),
        message=message,
        for_=_duration(rule_id, "for", entry.get("for", 0)),
        keep_firing_for=_duration(rule_id, "keep_firing_for", entry.get("keep_firing_for", 0)),
        repeat_interval=_duration(rule_id, "repeat_interval", entry.get("repeat_interval", 300)),
        trigger=trigger,
        expires_at=float(expires_at) if expires_at is not None else None,
        enabled=enabled,
    )
    return CompiledRule(spec, rule)


def parse_rules(
    document: Mapping[str, Any], resolve: Callable[[str], type] | None = None
) -> list[CompiledRule]:
    """Validate a whole rule document (``{"rule": [...]}``); ids must be unique.

    Raises:
        ConfigError: naming the rule id and the key that is wrong.
    """
    extra = sorted(set(document) - {"rule"})
    if extra:
        raise ConfigError(
            f"unknown top-level key {extra[0]!r} in the rule file (expected [[rule]])"
        )
    entries = document.get("rule", [])
    if not isinstance(entries, list):
        raise ConfigError("the rule file must hold [[rule]] tables")
    compiled: list[CompiledRule] = []
    seen: set[str] = set()
    for entry in entries:
        rule = parse_rule(entry, resolve)
        if rule.spec.id in seen:
            raise ConfigError(f"rule {rule.spec.id!r}: id is used twice")
        seen.add(rule.spec.id)
        compiled.append(rule)
    return compiled


def rules_for(symbol: str, rules: Iterable[CompiledRule], now: float) -> list[CompiledRule]:
    """The enabled, unexpired rules whose ``symbols`` match ``symbol``."""
    return [
        r
        for r in rules
        if r.spec.enabled
        and (r.spec.expires_at is None or r.spec.expires_at > now)
        and r.spec.matches(symbol)
    ]
