"""A real Prometheus scrapes the service under load.

Every PromQL expression the repository ships is evaluated through Prometheus's HTTP API: the
dashboard's (template variables replaced by the running service's values), the alerting
rules' (as Prometheus loaded them) and the runbook's CPU and GIL queries. The lag, stale-drop
and dump alerts are made to fire for real: the Trio loop is blocked with ``time.sleep`` and
the exchange sends trades whose event time is 30 s old.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import attrs
import pytest
import trio

from oraculo_trio.core.rules import parse_rules
from oraculo_trio.mockexchange import Frame, RandomWalkMarket, synthetic_symbols
from oraculo_trio.pipeline.service import ServiceHandle
from oraculo_trio.testing.net import fetch
from oraculo_trio.testing.service import RecordingSink
from tests.observe.prometheus_testing import (
    DASHBOARD,
    EXPECTED_PROMTOOL_FINDINGS,
    JOB,
    Prometheus,
    PrometheusError,
    dashboard_queries,
    promtool_findings,
    run_prometheus,
    runbook_queries,
    substitute,
    without_comparison,
)
from tests.pipeline.helpers import running_service
from tests.services import require_tool

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

RULES = {
    "rule": [
        {
            "id": "wide-spread",
            "kind": "spread_above_bps",
            "symbols": ["*"],
            "params": {"bps": 0.001},
        }
    ]
}
MUST_FIRE = {
    "OraculoEventLoopLagHigh",
    "OraculoEventLoopLagSpike",
    "OraculoStaleDrops",
    "OraculoStackDumped",
}
STALE_SKEW = 30.0
"""Seconds the exchange's event times are pushed into the past while stale data is wanted."""


@attrs.define(eq=False)
class SkewableMarket:
    """A market whose event times (``E``, ``T``) can be moved into the past on demand."""

    inner: RandomWalkMarket
    skew: float = 0.0

    @property
    def symbols(self) -> tuple[str, ...]:
        return self.inner.symbols

    def tick(self, now: float, dt: float) -> Iterable[Frame]:
        return self.inner.tick(now - self.skew, dt)


def stale_drops(handle: ServiceHandle) -> float:
    value = handle.metrics.inner.get_sample_value(
        "oraculo_alerts_queue_dropped_total", {"stream": "trade", "reason": "stale_drop"}
    )
    return value or 0.0


async def wait_until(predicate: Callable[[], bool]) -> None:
    while True:
        if predicate():
            return
        await trio.sleep(0.05)  # the service's counters have no wake-up event


async def make_alerts_fire(
    prometheus: Prometheus, market: SkewableMarket, handle: ServiceHandle
) -> set[str]:
    """Block the loop and feed stale trades until the alerts that must fire do."""
    market.skew = STALE_SKEW
    firing: set[str] = set()
    for _ in range(3):
        # The exchange runs in this loop too: it is blocked as well, then sends old trades.
        time.sleep(1.5)  # noqa: ASYNC251 - blocking the loop is the fault under test
        await wait_until(lambda: stale_drops(handle) > 0)
        with trio.move_on_after(6):
            while not firing >= MUST_FIRE:
                firing = await prometheus.firing()
                await trio.sleep(0.25)  # Prometheus evaluates every second: poll it
        if firing >= MUST_FIRE:
            break
    market.skew = 0.0
    return firing


async def evaluate_until_every_one_has_series(
    prometheus: Prometheus, queries: dict[str, str]
) -> dict[str, str]:
    """Evaluate every query (all must parse); return those still without a series after
    Prometheus has had a few more scrapes to see series that appeared late."""
    missing = dict(queries)
    with trio.move_on_after(10):
        while missing:
            for where, expr in list(missing.items()):
                try:
                    series = await prometheus.query(expr)
                except PrometheusError as exc:
                    raise AssertionError(f"{where}: {expr!r} fails: {exc}") from None
                if series:
                    del missing[where]
            if missing:
                await trio.sleep(1.0)  # the next scrape may bring the series
    return missing


async def test_every_shipped_query_runs_on_a_real_prometheus_and_alerts_fire(
    tmp_path: Path,
) -> None:
    require_tool("prometheus")
    market = SkewableMarket(
        RandomWalkMarket(synthetic_symbols(8), rate_per_s=2000, trade_ratio=0.3, seed=4)
    )
    with trio.fail_after(120):
        async with (
            running_service(
                tmp_path,
                market,
                parse_rules(RULES),
                # A sink, so the dispatch panels (queue, breaker) have their series.
                sinks=[RecordingSink()],
                observe={"dump_after": 1.0},
                pipeline={"shards": 2},
            ) as (exchange, handle),
            trio.open_nursery() as nursery,
        ):
            host, port = handle.http_address
            prometheus: Prometheus = await nursery.start(run_prometheus, tmp_path, f"{host}:{port}")
            await prometheus.wait_for(f'count_over_time(up{{job="{JOB}"}}[1m])', 2)

            firing = await make_alerts_fire(prometheus, market, handle)
            assert firing >= MUST_FIRE, (firing, prometheus.log.read_text())

            # A reconnect, so the feed-reconnect series exist (they are not pre-created).
            await exchange.drop_connections()
            await handle.wait_connected()
            await prometheus.wait_for("count_over_time(oraculo_feed_reconnects_total[1m])", 2)

            # The dashboard, with its variables set to the running service's values.
            dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
            shards = "|".join(str(i) for i in range(handle.settings.pipeline.shards))
            variables = {
                "service": handle.settings.service.name,
                # "All": a single process has no worker label, and .* matches its absence.
                "instance": ".*",
                "worker": ".*",
                "shard": shards,
                "__rate_interval": "1m",
                "__interval": "5s",
                "__range": "1h",
            }
            queries = {
                where: substitute(expr, variables) for where, expr in dashboard_queries(dashboard)
            }
            # The rules, as Prometheus loaded them.
            groups = (await prometheus.api("rules"))["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            assert all(rule["type"] == "alerting" for rule in rules)
            unhealthy = [(r["name"], r["lastError"]) for r in rules if r["health"] != "ok"]
            assert not unhealthy
            for rule in rules:
                queries[f"rule {rule['name']}"] = without_comparison(rule["query"])
            for index, expr in enumerate(runbook_queries()):
                queries[f"runbook query {index + 1}"] = expr

            missing = await evaluate_until_every_one_has_series(prometheus, queries)
            assert not missing, missing
            assert len(rules) == 16
            assert len(queries) > 60

            scrape = await trio.to_thread.run_sync(fetch, f"http://{host}:{port}/metrics")
            findings = await trio.to_thread.run_sync(promtool_findings, scrape.body)
            assert sorted(findings) == sorted(EXPECTED_PROMTOOL_FINDINGS)
            nursery.cancel_scope.cancel()
