"""The rule file: ``[[rule]]`` entries validated into :class:`RuleSpec` and compiled kinds."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from oraculo_trio.core.errors import ConfigError
from oraculo_trio.core.events import RULE_STREAMS
from oraculo_trio.core.markets import MARKETS, SEPARATOR, normalized
from oraculo_trio.core.rules.messages import default_messages, did_you_mean
from oraculo_trio.core.rules.params import seconds_or_none
from oraculo_trio.core.rules.registry import RULE_KINDS

TRIGGERS = ("once", "every_time", "once_per_interval")
SEVERITIES = ("info", "warning", "critical")
OFFLOADS = ("thread", "process")

# A symbol as exchanges name them (letters and digits, COIN-M's BTCUSD_PERP), or a glob of
# them; an optional market prefix (usdm:BTCUSDT) is checked apart, to name the market.
_SYMBOL = re.compile(r"[A-Za-z0-9_*?!\[\]-]+")
_GLOB_MARKET = re.compile(r"[A-Za-z]*[*?\[][A-Za-z*?!\[\]]*")


@attrs.frozen
class RuleSpec:
    """One ``[[rule]]`` entry of the rule file, validated and normalised.

    ``message`` and ``message_resolved``: the templates of the firing and the resolved
    notifications (the kind's defaults when the file names none).

    ``inhibits``: label matchers; while this rule fires for a symbol, notifications of the
    symbol's other alerts whose labels (their ``labels`` plus ``severity`` and ``rule_id``)
    match every pair are inhibited.
    """

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
    inhibits: Mapping[str, str] = attrs.field(factory=dict)
    message_resolved: str = ""

    def template(self, state: str) -> str:
        """The message template of a notification in ``state``."""
        return self.message_resolved if state == "resolved" else self.message

    def matches(self, symbol: str) -> bool:
        return any(fnmatch.fnmatchcase(symbol, pattern) for pattern in self.symbols)

    def match_labels(self) -> dict[str, str]:
        """The labels inhibition matchers see: ``labels`` plus ``severity`` and ``rule_id``."""
        return {**self.labels, "severity": self.severity, "rule_id": self.id}

    def to_entry(self) -> dict[str, Any]:
        """The spec as a rule-file entry (durations in seconds), the inverse of parse_rule."""
        entry: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "symbols": list(self.symbols),
            "params": dict(self.params),
            "severity": self.severity,
            "labels": dict(self.labels),
            "message": self.message,
            "message_resolved": self.message_resolved,
            "for": self.for_,
            "keep_firing_for": self.keep_firing_for,
            "repeat_interval": self.repeat_interval,
            "trigger": self.trigger,
            "enabled": self.enabled,
            "inhibits": dict(self.inhibits),
        }
        if self.expires_at is not None:
            entry["expires_at"] = self.expires_at
        return entry


@attrs.frozen(eq=False)
class CompiledRule:
    """A rule spec with its kind instantiated."""

    spec: RuleSpec
    rule: Any


RULE_KEYS = (
    "id", "kind", "symbols", "params", "severity", "labels", "message", "message_resolved",
    "for", "keep_firing_for", "repeat_interval", "trigger", "expires_at", "enabled", "inhibits",
)  # fmt: skip


def _duration(rule_id: str, key: str, value: Any) -> float:
    seconds = seconds_or_none(value)
    if seconds is None:
        raise ConfigError(
            f"rule {rule_id!r}: {key} = {value!r} is not allowed: expected seconds >= 0 "
            'or a duration such as "30s", "5m", "1h"'
        )
    return seconds


def _string_table(rule_id: str, key: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ConfigError(f"rule {rule_id!r}: {key} must be a table of strings")
    return dict(value)


def _kind_class(rule_id: str, kind: Any, resolve: Callable[[str], type] | None) -> tuple[str, type]:
    if isinstance(kind, type):
        # A class given directly (tests, embedding code): named as module:Class.
        return f"{kind.__module__}:{kind.__qualname__}", kind
    if not isinstance(kind, str):
        raise ConfigError(f"rule {rule_id!r}: kind is required")
    if kind in RULE_KINDS:
        return kind, RULE_KINDS[kind]
    if ":" in kind and resolve is not None:
        try:
            return kind, resolve(kind)
        except Exception as exc:
            raise ConfigError(
                f"rule {rule_id!r}: kind = {kind!r} cannot be loaded: {exc}"
            ) from None
    allowed = ", ".join(sorted(RULE_KINDS))
    raise ConfigError(
        f"rule {rule_id!r}: kind = {kind!r} is not allowed{did_you_mean(kind, RULE_KINDS)}: "
        f"expected one of {allowed}, or module:Class"
    )


def _check_kind_class(rule_id: str, kind: str, rule: Any) -> None:
    streams = getattr(rule, "streams", None)
    if not isinstance(streams, frozenset | set) or not streams or not streams <= set(RULE_STREAMS):
        raise ConfigError(
            f"rule {rule_id!r}: kind = {kind!r} has streams = {streams!r}: expected a "
            f"non-empty set of {', '.join(map(repr, RULE_STREAMS))}"
        )
    if not callable(getattr(rule, "evaluate", None)) or not callable(
        getattr(rule, "initial_data", None)
    ):
        raise ConfigError(
            f"rule {rule_id!r}: kind = {kind!r} does not implement the Rule protocol "
            "(initial_data and evaluate)"
        )
    offload = getattr(rule, "offload", None)
    if offload is not None and (
        offload not in OFFLOADS
        or not callable(getattr(rule, "snapshot", None))
        or not callable(getattr(rule, "compute", None))
    ):
        raise ConfigError(
            f"rule {rule_id!r}: kind = {kind!r} has offload = {offload!r}: expected one of "
            f"{OFFLOADS} with snapshot() and compute() methods"
        )


def parse_rule(
    entry: Mapping[str, Any], resolve: Callable[[str], type] | None = None
) -> CompiledRule:
    """Validate one rule entry and build its kind.

    Args:
        entry: the ``[[rule]]`` table. ``kind`` is a built-in name, ``module:Class``, or a
            class object (named ``module:Class`` in the spec).
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
                f"rule {rule_id!r}: unknown key {key!r}{did_you_mean(key, RULE_KEYS)}; "
                f"keys: {', '.join(RULE_KEYS)}"
            )
    kind, kind_cls = _kind_class(rule_id, entry.get("kind"), resolve)
    symbols = _symbols(rule_id, entry.get("symbols", "*"))
    params = entry.get("params", {})
    if not isinstance(params, dict):
        raise ConfigError(f"rule {rule_id!r}: params must be a table")
    try:
        rule = kind_cls(params)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"rule {rule_id!r}: {exc}") from None
    _check_kind_class(rule_id, kind, rule)
    severity = entry.get("severity", "warning")
    if severity not in SEVERITIES:
        raise ConfigError(
            f"rule {rule_id!r}: severity = {severity!r} is not allowed: "
            f"expected one of {SEVERITIES}"
        )
    trigger = entry.get("trigger", "once_per_interval")
    if trigger not in TRIGGERS:
        raise ConfigError(
            f"rule {rule_id!r}: trigger = {trigger!r} is not allowed: expected one of {TRIGGERS}"
        )
    labels = _string_table(rule_id, "labels", entry.get("labels", {}))
    inhibits = _string_table(rule_id, "inhibits", entry.get("inhibits", {}))
    firing, resolved = default_messages(kind if kind in RULE_KINDS else "", rule)
    message = _message(rule_id, "message", entry.get("message"), firing)
    message_resolved = _message(
        rule_id, "message_resolved", entry.get("message_resolved"), resolved
    )
    enabled = entry.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"rule {rule_id!r}: enabled = {enabled!r}: expected true or false")
    expires_at = entry.get("expires_at")
    if expires_at is not None:
        if hasattr(expires_at, "timestamp") and getattr(expires_at, "tzinfo", None) is not None:
            expires_at = expires_at.timestamp()
        elif not isinstance(expires_at, int | float) or isinstance(expires_at, bool):
            raise ConfigError(
                f"rule {rule_id!r}: expires_at = {expires_at!r}: expected a TOML offset "
                "date-time (2030-01-01T00:00:00Z) or Unix seconds"
            )
    spec = RuleSpec(
        id=rule_id,
        kind=kind,
        symbols=tuple(normalized(s) for s in symbols),
        params=dict(params),
        severity=severity,
        labels=labels,
        message=message,
        for_=_duration(rule_id, "for", entry.get("for", 0)),
        keep_firing_for=_duration(rule_id, "keep_firing_for", entry.get("keep_firing_for", 0)),
        repeat_interval=_duration(rule_id, "repeat_interval", entry.get("repeat_interval", 300)),
        trigger=trigger,
        expires_at=float(expires_at) if expires_at is not None else None,
        enabled=enabled,
        inhibits=inhibits,
        message_resolved=message_resolved,
    )
    return CompiledRule(spec, rule)


