"""PostgreSQL chores of the test harness: statements on an admin connection, and fresh
databases that are dropped afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["admin_sql", "database_url", "fresh_database", "fresh_database_name"]

_NAME = re.compile(r"[a-z_][a-z0-9_]*")


def admin_sql(
    url: str, *statements: str, args: Sequence[Any] = (), timeout: float = 10.0
) -> list[Any]:
    """Run ``statements`` in turn on a connection of their own to ``url``.

    Blocking (asyncpg on an asyncio loop of its own): call it from a worker thread, or
    outside any Trio run (sync test fixtures). Each statement runs alone, outside a
    transaction block, so ``CREATE DATABASE`` and ``ALTER SYSTEM`` work.

    Args:
        url: a PostgreSQL URL.
        statements: SQL statements, each taking ``args`` as its ``$1...`` parameters.
        args: the parameters.
        timeout: seconds to connect.

    Returns:
        The rows of the last statement (asyncpg Records).

    Raises:
        OSError, asyncpg.PostgresError, asyncpg.InterfaceError: as asyncpg raises them.
    """
    import asyncpg

    async def run() -> list[Any]:
        conn = await asyncpg.connect(url, timeout=timeout)
        try:
            rows: list[Any] = []
            for statement in statements:
                rows = await conn.fetch(statement, *args)
            return rows
        finally:
            await conn.close()

    return asyncio.run(run())


def fresh_database_name(prefix: str = "oraculo_test") -> str:
    """``<prefix>_<12 hex digits>``: a database name no other run uses.

    Raises:
        ValueError: ``prefix`` is not a plain lower-case identifier.
    """
    if not _NAME.fullmatch(prefix):
        raise ValueError(f"prefix {prefix!r}: expected a lower-case SQL identifier")
    return f"{prefix}_{secrets.token_hex(6)}"


def database_url(server_url: str, name: str) -> str:
    """``server_url`` pointed at database ``name``."""
    return urlunsplit(urlsplit(server_url)._replace(path="/" + name))


@contextlib.contextmanager
def fresh_database(
    server_url: str, prefix: str = "oraculo_test", *, timeout: float = 10.0
) -> Iterator[str]:
    """A new, empty database on the server of ``server_url``, dropped (connections and
    all) when the block ends. Blocking, like :func:`admin_sql`.

    Args:
        server_url: an admin URL of the server (its database is only used to connect).
        prefix: the new database's name prefix (see :func:`fresh_database_name`).
        timeout: seconds to connect.

    Yields:
        The new database's URL.

    Raises:
        OSError, asyncpg.PostgresError, asyncpg.InterfaceError: the server refuses.
    """
    name = fresh_database_name(prefix)
    # An identifier cannot be a parameter; this one is built here and checked.
    admin_sql(server_url, f'CREATE DATABASE "{name}"', timeout=timeout)
    try:
        yield database_url(server_url, name)
    finally:
        admin_sql(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', timeout=timeout)
