"""The store's contract: the :class:`Store` protocol and its records.

Two implementations keep the same contract (the contract tests in ``tests/store`` run on
both): :class:`~oraculo_trio.store.sqlite.SqliteStore`, the embedded default, and
:class:`~oraculo_trio.store.postgres.PostgresStore` (triopg). One task owns a store at a
time (:func:`~oraculo_trio.store.writer.run_store_writer`); readers (start-up, the CLI,
tests) use it before or beside that task.

Errors: a failure a retry may fix (the database is down, locked, slow, a table is missing
until someone migrates) raises :class:`~oraculo_trio.errors.StoreUnavailable`; a failure
no retry will fix (bad data, a bad DSN) raises :class:`~oraculo_trio.errors.StoreError`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

import attrs

from oraculo_trio.core.alerts import AlertTransition
from oraculo_trio.core.rules import RuleSpec
from oraculo_trio.core.silences import RULE_NAMES, Matcher, Silence
from oraculo_trio.errors import ConfigError

if TYPE_CHECKING:
    from oraculo_trio.observe.metrics import ServiceMetrics

DISPATCH_STATUSES = ("delivered", "failed", "dropped", "silenced", "inhibited")
"""What became of one delivery attempt (``dispatch_logs.status``)."""

SQLITE_SCHEMES = ("sqlite",)
POSTGRES_SCHEMES = ("postgresql", "postgres")


@attrs.frozen(slots=True)
class DispatchLog:
    """One notification delivery attempt, as the dispatcher reports it to the store.

    Attributes:
        rule_id, symbol: the alert notified.
        sink: the sink's name (``log``, ``webhook:ops``, ...).
        status: one of :data:`DISPATCH_STATUSES`.
        attempt: 1 for the first try, then 2, 3, ...; 0 when none was made (silenced,
            inhibited, or dropped before its first try).
        latency_ms: how long the attempt took, milliseconds.
        error: what went wrong, or None.
        at: wall-clock Unix seconds of the attempt.
        state: the alert state notified (``firing``, ``resolved``, ...).
    """

    rule_id: str
    symbol: str
    sink: str
    status: str = attrs.field(validator=attrs.validators.in_(DISPATCH_STATUSES))
    attempt: int
    latency_ms: float
    error: str | None
    at: float
    state: str


@attrs.frozen(slots=True)
class AlertRow:
    """The current state of one (rule, symbol) alert: one ``rule_alerts`` row.

    Attributes:
        rule_id, symbol: the alert's identity.
        state: the state last entered.
        started_at: when the current firing episode began, or None.
        last_change: Unix seconds of the last transition stored.
        fire_count: how many times the alert has entered ``firing``.
        last_value: the value of the last transition (None when it was NaN on SQLite).
        labels: the labels of the last transition.
        last_notified_at: Unix seconds of the last transition marked ``notify``, or None.
        severity, message: those of the last transition.
    """

    rule_id: str
    symbol: str
    state: str
    started_at: float | None
    last_change: float
    fire_count: int
    last_value: float | None
    labels: dict[str, str]
    last_notified_at: float | None
    severity: str = "warning"
    message: str = ""


@runtime_checkable
class Store(Protocol):
    """What the writer, the service's start-up and the CLI need from a database.

    Every method may raise :class:`~oraculo_trio.errors.StoreUnavailable` (retry later) or
    :class:`~oraculo_trio.errors.StoreError` (a retry will not help).

    Cancellation: every method may be cancelled (SQLite finishes the running statement
    first, PostgreSQL aborts it). A write cancelled or failed mid-statement may or may not
    have committed; retrying it is safe: upserts are idempotent and an event is stored once
    (a dispatch log whose commit was in doubt may be stored twice).
    """

    dialect: str
    """``"sqlite"`` or ``"postgresql"``."""

    async def upsert_rule_alerts(self, transitions: Sequence[AlertTransition]) -> None:
        """Write the current state of each (rule, symbol) in ONE batched statement.

        Several transitions of one (rule, symbol) in a batch: the last one wins, and
        ``last_notified_at`` is the latest ``at`` among those marked ``notify`` (or the
        value already stored). Idempotent: the same batch twice leaves the same rows.
        """
        ...

    async def insert_alert_events(self, transitions: Sequence[AlertTransition]) -> None:
        """Append the transitions to ``alert_events`` in batch order.

        An event already stored (same rule, symbol, at, state, fire_count, repeat) is not
        stored twice, so retrying a batch whose commit was in doubt is safe.
        """
        ...

    async def record_transitions(
        self, transitions: Sequence[AlertTransition], logs: Sequence[DispatchLog] = ()
    ) -> None:
        """:meth:`insert_alert_events`, :meth:`upsert_rule_alerts` and, with ``logs``,
        :meth:`insert_dispatch_logs` in one transaction, so that a crash never leaves an
        alert's state ahead of its history (on restart the service resumes from the state: an
        event missing behind it would be a gap forever), and a batch costs one commit.
        Metered as the statements it runs; retrying after a failure is safe."""
        ...

    async def insert_dispatch_logs(self, logs: Sequence[DispatchLog]) -> None:
        """Append delivery attempts to ``dispatch_logs`` in batch order."""
        ...

    async def load_alert_states(self) -> list[AlertRow]:
        """Every ``rule_alerts`` row, ordered by (rule_id, symbol)."""
        ...

    async def fetch_alert_events(
        self,
        rule_id: str | None = None,
        symbol: str | None = None,
        *,
        after_id: int = 0,
        since: float | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """``alert_events`` rows (optionally of one rule and/or symbol, with an id above
        ``after_id``, at or after ``since``), ordered by id; with ``limit``, the last
        ``limit`` of them."""
        ...

    async def fetch_dispatch_logs(self, since: float | None = None) -> list[dict[str, Any]]:
        """Every ``dispatch_logs`` row (or those with ``at >= since``), ordered by id."""
        ...

    async def fetch_rules(self) -> list[dict[str, Any]]:
        """The ``rules`` table as rule-file entries (:meth:`RuleSpec.to_entry` keys), by id.

        The caller validates them (``parse_rules``), exactly like a rule file.
        """
        ...

    async def replace_rules(self, specs: Sequence[RuleSpec]) -> None:
        """Make the ``rules`` table hold exactly ``specs``, in one transaction."""
        ...

    async def add_silence(
        self,
        matchers: Sequence[Matcher],
        starts_at: float,
        ends_at: float,
        comment: str = "",
        created_by: str = "",
    ) -> Silence:
        """Store a silence and return it with its id.

        Raises:
            StoreError: ``ends_at`` is not after ``starts_at``.
        """
        ...

    async def fetch_silences(self, not_ended_at: float | None = None) -> list[Silence]:
        """Every silence, or only those still active or to come at ``not_ended_at``, by id."""
        ...

    async def expire_silence(self, silence_id: int, now: float) -> bool:
        """End silence ``silence_id`` at ``now``; False when it does not exist or has ended."""
        ...

    async def prune(self, before: float, limit: int) -> dict[str, int]:
        """Delete at most ``limit`` rows older than ``before`` from each of ``alert_events``
        and ``dispatch_logs`` (oldest first), in one short transaction per table.

        Returns:
            The rows deleted, by table. ``rule_alerts`` is never pruned: it keeps every
            alert's latest state, whatever its age.
        """
        ...

    async def ping(self) -> None:
        """Run a trivial statement; raises StoreUnavailable when the database is not there."""
        ...

    async def migrate(self) -> list[int]:
        """Apply the pending schema migrations; return the versions applied now (maybe [])."""
        ...


def mask_dsn(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``, for logs and error messages.

    Handles ``scheme://user:secret@host/db``, a ``?password=...`` query parameter and
    libpq ``key=value`` strings (``host=x password=secret``).
    """
    if "://" not in url:
        return re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", url, flags=re.IGNORECASE)
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return "<unparseable url>"
    userinfo, at, hostport = netloc.rpartition("@")
    masked = url
    if at and ":" in userinfo:
        start = url.index("://") + 3
        user = userinfo.split(":", 1)[0]
        masked = url[:start] + user + ":***@" + hostport + url[start + len(netloc) :]
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", masked, flags=re.IGNORECASE)


