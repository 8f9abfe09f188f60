"""Database faults under load: PostgreSQL (a private cluster, never the shared server)
stopped, its connections killed, its statements slowed by a lock or failing; SQLite locked
by another process and its file removed.

In every case the writer keeps what it holds and retries, the bounded store channel fills
and the pipeline waits for it (``oraculo_backpressure_waits_total{channel="store"}``),
nothing is dropped, and once the database is back everything is written, in order. What
"everything" is comes from the exchange: every trade it wrote (it drops, and reports, what
our waiting trade connection could not take) implies its marker firings (expected.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import trio

from oraculo_trio.mockexchange import ExchangeSettings
from oraculo_trio.testing.postgres import admin_sql
from tests.postgres import PgCluster
from tests.reliability.conftest import Mode
from tests.reliability.rig import Rig, check, loaded_service, reconnects, sample, until

# While our trade feed waits (backpressure), the exchange keeps publishing to the other
# connections (a blocking mock exchange would starve the depth feed until it stalls) and
# drops what our trade connection cannot take, as a real exchange eventually would.
EXCHANGE = ExchangeSettings(tick=0.05, ping_interval=None, overflow="drop", record_written=True)


def store_overrides(mode: Mode) -> dict[str, dict[str, Any]]:
    """A small store channel (so an outage fills it) and short statement timeouts."""
    return {
        "database": {
            "statement_timeout": 1.0,
            "channel_capacity": 16,
            "batch_max": 16,
            "batch_window_ms": 5.0,
        },
        # Small shard channels, so the push-back reaches the trade feed within the outage;
        # the feed waiting for room is not a stall (it must not reconnect). Trades that
        # waited out a long outage are still evaluated (not stale): each one written implies
        # its transitions.
        "pipeline": {"channel_capacity": 64, "stale_after": 600.0},
        "feed": {"stall_timeout": mode.pick(1.0, 5.0)},
        "observe": {"store_check_interval": 0.5},
    }


@asynccontextmanager
async def db_service(tmp_path: Path, mode: Mode, database_url: str) -> AsyncIterator[Rig]:
    """The loaded service (rig.py) on ``database_url``, set up as these scenarios need; the
    backlog the fault left in the sockets is read before it stops."""
    async with loaded_service(
        tmp_path,
        mode.rate,
        database_url=database_url,
        overrides=store_overrides(mode),
        exchange_settings=EXCHANGE,
    ) as rig:
        yield rig
        await rig.wait_caught_up()


def backpressure(rig: Rig) -> int:
    return int(sample(rig.metrics, "oraculo_backpressure_waits_total", channel="store"))


def pushed_back(rig: Rig, figures: Any) -> None:
    """The push-back went all the way to the trade feed, which waited: no feed reconnected."""
    waits = int(sample(rig.metrics, "oraculo_backpressure_waits_total", channel="trade_shard"))
    figures.detail["trade_feed_waits"] = waits
    assert waits > 0, "the store's push-back never reached the trade feed"
    assert reconnects(rig.metrics, "stall") == 0


def pending(rig: Rig) -> int:
    return int(sample(rig.metrics, "oraculo_store_pending_rows"))


async def hold_for(seconds: float) -> None:
    """Keep the fault on (and the load running) for ``seconds``: the sleep is the fault."""
    await trio.sleep(seconds)


def written(rig: Rig) -> float:
    return sample(rig.metrics, "oraculo_stage_messages_out_total", stage="store")


async def wait_flushed(rig: Rig) -> None:
    """Wait until the writer holds nothing and the store channel is empty."""

    def flushed() -> bool:
        taken = sample(rig.metrics, "oraculo_stage_messages_in_total", stage="store")
        return pending(rig) == 0 and written(rig) == taken > 0

    await until(flushed)


async def outage(rig: Rig, figures: Any, seconds: float, start: Callable, stop: Callable) -> None:
    """Run ``start`` (blocking, in a thread), hold ``seconds``, ``stop``; fill figures."""
    await rig.wait_transitions(4)
    before = backpressure(rig)
    await trio.to_thread.run_sync(start)
    await hold_for(seconds)
    held = pending(rig)
    await trio.to_thread.run_sync(stop)
    ended_at = trio.current_time()
    await wait_flushed(rig)
    figures.recovery_s = trio.current_time() - ended_at
    figures.detail["held_rows_at_recovery"] = held
    figures.detail["backpressure_waits"] = backpressure(rig) - before
    await rig.wait_transitions(4)


async def while_locked(rig: Rig, figures: Any, hold: Callable[[threading.Event], None]) -> None:
    """Under load, run ``hold(locked)`` in a thread (it takes a lock, sets ``locked``, keeps
    it a while, lets go); then measure the recovery and the push-back into ``figures``."""
    await rig.wait_transitions(4)
    before = backpressure(rig)
    locked = threading.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, hold, locked)
        await trio.to_thread.run_sync(locked.wait)
    released_at = trio.current_time()
    await wait_flushed(rig)
    figures.recovery_s = trio.current_time() - released_at
    figures.detail["backpressure_waits"] = backpressure(rig) - before
    await rig.wait_transitions(4)


def cluster_of(url: str) -> str:
    """The private cluster's admin URL (its postgres database) for a database URL."""
    return url.rsplit("/", 1)[0] + "/postgres"


