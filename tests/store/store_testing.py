"""Helpers shared by the store tests (fixtures are in conftest.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import trio
import trio_asyncio
import triopg

from oraculo_trio.core.alerts import AlertTransition
from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.store import DispatchLog, parse_store_url


def transition(
    i: int,
    *,
    rule_id: str = "spread",
    symbol: str = "BTCUSDT",
    state: str = "firing",
    previous_state: str = "pending",
    fire_count: int = 1,
    notify: bool = True,
    labels: dict[str, str] | None = None,
    repeat: bool = False,
) -> AlertTransition:
    """A transition whose time (and so identity) is set by ``i``."""
    return AlertTransition(
        rule_id=rule_id,
        symbol=symbol,
        state=state,
        previous_state=previous_state,
        value=10.0 + i,
        at=1_700_000_000.0 + i,
        started_at=None if state == "pending" else 1_700_000_000.0,
        fire_count=fire_count,
        severity="critical",
        message=f"event {i}",
        labels={"team": "desk"} if labels is None else labels,
        repeat=repeat,
        notify=notify,
    )


def dispatch_log(i: int, *, status: str = "delivered", error: str | None = None) -> DispatchLog:
    return DispatchLog(
        rule_id="spread",
        symbol="BTCUSDT",
        sink="webhook:ops",
        status=status,
        attempt=1 + i % 3,
        latency_ms=1.5 + i,
        error=error,
        at=1_700_000_000.0 + i,
        state="firing",
    )


async def wait_until(predicate: Callable[[], bool], *, poll: float = 0.005) -> None:
    """Wait for ``predicate()`` to hold; callers guard with ``fail_after``.

    Metrics and channel statistics have no event to wait on, so the condition is polled.
    """
    while not predicate():  # noqa: ASYNC110
        await trio.sleep(poll)


def sample(metrics: ServiceMetrics, name: str, **labels: str) -> float:
    """A sample's current value (0 when absent), read through the registry."""
    value = metrics.inner.get_sample_value(name, labels)
    return 0.0 if value is None else value


def histogram_count(child) -> int:  # a FastHistogramChild
    """Observations of a FastHistogram child."""
    return sum(child.counts)


@asynccontextmanager
async def write_lock(url: str) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """Hold a lock that blocks every store write (a real outage), until ``release()``.

    SQLite: another connection's ``BEGIN EXCLUSIVE``. PostgreSQL: another session's
    ``LOCK TABLE ... ACCESS EXCLUSIVE`` in an open transaction.
    """
    dialect, target = parse_store_url(url)
    if dialect == "sqlite":
        conn = sqlite3.connect(target, isolation_level=None, timeout=10)
        conn.execute("BEGIN EXCLUSIVE")

        async def release_sqlite() -> None:
            if conn.in_transaction:
                conn.execute("ROLLBACK")

        try:
            yield release_sqlite
        finally:
            await release_sqlite()
            conn.close()
        return
    async with trio_asyncio.open_loop(), triopg.connect(target) as pg:
        await pg.execute("BEGIN")
        await pg.execute(
            "LOCK TABLE rule_alerts, alert_events, dispatch_logs IN ACCESS EXCLUSIVE MODE"
        )
        held = [True]

        async def release_pg() -> None:
            if held[0]:
                held[0] = False
                await pg.execute("ROLLBACK")

        try:
            yield release_pg
        finally:
            await release_pg()
