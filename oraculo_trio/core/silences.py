"""Silences: windows of time in which the notifications of matching alerts are muted.

A silence holds label matchers, as Alertmanager's do: ``name op value`` with ``op`` one of
``=`` (equal), ``!=`` (not equal), ``=~`` (matches the regular expression, anchored at both
ends) and ``!~`` (does not match it). The labels an alert offers to them are its rule's
``labels`` plus ``rule_id`` (also as ``rule`` and ``alertname``), ``symbol`` and
``severity``; a label the alert does not have reads as the empty string. A silence mutes an
alert when every matcher matches.

A silence is stored in the database (``oraculo-trio silence add``, ``POST /api/v1/silences``)
and matched by the dispatcher against each notification; the alert itself is still
evaluated and stored, only its delivery is suppressed (and counted). Pure: the caller
passes ``now``.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping, Sequence

import attrs

OPERATORS = ("=", "!=", "=~", "!~")

RULE_NAMES = ("rule_id", "rule", "alertname")
"""The names an alert's rule id answers to in a matcher."""

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATOR = re.compile(r"=~|!~|!=|=")


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


@attrs.frozen(slots=True)
class Matcher:
    """One label matcher: ``name op value``.

    Attributes:
        name: the label (``symbol``, ``severity``, ``rule_id``, or one of the rule's labels).
        op: one of :data:`OPERATORS`.
        value: the value compared, or the regular expression (anchored) for ``=~``/``!~``.
    """

    name: str
    op: str = attrs.field(validator=attrs.validators.in_(OPERATORS))
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` (a missing label reads as ``""``) satisfy the matcher."""
        got = labels.get(self.name, "")
        if self.op == "=":
            return got == self.value
        if self.op == "!=":
            return got != self.value
        found = _compiled(self.value).fullmatch(got) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        return f"{self.name}{self.op}{json.dumps(self.value, ensure_ascii=False)}"

    def to_list(self) -> list[str]:
        """``[name, op, value]``, as stored."""
        return [self.name, self.op, self.value]


def alert_labels(
    rule_id: str,
    symbol: str,
    severity: str,
    labels: Mapping[str, str] = {},
) -> dict[str, str]:
    """The labels an alert offers to matchers: its rule's labels, then its identity."""
    found = dict(labels)
    for name in RULE_NAMES:
        found[name] = rule_id
    found["symbol"] = symbol
    found["severity"] = severity
    return found


def matcher(name: str, op: str, value: str) -> Matcher:
    """A checked :class:`Matcher`.

    Raises:
        ValueError: a bad label name, operator or regular expression (named).
    """
    if not _NAME.fullmatch(name):
        raise ValueError(f"matcher label {name!r}: expected letters, digits and _")
    if op not in OPERATORS:
        raise ValueError(f"matcher {name}{op}...: the operator is one of {', '.join(OPERATORS)}")
    if op in ("=~", "!~"):
        try:
            _compiled(value)
        except re.error as exc:
            raise ValueError(
                f"matcher {name}{op}{value!r}: bad regular expression: {exc}"
            ) from None
    return Matcher(name, op, value)


def parse_matchers(texts: Iterable[str]) -> tuple[Matcher, ...]:
    """Matchers from text: ``severity=critical``, ``symbol=~"SOL.*"``, or several in one
    string separated by commas (``{severity="critical", symbol=~"SOL.*"}``, braces optional).

    Raises:
        ValueError: text that is not a matcher (the message shows it and the form).
    """
    found: list[Matcher] = []
    for text in texts:
        rest = text.strip()
        if rest.startswith("{") and rest.endswith("}"):
            rest = rest[1:-1].strip()
        while rest:
            one, rest = _take_matcher(rest, text)
            found.append(one)
            rest = rest.lstrip()
            if rest.startswith(","):
                rest = rest[1:].lstrip()
            elif rest:
                raise _not_a_matcher(text)
    return tuple(found)


def _not_a_matcher(text: str) -> ValueError:
    return ValueError(
        f"{text!r} is not a matcher: expected NAME=VALUE, NAME!=VALUE, NAME=~REGEX or "
        'NAME!~REGEX, such as severity=critical or symbol=~"SOL.*"'
    )


def _take_matcher(rest: str, text: str) -> tuple[Matcher, str]:
    name = _NAME.match(rest)
    if name is None:
        raise _not_a_matcher(text)
    rest = rest[name.end() :].lstrip()
    op = _OPERATOR.match(rest)
    if op is None:
        raise _not_a_matcher(text)
    rest = rest[op.end() :].lstrip()
    if rest.startswith('"'):
        decoder = json.JSONDecoder()
        try:
            value, end = decoder.raw_decode(rest)
        except ValueError:
            raise ValueError(f"{text!r}: the quoted value is not closed") from None
        rest = rest[end:]
    else:
        end = len(rest) if "," not in rest else rest.index(",")
        value, rest = rest[:end].strip(), rest[end:]
    return matcher(name[0], op[0], value), rest


def check_matchers(matchers: Sequence[Matcher]) -> None:
    """Refuse matchers that would mute everything.

    Like Alertmanager: at least one matcher, and at least one that the empty string does
    not satisfy (``symbol!=X`` alone would mute nearly every alert).

    Raises:
        ValueError: naming the problem.
    """
    if not matchers:
        raise ValueError("a silence needs at least one matcher (such as rule_id=NAME)")
    if all(m.matches({}) for m in matchers):
        shown = ", ".join(map(str, matchers))
        raise ValueError(
            f"matchers {shown} would mute nearly every alert: add one that names what to "
            "silence (such as rule_id=NAME or symbol=SYMBOL)"
        )


@attrs.frozen(slots=True)
class Silence:
    """Mutes notifications of alerts its matchers match during ``[starts_at, ends_at)``.

    Attributes:
        id: the database id.
        matchers: every one must match the alert's labels (:func:`alert_labels`).
        starts_at, ends_at: Unix seconds; active while ``starts_at <= now < ends_at``.
        comment: why (shown by ``silence list``).
        created_by: who.
    """

    id: int
    matchers: tuple[Matcher, ...] = attrs.field(converter=tuple)
    starts_at: float
    ends_at: float
    comment: str = ""
    created_by: str = ""

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def status(self, now: float) -> str:
        """``active``, ``pending`` (starts later) or ``expired``."""
        if self.ends_at <= now:
            return "expired"
        return "active" if self.starts_at <= now else "pending"

    def covers(self, labels: Mapping[str, str]) -> bool:
        """Whether every matcher matches ``labels``, at any time."""
        return all(m.matches(labels) for m in self.matchers)

    def matches(self, labels: Mapping[str, str], now: float) -> bool:
        """True when the silence is active at ``now`` and covers ``labels``."""
        return self.starts_at <= now < self.ends_at and self.covers(labels)


@attrs.define(eq=False)
class SilenceSet:
    """The silences the dispatcher knows, refreshed from the store now and then."""

    silences: tuple[Silence, ...] = ()

    def replace(self, silences: Iterable[Silence]) -> None:
        self.silences = tuple(silences)

    def match(self, labels: Mapping[str, str], now: float) -> Silence | None:
        """The first silence muting an alert with ``labels`` at ``now``, or None."""
        for silence in self.silences:
            if silence.matches(labels, now):
                return silence
        return None

    def active(self, now: float) -> int:
        """How many silences are active at ``now``."""
        return sum(1 for silence in self.silences if silence.active(now))