def parse_store_url(url: str) -> tuple[str, str]:
    """Split a ``database.url`` into ``(dialect, target)``.

    ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` (SQLAlchemy's
    convention: the path is what follows ``sqlite:///``), ``sqlite://`` or
    ``sqlite:///:memory:`` (in memory) and a bare file path give ``("sqlite", path)``;
    ``postgresql://...`` and ``postgres://...`` give ``("postgresql", url)``.

    Raises:
        ConfigError: empty URL or unknown scheme; the message names ``database.url``.
    """
    allowed = (
        "sqlite:///path.db, sqlite:////abs/path.db, a file path, "
        "postgresql://user@host:port/db or postgres://..."
    )
    if not url or not url.strip():
        raise ConfigError(f"database.url: empty value; allowed: {allowed}")
    if "://" not in url:
        if url.lower().startswith(("sqlite:", "postgres:", "postgresql:")):
            raise ConfigError(
                f"database.url: {mask_dsn(url)!r} is missing '//' after the scheme; "
                f"allowed: {allowed}"
            )
        return "sqlite", url
    scheme = url.split("://", 1)[0].lower()
    if scheme in SQLITE_SCHEMES:
        rest = url.split("://", 1)[1]
        if rest == "":
            return "sqlite", ":memory:"
        if not rest.startswith("/") or rest == "/":
            raise ConfigError(
                f"database.url: {url!r} has no path; use sqlite:///relative.db or "
                "sqlite:////absolute/path.db"
            )
        return "sqlite", rest[1:]
    if scheme in POSTGRES_SCHEMES:
        return "postgresql", url
    raise ConfigError(
        f"database.url: unsupported scheme {scheme!r} in {mask_dsn(url)!r}; allowed: {allowed}"
    )


