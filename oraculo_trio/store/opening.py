"""Open the store a ``database.url`` names: SQLite or PostgreSQL, migrated.

Apart from :mod:`oraculo_trio.store.base` because it picks an implementation, and each
implementation imports the contract from ``base``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from oraculo_trio.errors import ConfigError
from oraculo_trio.store.base import Store, parse_store_url

if TYPE_CHECKING:
    from oraculo_trio.observe.metrics import ServiceMetrics


@asynccontextmanager
async def open_store(
    url: str,
    *,
    statement_timeout: float,
    metrics: ServiceMetrics | None = None,
    apply_migrations: bool = True,
) -> AsyncIterator[Store]:
    """Open the store ``url`` names, migrate it, and close it on exit.

    Args:
        url: ``database.url`` (see :func:`parse_store_url`).
        statement_timeout: seconds one statement may take (``database.statement_timeout``):
            the SQLite busy timeout and VM deadline; PostgreSQL's server-side
            ``statement_timeout`` and a ``trio.fail_after`` around each call.
        metrics: the service's metrics; per-statement ``oraculo_db_*`` series are observed
            here, by the store, so pass the same object the writer gets.
        apply_migrations: apply pending migrations on open (the CLI's ``migrate`` passes
            False and calls :meth:`Store.migrate` itself to report the versions).

    Yields:
        The open :class:`Store`.

    Raises:
        ConfigError: bad URL or timeout (names the key).
        StoreUnavailable: the database cannot be reached or opened.
        StoreError: a migration failed in a way a retry will not fix.

    Cancellation: safe at any point; closing is shielded and bounded.
    """
    if not statement_timeout > 0:
        raise ConfigError(
            f"database.statement_timeout: {statement_timeout!r} must be a number of seconds > 0"
        )
    dialect, target = parse_store_url(url)
    if dialect == "sqlite":
        from oraculo_trio.store.sqlite import open_sqlite_store

        manager = open_sqlite_store(target, statement_timeout=statement_timeout, metrics=metrics)
    else:
        # Imported lazily: triopg and trio-asyncio stay unloaded unless PostgreSQL is used.
        from oraculo_trio.store.postgres import open_postgres_store

        manager = open_postgres_store(target, statement_timeout=statement_timeout, metrics=metrics)
    async with manager as store:
        if apply_migrations:
            await store.migrate()
        yield store