@pytest.mark.postgres
async def test_postgres_stopped_under_load(
    tmp_path: Path, mode: Mode, scenario, private_cluster: PgCluster, private_database: str
) -> None:
    figures = scenario("database/postgres-stopped")
    seconds = mode.pick(3.0, 30.0)
    with trio.fail_after(seconds + mode.pick(60, 120)):
        async with db_service(tmp_path, mode, private_database) as rig:
            await outage(rig, figures, seconds, private_cluster.stop, private_cluster.start)
        await check(rig, figures, faults=1)
    pushed_back(rig, figures)
    figures.detail["outage_s"] = seconds
    assert figures.detail["backpressure_waits"] > 0
    assert figures.detail["held_rows_at_recovery"] > 0


@pytest.mark.postgres
async def test_killed_connections_are_replaced(
    tmp_path: Path, mode: Mode, scenario, private_database: str
) -> None:
    figures = scenario("database/connection-killed")
    faults = mode.count(3, 30)
    kill = (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'oraculo-trio' AND datname = $1"
    )
    name = private_database.rsplit("/", 1)[1]
    killed = 0
    recoveries = []
    with trio.fail_after(mode.pick(60, 240)):
        async with db_service(tmp_path, mode, private_database) as rig:
            for _ in range(faults):
                await rig.wait_transitions(4)
                before = written(rig)
                rows = await trio.to_thread.run_sync(
                    lambda: admin_sql(cluster_of(private_database), kill, args=(name,))
                )
                killed += sum(1 for row in rows if row[0])
                killed_at = trio.current_time()
                await until(lambda before=before: written(rig) > before, 0.005)
                recoveries.append(trio.current_time() - killed_at)
            await rig.wait_transitions(4)
        await check(rig, figures, faults=killed)
    figures.recovery_s = max(recoveries)
    assert killed >= faults


def _hold_lock(url: str, seconds: float, locked: threading.Event) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            async with conn.transaction():
                await conn.execute("LOCK TABLE alert_events IN ACCESS EXCLUSIVE MODE")
                locked.set()
                await asyncio.sleep(seconds)
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.mark.postgres
async def test_statements_slowed_by_a_held_lock(
    tmp_path: Path, mode: Mode, scenario, private_database: str
) -> None:
    figures = scenario("database/slow-statements-lock")
    seconds = mode.pick(3.0, 20.0)
    with trio.fail_after(seconds + mode.pick(60, 120)):
        async with db_service(tmp_path, mode, private_database) as rig:
            await while_locked(
                rig, figures, functools.partial(_hold_lock, private_database, seconds)
            )
        await check(rig, figures, faults=1)
    pushed_back(rig, figures)
    timeouts = sample(rig.metrics, "oraculo_db_timeouts_total", op="insert_alert_events")
    figures.detail["statement_timeouts"] = int(timeouts)
    assert timeouts > 0
    assert figures.detail["backpressure_waits"] > 0


