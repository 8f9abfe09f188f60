"""Restarting PostgreSQL mid-run loses nothing (on a private cluster, never the shared one)."""

from __future__ import annotations

from functools import partial

import pytest
import trio

from oraculo_trio.core.alerts import AlertTransition
from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.store import StoreItem, open_store, run_store_writer
from tests.postgres import PgCluster
from tests.store.store_testing import sample, transition, wait_until

OUTAGE_SECONDS = 2.0


@pytest.mark.slow
@pytest.mark.postgres
async def test_restarting_postgres_mid_run_loses_nothing(
    private_cluster: PgCluster, private_database: str
) -> None:
    metrics = ServiceMetrics()
    sent: list[AlertTransition] = []
    send, receive = trio.open_memory_channel[StoreItem](64)
    stop_producing = trio.Event()

    def committed() -> float:
        return sample(metrics, "oraculo_stage_messages_out_total", stage="store")

    def failures() -> float:
        return sum(
            sample(metrics, "oraculo_db_errors_total", op=op)
            for op in ("upsert_rule_alert", "insert_alert_events")
        )

    async def produce() -> None:
        async with send:
            i = 0
            while not stop_producing.is_set():
                t = transition(
                    i,
                    rule_id=f"rule{i % 3}",
                    symbol=f"SYM{i % 11}",
                    state=("pending", "firing", "resolved")[i % 3],
                    fire_count=i,
                )
                await send.send(t)  # blocks while the store is down: backpressure
                sent.append(t)
                i += 1
                await trio.sleep(0.001)  # a steady trickle of alerts (the load shape)

    with trio.fail_after(60):
        async with open_store(private_database, statement_timeout=1.0, metrics=metrics) as store:
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    partial(
                        run_store_writer,
                        store,
                        receive,
                        metrics,
                        batch_max=50,
                        batch_window=0.02,
                        retry_initial=0.05,
                        retry_max=0.5,
                    )
                )
                nursery.start_soon(produce)
                await wait_until(lambda: committed() >= 200)

                await trio.to_thread.run_sync(private_cluster.stop)  # fast: connections are cut
                await wait_until(lambda: failures() >= 1)
                blocked_at = len(sent)
                await trio.sleep(OUTAGE_SECONDS)  # the outage itself
                # Producers were held back (bounded channel), not buffered without limit.
                assert len(sent) - blocked_at <= 64 + 50
                await trio.to_thread.run_sync(private_cluster.start)

                resumed_at = committed()
                await wait_until(lambda: committed() >= resumed_at + 200)
                stop_producing.set()
            # The producer closed its end; the writer flushed everything and returned.

            assert failures() >= 1
            assert sample(metrics, "oraculo_db_up") == 1
            assert committed() == len(sent)
            events = await store.fetch_alert_events()
            assert [(e["rule_id"], e["symbol"], e["at"]) for e in events] == [
                (t.rule_id, t.symbol, t.at) for t in sent
            ]
            latest: dict[tuple[str, str], AlertTransition] = {}
            for t in sent:
                latest[t.rule_id, t.symbol] = t
            rows = await store.load_alert_states()
            assert {
                (r.rule_id, r.symbol): (r.state, r.fire_count, r.last_change) for r in rows
            } == {key: (t.state, t.fire_count, t.at) for key, t in latest.items()}
