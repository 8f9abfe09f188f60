"""The embedded store: stdlib ``sqlite3`` driven from one worker thread at a time.

One connection, used only inside ``trio.to_thread.run_sync`` under a
``CapacityLimiter(1)`` (:attr:`SqliteStore.limiter`, exported as limiter ``"store"``): the
limiter serialises every call, so ``check_same_thread=False`` is safe although Trio may
pick a different worker thread each time. WAL journal, ``synchronous=NORMAL`` (a crash may
lose the last commits, never corrupt the file); one transaction per batch.

``statement_timeout`` bounds a statement twice: as the busy timeout (waiting for another
connection's lock) and as a deadline checked by a progress handler while the VM runs.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from oraculo_trio.core.alerts import AlertTransition
from oraculo_trio.errors import StoreError, StoreUnavailable
from oraculo_trio.store.base import (
    AlertRow,
    DispatchLog,
    StatementMeter,
    decode_labels,
    encode_labels_many,
    last_per_alert,
)
from oraculo_trio.store.migrations import (
    SCHEMA_MIGRATIONS_DDL,
    load_migrations,
    pending_migrations,
)
from oraculo_trio.store.sqlite_queries import SqliteQueries, rollback

if TYPE_CHECKING:
    from oraculo_trio.observe.metrics import ServiceMetrics

LOGGER = logging.getLogger("oraculo_trio.store.sqlite")

T = TypeVar("T")

LIMITER_NAME = "store"

MIGRATE_TIMEOUT = 300.0
"""Seconds a migration may run (a batch statement gets ``statement_timeout``)."""

# The progress handler runs every N SQLite VM instructions (~a few µs of work).
_PROGRESS_STEPS = 1000

_UPSERT_RULE_ALERTS = """
INSERT INTO rule_alerts (rule_id, symbol, state, started_at, last_change, fire_count,
                         last_value, labels, last_notified_at, severity, message)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (rule_id, symbol) DO UPDATE SET
    state = excluded.state,
    severity = excluded.severity,
    message = excluded.message,
    started_at = excluded.started_at,
    last_change = excluded.last_change,
    fire_count = excluded.fire_count,
    last_value = excluded.last_value,
    labels = excluded.labels,
    last_notified_at = COALESCE(excluded.last_notified_at, rule_alerts.last_notified_at)
"""

_INSERT_ALERT_EVENTS = """
INSERT INTO alert_events (rule_id, symbol, state, previous_state, value, at, started_at,
                          fire_count, repeat, severity, message, labels)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT DO NOTHING
"""

_INSERT_DISPATCH_LOGS = """
INSERT INTO dispatch_logs (rule_id, symbol, sink, status, attempt, latency_ms, error, at, state)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

_SELECT_ALERT_STATES = """
SELECT rule_id, symbol, state, started_at, last_change, fire_count, last_value, labels,
       last_notified_at, severity, message
FROM rule_alerts ORDER BY rule_id, symbol
"""