def _symbols(rule_id: str, symbols: Any) -> list[str]:
    if isinstance(symbols, str):
        symbols = [symbols]
    if (
        not isinstance(symbols, list | tuple)
        or not symbols
        or not all(isinstance(s, str) and s for s in symbols)
    ):
        raise ConfigError(
            f'rule {rule_id!r}: symbols = {symbols!r} is not allowed: expected "*", a glob '
            "or a list of symbols"
        )
    for symbol in symbols:
        market, sep, name = symbol.rpartition(SEPARATOR)
        # A glob prefix ("*:BTCUSDT") selects across markets; a plain one must be a market.
        if sep and market.lower() not in MARKETS and not _GLOB_MARKET.fullmatch(market):
            raise ConfigError(
                f"rule {rule_id!r}: symbols: {symbol!r} names the market {market!r}"
                f"{did_you_mean(market.lower(), MARKETS)}: expected one of "
                f"{', '.join(MARKETS)} before the colon (usdm:BTCUSDT), or no prefix for spot"
            )
        if not _SYMBOL.fullmatch(name):
            raise ConfigError(
                f"rule {rule_id!r}: symbols: {symbol!r} is not a symbol: expected letters and "
                "digits as the exchange writes it (BTCUSDT, usdm:BTCUSDT, coinm:BTCUSD_PERP), "
                'a glob such as "BTC*" or "usdm:*", or "*"'
            )
    return list(symbols)


