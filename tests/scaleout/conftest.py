"""Fixtures of the scale-out tests: the store tests' fresh PostgreSQL database per test."""

from tests.store.conftest import pg_database_url, pg_server

__all__ = ["pg_database_url", "pg_server"]
