"""The shard consumer alone, on memory channels and a virtual clock: staleness and batching."""

from __future__ import annotations

import time

import pytest
import trio
import trio.testing

from oraculo_trio.core.alerts import FIRING, INACTIVE, RESOLVED, AlertTransition
from oraculo_trio.core.engine import ShardEngine
from oraculo_trio.core.events import DepthSnapshot, Trade
from oraculo_trio.core.rules import parse_rules
from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.pipeline.channels import Room
from oraculo_trio.pipeline.shards import (
    AlertOutlet,
    ConflationBuffer,
    ConsumerSettings,
    ShardConsumer,
    ShardRouter,
    run_consumer,
)
from oraculo_trio.settings import PipelineSettings, Settings

RULES = parse_rules(
    {
        "rule": [
            {"id": "cross", "kind": "crossing", "params": {"level": 100}, "trigger": "every_time"}
        ]
    }
)


def consumer_settings(**pipeline: float) -> ConsumerSettings:
    """The consumer's settings from the default configuration, ``pipeline`` keys changed."""
    return ConsumerSettings.from_settings(Settings(pipeline=PipelineSettings(**pipeline)))


def trade(trade_id: int, price: float, received_at: float, event_ms: int | None = None) -> Trade:
    return Trade("BTCUSDT", price, 1.0, False, trade_id, 0, event_ms, received_at, time.time())


async def consume(events: list, settings: ConsumerSettings, *, age_by: float = 0.0):
    """Run one trade consumer over ``events`` (read now, evaluated ``age_by`` later)."""
    metrics = ServiceMetrics(shards=1)
    engine = ShardEngine(list(RULES))
    send, receive = trio.open_memory_channel(len(events) + 1)
    store_send, store_receive = trio.open_memory_channel(100)
    dispatch_send, _dispatch_receive = trio.open_memory_channel(100)
    for event in events:
        send.send_nowait(event)
    send.close()
    await trio.sleep(age_by)  # the messages wait in the channel this long
    outlet = AlertOutlet(store_send, dispatch_send, metrics)
    await run_consumer("trade", 0, receive, None, engine, outlet, metrics, settings)
    stored = [item async for item in store_receive]
    return metrics, engine, stored


async def test_stale_messages_are_counted_and_skip_rules_but_keep_state(
    autojump_clock: trio.testing.MockClock,
) -> None:
    now = trio.current_time()
    events = [trade(1, 99.0, now), trade(2, 101.0, now)]
    metrics, engine, stored = await consume(events, consumer_settings(stale_after=5.0), age_by=6.0)
    assert metrics.accounting()["stale_drop"] == 2
    assert metrics.accounting()["evaluated"] == 0
    assert stored == []  # the crossing happened while stale: no alert
    assert engine.markets["BTCUSDT"].last_price == 101.0  # but the state moved on


async def test_fresh_messages_are_evaluated(autojump_clock: trio.testing.MockClock) -> None:
    now = trio.current_time()
    events = [trade(1, 99.0, now), trade(2, 101.0, now)]
    metrics, _, stored = await consume(events, consumer_settings(stale_after=5.0), age_by=4.0)
    assert metrics.accounting()["evaluated"] == 2
    assert [t.state for t in stored] == ["firing"]
    queue_time = metrics.queue_time["trade"]
    assert sum(queue_time.counts) == 2 and queue_time.sum == pytest.approx(8.0)


async def test_age_uses_the_exchange_event_time_when_there_is_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    now = trio.current_time()
    old_ms = int((time.time() - 60) * 1000)  # E a minute ago: stale however fast we are
    metrics, _, _ = await consume([trade(1, 99.0, now, old_ms)], consumer_settings(stale_after=5.0))
    assert metrics.accounting()["stale_drop"] == 1


async def test_batches_are_bounded(autojump_clock: trio.testing.MockClock) -> None:
    now = trio.current_time()
    events = [trade(i, 99.0, now) for i in range(10)]
    metrics, _, _ = await consume(events, consumer_settings(batch_max=3))
    sizes = metrics.batch_size["trade"]
    # 10 messages in batches of at most 3: 3 + 3 + 3 + 1.
    assert sum(sizes.counts) == 4
    assert sizes.sum == 10


async def test_conflated_depth_is_taken_after_the_channel_and_in_order() -> None:
    metrics = ServiceMetrics(shards=1)
    engine = ShardEngine([])
    send, receive = trio.open_memory_channel(10)
    buffer = ConflationBuffer()
    now = trio.current_time()

    def book(update_id: int) -> DepthSnapshot:
        level = float(update_id)
        return DepthSnapshot(
            "ETHUSDT", ((level, 1.0),), ((level + 1, 1.0),), update_id, None, now, 0
        )

    send.send_nowait(book(1))
    send.send_nowait(book(2))
    buffer.put(book(3))
    assert buffer.put(book(4)) is True  # replaced 3: conflated
    send.close()
    store_send, _ = trio.open_memory_channel(10)
    dispatch_send, _ = trio.open_memory_channel(10)
    with trio.fail_after(5):
        await run_consumer(
            "depth", 0, receive, buffer, engine, AlertOutlet(store_send, dispatch_send, metrics),
            metrics, consumer_settings(),
        )  # fmt: skip
    # 1 and 2 from the channel first, then the buffer's newest (4): the book ends at 4.
    assert engine.markets["ETHUSDT"].book.last_update_id == 4
    assert metrics.accounting()["evaluated"] == 3


