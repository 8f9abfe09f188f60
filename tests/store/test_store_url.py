"""URLs, DSN masking, records, and failures to open a store (no database server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from oraculo_trio.errors import ConfigError, StoreError, StoreUnavailable
from oraculo_trio.store import DispatchLog, mask_dsn, open_store, parse_store_url
from oraculo_trio.testing.net import closed_port


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///data/alerts.db", ("sqlite", "data/alerts.db")),
        ("sqlite:////var/lib/oraculo/alerts.db", ("sqlite", "/var/lib/oraculo/alerts.db")),
        ("sqlite://", ("sqlite", ":memory:")),
        ("sqlite:///:memory:", ("sqlite", ":memory:")),
        ("alerts.db", ("sqlite", "alerts.db")),
        ("/tmp/x/alerts.db", ("sqlite", "/tmp/x/alerts.db")),
        ("postgresql://u:p@db:5432/alerts", ("postgresql", "postgresql://u:p@db:5432/alerts")),
        ("postgres://u@db/alerts", ("postgresql", "postgres://u@db/alerts")),
    ],
)
def test_parse_store_url(url: str, expected: tuple[str, str]) -> None:
    assert parse_store_url(url) == expected


@pytest.mark.parametrize(
    "url",
    ["", "   ", "mysql://root:hunter2@db/alerts", "sqlite:/x.db", "sqlite:///", "redis://x"],
)
def test_bad_urls_name_the_key_and_hide_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_store_url(url)
    assert "database.url" in str(caught.value)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://user:s3cr%40t@db:5432/x", "postgresql://user:***@db:5432/x"),
        ("postgresql://user@db/x", "postgresql://user@db/x"),
        ("postgresql://db/x?password=s3cret&sslmode=require", "postgresql://db/x?password=***&sslmode=require"),
        ("host=db user=u password=s3cret dbname=x", "host=db user=u password=*** dbname=x"),
        ("postgresql://u:p@[::1]:5432/x", "postgresql://u:***@[::1]:5432/x"),
        ("sqlite:///alerts.db", "sqlite:///alerts.db"),
    ],
)  # fmt: skip
def test_mask_dsn(url: str, masked: str) -> None:
    assert mask_dsn(url) == masked


def test_dispatch_log_status_is_checked() -> None:
    with pytest.raises(ValueError, match="status"):
        DispatchLog("r", "S", "log", "lost", 1, 1.0, None, 0.0, "firing")


async def test_open_store_rejects_a_bad_timeout() -> None:
    with pytest.raises(ConfigError, match=r"database\.statement_timeout"):
        async with open_store("sqlite://", statement_timeout=0):
            pass


async def test_unreachable_postgres_is_unavailable_and_the_password_stays_hidden() -> None:
    with closed_port() as port:
        url = f"postgresql://oraculo:hunter2@127.0.0.1:{port}/alerts"
        with trio.fail_after(10), pytest.raises(StoreUnavailable) as caught:
            async with open_store(url, statement_timeout=2.0):
                pass
    assert "hunter2" not in str(caught.value)
    assert "oraculo:***@127.0.0.1" in str(caught.value)


async def test_sqlite_creates_its_directory(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "alerts.db"
    async with open_store(f"sqlite:///{path}", statement_timeout=2.0) as store:
        await store.ping()
    assert path.exists()


async def test_sqlite_in_memory_works() -> None:
    async with open_store("sqlite://", statement_timeout=2.0) as store:
        assert await store.migrate() == []
        await store.ping()


async def test_sqlite_directory_that_cannot_be_created_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError) as caught:
        async with open_store(f"sqlite:///{blocker}/alerts.db", statement_timeout=2.0):
            pass
    assert str(blocker) in str(caught.value)
