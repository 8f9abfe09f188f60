"""``oraculo-trio run --workers 2`` end to end, as a user runs it: both workers process their
half of the partitions, ``/metrics`` shows each with its ``worker`` label, a worker killed
with SIGKILL is restarted and resumes its alerts from the store, SIGTERM drains them all."""

from __future__ import annotations

import os
import re
import signal
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import trio
from prometheus_client.parser import text_string_to_metric_families

from oraculo_trio.core.sharding import partition_of
from oraculo_trio.mockexchange import ExchangeSettings, MockExchange
from oraculo_trio.store import open_store
from oraculo_trio.testing.processes import ServiceProcess, service_process
from tests.observe.prometheus_testing import EXPECTED_PROMTOOL_FINDINGS, promtool_findings
from tests.pipeline.helpers import ManualMarket
from tests.scaleout.cluster import (
    each_stream_read_once,
    instance_config,
    one_symbol_per_partition,
    poll,
    push_trades,
)


def samples(exposition: str, name: str) -> dict[str, float]:
    """``{worker: value}`` of the samples named ``name`` (summed over other labels)."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name:
                worker = sample.labels.get("worker", "")
                found[worker] = found.get(worker, 0.0) + sample.value
    return found


def supervisor(
    tmp_path: Path, exchange: MockExchange
) -> AbstractAsyncContextManager[ServiceProcess]:
    """``oraculo-trio run --workers 2`` on a SQLite store; the workers log to its stderr."""
    config = instance_config(
        tmp_path,
        ws_url=exchange.ws_url,
        database_url=f"sqlite:///{tmp_path / 'alerts.db'}",
        symbols=exchange.market.symbols,
        mode="single",
    )
    return service_process(config, workers=2, name="supervisor")


async def test_two_workers_process_restart_and_drain(tmp_path: Path) -> None:
    symbols = one_symbol_per_partition()
    halves = {str(w): sum(1 for s in symbols if partition_of(s) % 2 == w) for w in (0, 1)}
    market = ManualMarket(symbols)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            exchange = await nursery.start(
                MockExchange(market, ExchangeSettings(tick=0.02, ping_interval=None)).serve
            )
            async with supervisor(tmp_path, exchange) as service:
                log = service.stderr

                async def evaluated(expected: dict[str, float]) -> bool:
                    body = await service.metrics()
                    return samples(body, "oraculo_alerts_messages_evaluated_total") == expected

                await poll(lambda: each_stream_read_once(exchange, symbols))
                push_trades(market, 10)
                await poll(lambda: evaluated(halves))
                assert (await service.get("/readyz")).status == 200
                body = await service.metrics()
                assert samples(body, "oraculo_cluster_partitions_owned") == {"0": 32, "1": 32}
                assert samples(body, "oraculo_worker_up") == {"0": 1, "1": 1}
                findings = await trio.to_thread.run_sync(promtool_findings, body)
                assert sorted(findings) == sorted(EXPECTED_PROMTOOL_FINDINGS)

                pid = int((await log.first(re.compile(r"worker 1 started \(pid (\d+)\)")))[1])
                os.kill(pid, signal.SIGKILL)
                await log.wait_until(lambda: log.count("worker 1 ready") == 2)
                await poll(lambda: each_stream_read_once(exchange, symbols))
                # The restarted worker resolves the alerts its predecessor raised.
                push_trades(market, 11)
                await poll(lambda: evaluated({"0": 2 * halves["0"], "1": halves["1"]}))
                body = await service.metrics()
                assert samples(body, "oraculo_worker_restarts_total") == {"0": 0, "1": 1}

                returncode = await service.stop(signal.SIGTERM)
            nursery.cancel_scope.cancel()
    text = service.stderr.text
    assert returncode == 0, text[-3000:]
    assert "worker 1 exited with SIGKILL" in text
    # Each worker drained on the one SIGTERM it was sent (none took it for a second one).
    assert text.count("stopped (code 0)") == 2 and "exiting at once" not in text
    async with open_store(f"sqlite:///{tmp_path / 'alerts.db'}", statement_timeout=5) as store:
        events = await store.fetch_alert_events()
    per_symbol: dict[str, list[tuple[str, int]]] = {}
    for event in events:
        per_symbol.setdefault(event["symbol"], []).append((event["state"], event["fire_count"]))
    assert per_symbol == {s: [("firing", 1), ("resolved", 1)] for s in symbols}


async def test_workers_drain_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    market = ManualMarket(one_symbol_per_partition(8))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            exchange = await nursery.start(
                MockExchange(market, ExchangeSettings(tick=0.02, ping_interval=None)).serve
            )
            async with supervisor(tmp_path, exchange) as service:
                log = service.stderr
                await log.wait_until(lambda: log.count("ready, metrics on") == 2)
                service.send_signal(signal.SIGKILL)
                # No orphan keeps running: each worker sees its supervisor go and drains.
                await log.wait_until(lambda: log.count("service stopped; accounting") == 2)
            nursery.cancel_scope.cancel()
    assert service.stderr.count("the supervisor is gone: shutting down") == 2
