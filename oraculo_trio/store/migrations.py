"""Versioned schema migrations: numbered SQL files per dialect.

``store/migrations/<dialect>/NNN_name.sql`` (``001_initial.sql``, ``002_...``) are applied
in version order, each in its own transaction together with its row in
``schema_migrations(version, name, applied_at)``, so a migration is either fully applied and
recorded or not at all. A migration file is never edited once released: add the next one.

This module only finds and orders the files and says what is pending; each store applies
them in its own dialect (:meth:`SqliteStore.migrate`, :meth:`PostgresStore.migrate`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from importlib import resources

import attrs

from oraculo_trio.errors import StoreError

LOGGER = logging.getLogger("oraculo_trio.store.migrations")

DIALECT_DIRS = {"sqlite": "sqlite", "postgresql": "postgres"}

_FILE_NAME = re.compile(r"^(\d{3,})_([a-z0-9_]+)\.sql$")

SCHEMA_MIGRATIONS_DDL = {
    "sqlite": (
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY,"
        " name TEXT NOT NULL,"
        " applied_at REAL NOT NULL)"
    ),
    "postgresql": (
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version integer PRIMARY KEY,"
        " name text NOT NULL,"
        " applied_at double precision NOT NULL)"
    ),
}
"""The bookkeeping table, created before anything else (it cannot be a migration itself)."""


@attrs.frozen
class Migration:
    """One migration file.

    Attributes:
        version: the number the file name starts with.
        name: the rest of the file name (``initial``).
        sql: the file's text, run as one script.
    """

    version: int
    name: str
    sql: str


def load_migrations(dialect: str) -> list[Migration]:
    """The migrations shipped for ``dialect`` (``"sqlite"`` or ``"postgresql"``), by version.

    Raises:
        StoreError: unknown dialect, a badly named file, or two files with one version.
    """
    try:
        folder = resources.files("oraculo_trio.store").joinpath("migrations", DIALECT_DIRS[dialect])
    except KeyError:
        raise StoreError(f"no migrations for dialect {dialect!r}") from None
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_NAME.match(entry.name)
        if match is None:
            raise StoreError(f"migration file {entry.name!r} ({dialect}) is not named NNN_name.sql")
        version = int(match.group(1))
        if version in found:
            raise StoreError(f"two {dialect} migrations have version {version}")
        found[version] = Migration(version, match.group(2), entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def pending_migrations(
    available: Iterable[Migration], applied: Iterable[int], *, dialect: str
) -> list[Migration]:
    """The migrations of ``available`` whose version is not in ``applied``, in order.

    A version applied in the database but unknown here (a newer release ran against it) is
    logged as a warning and otherwise left alone.
    """
    applied_set = set(applied)
    available = list(available)
    unknown = applied_set - {m.version for m in available}
    if unknown:
        LOGGER.warning(
            "%s database has migrations %s this release does not know (a newer release ran?)",
            dialect,
            sorted(unknown),
        )
    return [m for m in available if m.version not in applied_set]
