"""The PostgreSQL store: a triopg (asyncpg) pool, the only module that touches triopg.

triopg runs asyncpg on a trio-asyncio loop. :func:`open_postgres_store` opens that loop
(``async with trio_asyncio.open_loop()``) and the pool; the store remembers the loop and
enters it around every call, so any task of the same Trio run may use the store, not only
tasks started inside the ``async with``.

Batches are single statements over arrays (``INSERT ... SELECT FROM unnest($1::text[], ...)``,
~1.2 M rows/s measured), so one round trip writes a whole batch. Every statement runs under
``trio.fail_after(statement_timeout)`` and the same server-side ``statement_timeout``; a
failure a retry may fix becomes :class:`~oraculo_trio.errors.StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
import trio
import trio_asyncio
import triopg

from oraculo_trio.core.alerts import AlertTransition
from oraculo_trio.errors import StoreError, StoreUnavailable
from oraculo_trio.store.base import (
    AlertRow,
    DispatchLog,
    StatementMeter,
    decode_labels,
    encode_labels,
    encode_labels_many,
    last_per_alert,
    mask_dsn,
)
from oraculo_trio.store.migrations import (
    SCHEMA_MIGRATIONS_DDL,
    load_migrations,
    pending_migrations,
)
from oraculo_trio.store.postgres_queries import PostgresQueries, no_nul, status_rows

if TYPE_CHECKING:
    from oraculo_trio.observe.metrics import ServiceMetrics

LOGGER = logging.getLogger("oraculo_trio.store.postgres")

T = TypeVar("T")

MIGRATE_TIMEOUT = 300.0
"""Seconds a migration may run (a batch statement gets ``statement_timeout``)."""

POOL_MAX_SIZE = 4
"""One writer plus readers (start-up, /readyz pings, the CLI): a few connections suffice."""

CLOSE_TIMEOUT = 5.0
"""Seconds closing the pool may take before its connections are terminated."""

# pg_advisory_xact_lock key serialising migrations of concurrent instances ("oraculo").
_MIGRATION_LOCK = 0x6F7261_63756C6F

# SQLSTATEs no retry will fix: data exceptions, integrity violations, and statements that
# are wrong in themselves (our bug). Anything else (connection lost, admin shutdown, too
# many connections, disk full, a table missing until someone migrates) is retried.
_PERMANENT_CLASSES = ("22", "23")
_PERMANENT_STATES = ("42601", "42804", "42883", "42P08", "42P18")
# At connect time, bad credentials or an unknown database are configuration errors.
_PERMANENT_AT_CONNECT = ("28", "3D")

_UPSERT_RULE_ALERTS = """
INSERT INTO rule_alerts AS r (rule_id, symbol, state, started_at, last_change, fire_count,
                              last_value, labels, last_notified_at, severity, message)
SELECT u.rule_id, u.symbol, u.state, u.started_at, u.last_change, u.fire_count, u.last_value,
       u.labels::jsonb, u.last_notified_at, u.severity, u.message
FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::float8[], $6::int4[],
            $7::float8[], $8::text[], $9::float8[], $10::text[], $11::text[])
     AS u(rule_id, symbol, state, started_at, last_change, fire_count, last_value, labels,
          last_notified_at, severity, message)
ON CONFLICT (rule_id, symbol) DO UPDATE SET
    state = EXCLUDED.state,
    severity = EXCLUDED.severity,
    message = EXCLUDED.message,
    started_at = EXCLUDED.started_at,
    last_change = EXCLUDED.last_change,
    fire_count = EXCLUDED.fire_count,
    last_value = EXCLUDED.last_value,
    labels = EXCLUDED.labels,
    last_notified_at = COALESCE(EXCLUDED.last_notified_at, r.last_notified_at)
"""

_INSERT_ALERT_EVENTS = """
INSERT INTO alert_events (rule_id, symbol, state, previous_state, value, at, started_at,
                          fire_count, repeat, severity, message, labels)
SELECT u.rule_id, u.symbol, u.state, u.previous_state, u.value, u.at, u.started_at,
       u.fire_count, u.repeat, u.severity, u.message, u.labels::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::float8[],
            $7::float8[], $8::int4[], $9::bool[], $10::text[], $11::text[], $12::text[])
     WITH ORDINALITY
     AS u(rule_id, symbol, state, previous_state, value, at, started_at, fire_count, repeat,
          severity, message, labels, ord)
