"""The SQLite store's reads and its operator's writes: history, dispatch logs, the rules
table, silences, retention pruning.

Apart from :mod:`oraculo_trio.store.sqlite`, which keeps the connection and the writer's
batch statements: :class:`SqliteQueries` is a base of
:class:`~oraculo_trio.store.sqlite.SqliteStore` and runs everything through its ``_run``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any, TypeVar

from oraculo_trio.core.rules import RuleSpec
from oraculo_trio.core.silences import Matcher, Silence
from oraculo_trio.store.base import (
    RULE_COLUMNS,
    decode_labels,
    rule_entry,
    rule_row,
    silence_columns,
    silence_from_row,
)

T = TypeVar("T")

_SELECT_ALERT_EVENTS = """
SELECT id, rule_id, symbol, state, previous_state, value, at, started_at, fire_count, repeat,
       severity, message, labels
FROM alert_events
WHERE (?1 IS NULL OR rule_id = ?1) AND (?2 IS NULL OR symbol = ?2) AND id > ?3
  AND (?4 IS NULL OR at >= ?4)
ORDER BY id DESC
LIMIT ?5
"""

_SELECT_DISPATCH_LOGS = """
SELECT id, rule_id, symbol, sink, status, attempt, latency_ms, error, at, state
FROM dispatch_logs WHERE ?1 IS NULL OR at >= ?1 ORDER BY id
"""

_SELECT_RULES = """
SELECT id, kind, symbols, params, severity, labels, message, for_s, keep_firing_for_s,
       repeat_interval_s, trigger, expires_at, enabled, inhibits, message_resolved
FROM rules ORDER BY id
"""

_INSERT_RULE = """
INSERT INTO rules (id, kind, symbols, params, severity, labels, message, for_s,
                   keep_firing_for_s, repeat_interval_s, trigger, expires_at, enabled, inhibits,
                   message_resolved)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

_INSERT_SILENCE = """
INSERT INTO silences (rule_id, symbol, starts_at, ends_at, comment, created_by, matchers)
VALUES (?, ?, ?, ?, ?, ?, ?)
"""

_SELECT_SILENCES = """
SELECT id, rule_id, symbol, starts_at, ends_at, comment, created_by, matchers FROM silences
WHERE ?1 IS NULL OR ends_at > ?1
ORDER BY id
"""

# A silence that has not started yet ends where it starts: it never mutes anything.
_EXPIRE_SILENCE = """
UPDATE silences SET ends_at = ?2, starts_at = MIN(starts_at, ?2 - 0.001)
WHERE id = ?1 AND ends_at > ?2
"""

# Oldest first, a bounded batch: each DELETE is one short write transaction.
_PRUNE = {
    table: f"DELETE FROM {table} WHERE id IN "
    f"(SELECT id FROM {table} WHERE at < ?1 ORDER BY id LIMIT ?2)"
    for table in ("alert_events", "dispatch_logs")
}

_EVENT_COLUMNS = (
    "id", "rule_id", "symbol", "state", "previous_state", "value", "at", "started_at",
    "fire_count", "repeat", "severity", "message", "labels",
)  # fmt: skip
_LOG_COLUMNS = (
    "id", "rule_id", "symbol", "sink", "status", "attempt", "latency_ms", "error", "at", "state",
)  # fmt: skip


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back the open transaction of ``conn``, if any (errors ignored)."""
    if conn.in_transaction:
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


class SqliteQueries:
    """The reads and the operator's writes of :class:`~oraculo_trio.store.sqlite.SqliteStore`.

    Every method's statement runs to completion once started (at most
    ``statement_timeout``) and raises ``StoreUnavailable`` (retry) or ``StoreError``.
    """

    async def _run(
        self, op: str | None, work: Callable[[sqlite3.Connection], T], **kwargs: Any
    ) -> T:
        raise NotImplementedError

    async def fetch_alert_events(
        self,
        rule_id: str | None = None,
        symbol: str | None = None,
        *,
        after_id: int = 0,
        since: float | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """``alert_events`` rows as dicts (``repeat`` a bool, ``labels`` a dict), by id.

        Args:
            rule_id, symbol: only rows of this rule / symbol when given.
            after_id: only rows with a larger id.
            since: only rows at or after these Unix seconds.
            limit: only the last ``limit`` rows (None: all).
        """
        values = (rule_id, symbol, after_id, since, -1 if limit is None else limit)
        rows = await self._run(
            None, lambda conn: conn.execute(_SELECT_ALERT_EVENTS, values).fetchall()
        )
        events = []
        for row in reversed(rows):
            event = dict(zip(_EVENT_COLUMNS, row, strict=True))
            event["repeat"] = bool(event["repeat"])
            event["labels"] = decode_labels(event["labels"])
            events.append(event)
        return events

    async def fetch_dispatch_logs(self, since: float | None = None) -> list[dict[str, Any]]:
        """``dispatch_logs`` rows as dicts (only ``at >= since`` when given), ordered by id."""
        rows = await self._run(
            None, lambda conn: conn.execute(_SELECT_DISPATCH_LOGS, (since,)).fetchall()
        )
        return [dict(zip(_LOG_COLUMNS, row, strict=True)) for row in rows]

    async def fetch_rules(self) -> list[dict[str, Any]]:
        """The ``rules`` table as rule-file entries, ordered by id."""
        rows = await self._run(None, lambda conn: conn.execute(_SELECT_RULES).fetchall())
        return [rule_entry(dict(zip(RULE_COLUMNS, row, strict=True))) for row in rows]

    async def replace_rules(self, specs: Sequence[RuleSpec]) -> None:
        """Make the ``rules`` table hold exactly ``specs``, in one transaction.

        Raises:
            StoreError: a repeated id (the table keeps what it held).
        """
        rows = [rule_row(spec) for spec in specs]

        def work(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM rules")
                conn.executemany(_INSERT_RULE, rows)
                conn.execute("COMMIT")
            except BaseException:
                rollback(conn)
                raise

        await self._run(None, work)

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
        rule_id, symbol, text = silence_columns(matchers)
        values = (rule_id, symbol, starts_at, ends_at, comment, created_by, text)

        def work(conn: sqlite3.Connection) -> int:
            return conn.execute(_INSERT_SILENCE, values).lastrowid

        silence_id = await self._run(None, work)
        return Silence(silence_id, tuple(matchers), starts_at, ends_at, comment, created_by)

    async def fetch_silences(self, not_ended_at: float | None = None) -> list[Silence]:
        """Every silence, or those not ended at ``not_ended_at``, ordered by id."""
        rows = await self._run(
            None, lambda conn: conn.execute(_SELECT_SILENCES, (not_ended_at,)).fetchall()
        )
        return [silence_from_row(*row) for row in rows]

    async def expire_silence(self, silence_id: int, now: float) -> bool:
        """End a silence at ``now``; False when there is no such silence still running."""

        def work(conn: sqlite3.Connection) -> int:
            return conn.execute(_EXPIRE_SILENCE, (silence_id, now)).rowcount

        return await self._run(None, work) == 1

    async def prune(self, before: float, limit: int) -> dict[str, int]:
        """Delete at most ``limit`` rows older than ``before`` from each history table."""
        deleted = {}
        for table, sql in _PRUNE.items():

            def work(conn: sqlite3.Connection, sql: str = sql) -> int:
                return conn.execute(sql, (before, limit)).rowcount

            deleted[table] = await self._run(None, work)
        return deleted