async def test_take_reads_the_channel_first_then_the_buffer_then_ends() -> None:
    metrics = ServiceMetrics(shards=1)
    send, receive = trio.open_memory_channel(10)
    buffer = ConflationBuffer()
    store_send, _ = trio.open_memory_channel(10)
    dispatch_send, _ = trio.open_memory_channel(10)
    consumer = ShardConsumer(
        "trade", 0, receive, buffer, ShardEngine([]),
        AlertOutlet(store_send, dispatch_send, metrics), metrics, consumer_settings(),
    )  # fmt: skip
    now = trio.current_time()
    first, second, waiting = trade(1, 99.0, now), trade(2, 99.0, now), trade(3, 99.0, now)
    send.send_nowait(first)
    send.send_nowait(second)
    buffer.put(waiting)
    with trio.fail_after(5):
        assert await consumer.take() == [first]  # one message from the channel
        assert await consumer.take() == [second]
        assert await consumer.take() == [waiting]  # the channel is empty: the buffer
        send.send_nowait(first)
        send.close()
        assert await consumer.take() == [first]  # what the channel held before it ended
        assert await consumer.take() == []  # ended, and nothing waits in the buffer


async def test_outlets_hand_on_whole_batches_in_the_order_raised() -> None:
    # A consumer blocked on a full store channel halfway through its batch must not be
    # overtaken by another outlet (the rule clock) with a later transition of the same alert.
    def transition(symbol: str, state: str, previous: str) -> AlertTransition:
        return AlertTransition("r", symbol, state, previous, 1.0, 0.0, 0.0, 1, notify=False)

    metrics = ServiceMetrics(shards=1)
    store_send, store_receive = trio.open_memory_channel(1)
    dispatch_send, _dispatch_receive = trio.open_memory_channel(10)
    order = trio.Lock()
    consumer = AlertOutlet(store_send.clone(), dispatch_send.clone(), metrics, order)
    clock = AlertOutlet(store_send.clone(), dispatch_send.clone(), metrics, order)
    already = transition("ETHUSDT", FIRING, INACTIVE)
    store_send.send_nowait(already)  # the channel is full
    other = transition("SOLUSDT", FIRING, INACTIVE)
    fired = transition("BTCUSDT", FIRING, INACTIVE)
    resolved = transition("BTCUSDT", RESOLVED, FIRING)
    stored = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer.emit, [other, fired])
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(clock.emit, [resolved])  # raised after ``fired``
            await trio.testing.wait_all_tasks_blocked()
            for _ in range(4):
                stored.append(await store_receive.receive())
    assert stored == [already, other, fired, resolved]


async def test_a_trade_waiting_for_room_is_let_go_when_its_consumer_is_cancelled() -> None:
    """A forced shutdown (the grace ran out while the store pushed back) cancels a consumer
    whose producer waits, shielded, for room in its channel: the wait must end."""
    metrics = ServiceMetrics(shards=1)
    send, receive = trio.open_memory_channel(1)
    room = Room()
    router = ShardRouter("trade", [send], None, metrics, rooms=[room])
    # A store that never takes anything: the consumer waits at its first transition.
    store_send, _store_receive = trio.open_memory_channel(0)
    dispatch_send, _dispatch_receive = trio.open_memory_channel(10)
    outlet = AlertOutlet(store_send, dispatch_send, metrics)
    consumer_scope = trio.CancelScope()

    async def consume() -> None:
        with consumer_scope:
            await run_consumer(
                "trade", 0, receive, None, ShardEngine(list(RULES)), outlet, metrics,
                consumer_settings(), room=room,
            )  # fmt: skip

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            for trade_id, price in enumerate((90.0, 110.0)):  # 110 crosses the level
                await router.route(trade(trade_id, price, trio.current_time()))
            await trio.testing.wait_all_tasks_blocked()
            await router.route(trade(2, 111.0, trio.current_time()))  # the channel is full
            nursery.start_soon(router.route, trade(3, 112.0, trio.current_time()))
            await trio.testing.wait_all_tasks_blocked()
            assert router.waiting
            consumer_scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            stuck = router.waiting
            room.notify()  # so that a failure below cannot hang the test
    assert not stuck
    # The producer that found the channel full showed it (its consumer was held up).
    depth = {"stream": "trade", "shard": "0"}
    assert metrics.inner.get_sample_value("oraculo_alerts_queue_depth", depth) == 1