ORDER BY u.ord
ON CONFLICT DO NOTHING
"""

_INSERT_DISPATCH_LOGS = """
INSERT INTO dispatch_logs (rule_id, symbol, sink, status, attempt, latency_ms, error, at, state)
SELECT u.rule_id, u.symbol, u.sink, u.status, u.attempt, u.latency_ms, u.error, u.at, u.state
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int4[], $6::float8[],
            $7::text[], $8::float8[], $9::text[])
     WITH ORDINALITY
     AS u(rule_id, symbol, sink, status, attempt, latency_ms, error, at, state, ord)
ORDER BY u.ord
"""

_SELECT_ALERT_STATES = """
SELECT rule_id, symbol, state, started_at, last_change, fire_count, last_value,
       labels::text AS labels, last_notified_at, severity, message
FROM rule_alerts ORDER BY rule_id, symbol
"""


def _labels_json(label_maps: Iterable[Mapping[str, str]]) -> list[str]:
    texts = encode_labels_many(label_maps)
    for i, text in enumerate(texts):
        if "\\u0000" in text:
            labels = json.loads(text)
            texts[i] = encode_labels({no_nul(k): no_nul(v) for k, v in labels.items()})
    return texts


def _classify(exc: BaseException, *, connecting: bool = False) -> tuple[bool, bool] | None:
    """``(retryable, timeout)`` for a database failure; None when it is not one (a bug)."""
    if isinstance(exc, asyncpg.QueryCanceledError):
        return True, True
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        if state[:2] in _PERMANENT_CLASSES or state in _PERMANENT_STATES:
            return False, False
        if connecting and state[:2] in _PERMANENT_AT_CONNECT:
            return False, False
        return True, False
    if isinstance(exc, TimeoutError):
        return True, True
    if isinstance(exc, OSError | asyncpg.InterfaceError | asyncpg.exceptions.InternalClientError):
        return True, False
    return None


class PostgresStore(PostgresQueries):
    """A :class:`~oraculo_trio.store.base.Store` on PostgreSQL. Open it with
    :func:`open_postgres_store` (or :func:`~oraculo_trio.store.base.open_store`).

    Attributes:
        dsn: the DSN with its password masked (for logs and messages).
        statement_timeout: seconds per statement, client- and server-side.
    """

    dialect = "postgresql"

    def __init__(
        self,
        pool: Any,
        loop: Any,
        *,
        dsn: str,
        statement_timeout: float,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self._pool = pool
        self._loop = loop
        self.dsn = mask_dsn(dsn)
        self.statement_timeout = statement_timeout
        self._meter = StatementMeter(metrics)

    async def _run(
        self,
        op: str | None,
        work: Callable[[Any], Awaitable[T]],
        *,
        what: str,
        count_rows: Callable[[T], int] | None = None,
        time_limit: float | None = None,
        running: list[str] | None = None,
    ) -> T:
        """Run ``work(conn)`` on a pooled connection under the statement timeout.

        Metered under ``op`` (None: not metered). With ``running`` (several statements in one
        transaction: ``work`` keeps the one it runs in ``running[0]`` and the caller meters
        each that succeeded), a failure is metered under the statement that failed, and a
        success not at all. Cancellation aborts the statement and drops its connection (the
        pool opens a new one).
        """
        timeout = self.statement_timeout if time_limit is None else time_limit
        token = trio_asyncio.current_loop.set(self._loop)
        try:
            with trio.fail_after(timeout):
                async with self._pool.acquire() as conn:
                    started = time.perf_counter()
                    try:
                        result = await work(conn)
                    except asyncpg.PostgresError:
                        raise  # the server answered: the connection is still good
                    except BaseException:
                        # Cancelled or broken mid-statement: drop the connection rather than
                        # wait (shielded, in triopg) for it to be reset.
                        conn.terminate()
                        raise
                    ms = (time.perf_counter() - started) * 1000.0
        except trio.TooSlowError:
            if running is not None:
                op = running[0]
            if op is not None:
                self._meter.failed(op, timeout=True)
            raise StoreUnavailable(f"{what} timed out after {timeout:g}s on {self.dsn}") from None
        except Exception as exc:
            verdict = _classify(exc)
            if verdict is None:
                raise
            retryable, timed_out = verdict
            if running is not None:
                op = running[0]
            if op is not None:
                self._meter.failed(op, timeout=timed_out)
            error = StoreUnavailable if retryable else StoreError
            raise error(f"{what} failed on {self.dsn}: {type(exc).__name__}: {exc}") from exc
        finally:
            trio_asyncio.current_loop.reset(token)
        if op is not None and running is None:
            self._meter.succeeded(op, ms, count_rows(result) if count_rows else 0)
        return result

    async def _execute(self, op: str, sql: str, columns: Sequence[list[Any]]) -> None:
        await self._run(
            op,
            lambda conn: conn.execute(sql, *columns),
            what=op,
            count_rows=status_rows,
        )

    # --- the Store protocol ---

    async def upsert_rule_alerts(self, transitions: Sequence[AlertTransition]) -> None:
        """Upsert the current state of each (rule, symbol) in one statement; last wins.

        Args:
            transitions: in the order they happened.

        Raises:
            StoreUnavailable: unreachable, timed out, or failing in a way that may pass.
            StoreError: a retry will not help (bad data).

        Cancellation: aborts the statement (the upsert is idempotent: just retry it).
        """
        columns = _state_columns(transitions)
        if columns is not None:
            await self._execute("upsert_rule_alert", _UPSERT_RULE_ALERTS, columns)

    async def insert_alert_events(self, transitions: Sequence[AlertTransition]) -> None:
        """Append transitions to ``alert_events`` in order; an event already stored is skipped.

        Raises:
            StoreUnavailable: retry. StoreError: a retry will not help.

        Cancellation: aborts the statement; retrying the batch stores each event once.
        """
        if transitions:
            columns = _event_columns(transitions)
            await self._execute("insert_alert_events", _INSERT_ALERT_EVENTS, columns)

    async def record_transitions(
        self, transitions: Sequence[AlertTransition], logs: Sequence[DispatchLog] = ()
    ) -> None:
        """Append the events of ``transitions``, write the alert states they leave and append
        ``logs``, in one transaction: after a crash the store holds all or none of them.

        Raises:
            StoreUnavailable: retry (nothing was written). StoreError: a retry will not help.

        Cancellation: aborts the transaction; retrying stores each event once.
        """
        statements = []
        if transitions:
            states = _state_columns(transitions)
            if states is not None:
                statements.append(("upsert_rule_alert", _UPSERT_RULE_ALERTS, states))
            events = _event_columns(transitions)
            statements.append(("insert_alert_events", _INSERT_ALERT_EVENTS, events))
        if logs:
            statements.append(("insert_dispatch_logs", _INSERT_DISPATCH_LOGS, _log_columns(logs)))
        if not statements:
            return
        running = [statements[0][0]]
        # Per statement: its milliseconds and the rows its status reports.
        done: dict[str, tuple[float, str]] = {}

        async def work(conn: Any) -> None:
            async with conn.transaction():
                for op, sql, columns in statements:
                    running[0] = op
                    started = time.perf_counter()
                    status = await conn.execute(sql, *columns)
                    done[op] = (time.perf_counter() - started) * 1000.0, status
            # The commit counts with the last statement.
            last = statements[-1][0]
            done[last] = (time.perf_counter() - started) * 1000.0, done[last][1]

        await self._run(None, work, what="record_transitions", running=running)
        for op, (ms, status) in done.items():
            self._meter.succeeded(op, ms, status_rows(status))

    async def insert_dispatch_logs(self, logs: Sequence[DispatchLog]) -> None:
        """Append delivery attempts to ``dispatch_logs`` in order.

        Raises:
            StoreUnavailable: retry. StoreError: a retry will not help.

        Cancellation: aborts the statement (a commit in doubt may be stored twice on retry).
        """
        if logs:
            await self._execute("insert_dispatch_logs", _INSERT_DISPATCH_LOGS, _log_columns(logs))

    async def load_alert_states(self) -> list[AlertRow]:
        """Every ``rule_alerts`` row, ordered by (rule_id, symbol).

        Raises:
            StoreUnavailable: retry. StoreError: a retry will not help.

        Cancellation: aborts the query.
        """
        records = await self._run(
            None, lambda conn: conn.fetch(_SELECT_ALERT_STATES), what="load_alert_states"
        )
        return [
            AlertRow(
                rule_id=r["rule_id"],
                symbol=r["symbol"],
                state=r["state"],
                started_at=r["started_at"],
                last_change=r["last_change"],
                fire_count=r["fire_count"],
                last_value=r["last_value"],
                labels=decode_labels(r["labels"]),
                last_notified_at=r["last_notified_at"],
                severity=r["severity"],
                message=r["message"],
            )
            for r in records
        ]

    async def ping(self) -> None:
        """Run ``SELECT 1``.

        Raises:
            StoreUnavailable: the server cannot answer within ``statement_timeout``.

        Cancellation: aborts the query.
        """
        await self._run("ping", lambda conn: conn.fetchval("SELECT 1"), what="ping")

    async def migrate(self) -> list[int]:
        """Apply pending migrations, each in its own transaction, under an advisory lock
        so that instances starting together apply each migration once.

        Returns:
            The versions applied by this call, in order ([] when up to date).

        Raises:
            StoreUnavailable: the server is unreachable or the lock wait timed out.
            StoreError: a migration is broken.

        Cancellation: aborts the running migration (its transaction rolls back).
        """
        available = load_migrations(self.dialect)
        timeout = max(self.statement_timeout, MIGRATE_TIMEOUT)
        timeout_ms = str(int(timeout * 1000))

        async def begin(conn: Any) -> None:
            await conn.execute("SELECT set_config('statement_timeout', $1, true)", timeout_ms)
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(SCHEMA_MIGRATIONS_DDL[self.dialect])

        async def work(conn: Any) -> list[int]:
            async with conn.transaction():
                await begin(conn)
                applied = [r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")]
            done = []
            for migration in pending_migrations(available, applied, dialect=self.dialect):
                async with conn.transaction():
                    await begin(conn)
                    already = await conn.fetchval(
                        "SELECT 1 FROM schema_migrations WHERE version = $1", migration.version
                    )
                    if already:  # another instance applied it meanwhile
                        continue
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, applied_at)"
                        " VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        time.time(),
                    )
                done.append(migration.version)
            return done

        applied = await self._run(
            "migrate", work, what="migrate", count_rows=len, time_limit=timeout
        )
        if applied:
            LOGGER.info("PostgreSQL %s: applied migrations %s", self.dsn, applied)
        return applied


async def _close_asyncpg_pool(pool: Any, grace: float) -> None:
    # asyncpg's close() waits for each server to acknowledge; a server that vanished
    # without a FIN would hold us (and triopg's close() is shielded), so bound it.
    try:
        await asyncio.wait_for(pool.close(), grace)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        pool.terminate()


@asynccontextmanager
async def open_postgres_store(
    url: str,
    *,
    statement_timeout: float,
    metrics: ServiceMetrics | None = None,
    pool_max_size: int = POOL_MAX_SIZE,
) -> AsyncIterator[PostgresStore]:
    """Open a trio-asyncio loop and a triopg pool on ``url``; close both on exit.

    Migrations are not applied here (:func:`~oraculo_trio.store.base.open_store` does).

    Args:
        url: ``postgresql://user[:password]@host[:port]/db[?...]``.
        statement_timeout: seconds for connecting and for each statement (also set as the
            server's ``statement_timeout`` for the pool's sessions).
        metrics: per-statement ``oraculo_db_*`` series are observed when given.
        pool_max_size: connections at most.

    Raises:
        StoreUnavailable: the server cannot be reached in time.
        StoreError: bad credentials, unknown database or a malformed DSN.

    Cancellation: safe; closing is shielded and bounded by ``CLOSE_TIMEOUT``.
    """
    try:
        async with _open_postgres_store(
            url, statement_timeout=statement_timeout, metrics=metrics, pool_max_size=pool_max_size
        ) as store:
            yield store
    except BaseExceptionGroup as group:
        # trio-asyncio's loop runs in nurseries that wrap whatever crosses them (our errors
        # and the caller's alike) in groups of one; hand back the exception itself.
        only = _only_exception(group)
        if only is None:
            raise
        raise only from only.__cause__


def _only_exception(group: BaseExceptionGroup) -> BaseException | None:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        if len(exc.exceptions) != 1:
            return None
        exc = exc.exceptions[0]
    return exc


@asynccontextmanager
async def _open_postgres_store(
    url: str,
    *,
    statement_timeout: float,
    metrics: ServiceMetrics | None = None,
    pool_max_size: int = POOL_MAX_SIZE,
) -> AsyncIterator[PostgresStore]:
    dsn = mask_dsn(url)
    async with trio_asyncio.open_loop() as loop:
        pool = triopg.create_pool(
            url,
            # No floor: with one, asyncpg reconnects (and logs a traceback) on every release
            # while the server is down; connections are opened on demand instead.
            min_size=0,
            max_size=pool_max_size,
            timeout=statement_timeout,  # connect timeout
            server_settings={
                "statement_timeout": str(max(1, int(statement_timeout * 1000))),
                "application_name": "oraculo-trio",
            },
        )
        try:
            with trio.fail_after(statement_timeout):
                await pool.__aenter__()
                async with pool.acquire() as conn:  # fail now, not at the first statement
                    await conn.fetchval("SELECT 1")
        except trio.TooSlowError:
            raise StoreUnavailable(
                f"connecting to {dsn} timed out after {statement_timeout:g}s"
            ) from None
        except Exception as exc:
            verdict = _classify(exc, connecting=True)
            if verdict is None:
                if isinstance(exc, ValueError):  # asyncpg's verdict on a malformed DSN
                    raise StoreError(f"database.url: cannot use {dsn}: {exc}") from exc
                raise
            error = StoreUnavailable if verdict[0] else StoreError
            raise error(f"cannot connect to {dsn}: {type(exc).__name__}: {exc}") from exc
        try:
            yield PostgresStore(
                pool, loop, dsn=url, statement_timeout=statement_timeout, metrics=metrics
            )
        finally:
            with trio.CancelScope(shield=True):
                # triopg keeps the asyncpg pool in a private attribute; its own close() is
                # shielded and unbounded, hence this.
                await trio_asyncio.aio_as_trio(_close_asyncpg_pool)(
                    pool._asyncpg_pool, CLOSE_TIMEOUT
                )


def _state_columns(transitions: Sequence[AlertTransition]) -> tuple[list[Any], ...] | None:
    # The upsert's columns: the last transition of each (rule, symbol); None when none.
    pairs = last_per_alert(transitions)
    if not pairs:
        return None
    return (
        [t.rule_id for t, _ in pairs],
        [t.symbol for t, _ in pairs],
        [t.state for t, _ in pairs],
        [t.started_at for t, _ in pairs],
        [t.at for t, _ in pairs],
        [t.fire_count for t, _ in pairs],
        [t.value for t, _ in pairs],
        _labels_json(t.labels for t, _ in pairs),
        [notified_at for _, notified_at in pairs],
        [t.severity for t, _ in pairs],
        [no_nul(t.message) for t, _ in pairs],
    )


def _event_columns(transitions: Sequence[AlertTransition]) -> tuple[list[Any], ...]:
    # The events' columns, in order.
    ts = transitions
    return (
        [t.rule_id for t in ts],
        [t.symbol for t in ts],
        [t.state for t in ts],
        [t.previous_state for t in ts],
        [t.value for t in ts],
        [t.at for t in ts],
        [t.started_at for t in ts],
        [t.fire_count for t in ts],
        [t.repeat for t in ts],
        [t.severity for t in ts],
        [no_nul(t.message) for t in ts],
        _labels_json(t.labels for t in ts),
    )


def _log_columns(logs: Sequence[DispatchLog]) -> tuple[list[Any], ...]:
    return (
        [log.rule_id for log in logs],
        [log.symbol for log in logs],
        [log.sink for log in logs],
        [log.status for log in logs],
        [log.attempt for log in logs],
        [log.latency_ms for log in logs],
        [None if log.error is None else no_nul(log.error) for log in logs],
        [log.at for log in logs],
        [log.state for log in logs],
    )