class StatementMeter:
    """Observes the ``oraculo_db_*`` series of each statement; a no-op without metrics.

    Only called from the Trio thread (the metrics' histograms are not thread-safe).
    """

    __slots__ = ("_metrics",)

    def __init__(self, metrics: ServiceMetrics | None) -> None:
        self._metrics = metrics

    def succeeded(self, op: str, ms: float, rows: int) -> None:
        m = self._metrics
        if m is None:
            return
        m.db_insert_ms[op].observe(ms)
        if rows:
            m.db_rows[op].inc(rows)
        m.db_up.set(1)

    def failed(self, op: str, *, timeout: bool) -> None:
        """Count a failed statement; a timeout counts in both errors and timeouts."""
        m = self._metrics
        if m is None:
            return
        m.db_errors[op].inc()
        if timeout:
            m.db_timeouts[op].inc()
        m.db_up.set(0)


def encode_labels(labels: Mapping[str, str]) -> str:
    """Labels as compact, key-sorted JSON text (stable, so equal labels compare equal)."""
    return json.dumps(dict(labels), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def encode_labels_many(label_maps: Iterable[Mapping[str, str]]) -> list[str]:
    """:func:`encode_labels` of each mapping; a mapping seen before in the call is encoded once.

    Transitions of one rule usually share the rule's labels object, and encoding is most of
    a batch's Python cost (~2 µs a row), so the cache is keyed by identity (the objects stay
    alive for the whole call, so their ids cannot be reused meanwhile).
    """
    cache: dict[int, str] = {}
    out = []
    for labels in label_maps:
        key = id(labels)
        text = cache.get(key)
        if text is None:
            text = cache[key] = encode_labels(labels)
        out.append(text)
    return out


def decode_labels(text: str | None) -> dict[str, str]:
    """The inverse of :func:`encode_labels`; NULL gives ``{}``."""
    return {} if text is None else json.loads(text)


def last_per_alert(
    transitions: Sequence[AlertTransition],
) -> list[tuple[AlertTransition, float | None]]:
    """One ``(transition, last_notified_at)`` per (rule, symbol): the last one of the batch.

    ``last_notified_at`` is the latest ``at`` of the key's transitions marked ``notify`` in
    this batch, or None (the upsert then keeps the stored value). First-seen key order is
    kept, so statements touch rows in a stable order.
    """
    latest: dict[tuple[str, str], AlertTransition] = {}
    notified: dict[tuple[str, str], float] = {}
    for t in transitions:
        key = (t.rule_id, t.symbol)
        latest[key] = t
        if t.notify:
            previous = notified.get(key)
            notified[key] = t.at if previous is None or t.at > previous else previous
    return [(t, notified.get(key)) for key, t in latest.items()]


RULE_COLUMNS = (
    "id", "kind", "symbols", "params", "severity", "labels", "message", "for_s",
    "keep_firing_for_s", "repeat_interval_s", "trigger", "expires_at", "enabled", "inhibits",
    "message_resolved",
)  # fmt: skip
"""Columns of the ``rules`` table, in the order of :func:`rule_row`."""


def rule_row(spec: RuleSpec) -> tuple[Any, ...]:
    """A spec as a ``rules`` row (:data:`RULE_COLUMNS`), JSON columns as text."""

    def text(value: Any) -> str:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    return (
        spec.id,
        spec.kind,
        text(list(spec.symbols)),
        text(dict(spec.params)),
        spec.severity,
        encode_labels(spec.labels),
        spec.message,
        spec.for_,
        spec.keep_firing_for,
        spec.repeat_interval,
        spec.trigger,
        spec.expires_at,
        spec.enabled,
        encode_labels(spec.inhibits),
        spec.message_resolved,
    )


def rule_entry(row: Mapping[str, Any]) -> dict[str, Any]:
    """A ``rules`` row (JSON columns as text) as a rule-file entry; NULLs are left out."""
    entry: dict[str, Any] = {
        "id": row["id"],
        "kind": row["kind"],
        "symbols": json.loads(row["symbols"]),
        "params": json.loads(row["params"]),
        "severity": row["severity"],
        "labels": json.loads(row["labels"]),
        "message": row["message"],
        "message_resolved": row["message_resolved"],
        "for": row["for_s"],
        "keep_firing_for": row["keep_firing_for_s"],
        "enabled": bool(row["enabled"]),
        "inhibits": json.loads(row["inhibits"]),
    }
    for key, column in (
        ("repeat_interval", "repeat_interval_s"),
        ("trigger", "trigger"),
        ("expires_at", "expires_at"),
    ):
        if row[column] is not None:
            entry[key] = row[column]
    return entry


# What an earlier release reads in silences.rule_id for a silence it cannot express (label
# matchers): a rule id no rule has, so that release mutes nothing with it (rather than
# taking the NULL for "every rule").
MATCHERS_ONLY = "(see matchers)"


def silence_columns(matchers: Sequence[Matcher]) -> tuple[str | None, str | None, str]:
    """``(rule_id, symbol, matchers)`` columns of a silence: the JSON list of matchers, and
    the columns an earlier release reads (equal to them when it can express the silence)."""
    text = json.dumps([m.to_list() for m in matchers], separators=(",", ":"), ensure_ascii=False)
    equal = {m.name: m.value for m in matchers if m.op == "="}
    simple = len(equal) == len(matchers) and set(equal) <= {*RULE_NAMES, "symbol"}
    rules = {equal[name] for name in RULE_NAMES if name in equal}
    if not simple or len(rules) > 1:
        return MATCHERS_ONLY, None, text
    return next(iter(rules), None), equal.get("symbol"), text


def silence_from_row(
    silence_id: int,
    rule_id: str | None,
    symbol: str | None,
    starts_at: float,
    ends_at: float,
    comment: str,
    created_by: str,
    matchers: str | None,
) -> Silence:
    """A ``silences`` row as a :class:`Silence`; a row without matchers (written before
    they existed) has equality matchers on its rule_id and symbol."""
    found = [Matcher(name, op, value) for name, op, value in json.loads(matchers or "[]")]
    if not found:
        if rule_id is not None:
            found.append(Matcher("rule_id", "=", rule_id))
        if symbol is not None:
            found.append(Matcher("symbol", "=", symbol))
    return Silence(silence_id, tuple(found), starts_at, ends_at, comment, created_by)