class SqliteStore(SqliteQueries):
    """A :class:`~oraculo_trio.store.base.Store` in one SQLite file. Open it with
    :func:`open_sqlite_store` (or :func:`~oraculo_trio.store.base.open_store`).

    Attributes:
        path: the database file (``:memory:`` for an in-memory database).
        limiter: the ``CapacityLimiter(1)`` every call runs under; its statistics are the
            ``oraculo_to_thread_executor_*{limiter="store"}`` series.
        limiter_name: ``"store"``.
    """

    dialect = "sqlite"
    limiter_name = LIMITER_NAME

    def __init__(
        self,
        path: str,
        *,
        statement_timeout: float,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self.path = path
        self.statement_timeout = statement_timeout
        self.limiter = trio.CapacityLimiter(1)
        self._meter = StatementMeter(metrics)
        self._conn: sqlite3.Connection | None = None
        # (st_dev, st_ino) of the file the connection writes to; None in memory.
        self._file_id: tuple[int, int] | None = None
        # Read by the progress handler in the worker thread; written only under the limiter.
        self._deadline = math.inf

    # --- lifecycle (used by open_sqlite_store) ---

    async def _connect(self) -> None:
        try:
            self._conn = await trio.to_thread.run_sync(self._connect_sync, limiter=self.limiter)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open SQLite database {self.path!r}: {exc}") from exc
        except OSError as exc:
            raise StoreError(f"cannot create the directory of {self.path!r}: {exc}") from exc

    def _connect_sync(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            parent = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(parent, exist_ok=True)
        conn = self._open_sync()
        self._file_id = self._stat_file()
        return conn

    def _stat_file(self) -> tuple[int, int] | None:
        if self.path == ":memory:":
            return None
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None
        return stat.st_dev, stat.st_ino

    def _same_file(self, conn: sqlite3.Connection) -> sqlite3.Connection:
        """``conn``, or a new connection if the database file was removed or replaced.

        An open SQLite file that is removed (``rm``, a clean-up job) keeps taking writes,
        into a file nobody will ever open again: every alert stored since would be lost at
        the next start. Checked before each statement (one ``stat``): a removed file is
        recreated with everything the old one holds (SQLite's backup API copies it from the
        open connection); a file put in its place is used from now on.
        """
        if self._file_id is None or self._stat_file() == self._file_id:
            return conn
        replaced = os.path.exists(self.path)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        fresh = self._open_sync()
        try:
            if not replaced:
                conn.backup(fresh)
        except BaseException:
            fresh.close()
            raise
        with suppress(sqlite3.Error):
            conn.close()
        self._conn = fresh
        self._file_id = self._stat_file()
        LOGGER.error(
            "SQLite database %s was %s while open: %s",
            self.path,
            "replaced" if replaced else "removed",
            "writing to the new file from now on"
            if replaced
            else "recreated it with everything stored so far",
        )
        return fresh

    def _open_sync(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per batch.
        conn = sqlite3.connect(
            self.path,
            timeout=self.statement_timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.set_progress_handler(self._past_deadline, _PROGRESS_STEPS)
        except BaseException:
            conn.close()
            raise
        return conn

    def _past_deadline(self) -> bool:
        return time.monotonic() > self._deadline

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            # Shielded: the file must be closed (WAL checkpoint) even when we are cancelled.
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(conn.close, limiter=self.limiter)

    # --- running statements ---

    async def _run(
        self,
        op: str | None,
        work: Callable[[sqlite3.Connection], T],
        *,
        rows: int = 0,
        count_rows: Callable[[T], int] | None = None,
        time_limit: float | None = None,
        running: list[str] | None = None,
    ) -> T:
        """Run ``work(conn)`` in the worker thread; meter it under ``op`` (None: not metered)
        with ``rows`` written, or ``count_rows(result)``.

        With ``running`` (several statements in one transaction: ``work`` keeps the one it
        runs in ``running[0]`` and the caller meters each that succeeded), a failure is
        metered under the statement that failed, and a success not at all.

        Not cancellable while the statement runs (at most ``time_limit``, by default
        ``statement_timeout``, plus the busy timeout).
        """
        timeout = self.statement_timeout if time_limit is None else time_limit
        if self._conn is None:
            raise StoreError(f"SQLite store {self.path!r} is closed")

        def in_thread() -> tuple[T, float]:
            # The connection is read here, in the worker, not when the call was made: a call
            # that waited for the worker behind one that recreated a removed file would
            # otherwise get the connection that one closed.
            conn = self._conn
            if conn is None:
                raise sqlite3.ProgrammingError("the store was closed")
            current = self._same_file(conn)
            self._deadline = time.monotonic() + timeout
            started = time.perf_counter()
            try:
                return work(current), (time.perf_counter() - started) * 1000.0
            finally:
                self._deadline = math.inf

        try:
            result, ms = await trio.to_thread.run_sync(in_thread, limiter=self.limiter)
        except (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError) as exc:
            if running is not None:
                op = running[0]
            if op is not None:
                self._meter.failed(op, timeout=False)
            raise StoreError(f"{op or 'query'} failed on SQLite {self.path!r}: {exc}") from exc
        except sqlite3.Error as exc:
            # Locked, busy, interrupted by the deadline, disk full, read-only, no such table
            # (until someone migrates): all may pass, so the writer keeps the batch and retries.
            text = str(exc).lower()
            timeout = "locked" in text or "busy" in text or "interrupted" in text
            if running is not None:
                op = running[0]
            if op is not None:
                self._meter.failed(op, timeout=timeout)
            raise StoreUnavailable(
                f"{op or 'query'} failed on SQLite {self.path!r}: {exc}"
            ) from exc
        if op is not None and running is None:
            self._meter.succeeded(op, ms, count_rows(result) if count_rows else rows)
        return result

    async def _write_many(self, op: str, sql: str, rows: list[tuple[Any, ...]]) -> None:
        await self._write_together([(op, sql, rows)])

    async def _write_together(self, statements: list[tuple[str, str, list[Any]]]) -> None:
        # Each (op, sql, rows) in turn, all in one transaction; each metered under its op
        # (the commit with the last one).
        statements = [statement for statement in statements if statement[2]]
        if not statements:
            return
        running = [statements[0][0]]
        took: list[float] = []

        def work(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for index, (op, sql, rows) in enumerate(statements, 1):
                    running[0] = op
                    started = time.perf_counter()
                    conn.executemany(sql, rows)
                    if index == len(statements):
                        conn.execute("COMMIT")
                    took.append((time.perf_counter() - started) * 1000.0)
            except BaseException:
                rollback(conn)
                raise

        await self._run(None, work, running=running)
        for (op, _, rows), ms in zip(statements, took, strict=True):
            self._meter.succeeded(op, ms, len(rows))

    # --- the Store protocol ---

    async def upsert_rule_alerts(self, transitions: Sequence[AlertTransition]) -> None:
        """Upsert the current state of each (rule, symbol), last transition wins.

        Args:
            transitions: in the order they happened.

        Raises:
            StoreUnavailable: the database is locked, slow or failing (retry).
            StoreError: a retry will not help.

        Cancellation: the statement runs to completion (at most ``statement_timeout``).
        """
        await self._write_many("upsert_rule_alert", _UPSERT_RULE_ALERTS, _state_rows(transitions))

    async def insert_alert_events(self, transitions: Sequence[AlertTransition]) -> None:
        """Append transitions to ``alert_events`` in order; an event already stored is skipped.

        Raises:
            StoreUnavailable: retry. StoreError: a retry will not help.

        Cancellation: the statement runs to completion (at most ``statement_timeout``).
        """
        rows = _event_rows(transitions)
        await self._write_many("insert_alert_events", _INSERT_ALERT_EVENTS, rows)

    async def record_transitions(
        self, transitions: Sequence[AlertTransition], logs: Sequence[DispatchLog] = ()
    ) -> None:
        """Append the events of ``transitions``, write the alert states they leave and append
        ``logs``, in one transaction: after a crash the store holds all or none of them.

        Raises:
            StoreUnavailable: retry (nothing was written). StoreError: a retry will not help.

        Cancellation: the statements run to completion (at most ``statement_timeout``).
        """
        await self._write_together(
            [
                ("upsert_rule_alert", _UPSERT_RULE_ALERTS, _state_rows(transitions)),
                ("insert_alert_events", _INSERT_ALERT_EVENTS, _event_rows(transitions)),
                ("insert_dispatch_logs", _INSERT_DISPATCH_LOGS, _log_rows(logs)),
            ]
        )

    async def insert_dispatch_logs(self, logs: Sequence[DispatchLog]) -> None:
        """Append delivery attempts to ``dispatch_logs`` in order.

        Raises:
            StoreUnavailable: retry. StoreError: a retry will not help.

        Cancellation: the statement runs to completion (at most ``statement_timeout``).
        """
        await self._write_many("insert_dispatch_logs", _INSERT_DISPATCH_LOGS, _log_rows(logs))

    async def load_alert_states(self) -> list[AlertRow]:
        """Every ``rule_alerts`` row, ordered by (rule_id, symbol).

        Raises:
            StoreUnavailable: retry. StoreError: a retry will not help.

        Cancellation: the query runs to completion (at most ``statement_timeout``).
        """
        rows = await self._run(None, lambda conn: conn.execute(_SELECT_ALERT_STATES).fetchall())
        return [
            AlertRow(
                rule_id=r[0],
                symbol=r[1],
                state=r[2],
                started_at=r[3],
                last_change=r[4],
                fire_count=r[5],
                last_value=r[6],
                labels=decode_labels(r[7]),
                last_notified_at=r[8],
                severity=r[9],
                message=r[10],
            )
            for r in rows
        ]

    async def ping(self) -> None:
        """Run ``SELECT 1``.

        Raises:
            StoreUnavailable: the database cannot answer.

        Cancellation: the query runs to completion (at most ``statement_timeout``).
        """
        await self._run("ping", lambda conn: conn.execute("SELECT 1").fetchone())

    async def migrate(self) -> list[int]:
        """Apply pending migrations, each in its own ``BEGIN IMMEDIATE`` transaction.

        Returns:
            The versions applied by this call, in order ([] when up to date).

        Raises:
            StoreUnavailable: the database is locked or failing (retry).
            StoreError: a migration is broken.

        Cancellation: runs to completion once started (migrations are short).
        """
        available = load_migrations(self.dialect)

        def work(conn: sqlite3.Connection) -> list[int]:
            conn.execute(SCHEMA_MIGRATIONS_DDL[self.dialect])
            applied = [row[0] for row in conn.execute("SELECT version FROM schema_migrations")]
            done = []
            for migration in pending_migrations(available, applied, dialect=self.dialect):
                # executescript() commits first, so the BEGIN is part of the script; the
                # bookkeeping row then joins the same transaction.
                try:
                    conn.executescript("BEGIN IMMEDIATE;\n" + migration.sql)
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, applied_at)"
                        " VALUES (?, ?, ?)",
                        (migration.version, migration.name, time.time()),
                    )
                    conn.execute("COMMIT")
                except BaseException:
                    rollback(conn)
                    raise
                done.append(migration.version)
            return done

        # Migrations may legitimately take longer than a batch statement.
        applied = await self._run(
            "migrate",
            work,
            count_rows=len,  # as PostgreSQL's: the migrations applied
            time_limit=max(self.statement_timeout, MIGRATE_TIMEOUT),
        )
        if applied:
            LOGGER.info("SQLite %s: applied migrations %s", self.path, applied)
        return applied


@asynccontextmanager
async def open_sqlite_store(
    path: str,
    *,
    statement_timeout: float,
    metrics: ServiceMetrics | None = None,
) -> AsyncIterator[SqliteStore]:
    """Open (creating the file and its directory) a :class:`SqliteStore`; close it on exit.

    Migrations are not applied here (:func:`~oraculo_trio.store.base.open_store` does).

    Raises:
        StoreUnavailable: the file cannot be opened.
        StoreError: its directory cannot be created.

    Cancellation: closing is shielded (a checkpoint of the WAL, milliseconds).
    """
    store = SqliteStore(path, statement_timeout=statement_timeout, metrics=metrics)
    await store._connect()
    try:
        yield store
    finally:
        await store._close()


def _state_rows(transitions: Sequence[AlertTransition]) -> list[tuple[Any, ...]]:
    # The upsert's rows: the last transition of each (rule, symbol).
    pairs = last_per_alert(transitions)
    labels = encode_labels_many(t.labels for t, _ in pairs)
    return [
        (
            t.rule_id,
            t.symbol,
            t.state,
            t.started_at,
            t.at,
            t.fire_count,
            t.value,
            labels_json,
            notified_at,
            t.severity,
            t.message,
        )
        for (t, notified_at), labels_json in zip(pairs, labels, strict=True)
    ]


def _event_rows(transitions: Sequence[AlertTransition]) -> list[tuple[Any, ...]]:
    # The events' rows, in order.
    labels = encode_labels_many(t.labels for t in transitions)
    return [
        (
            t.rule_id,
            t.symbol,
            t.state,
            t.previous_state,
            t.value,
            t.at,
            t.started_at,
            t.fire_count,
            1 if t.repeat else 0,
            t.severity,
            t.message,
            labels_json,
        )
        for t, labels_json in zip(transitions, labels, strict=True)
    ]


def _log_rows(logs: Sequence[DispatchLog]) -> list[tuple[Any, ...]]:
    # The dispatch logs' rows, in order.
    return [
        (
            log.rule_id,
            log.symbol,
            log.sink,
            log.status,
            log.attempt,
            log.latency_ms,
            log.error,
            log.at,
            log.state,
        )
        for log in logs
    ]
