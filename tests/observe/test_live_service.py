"""A running service as an operator sees it: the metric contract on /metrics, and
``oraculo-trio health`` answering 0 while it is healthy and non-zero once the feed or the
store is down."""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from oraculo_trio.core.events import STREAMS
from oraculo_trio.core.rules import parse_rules
from oraculo_trio.mockexchange import (
    ExchangeSettings,
    MockExchange,
    RandomWalkMarket,
    synthetic_symbols,
)
from oraculo_trio.observe.metrics import DB_OPS, DROP_REASONS, LAG_SPIKE_THRESHOLDS
from oraculo_trio.pipeline.service import TASK_NAMES, ServiceHandle, run_service
from oraculo_trio.testing.config import service_environ
from oraculo_trio.testing.net import fetch
from oraculo_trio.testing.postgres import admin_sql
from oraculo_trio.testing.processes import cli_argv
from tests.pipeline.helpers import pipeline_settings, running_service

SHARDS = 2
# A rule that loads but never fires: the store sees no writes, only the health pings.
QUIET_RULES = {
    "rule": [
        {"id": "never", "kind": "crossing", "symbols": ["*"], "params": {"level": 1e9}},
    ]
}
# The metric contract (docs/architecture.md): type, and the label values every series exists
# for from start-up (None: the values depend on the process, at least one series).
CONTRACT: dict[str, tuple[str, dict[str, set[str] | None]]] = {
    "oraculo_event_loop_lag_seconds": ("gauge", {}),
    "oraculo_event_loop_lag_spikes": ("counter", {"threshold": set(LAG_SPIKE_THRESHOLDS)}),
    "oraculo_alerts_queue_time_seconds": ("histogram", {"stream": set(STREAMS)}),
    "oraculo_alerts_queue_time_latest_seconds": ("gauge", {"stream": set(STREAMS)}),
    "oraculo_alerts_queue_depth": (
        "gauge",
        {"stream": set(STREAMS), "shard": {str(i) for i in range(SHARDS)}},
    ),
    "oraculo_alerts_queue_dropped": (
        "counter",
        {"stream": set(STREAMS), "reason": set(DROP_REASONS)},
    ),
    "oraculo_db_insert_ms": ("histogram", {"op": set(DB_OPS)}),
    "oraculo_cpu_process_cores": ("gauge", {}),
    "oraculo_threads_total": ("gauge", {}),
    "oraculo_thread_cpu_seconds": ("gauge", {"thread_name": None, "native_id": None}),
    "oraculo_to_thread_executor_queue_depth": ("gauge", {"limiter": {"default", "store"}}),
    "oraculo_to_thread_executor_threads": ("gauge", {"limiter": {"default", "store"}}),
    "oraculo_to_thread_executor_max_workers": ("gauge", {"limiter": {"default", "store"}}),
    "oraculo_task_exceptions": ("counter", {"task": set(TASK_NAMES)}),
    "oraculo_last_exception_timestamp_seconds": ("gauge", {}),
    "oraculo_dumps": ("counter", {"reason": {"event_loop_lag"}}),
}


def quiet_market() -> RandomWalkMarket:
    return RandomWalkMarket(synthetic_symbols(4), rate_per_s=200, trade_ratio=0.5)


async def health(handle: ServiceHandle) -> tuple[int, str]:
    """``oraculo-trio health --url`` against ``handle``'s endpoint: (exit code, stdout)."""
    host, port = handle.http_address
    args = cli_argv("health", "--url", f"http://{host}:{port}", "--timeout", "5")
    result = await trio.run_process(args, capture_stdout=True, env=service_environ(), check=False)
    return result.returncode, result.stdout.decode()


async def wait_not_ready(handle: ServiceHandle, component: str) -> None:
    while True:
        ready, components = handle.readiness.snapshot()
        if not ready and not components[component]["ok"]:
            return
        await trio.sleep(0.05)  # readiness has no wake-up event


