"""Retention: ``alert_events`` and ``dispatch_logs`` keep ``database.retention`` of history.

Both tables take a row per transition and per delivery attempt, forever without this. The
task deletes rows older than the retention every ``database.prune_interval`` seconds, in
batches of ``database.prune_batch`` rows (oldest first), each its own short transaction,
with a pause between batches so the store writer is never held up for long. It counts
what it deleted (``oraculo_store_pruned_rows_total{table}``). ``rule_alerts`` is never
pruned: it keeps every alert's latest state, whatever its age.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from oraculo_trio.errors import StoreError
from oraculo_trio.store.base import Store

if TYPE_CHECKING:
    from oraculo_trio.observe.metrics import ServiceMetrics

LOGGER = logging.getLogger("oraculo_trio.store.retention")

BATCH_PAUSE = 0.05
"""Seconds between two batches: the writer's statements get the database meanwhile."""


async def prune_once(
    store: Store,
    before: float,
    batch: int,
    metrics: ServiceMetrics | None = None,
    *,
    pause: float = BATCH_PAUSE,
) -> dict[str, int]:
    """Delete every history row older than ``before``, ``batch`` rows at a time.

    Returns:
        The rows deleted, by table.

    Raises:
        StoreError: the store failed (what was deleted so far stays deleted).

    Cancellation: stops between batches (or aborts the running one).
    """
    total: dict[str, int] = {}
    while True:
        deleted = await store.prune(before, batch)
        for table, count in deleted.items():
            total[table] = total.get(table, 0) + count
            if metrics is not None and count:
                metrics.store_pruned[table].inc(count)
        if all(count < batch for count in deleted.values()):
            return total
        await trio.sleep(pause)


async def run_retention(
    store: Store,
    retention: float,
    interval: float,
    batch: int,
    metrics: ServiceMetrics | None = None,
    *,
    clock: Callable[[], float] = time.time,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Prune history older than ``retention`` seconds every ``interval`` seconds.

    A failing store is logged and tried again at the next round.

    Cancellation: stops between rounds or batches.
    """
    task_status.started()
    while True:
        try:
            pruned = await prune_once(store, clock() - retention, batch, metrics)
        except StoreError as exc:
            LOGGER.warning("retention: pruning failed, trying again in %g s: %s", interval, exc)
        else:
            if any(pruned.values()):
                LOGGER.info(
                    "retention: pruned %s (older than %g s)",
                    ", ".join(f"{count} {table}" for table, count in pruned.items()),
                    retention,
                )
        await trio.sleep(interval)
