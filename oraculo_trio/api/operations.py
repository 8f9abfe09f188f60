"""What the operator asks of a store, as JSON-ready answers: alerts, history, silences, rules.

The HTTP API (:mod:`oraculo_trio.api.server`) serves these; the CLI calls them directly when
it is given ``--database-url`` instead of a running service. Both therefore print the same
thing. Times in answers are ISO-8601 UTC; times in questions may be ISO-8601, Unix seconds,
or a duration meaning "that long ago" (``1h``).
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from oraculo_trio.core.alerts import FIRING, PENDING, STATES
from oraculo_trio.core.markets import normalized
from oraculo_trio.core.rules import SEVERITIES, CompiledRule, did_you_mean, parse_duration
from oraculo_trio.core.silences import (
    Matcher,
    Silence,
    alert_labels,
    check_matchers,
    matcher,
    parse_matchers,
)
from oraculo_trio.dispatch.render import utc_iso
from oraculo_trio.store.base import AlertRow, Store


class BadRequest(ValueError):
    """Raised when a question is malformed: a bad filter, time, matcher or silence."""


ACTIVE_STATES = (FIRING, PENDING)
"""What ``alerts list`` shows unless asked for other states."""
SILENCE_STATES = ("active", "pending", "expired")
HISTORY_LIMIT = 1000
"""Events ``alerts history`` returns at most by default (the latest)."""
MAX_LIMIT = 100_000
MAX_SILENCE = 366 * 86400.0
"""The longest silence: a year (a longer one is a disabled rule)."""


def parse_time(text: str, now: float, what: str) -> float:
    """Unix seconds from ISO-8601 (``2026-12-04T13:00:00Z``), Unix seconds, or a duration
    before ``now`` (``"90m"``: an hour and a half ago).

    Raises:
        BadRequest: none of these (naming ``what``).
    """
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(value) and value >= 0:
            return value
        raise BadRequest(f"{what} = {text!r}: expected a time (ISO-8601, Unix seconds or 1h)")
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(
            f"{what} = {text!r}: expected an ISO-8601 time (2026-12-04T13:00:00Z), Unix "
            'seconds, or a duration ago such as "1h"'
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def _choices(text: str | None, allowed: Sequence[str], what: str) -> tuple[str, ...] | None:
    """``a,b`` as a tuple of allowed values; None for no filter (missing, ``all``)."""
    if text is None or text.strip() in ("", "all"):
        return None
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    for value in values:
        if value not in allowed:
            raise BadRequest(
                f"{what} = {value!r}{did_you_mean(value, allowed)}: expected "
                f"{', '.join(allowed)} (comma-separated) or all"
            )
    return values


@attrs.frozen
class AlertFilter:
    """Which alerts ``GET /api/v1/alerts`` returns: every field that is set must match.

    Attributes:
        states: the states (None: any); by default the active ones, firing and pending.
        rule_id, symbol, severity: equality filters (None: any).
    """

    states: tuple[str, ...] | None = ACTIVE_STATES
    rule_id: str | None = None
    symbol: str | None = None
    severities: tuple[str, ...] | None = None

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> AlertFilter:
        """From the query string (``state``, ``rule``, ``symbol``, ``severity``).

        Raises:
            BadRequest: an unknown state or severity.
        """
        states = ACTIVE_STATES
        if "state" in query:
            states = _choices(query["state"], STATES, "state")
        symbol = query.get("symbol") or None
        return cls(
            states=states,
            rule_id=query.get("rule") or None,
            symbol=normalized(symbol) if symbol else None,
            severities=_choices(query.get("severity"), SEVERITIES, "severity"),
        )

    def keeps(self, row: AlertRow) -> bool:
        return (
            (self.states is None or row.state in self.states)
            and (self.rule_id is None or row.rule_id == self.rule_id)
            and (self.symbol is None or row.symbol == self.symbol)
            and (self.severities is None or row.severity in self.severities)
        )


def alert_view(row: AlertRow, silences: Sequence[Silence], now: float) -> dict[str, Any]:
    """One alert (a ``rule_alerts`` row) as the API shows it."""
    labels = alert_labels(row.rule_id, row.symbol, row.severity, row.labels)
    return {
        "rule_id": row.rule_id,
        "symbol": row.symbol,
        "state": row.state,
        "severity": row.severity,
        "value": row.last_value
        if row.last_value is not None and math.isfinite(row.last_value)
        else None,
        "message": row.message,
        "labels": dict(row.labels),
        "started_at": utc_iso(row.started_at),
        "last_change": utc_iso(row.last_change),
        "fire_count": row.fire_count,
        "silenced_by": [s.id for s in silences if s.matches(labels, now)],
    }


async def list_alerts(store: Store, which: AlertFilter, now: float) -> list[dict[str, Any]]:
    """The alerts ``which`` keeps, firing first, then by rule and symbol.

    Raises:
        StoreError: the store cannot be read.

    Cancellation: abandons the reads.
    """
    rows = [row for row in await store.load_alert_states() if which.keeps(row)]
    silences = await store.fetch_silences(not_ended_at=now)
    order = {state: i for i, state in enumerate((FIRING, PENDING, *STATES))}
    rows.sort(key=lambda r: (order.get(r.state, 9), r.rule_id, r.symbol))
    return [alert_view(row, silences, now) for row in rows]


def event_view(event: Mapping[str, Any]) -> dict[str, Any]:
    """One ``alert_events`` row as the API shows it."""
    value = event["value"]
    return {
        "id": event["id"],
        "at": utc_iso(event["at"]),
        "rule_id": event["rule_id"],
        "symbol": event["symbol"],
        "state": event["state"],
        "previous_state": event["previous_state"],
        "severity": event["severity"],
        "value": value if value is not None and math.isfinite(value) else None,
        "message": event["message"],
        "labels": dict(event["labels"]),
        "started_at": utc_iso(event["started_at"]),
        "fire_count": event["fire_count"],
        "repeat": bool(event["repeat"]),
    }


def history_query(query: Mapping[str, str], now: float) -> dict[str, Any]:
    """The arguments of :func:`alert_history` from a query string (``since`` defaults to an
    hour ago, ``limit`` to :data:`HISTORY_LIMIT`).

    Raises:
        BadRequest: a bad time or limit.
    """
    since = parse_time(query.get("since") or "1h", now, "since")
    limit_text = query.get("limit") or str(HISTORY_LIMIT)
    try:
        limit = int(limit_text)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit = {limit_text!r}: expected an integer 1..{MAX_LIMIT}")
    symbol = query.get("symbol") or None
    return {
        "since": since,
        "rule_id": query.get("rule") or None,
        "symbol": normalized(symbol) if symbol else None,
        "limit": limit,
    }


async def alert_history(
    store: Store,
    *,
    since: float,
    rule_id: str | None = None,
    symbol: str | None = None,
    limit: int = HISTORY_LIMIT,
) -> list[dict[str, Any]]:
    """The latest ``limit`` transitions at or after ``since``, oldest first.

    Cancellation: abandons the read.
    """
    events = await store.fetch_alert_events(rule_id, symbol, since=since, limit=limit)
    return [event_view(event) for event in events]


def silence_view(silence: Silence, now: float) -> dict[str, Any]:
    """One silence as the API shows it."""
    return {
        "id": silence.id,
        "matchers": [{"name": m.name, "op": m.op, "value": m.value} for m in silence.matchers],
        "status": silence.status(now),
        "starts_at": utc_iso(silence.starts_at),
        "ends_at": utc_iso(silence.ends_at),
        "created_by": silence.created_by,
        "comment": silence.comment,
    }


async def list_silences(
    store: Store, states: Sequence[str] | None, now: float
) -> list[dict[str, Any]]:
    """The silences in ``states`` (None: all), by id.

    Cancellation: abandons the read.
    """
    not_ended = None if states is None or "expired" in states else now
    silences = await store.fetch_silences(not_ended_at=not_ended)
    return [silence_view(s, now) for s in silences if states is None or s.status(now) in states]


def silence_states(text: str | None) -> tuple[str, ...] | None:
    """``state`` of ``GET /api/v1/silences``: by default the active and pending ones."""
    if text is None:
        return ("active", "pending")
    return _choices(text, SILENCE_STATES, "state")


@attrs.frozen
class SilenceRequest:
    """A silence to add, checked.

    Attributes:
        matchers: checked (:func:`~oraculo_trio.core.silences.check_matchers`).
        starts_at, ends_at: Unix seconds.
        created_by, comment: who and why (a comment is required).
    """

    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str

    @classmethod
    def from_json(cls, body: Any, now: float) -> SilenceRequest:
        """From ``POST /api/v1/silences``'s body.

        Raises:
            BadRequest: naming the field that is wrong.
        """
        if not isinstance(body, dict):
            raise BadRequest("expected a JSON object with matchers, comment and duration")
        unknown = sorted(set(body) - {"matchers", "starts_at", "ends_at", "duration",
                                      "created_by", "comment"})  # fmt: skip
        if unknown:
            raise BadRequest(f"unknown field {unknown[0]!r}")
        matchers = _matchers(body.get("matchers"))
        starts_at = now
        if body.get("starts_at") is not None:
            starts_at = parse_time(_text(body, "starts_at"), now, "starts_at")
        if body.get("ends_at") is not None:
            ends_at = parse_time(_text(body, "ends_at"), now, "ends_at")
        elif body.get("duration") is not None:
            ends_at = starts_at + positive_duration(_text(body, "duration"), "duration")
        else:
            raise BadRequest('give duration (such as "2h") or ends_at: when the silence ends')
        return cls.checked(
            matchers, starts_at, ends_at, _text(body, "created_by"), _text(body, "comment"), now
        )

    @classmethod
    def checked(
        cls,
        matchers: Sequence[Matcher],
        starts_at: float,
        ends_at: float,
        created_by: str,
        comment: str,
        now: float,
    ) -> SilenceRequest:
        """A request whose every part is checked.

        Raises:
            BadRequest: naming the problem.
        """
        try:
            check_matchers(matchers)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        if not comment.strip():
            raise BadRequest("give a comment: why this silence (shown by silence list)")
        if not created_by.strip():
            raise BadRequest("give created_by: who adds this silence")
        if ends_at <= max(starts_at, now):
            raise BadRequest("the silence would end before it starts (or in the past)")
        if ends_at - starts_at > MAX_SILENCE:
            raise BadRequest("a silence lasts at most 366 days: disable the rule instead")
        return cls(tuple(matchers), starts_at, ends_at, created_by.strip(), comment.strip())


def positive_duration(text: str, what: str) -> float:
    """Seconds > 0 from ``"2h"``, ``"30m"``, ``"90"``.

    Raises:
        BadRequest: anything else.
    """
    try:
        seconds = parse_duration(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds <= MAX_SILENCE:
        raise BadRequest(
            f'{what} = {text!r}: expected a duration > 0 such as "30m", "2h" or "1d" '
            "(366 days at most)"
        )
    return seconds


def _text(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key, "")
    if value is None:
        return ""
    if isinstance(value, int | float) and not isinstance(value, bool) and key != "comment":
        return repr(value)
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be a string")
    return value


def _matchers(value: Any) -> tuple[Matcher, ...]:
    if not isinstance(value, list) or not value:
        raise BadRequest(
            'matchers: expected a non-empty list, such as ["severity=critical", '
            '"symbol=~SOL.*"] or [{"name": "severity", "op": "=", "value": "critical"}]'
        )
    found: list[Matcher] = []
    try:
        for item in value:
            if isinstance(item, str):
                found.extend(parse_matchers([item]))
            elif isinstance(item, dict) and set(item) <= {"name", "op", "value"}:
                name, op, text = item.get("name"), item.get("op", "="), item.get("value")
                if not all(isinstance(v, str) for v in (name, op, text)):
                    raise BadRequest("matchers: name, op and value are strings")
                found.append(matcher(name, op, text))
            else:
                raise BadRequest(f"matchers: {item!r} is not a matcher")
    except ValueError as exc:
        raise BadRequest(f"matchers: {exc}") from None
    return tuple(found)


def silence_warnings(
    matchers: Sequence[Matcher], rules: Sequence[CompiledRule], symbols: Iterable[str]
) -> list[str]:
    """Why a silence is probably a mistake: it matches no alert any rule can raise.

    Args:
        matchers: the silence's matchers.
        rules: the rules in force.
        symbols: the symbols the feed subscribes to.
    """
    symbols = list(symbols)
    for compiled in rules:
        spec = compiled.spec
        for symbol in symbols:
            if spec.matches(symbol):
                labels = alert_labels(spec.id, symbol, spec.severity, spec.labels)
                if all(m.matches(labels) for m in matchers):
                    return []
    hints = []
    ids = [r.spec.id for r in rules]
    for m in matchers:
        if m.op == "=" and m.name in ("rule_id", "rule", "alertname"):
            hints.append(did_you_mean(m.value, ids))
        elif m.op == "=" and m.name == "symbol":
            hints.append(did_you_mean(m.value, symbols))
    shown = ", ".join(map(str, matchers))
    return [
        f"silence {{{shown}}} matches no alert of the {len(rules)} rules in force on "
        f"feed.symbols{''.join(h for h in hints if h)}: it mutes nothing"
    ]


async def add_silence(
    store: Store,
    request: SilenceRequest,
    rules: Sequence[CompiledRule],
    symbols: Iterable[str],
    now: float,
) -> tuple[dict[str, Any], list[str]]:
    """Store the silence; return it and the warnings (:func:`silence_warnings`).

    Cancellation: abandons the write (which may or may not have committed).
    """
    silence = await store.add_silence(
        request.matchers, request.starts_at, request.ends_at, request.comment, request.created_by
    )
    return silence_view(silence, now), silence_warnings(request.matchers, rules, symbols)


async def expire_silence(store: Store, silence_id: int, now: float) -> dict[str, Any] | None:
    """End silence ``silence_id`` now; the silence as it is then, or None when there is no
    such silence still in effect.

    Cancellation: abandons the write.
    """
    if not await store.expire_silence(silence_id, now):
        return None
    for silence in await store.fetch_silences():
        if silence.id == silence_id:
            return silence_view(silence, now)
    return None


def rule_view(compiled: CompiledRule) -> dict[str, Any]:
    """One rule as the API shows it (its rule-file entry, durations in seconds)."""
    entry = compiled.spec.to_entry()
    entry["expires_at"] = utc_iso(compiled.spec.expires_at)
    return entry
