"""Fixtures of every test directory: PostgreSQL (tests/postgres.py).

- ``pg_server``: the admin URL of the shared test server (``ORACULO_TEST_DATABASE_URL``),
  once checked to answer.
- ``pg_database_url``: a fresh, empty database on it, dropped after the test.
- ``private_cluster``: a private cluster for the session, which tests may stop, restart and
  reconfigure (each leaves it running, or the next fresh database restarts it).
- ``private_database``: a fresh database on the private cluster, dropped after the test.

Where PostgreSQL is missing, these fixtures skip the test, or fail it when
``ORACULO_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from oraculo_trio.testing.postgres import fresh_database
from tests import postgres
from tests.postgres import PgCluster


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The admin URL of the shared test server, once checked to answer."""
    return postgres.checked_server()


@pytest.fixture
def pg_database_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty database on the shared server, dropped after the test."""
    with fresh_database(pg_server, timeout=postgres.ADMIN_TIMEOUT) as url:
        yield url


@pytest.fixture(scope="session")
def private_cluster() -> Iterator[PgCluster]:
    """A private PostgreSQL cluster (never the shared server), started; destroyed at the end."""
    with postgres.private_cluster() as cluster:
        yield cluster


@pytest.fixture
def private_database(private_cluster: PgCluster) -> Iterator[str]:
    """A fresh database on the private cluster; its URL. Dropped afterwards."""
    with postgres.private_database(private_cluster) as url:
        yield url
