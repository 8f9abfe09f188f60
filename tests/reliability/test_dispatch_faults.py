"""Dispatch faults under load: the webhook answers 500, times out, hangs, or refuses
connections. Deliveries are retried with backoff, the circuit breaker opens and later lets a
trial through, and evaluation does not notice: with the fault on and the breaker open, every
frame the exchange wrote is evaluated (a condition, waited for: no speed threshold, which
belongs to the load test). The rates and queue times of a healthy phase and of the faulty
one are kept in the row's detail."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import trio

from oraculo_trio.observe.metrics import LATENCY_BUCKETS
from oraculo_trio.store.opening import open_store
from tests.reliability.conftest import Mode
from tests.reliability.rig import Rig, check, loaded_service, sample, until
from tests.reliability.webhook import Webhook

BOUNDS = (*LATENCY_BUCKETS, math.inf)


class Phase:
    """Counters at the start of a phase; :meth:`end` gives its rates and queue time."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.started = trio.current_time()
        self.evaluated = self._evaluated()
        self.counts = self._counts()

    def _evaluated(self) -> float:
        return sum(
            sample(self.rig.metrics, "oraculo_alerts_messages_evaluated_total", stream=s)
            for s in ("depth", "trade")
        )

    def _counts(self) -> list[int]:
        queue_time = self.rig.metrics.queue_time
        return [
            sum(c) for c in zip(*(queue_time[s].counts for s in ("depth", "trade")), strict=True)
        ]

    def end(self) -> dict[str, float]:
        """``evaluated_per_s`` and ``queue_time_p99_s`` (a histogram bucket's upper bound)."""
        seconds = trio.current_time() - self.started
        counts = [now - before for now, before in zip(self._counts(), self.counts, strict=True)]
        total = sum(counts)
        running = 0
        p99 = math.nan
        for bound, count in zip(BOUNDS, counts, strict=True):
            running += count
            if total and running >= 0.99 * total:
                p99 = bound
                break
        return {
            "evaluated_per_s": (self._evaluated() - self.evaluated) / seconds,
            "queue_time_p99_s": p99,
        }


def breaker_drops(rig: Rig) -> float:
    return sample(rig.metrics, "oraculo_dispatch_dropped_total", reason="breaker_open")


@pytest.mark.parametrize("fault", ["error", "slow", "hang", "refuse"])
async def test_a_failing_webhook_never_slows_evaluation(
    tmp_path: Path, mode: Mode, scenario, nursery: trio.Nursery, fault: str
) -> None:
    names = {"error": "500", "slow": "timeout", "hang": "hang", "refuse": "refused"}
    figures = scenario(f"dispatch/webhook-{names[fault]}")
    timeout = mode.pick(0.3, 2.0)
    webhook = await nursery.start(Webhook(slow_delay=2 * timeout).serve)
    overrides: dict[str, dict[str, Any]] = {
        "dispatch": {
            "sinks": ["webhook"],
            "webhook_url": webhook.url,
            "webhook_timeout": timeout,
            "webhook_retries": 2,
            "webhook_backoff": 0.05,
            "webhook_concurrency": 4,
            "webhook_breaker_failures": 5,
            "webhook_breaker_cooldown": mode.pick(0.5, 5.0),
        }
    }
    with trio.fail_after(mode.pick(40, 240)):
        async with loaded_service(tmp_path, mode.rate, overrides=overrides) as rig:
            await webhook.wait_delivered(4)
            baseline = Phase(rig)
            await rig.wait_received(mode.count(300, 4000))  # a healthy phase
            healthy = baseline.end()
            await webhook.set_mode(fault)
            failing = Phase(rig)
            # The fault bites: deliveries fail until the breaker opens...
            await until(lambda: breaker_drops(rig) > 0)
            # ... and meanwhile evaluation is not held up: everything written so far,
            # and everything written until then, with the fault still on.
            await rig.wait_processed()
            await rig.wait_received(mode.count(300, 4000))
            await rig.wait_processed()
            faulty = failing.end()
            await webhook.set_mode("ok")
            delivered = len(webhook.delivered)
            recovered_at = trio.current_time()
            await webhook.wait_delivered(delivered + 1)
            figures.recovery_s = trio.current_time() - recovered_at
            await rig.wait_transitions(4)
        result = await check(rig, figures, faults=0)
    async with open_store(rig.database_url, statement_timeout=10) as store:
        logs = await store.fetch_dispatch_logs()
    routed = sample(rig.metrics, "oraculo_stage_messages_in_total", stage="dispatch")
    overflow = sample(rig.metrics, "oraculo_dispatch_dropped_total", reason="overflow")
    # Faults: failed delivery attempts; messages: notifications.
    figures.faults = sum(1 for log in logs if log["status"] == "failed")
    figures.messages = int(routed + overflow)
    figures.counts = "notifications"
    figures.detail.update(
        healthy=healthy,
        faulty=faulty,
        retries=sum(1 for log in logs if log["attempt"] > 1),
        breaker_drops=int(breaker_drops(rig)),
        notifications=int(routed + overflow),
    )
    # Every transition stored (each one the trades written imply, check() showed) reached
    # the dispatcher, or was counted as dropped on the way: the dispatch counters against
    # the rows in the store, not against the counter the store check itself used.
    assert routed + overflow == result.stored
    # Retried with backoff, then the breaker opened.
    assert any(log["status"] == "failed" and log["attempt"] > 1 for log in logs)
    assert breaker_drops(rig) > 0
