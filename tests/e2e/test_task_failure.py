"""A task that fails for good stops the service: counted, logged with its traceback, and
the process exits non-zero, never a silent death.

The fault is real: the database refuses every alert event (a trigger raises), which the
store reports as a StoreError a retry cannot fix, so the store writer (a task without a
restart policy) fails as soon as the first alert is written.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
from pathlib import Path

import pytest
import trio

from oraculo_trio.errors import StoreError
from oraculo_trio.mockexchange import (
    ExchangeSettings,
    MockExchange,
    RandomWalkMarket,
    synthetic_symbols,
)
from oraculo_trio.pipeline.rules_source import load_rule_file
from oraculo_trio.pipeline.service import run_service
from oraculo_trio.settings import load_settings
from oraculo_trio.store.opening import open_store
from oraculo_trio.testing.processes import service_process
from tests.e2e.test_shutdown import config

REFUSAL = "alert_events refuses new rows"


async def refusing_database(path: Path) -> None:
    """A migrated SQLite store whose ``alert_events`` table refuses every insert."""
    async with open_store(f"sqlite:///{path}", statement_timeout=5):
        pass
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TRIGGER refuse_events BEFORE INSERT ON alert_events "
            f"BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END"
        )
    conn.close()


def loaded_market() -> tuple[list[str], RandomWalkMarket]:
    symbols = synthetic_symbols(4)
    return symbols, RandomWalkMarket(symbols, rate_per_s=500, trade_ratio=0.5, seed=3)


async def test_the_cli_exits_non_zero_with_the_traceback_when_a_task_fails(
    tmp_path: Path,
) -> None:
    await refusing_database(tmp_path / "alerts.db")
    symbols, market = loaded_market()
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            exchange = await nursery.start(
                MockExchange(market, ExchangeSettings(ping_interval=None)).serve
            )
            async with service_process(config(tmp_path, exchange.ws_url, symbols)) as service:
                returncode = await service.wait()
                await service.wait_output()
            nursery.cancel_scope.cancel()
    stderr = service.stderr.text
    assert returncode == 1, stderr[-3000:]
    assert "task store_writer failed: StoreError" in stderr
    assert "Traceback (most recent call last)" in stderr
    assert REFUSAL in stderr
    last = stderr.rstrip().splitlines()[-1]
    assert last.startswith("oraculo-trio: error: insert_alert_events failed on SQLite"), last


async def test_the_failure_is_counted_and_ends_run_service(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await refusing_database(tmp_path / "alerts.db")
    symbols, market = loaded_market()
    with trio.fail_after(30), pytest.RaisesGroup(StoreError, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            exchange = await nursery.start(
                MockExchange(market, ExchangeSettings(ping_interval=None)).serve
            )
            cfg = config(tmp_path, exchange.ws_url, symbols)
            settings = load_settings(cfg, environ={})
            rules = load_rule_file(tmp_path / "rules.toml")
            handle = await nursery.start(
                functools.partial(run_service, settings, rules, sinks=[], handle_signals=False)
            )
            await handle.stopped.wait()  # the store writer fails at the first alert
    metrics = handle.metrics.inner
    assert metrics.get_sample_value("oraculo_task_exceptions_total", {"task": "store_writer"}) == 1
    assert metrics.get_sample_value("oraculo_last_exception_timestamp_seconds") > 0
    [record] = [
        r
        for r in caplog.records
        if r.name == "oraculo_trio.observe.supervise" and r.levelno == logging.ERROR
    ]
    assert "task store_writer failed: StoreError" in record.getMessage()
    assert record.exc_info is not None