async def serve_until_cancelled(
    scope: trio.CancelScope, exchange: MockExchange, *, task_status: trio.TaskStatus
) -> None:
    with scope:
        await exchange.serve(task_status=task_status)


async def test_metric_contract_and_health_while_healthy_then_feed_down(tmp_path: Path) -> None:
    market = quiet_market()
    exchange_scope = trio.CancelScope()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            exchange = MockExchange(market, ExchangeSettings(tick=0.02, ping_interval=None))
            await nursery.start(serve_until_cancelled, exchange_scope, exchange)
            settings = pipeline_settings(
                tmp_path, exchange.ws_url, market.symbols, pipeline={"shards": SHARDS}
            )
            handle: ServiceHandle = await nursery.start(
                functools.partial(
                    run_service, settings, parse_rules(QUIET_RULES), handle_signals=False
                )
            )
            await handle.wait_connected()
            host, port = handle.http_address
            scrape = await trio.to_thread.run_sync(fetch, f"http://{host}:{port}/metrics")
            code, healthy = await health(handle)

            # The exchange goes away: connections close, reconnects are refused by the OS.
            exchange_scope.cancel()
            await wait_not_ready(handle, "feed")
            down_code, down = await health(handle)
            handle.request_shutdown()

    families = {f.name: f for f in text_string_to_metric_families(scrape.body)}
    for name, (kind, labels) in CONTRACT.items():
        family = families[name]
        assert family.type == kind, name
        samples = [s for s in family.samples if not s.name.endswith("_created")]
        assert samples, name
        assert all(s.labels["service"] == "alerts" for s in samples), name
        present = {tuple(s.labels.get(label) for label in labels) for s in samples}
        fixed = [values for values in labels.values() if values is not None]
        if len(fixed) == len(labels):
            assert present >= set(itertools.product(*fixed)), name
    # What the process holds and runs, and no prometheus_client _created series.
    for name in (
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "oraculo_build_info",
    ):
        assert families[name].samples, name
    assert "_created" not in scrape.body
    thread_names = {s.labels["thread_name"] for s in families["oraculo_thread_cpu_seconds"].samples}
    assert {"MainThread", "oraculo-watchdog", "oraculo-http"} <= thread_names

    assert code == 0, healthy
    assert healthy.startswith("HEALTHY")
    for part in ("scheduler lag:", "depth: received", "trade: received", "dropped:", "db insert"):
        assert part in healthy, part
    assert "feed connections: 2/2 connected" in healthy
    assert down_code == 1, down
    assert down.startswith("UNHEALTHY")
    assert "    not ready: feed: disconnected: " in down
    assert "feed connections: 0/2 connected" in down


async def test_health_cli_cannot_reach_a_service() -> None:
    with trio.fail_after(20):
        result = await trio.run_process(
            cli_argv("health", "--url", "http://127.0.0.1:9", "--timeout", "2"),
            capture_stdout=True,
            env=service_environ(),
            check=False,
        )
    assert result.returncode == 1
    assert result.stdout.decode().startswith("UNHEALTHY: cannot reach http://127.0.0.1:9")


@pytest.mark.postgres
async def test_health_turns_unhealthy_when_the_database_goes_away(
    tmp_path: Path, pg_server: str, pg_database_url: str
) -> None:
    with trio.fail_after(40):
        async with running_service(
            tmp_path,
            quiet_market(),
            parse_rules(QUIET_RULES),
            database={"url": pg_database_url, "statement_timeout": 2.0},
            observe={"store_check_interval": 0.2},
            service={"shutdown_grace": 2.0},
        ) as (_, handle):
            code, healthy = await health(handle)
            name = pg_database_url.rsplit("/", 1)[1]
            # A real outage: the database is dropped under the running service.
            await trio.to_thread.run_sync(
                admin_sql, pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
            )
            await wait_not_ready(handle, "store")
            down_code, down = await health(handle)

    assert code == 0, healthy
    assert down_code == 1, down
    assert "    not ready: store: ping failed: " in down
    assert "ping failed" in down
