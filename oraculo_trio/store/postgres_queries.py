"""The PostgreSQL store's reads and its operator's writes: history, dispatch logs, the
rules table, silences, retention pruning.

Apart from :mod:`oraculo_trio.store.postgres`, which keeps the pool and the writer's batch
statements: :class:`PostgresQueries` is a base of
:class:`~oraculo_trio.store.postgres.PostgresStore` and runs everything through its
``_run`` (pooled connection, statement timeout, errors classified).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
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
       severity, message, labels::text AS labels
FROM alert_events
WHERE ($1::text IS NULL OR rule_id = $1) AND ($2::text IS NULL OR symbol = $2) AND id > $3
  AND ($4::float8 IS NULL OR at >= $4)
ORDER BY id DESC
LIMIT $5
"""

_SELECT_DISPATCH_LOGS = """
SELECT id, rule_id, symbol, sink, status, attempt, latency_ms, error, at, state
FROM dispatch_logs WHERE $1::float8 IS NULL OR at >= $1 ORDER BY id
"""

_SELECT_RULES = """
SELECT id, kind, symbols::text AS symbols, params::text AS params, severity,
       labels::text AS labels, message, for_s, keep_firing_for_s, repeat_interval_s, trigger,
       expires_at, enabled, inhibits::text AS inhibits, message_resolved
FROM rules ORDER BY id
"""

_INSERT_RULES = """
INSERT INTO rules (id, kind, symbols, params, severity, labels, message, for_s,
                   keep_firing_for_s, repeat_interval_s, trigger, expires_at, enabled, inhibits,
                   message_resolved)
SELECT u.id, u.kind, u.symbols::jsonb, u.params::jsonb, u.severity, u.labels::jsonb, u.message,
       u.for_s, u.keep_firing_for_s, u.repeat_interval_s, u.trigger, u.expires_at, u.enabled,
       u.inhibits::jsonb, u.message_resolved
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::float8[], $9::float8[], $10::float8[], $11::text[], $12::float8[],
            $13::bool[], $14::text[], $15::text[])
     AS u(id, kind, symbols, params, severity, labels, message, for_s, keep_firing_for_s,
          repeat_interval_s, trigger, expires_at, enabled, inhibits, message_resolved)
"""

_INSERT_SILENCE = """
INSERT INTO silences (rule_id, symbol, starts_at, ends_at, comment, created_by, matchers)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
RETURNING id
"""

_SELECT_SILENCES = """
SELECT id, rule_id, symbol, starts_at, ends_at, comment, created_by, matchers::text
FROM silences
WHERE $1::float8 IS NULL OR ends_at > $1
ORDER BY id
"""

# A silence that has not started yet ends where it starts: it never mutes anything.
_EXPIRE_SILENCE = """
UPDATE silences SET ends_at = $2, starts_at = LEAST(starts_at, $2 - 0.001)
WHERE id = $1 AND ends_at > $2
"""

# Oldest first, a bounded batch: each DELETE is one short statement.
_PRUNE = {
    table: f"DELETE FROM {table} WHERE id IN "
    f"(SELECT id FROM {table} WHERE at < $1 ORDER BY id LIMIT $2)"
    for table in ("alert_events", "dispatch_logs")
}


def no_nul(text: str) -> str:
    """``text`` without NUL characters, which PostgreSQL text cannot hold."""
    # Dropped rather than failing the batch forever (jsonb refuses \u0000 as well).
    return text.replace("\x00", "") if "\x00" in text else text


def status_rows(status: str) -> int:
    """The row count of a command status: ``"INSERT 0 500"`` -> 500."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except (ValueError, AttributeError):
        return 0


class PostgresQueries:
    """The reads and the operator's writes of :class:`~oraculo_trio.store.postgres.PostgresStore`.

    Every method raises ``StoreUnavailable`` (retry) or ``StoreError``; cancellation aborts
    the statement.
    """

    async def _run(self, op: str | None, work: Callable[[Any], Awaitable[T]], **kwargs: Any) -> T:
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
        """``alert_events`` rows as dicts (``labels`` a dict), ordered by id.

        Args:
            rule_id, symbol: only rows of this rule / symbol when given.
            after_id: only rows with a larger id.
            since: only rows at or after these Unix seconds.
            limit: only the last ``limit`` rows (None: all).
        """
        records = await self._run(
            None,
            lambda conn: conn.fetch(_SELECT_ALERT_EVENTS, rule_id, symbol, after_id, since, limit),
            what="fetch_alert_events",
        )
        events = []
        for record in reversed(records):
            event = dict(record.items())
            event["labels"] = decode_labels(event["labels"])
            events.append(event)
        return events

    async def fetch_dispatch_logs(self, since: float | None = None) -> list[dict[str, Any]]:
        """``dispatch_logs`` rows as dicts (only ``at >= since`` when given), ordered by id."""
        records = await self._run(
            None,
            lambda conn: conn.fetch(_SELECT_DISPATCH_LOGS, since),
            what="fetch_dispatch_logs",
        )
        return [dict(record.items()) for record in records]

    async def fetch_rules(self) -> list[dict[str, Any]]:
        """The ``rules`` table as rule-file entries, ordered by id."""
        records = await self._run(None, lambda conn: conn.fetch(_SELECT_RULES), what="fetch_rules")
        return [rule_entry(dict(record.items())) for record in records]

    async def replace_rules(self, specs: Sequence[RuleSpec]) -> None:
        """Make the ``rules`` table hold exactly ``specs``, in one transaction.

        Raises:
            StoreError: a repeated id (the transaction rolls back).
        """
        rows = [rule_row(spec) for spec in specs]
        columns = [[row[i] for row in rows] for i in range(len(RULE_COLUMNS))]
        for text_column in (6, 14):  # message, message_resolved
            columns[text_column] = [no_nul(text) for text in columns[text_column]]

        async def work(conn: Any) -> None:
            async with conn.transaction():
                await conn.execute("DELETE FROM rules")
                if rows:
                    await conn.execute(_INSERT_RULES, *columns)

        await self._run(None, work, what="replace_rules")

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
        comment, created_by = no_nul(comment), no_nul(created_by)
        values = (rule_id, symbol, starts_at, ends_at, comment, created_by, no_nul(text))
        silence_id = await self._run(
            None, lambda conn: conn.fetchval(_INSERT_SILENCE, *values), what="add_silence"
        )
        return Silence(silence_id, tuple(matchers), starts_at, ends_at, comment, created_by)

    async def fetch_silences(self, not_ended_at: float | None = None) -> list[Silence]:
        """Every silence, or those not ended at ``not_ended_at``, ordered by id."""
        records = await self._run(
            None,
            lambda conn: conn.fetch(_SELECT_SILENCES, not_ended_at),
            what="fetch_silences",
        )
        return [silence_from_row(*record.values()) for record in records]

    async def expire_silence(self, silence_id: int, now: float) -> bool:
        """End a silence at ``now``; False when there is no such silence still running."""
        status = await self._run(
            None,
            lambda conn: conn.execute(_EXPIRE_SILENCE, silence_id, now),
            what="expire_silence",
        )
        return status_rows(status) == 1

    async def prune(self, before: float, limit: int) -> dict[str, int]:
        """Delete at most ``limit`` rows older than ``before`` from each history table."""
        deleted = {}
        for table, sql in _PRUNE.items():
            status = await self._run(
                None,
                lambda conn, sql=sql: conn.execute(sql, before, limit),
                what=f"prune {table}",
            )
            deleted[table] = status_rows(status)
        return deleted
