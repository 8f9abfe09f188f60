"""Fixtures of the store tests: both stores, real databases, no mocks.

- ``store_url``: parametrized, a SQLite file in ``tmp_path`` or a FRESH PostgreSQL database
  (``pg_database_url``, tests/conftest.py). PostgreSQL cases are marked ``postgres``; an
  unreachable server skips them, or fails them when ``ORACULO_REQUIRE_SERVICES=1``.
- ``store``: the store of ``store_url``, opened (and migrated) with ``metrics``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.store import Store, open_store

STATEMENT_TIMEOUT = 2.0


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