def _message(rule_id: str, key: str, value: Any, default: str) -> str:
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise ConfigError(f"rule {rule_id!r}: {key} must be a string")
    return value


def collect_rules(
    document: Mapping[str, Any], resolve: Callable[[str], type] | None = None
) -> tuple[list[CompiledRule], list[str]]:
    """Validate a whole rule document (``{"rule": [...]}``), every rule of it.

    Returns:
        The valid rules, and one message per problem (naming the rule id and the key); ids
        must be unique.
    """
    errors: list[str] = []
    for extra in sorted(set(document) - {"rule"}):
        errors.append(
            f"unknown top-level key {extra!r} in the rule file{did_you_mean(extra, ['rule'])} "
            "(expected [[rule]] tables)"
        )
    entries = document.get("rule", [])
    if not isinstance(entries, list):
        return [], [*errors, "the rule file must hold [[rule]] tables"]
    compiled: list[CompiledRule] = []
    seen: set[str] = set()
    for entry in entries:
        if not isinstance(entry, dict):
            errors.append(f"the rule file must hold [[rule]] tables, got {entry!r}")
            continue
        try:
            rule = parse_rule(entry, resolve)
        except ConfigError as exc:
            errors.append(str(exc))
            continue
        if rule.spec.id in seen:
            errors.append(f"rule {rule.spec.id!r}: id is used twice")
            continue
        seen.add(rule.spec.id)
        compiled.append(rule)
    return compiled, errors


def parse_rules(
    document: Mapping[str, Any], resolve: Callable[[str], type] | None = None
) -> list[CompiledRule]:
    """Validate a whole rule document (``{"rule": [...]}``); ids must be unique.

    Raises:
        ConfigError: the first problem, naming the rule id and the key that is wrong, and
            how many more there are (``oraculo-trio rules check`` lists them all).
    """
    compiled, errors = collect_rules(document, resolve)
    if errors:
        more = f" (and {len(errors) - 1} more: see oraculo-trio rules check)" if errors[1:] else ""
        raise ConfigError(errors[0] + more)
    return compiled


def rules_for(symbol: str, rules: Iterable[CompiledRule], now: float | None) -> list[CompiledRule]:
    """The enabled, unexpired (at ``now``; None: ignore expiry) rules matching ``symbol``."""
    return [
        r
        for r in rules
        if r.spec.enabled
        and (now is None or r.spec.expires_at is None or r.spec.expires_at > now)
        and r.spec.matches(symbol)
    ]
