"""The store writer on real stores: batching, backpressure during an outage, final flush."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing

from oraculo_trio.core.alerts import AlertTransition
from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.store import Store, StoreItem, open_store, run_store_writer
from tests.store.store_testing import (
    dispatch_log,
    histogram_count,
    sample,
    transition,
    wait_until,
    write_lock,
)

# Short enough that a locked store fails fast and the writer retries often.
OUTAGE_TIMEOUT = 0.2
FAST_RETRY = {"retry_initial": 0.02, "retry_max": 0.1}


def many(n: int, *, symbols: int = 7) -> list[AlertTransition]:
    """``n`` distinct transitions over a few (rule, symbol) pairs, fire_count increasing."""
    return [
        transition(
            i, symbol=f"S{i % symbols}", fire_count=i, state="firing" if i % 2 else "pending"
        )
        for i in range(n)
    ]


def last_per_key(items: list[AlertTransition]) -> dict[tuple[str, str], AlertTransition]:
    latest = {}
    for t in items:
        latest[t.rule_id, t.symbol] = t
    return latest


async def assert_stored_exactly(store: Store, sent: list[AlertTransition]) -> None:
    events = await store.fetch_alert_events()
    assert [(e["rule_id"], e["symbol"], e["at"]) for e in events] == [
        (t.rule_id, t.symbol, t.at) for t in sent
    ]
    rows = {(r.rule_id, r.symbol): r for r in await store.load_alert_states()}
    expected = last_per_key(sent)
    assert rows.keys() == expected.keys()
    for key, t in expected.items():
        assert (rows[key].state, rows[key].fire_count, rows[key].last_change) == (
            t.state,
            t.fire_count,
            t.at,
        )


async def test_writes_in_batches(store: Store, metrics: ServiceMetrics) -> None:
    transitions = many(1000)
    logs = [dispatch_log(i) for i in range(10)]
    send, receive = trio.open_memory_channel[StoreItem](len(transitions) + len(logs))
    async with send:
        for item in [*transitions, *logs]:
            send.send_nowait(item)
    with trio.fail_after(20):
        # The channel is closed and full: the writer drains it and returns.
        await run_store_writer(store, receive, metrics, batch_max=500, batch_window=0.01)
    # 1010 items -> batches of 500, 500 and 10: two statements per table, not 1000.
    assert histogram_count(metrics.db_insert_ms["upsert_rule_alert"]) == 2
    assert histogram_count(metrics.db_insert_ms["insert_alert_events"]) == 2
    assert histogram_count(metrics.db_insert_ms["insert_dispatch_logs"]) == 1
    assert histogram_count(metrics.batch_size["store"]) == 3
    assert sample(metrics, "oraculo_db_rows_total", op="insert_alert_events") == 1000
    assert sample(metrics, "oraculo_db_rows_total", op="upsert_rule_alert") == 14  # 7 per batch
    assert sample(metrics, "oraculo_stage_messages_in_total", stage="store") == 1010
    assert sample(metrics, "oraculo_stage_messages_out_total", stage="store") == 1010
    assert sample(metrics, "oraculo_store_pending_rows") == 0
    await assert_stored_exactly(store, transitions)
    assert [row["at"] for row in await store.fetch_dispatch_logs()] == [log.at for log in logs]


async def test_waits_for_the_batch_window_then_writes_one_batch(
    store: Store, metrics: ServiceMetrics
) -> None:
    send, receive = trio.open_memory_channel[StoreItem](16)
    sent = many(6)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(run_store_writer, store, receive, metrics, batch_window=0.5)
            )
            async with send:
                for t in sent:
                    # Spread over the window, so each item needs the writer to wait for it.
                    await send.send(t)
                    await trio.sleep(0.01)
    assert histogram_count(metrics.db_insert_ms["insert_alert_events"]) == 1
    await assert_stored_exactly(store, sent)


def writes(metrics: ServiceMetrics) -> int:
    """Transactions the writer has committed (each writes the events table once)."""
    return histogram_count(metrics.db_insert_ms["insert_alert_events"])


@asynccontextmanager
async def interval_writer(
    store: Store, metrics: ServiceMetrics, interval: float, batch_max: int = 500
) -> AsyncIterator[tuple[trio.MemorySendChannel[StoreItem], float, float]]:
    """A writer with ``commit_interval``, its first row ``many(1)[0]`` already committed:
    yields the channel, when that row was sent and when its write was seen done (the write
    began between the two). The channel closes, and the writer ends, on exit."""
    send, receive = trio.open_memory_channel[StoreItem](16)
    writer = partial(
        run_store_writer,
        store,
        receive,
        metrics,
        batch_max=batch_max,
        batch_window=0.01,
        commit_interval=interval,
    )
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer)
            async with send:
                sent_at = trio.current_time()
                await send.send(many(1)[0])  # a first row after a quiet time: written at once
                await wait_until(lambda: writes(metrics) == 1)
                yield send, sent_at, trio.current_time()


async def assert_committed(
    store: Store, metrics: ServiceMetrics, sent: list[AlertTransition], transactions: int
) -> None:
    """``sent`` is stored, exactly, in that many transactions."""
    assert writes(metrics) == transactions
    await assert_stored_exactly(store, sent)


async def send_bursts(send: trio.MemorySendChannel[StoreItem], items: list[StoreItem]) -> None:
    """Each item its own burst: the writer has gone idle before the next arrives."""
    for item in items:
        await send.send(item)
        await trio.testing.wait_all_tasks_blocked()


async def test_a_steady_flow_is_committed_once_per_commit_interval(
    store: Store, metrics: ServiceMetrics
) -> None:
    interval = 1.0
    sent = many(5)
    async with interval_writer(store, metrics, interval) as (send, first_sent, _):
        for held in range(1, 5):
            await send_bursts(send, [sent[held]])
            # Taken and waiting for the interval: counted as pending, not written.
            assert sample(metrics, "oraculo_store_pending_rows") == held
        await wait_until(lambda: writes(metrics) == 2)
        second_written = trio.current_time()
    # The four later items went in one transaction, and not before the interval had passed.
    assert second_written - first_sent >= interval
    await assert_committed(store, metrics, sent, 2)


async def test_a_row_once_the_commit_interval_has_passed_is_written_at_once(
    store: Store, metrics: ServiceMetrics
) -> None:
    interval = 2.0
    sent = many(4)
    async with interval_writer(store, metrics, interval) as (send, _, first_written):
        await send_bursts(send, sent[1:3])
        # The behaviour under test is the interval itself: wait for it to pass.
        await trio.sleep_until(first_written + interval)
        assert writes(metrics) == 1
        await send.send(sent[3])
        await wait_until(lambda: writes(metrics) == 2)
        second_written = trio.current_time()
    # Written with the rows held, on its arrival (one interval after first_written): not
    # one interval later, as when a flow stops and no row comes to end the interval.
    assert second_written - first_written < 1.5 * interval
    await assert_committed(store, metrics, sent, 2)


async def test_full_batches_and_a_first_item_do_not_wait_for_the_commit_interval(
    store: Store, metrics: ServiceMetrics
) -> None:
    sent = many(9)
    # An interval far longer than the test may take: any write it delayed would time out
    # (the first row, after a quiet time, was written by interval_writer).
    async with interval_writer(store, metrics, 3600.0, batch_max=4) as (send, _, _):
        for t in sent[1:]:
            await send.send(t)
        await wait_until(lambda: writes(metrics) == 3)  # two full batches of 4
    await assert_committed(store, metrics, sent, 3)


async def test_outage_holds_the_batch_and_pushes_back_on_producers(
    store_url: str, metrics: ServiceMetrics
) -> None:
    capacity = 8
    sent = many(60)
    send, receive = trio.open_memory_channel[StoreItem](capacity)
    produced = trio.Event()

    async def produce() -> None:
        async with send:
            for t in sent:
                await send.send(t)
        produced.set()

    with trio.fail_after(30):
        async with open_store(
            store_url, statement_timeout=OUTAGE_TIMEOUT, metrics=metrics
        ) as store:
            async with trio.open_nursery() as nursery, write_lock(store_url) as release:
                await nursery.start(
                    partial(
                        run_store_writer,
                        store,
                        receive,
                        metrics,
                        batch_max=10,
                        batch_window=0.5,
                        **FAST_RETRY,
                    )
                )
                nursery.start_soon(produce)
                # The writer fails repeatedly, and the channel fills behind it.
                await wait_until(
                    lambda: (
                        sample(metrics, "oraculo_db_errors_total", op="upsert_rule_alert") >= 3
                        and send.statistics().tasks_waiting_send == 1
                    )
                )
                stats = send.statistics()
                assert stats.current_buffer_used == capacity
                # While failing, the writer took one batch and nothing more.
                taken = sample(metrics, "oraculo_stage_messages_in_total", stage="store")
                assert taken == 10
                assert sample(metrics, "oraculo_store_pending_rows") == 10
                assert sample(metrics, "oraculo_stage_messages_out_total", stage="store") == 0
                assert sample(metrics, "oraculo_db_timeouts_total", op="upsert_rule_alert") >= 3
                assert sample(metrics, "oraculo_db_up") == 0
                assert not produced.is_set()
                await release()
                # Released: everything flows, in order; the writer ends when producers do.
            assert produced.is_set()
            assert sample(metrics, "oraculo_db_up") == 1
            assert sample(metrics, "oraculo_stage_messages_out_total", stage="store") == 60
            await assert_stored_exactly(store, sent)


async def test_cancel_flushes_the_held_batch_and_the_channel(
    store_url: str, metrics: ServiceMetrics
) -> None:
    sent = many(30)
    send, receive = trio.open_memory_channel[StoreItem](64)
    for t in sent:
        send.send_nowait(t)  # producers still hold the channel open
    writer_scope = trio.CancelScope()
    writer_done = trio.Event()

    async def writer() -> None:
        with writer_scope:
            await run_store_writer(
                store, receive, metrics, batch_max=10, flush_grace=10.0, **FAST_RETRY
            )
        writer_done.set()

    with trio.fail_after(30):
        async with open_store(
            store_url, statement_timeout=OUTAGE_TIMEOUT, metrics=metrics
        ) as store:
            async with trio.open_nursery() as nursery, write_lock(store_url) as release:
                nursery.start_soon(writer)
                await wait_until(
                    lambda: sample(metrics, "oraculo_db_errors_total", op="upsert_rule_alert") >= 1
                )
                assert receive.statistics().current_buffer_used == 20
                writer_scope.cancel()
                # The writer now flushes, shielded; the outage ends during its grace.
                await release()
                await writer_done.wait()
            # Cancelled propagated out of the writer (it was not swallowed) ...
            assert writer_scope.cancelled_caught
            # ... and nothing was lost: the held batch and the 20 queued items are stored.
            await assert_stored_exactly(store, sent)
            assert sample(metrics, "oraculo_store_pending_rows") == 0
    send.close()


async def test_cancel_inside_the_batch_window_flushes(
    store: Store, metrics: ServiceMetrics
) -> None:
    sent = many(3)
    send, receive = trio.open_memory_channel[StoreItem](8)
    with trio.fail_after(20):
        async with send, trio.open_nursery() as nursery:
            # A window so long that only cancellation ends it.
            await nursery.start(
                partial(run_store_writer, store, receive, metrics, batch_window=math.inf)
            )
            for t in sent:
                await send.send(t)
            # The writer has taken all three and waits for more inside its window.
            await wait_until(lambda: send.statistics().current_buffer_used == 0)
            assert histogram_count(metrics.db_insert_ms["insert_alert_events"]) == 0
            nursery.cancel_scope.cancel()
    await assert_stored_exactly(store, sent)


async def test_flush_gives_up_after_the_grace(store_url: str, metrics: ServiceMetrics) -> None:
    send, receive = trio.open_memory_channel[StoreItem](8)
    send.send_nowait(transition(1))
    with trio.fail_after(20):
        async with open_store(
            store_url, statement_timeout=OUTAGE_TIMEOUT, metrics=metrics
        ) as store:
            async with write_lock(store_url):
                with trio.move_on_after(0.3) as scope:
                    await run_store_writer(store, receive, metrics, flush_grace=0.3, **FAST_RETRY)
            assert scope.cancelled_caught
            assert sample(metrics, "oraculo_store_pending_rows") == 1
            assert await store.fetch_alert_events() == []
    send.close()


async def test_an_item_of_another_type_is_a_bug(store: Store, metrics: ServiceMetrics) -> None:
    send, receive = trio.open_memory_channel[object](2)
    send.send_nowait("not an alert")
    send.close()
    with trio.fail_after(10), pytest.raises(TypeError, match="AlertTransition"):
        await run_store_writer(store, receive, metrics)
