"""The observability pieces wired together the way the service's root nursery does it."""

from __future__ import annotations

from pathlib import Path

import trio
from prometheus_client.parser import text_string_to_metric_families

from oraculo_trio.observe.health import Readiness
from oraculo_trio.observe.http import serve_http
from oraculo_trio.observe.instrument import LagMonitor
from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.observe.process import run_process_stats
from oraculo_trio.observe.supervise import RestartPolicy, start
from oraculo_trio.observe.watchdog import Watchdog
from oraculo_trio.testing.net import fetch


async def test_everything_runs_under_one_nursery_and_is_scraped(tmp_path: Path) -> None:
    metrics = ServiceMetrics(limiters=("store",))
    readiness = Readiness(metrics, components=("feed", "store", "rules"))
    limiters = {"store": trio.CapacityLimiter(2)}
    restart = RestartPolicy()

    with (
        trio.fail_after(10),
        Watchdog(metrics, dump_dir=tmp_path) as watchdog,
        serve_http("127.0.0.1", 0, metrics, readiness, watchdog) as (host, port),
    ):
        async with trio.open_nursery() as nursery:
            await start(nursery, "watchdog", watchdog.run, metrics=metrics, restart=restart)
            await start(
                nursery, "lag_monitor", LagMonitor().run, metrics, metrics=metrics, restart=restart
            )
            await start(
                nursery,
                "process_stats",
                run_process_stats,
                metrics,
                limiters,
                metrics=metrics,
                restart=restart,
            )
            scrape = await trio.to_thread.run_sync(fetch, f"http://{host}:{port}/metrics")
            health = await trio.to_thread.run_sync(fetch, f"http://{host}:{port}/healthz")
            ready = await trio.to_thread.run_sync(fetch, f"http://{host}:{port}/readyz")
            nursery.cancel_scope.cancel()

    assert health.status == 200
    assert ready.status == 503
    samples = [
        sample
        for family in text_string_to_metric_families(scrape.body)
        for sample in family.samples
    ]
    thread_names = {
        s.labels["thread_name"] for s in samples if s.name == "oraculo_thread_cpu_seconds"
    }
    assert {"MainThread", "oraculo-watchdog", "oraculo-http"} <= thread_names
    living = [s.value for s in samples if s.name == "oraculo_trio_tasks_living"]
    assert living[0] >= 4
    max_workers = [s.value for s in samples if s.name == "oraculo_to_thread_executor_max_workers"]
    assert max_workers == [2.0]
    assert all(s.labels["service"] == "alerts" for s in samples)