FAILING_TRIGGER = (
    "CREATE FUNCTION oraculo_fail() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'injected by the reliability suite'; END $$",
    "CREATE TRIGGER oraculo_fail BEFORE INSERT ON alert_events "
    "FOR EACH STATEMENT EXECUTE FUNCTION oraculo_fail()",
)
NO_TRIGGER = ("DROP TRIGGER oraculo_fail ON alert_events", "DROP FUNCTION oraculo_fail()")


@pytest.mark.postgres
async def test_failing_statements_are_retried(
    tmp_path: Path, mode: Mode, scenario, private_database: str
) -> None:
    figures = scenario("database/statement-errors")
    seconds = mode.pick(2.0, 15.0)
    faults = [
        # A trigger that raises (SQLSTATE P0001): every insert of events fails.
        (FAILING_TRIGGER, NO_TRIGGER),
        # The table gone (undefined_table, 42P01) until someone puts it back.
        (
            ("ALTER TABLE alert_events RENAME TO alert_events_away",),
            ("ALTER TABLE alert_events_away RENAME TO alert_events",),
        ),
    ]
    recoveries = []
    with trio.fail_after(len(faults) * (seconds + mode.pick(30, 60))):
        async with db_service(tmp_path, mode, private_database) as rig:
            for on, off in faults:
                await outage(
                    rig,
                    figures,
                    seconds,
                    lambda on=on: admin_sql(private_database, *on),
                    lambda off=off: admin_sql(private_database, *off),
                )
                recoveries.append(figures.recovery_s)
        await check(rig, figures, faults=len(faults))
    pushed_back(rig, figures)
    figures.recovery_s = max(recoveries)
    assert sample(rig.metrics, "oraculo_db_errors_total", op="insert_alert_events") > 0


def _lock_sqlite(path: str, seconds: float, locked: threading.Event) -> None:
    conn = sqlite3.connect(path, timeout=10, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        locked.set()
        threading.Event().wait(seconds)
        conn.execute("ROLLBACK")
    finally:
        conn.close()


async def test_sqlite_locked_by_another_process(tmp_path: Path, mode: Mode, scenario) -> None:
    figures = scenario("database/sqlite-locked")
    seconds = mode.pick(3.0, 20.0)
    path = tmp_path / "alerts.db"
    with trio.fail_after(seconds + mode.pick(60, 120)):
        async with db_service(tmp_path, mode, f"sqlite:///{path}") as rig:
            await while_locked(rig, figures, functools.partial(_lock_sqlite, str(path), seconds))
        await check(rig, figures, faults=1)
    pushed_back(rig, figures)
    assert (
        sample(rig.metrics, "oraculo_db_timeouts_total", op="insert_alert_events")
        + sample(rig.metrics, "oraculo_db_timeouts_total", op="upsert_rule_alert")
        > 0
    )
    assert figures.detail["backpressure_waits"] > 0


async def test_sqlite_file_removed_while_running(tmp_path: Path, mode: Mode, scenario) -> None:
    figures = scenario("database/sqlite-file-removed")
    path = tmp_path / "alerts.db"
    with trio.fail_after(mode.pick(60, 180)):
        async with db_service(tmp_path, mode, f"sqlite:///{path}") as rig:
            await rig.wait_transitions(10)
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(f"{path}{suffix}")
            removed_at = trio.current_time()
            await rig.wait_transitions(4)
            await until(path.exists)
            figures.recovery_s = trio.current_time() - removed_at
            await hold_for(mode.pick(1.0, 10.0))
            await rig.wait_transitions(4)
        # Everything is in the file at the path, from before the removal too.
        await check(rig, figures, faults=1)
