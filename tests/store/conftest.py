"""Fixtures of the store tests: both stores, real databases, no mocks.

- ``store_url``: parametrized, a SQLite file in ``tmp_path`` or a FRESH PostgreSQL database
  (``oraculo_test_<random>``, dropped afterwards) on ``ORACULO_TEST_DATABASE_URL``
  (default ``postgresql://postgres@127.0.0.1:5432/postgres``). PostgreSQL cases are marked
  ``postgres``; an unreachable server skips them, or fails them when
  ``ORACULO_REQUIRE_SERVICES=1``.
- ``store``: the store of ``store_url``, opened (and migrated) with ``metrics``.
- ``pg_cluster``: a private cluster that a test may stop and restart (pg_cluster.py).
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from oraculo_trio.loadtest.configuration import admin_sql
from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.store import Store, open_store
from tests.store.pg_cluster import ClusterUnavailable, PgCluster

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
STATEMENT_TIMEOUT = 2.0


def pg_server_url() -> str:
    return os.environ.get("ORACULO_TEST_DATABASE_URL", DEFAULT_PG_URL)


def services_required() -> bool:
    return os.environ.get("ORACULO_REQUIRE_SERVICES") == "1"


def unavailable(reason: str) -> None:
    """Skip the test, or fail it when ORACULO_REQUIRE_SERVICES=1."""
    if services_required():
        pytest.fail(f"{reason} (and ORACULO_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


def _admin(url: str, *statements: str) -> None:
    # Admin work runs on plain asyncio, outside any Trio run (sync fixtures).
    admin_sql(url, *statements, timeout=5)


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The admin URL of the shared test server, once checked to answer."""
    url = pg_server_url()
    try:
        _admin(url, "SELECT 1")
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        parts = urlsplit(url)
        unavailable(
            f"PostgreSQL at {parts.hostname}:{parts.port} is not reachable "
            f"({type(exc).__name__}: {exc}); set ORACULO_TEST_DATABASE_URL"
        )
    return url


@pytest.fixture
def pg_database_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty database on the shared server, dropped after the test."""
    name = f"oraculo_test_{secrets.token_hex(6)}"
    # An identifier cannot be a parameter; this one is ours and checked.
    assert re.fullmatch(r"oraculo_test_[0-9a-f]{12}", name)
    _admin(pg_server, f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(pg_server)._replace(path="/" + name))
    finally:
        _admin(pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty database: SQLite in tmp_path, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/db/alerts.db"
    return request.getfixturevalue("pg_database_url")


@pytest.fixture
def metrics() -> ServiceMetrics:
    return ServiceMetrics()


@pytest.fixture
async def store(store_url: str, metrics: ServiceMetrics) -> AsyncIterator[Store]:
    async with open_store(store_url, statement_timeout=STATEMENT_TIMEOUT, metrics=metrics) as s:
        yield s


@pytest.fixture
def pg_cluster() -> Iterator[PgCluster]:
    """A private PostgreSQL cluster, started; destroyed after the test."""
    try:
        cluster = PgCluster()
    except ClusterUnavailable as exc:
        unavailable(f"cannot create a private PostgreSQL cluster: {exc}")
    try:
        cluster.create()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
