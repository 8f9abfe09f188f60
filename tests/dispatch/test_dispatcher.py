"""The dispatcher and the webhook sink against a real HTTP receiver on 127.0.0.1 that
answers, fails, hangs, refuses or drops: retries, breaker, concurrency, lanes, silences."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import attrs
import trio

from oraculo_trio.core.alerts import AlertTransition
from oraculo_trio.core.silences import Silence, SilenceSet, parse_matchers
from oraculo_trio.dispatch.dispatcher import run_dispatcher
from oraculo_trio.dispatch.policy import SinkPolicy
from oraculo_trio.dispatch.sinks import WebhookSink, alertmanager_payload
from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.store.base import DispatchLog
from oraculo_trio.testing import RecordingSink
from tests.dispatch.receiver import DROP, ERROR, HANG, OK, REJECT, Receiver
from tests.observe.helpers import FakeClock


def alert(
    i: int = 0, *, state: str = "firing", symbol: str = "BTCUSDT", **extra
) -> AlertTransition:
    return AlertTransition(
        rule_id="cross",
        symbol=symbol,
        state=state,
        previous_state="inactive" if state == "firing" else "firing",
        value=50_000.0 + i,
        at=1_700_000_000.0 + i,
        started_at=1_700_000_000.0,
        fire_count=1,
        severity="critical",
        message=f"crossed {i}",
        labels={"team": "desk"},
        **extra,
    )


@attrs.define(eq=False)
class Dispatch:
    """A running dispatcher: notifications in, dispatch_logs rows out."""

    send: trio.MemorySendChannel
    logs: list[DispatchLog]
    metrics: ServiceMetrics
    _changed: trio.Event = attrs.field(factory=trio.Event)

    async def wait_logs(self, count: int) -> list[DispatchLog]:
        while len(self.logs) < count:
            await self._changed.wait()
        return self.logs

    def dropped(self, reason: str) -> float:
        value = self.metrics.inner.get_sample_value(
            "oraculo_dispatch_dropped_total", {"reason": reason}
        )
        return value or 0.0


@asynccontextmanager
async def dispatching(sinks: Sequence, capacity: int = 100, **kwargs) -> AsyncIterator[Dispatch]:
    """Run the dispatcher; on exit close its input and wait for it to finish."""
    metrics = ServiceMetrics()
    send, receive = trio.open_memory_channel(capacity)
    store_send, store_receive = trio.open_memory_channel(1000)
    dispatch = Dispatch(send, [], metrics)

    async def collect() -> None:
        async with store_receive:
            async for log in store_receive:
                dispatch.logs.append(log)
                dispatch._changed.set()
                dispatch._changed = trio.Event()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect)
        nursery.start_soon(lambda: run_dispatcher(receive, sinks, store_send, metrics, **kwargs))
        async with send:
            yield dispatch


def webhook(receiver: Receiver, **policy) -> WebhookSink:
    defaults = {"retries": 0, "backoff_initial": 0.01, "backoff_max": 0.02}
    return WebhookSink(receiver.url, timeout=0.3, policy=SinkPolicy(**{**defaults, **policy}))


def outcomes(logs: Sequence[DispatchLog]) -> list[tuple[str, int]]:
    return [(log.status, log.attempt) for log in logs]


async def attempts(
    nursery: trio.Nursery, mode: str, notifications: int, rows: int, **policy
) -> tuple[Receiver, list[DispatchLog]]:
    """Send ``notifications`` to a webhook whose receiver answers ``mode``; the first
    ``rows`` dispatch_logs rows."""
    receiver = await nursery.start(Receiver(mode).serve)
    with trio.fail_after(10):
        async with dispatching([webhook(receiver, **policy)]) as dispatch:
            for i in range(notifications):
                await dispatch.send.send(alert(i))
            logs = await dispatch.wait_logs(rows)
    return receiver, logs


async def test_delivers_the_alertmanager_payload(nursery: trio.Nursery) -> None:
    receiver = await nursery.start(Receiver(OK).serve)
    with trio.fail_after(10):
        async with dispatching([webhook(receiver)]) as dispatch:
            await dispatch.send.send(alert(1))
            await dispatch.send.send(alert(2, state="resolved"))
            logs = await dispatch.wait_logs(2)
    assert outcomes(logs) == [("delivered", 1), ("delivered", 1)]
    assert logs[0].sink == "webhook" and logs[0].error is None
    assert receiver.bodies == [
        alertmanager_payload(alert(1)),
        alertmanager_payload(alert(2, state="resolved")),
    ]
    firing, resolved = (body["alerts"][0] for body in receiver.bodies)
    assert firing["labels"] == {
        "team": "desk", "alertname": "cross", "symbol": "BTCUSDT", "severity": "critical",
    }  # fmt: skip
    assert (firing["status"], firing["endsAt"]) == ("firing", "0001-01-01T00:00:00Z")
    assert firing["startsAt"] == "2023-11-14T22:13:20.000Z"
    assert (resolved["status"], resolved["endsAt"]) == ("resolved", "2023-11-14T22:13:22.000Z")
    assert firing["fingerprint"] == resolved["fingerprint"]
    assert receiver.bodies[0]["version"] == "4" and receiver.bodies[1]["status"] == "resolved"


async def test_500_is_retried_with_backoff_then_given_up(nursery: trio.Nursery) -> None:
    receiver, logs = await attempts(nursery, ERROR, 1, 4, retries=3)
    assert outcomes(logs) == [("failed", 1), ("failed", 2), ("failed", 3), ("failed", 4)]
    assert all(log.error == "DeliveryError: HTTP 500" for log in logs)
    assert receiver.requests == 4


async def test_a_retry_that_succeeds_stops_retrying(nursery: trio.Nursery) -> None:
    receiver = await nursery.start(Receiver(DROP).serve)
    with trio.fail_after(10):
        async with dispatching([webhook(receiver, retries=5)]) as dispatch:
            await dispatch.send.send(alert())
            first = (await dispatch.wait_logs(1))[0]
            receiver.mode = OK
            logs = await dispatch.wait_logs(2)
    assert first.status == "failed" and "RemoteProtocolError" in first.error
    assert outcomes(logs) == [("failed", 1), ("delivered", 2)]


async def test_a_rejected_payload_is_not_retried(nursery: trio.Nursery) -> None:
    receiver, logs = await attempts(nursery, REJECT, 2, 2, retries=3)
    assert outcomes(logs) == [("failed", 1), ("failed", 1)]
    assert logs[0].error == "DeliveryRejected: HTTP 400"
    assert receiver.requests == 2


async def test_a_hanging_receiver_times_out_each_attempt(nursery: trio.Nursery) -> None:
    receiver, logs = await attempts(nursery, HANG, 1, 2, retries=1)
    assert outcomes(logs) == [("failed", 1), ("failed", 2)]
    assert logs[0].error == "DeliveryError: timed out after 0.3s"
    assert all(250.0 <= log.latency_ms < 2_000.0 for log in logs)
    receiver.release()


async def test_the_breaker_opens_drops_and_recovers(nursery: trio.Nursery) -> None:
    receiver = await nursery.start(Receiver(ERROR).serve)
    clock = FakeClock(1_000.0)
    sink = webhook(receiver, breaker_failures=3, breaker_cooldown=30.0)
    with trio.fail_after(10):
        async with dispatching([sink], clock=clock) as dispatch:
            for i in range(5):
                await dispatch.send.send(alert(i))
            logs = await dispatch.wait_logs(5)
            assert outcomes(logs) == [("failed", 1)] * 3 + [("dropped", 0)] * 2
            assert logs[3].error == "circuit open"
            assert receiver.requests == 3
            assert dispatch.dropped("breaker_open") == 2
            circuit = dispatch.metrics.dispatch_circuit_open["webhook"]
            assert circuit._value.get() == 1
            # After the cooldown one trial goes through; it succeeds and closes the circuit.
            receiver.mode = OK
            clock.now += 30.0
            await dispatch.send.send(alert(5))
            await dispatch.send.send(alert(6))
            logs = await dispatch.wait_logs(7)
    assert outcomes(logs[5:]) == [("delivered", 1), ("delivered", 1)]
    assert circuit._value.get() == 0


async def test_concurrency_is_limited_per_sink(nursery: trio.Nursery) -> None:
    receiver = await nursery.start(Receiver(HANG).serve)
    sink = webhook(receiver, concurrency=2)
    sink.timeout = 10.0
    with trio.fail_after(10):
        async with dispatching([sink]) as dispatch:
            for i in range(5):
                await dispatch.send.send(alert(i))
            await receiver.wait_requests(2)
            assert receiver.in_flight == 2
            receiver.release()
            logs = await dispatch.wait_logs(5)
    assert outcomes(logs) == [("delivered", 1)] * 5
    assert receiver.max_in_flight == 2


async def test_a_hanging_sink_never_holds_the_others(nursery: trio.Nursery) -> None:
    receiver = await nursery.start(Receiver(HANG).serve)
    sink = webhook(receiver, queue=2)
    sink.timeout = 10.0
    recording = RecordingSink()
    with trio.fail_after(10):
        async with dispatching([sink, recording], capacity=5) as dispatch:
            # Far more than every queue holds: the dispatcher keeps taking them at once.
            for i in range(50):
                await dispatch.send.send(alert(i))
            await recording.wait_for(50)
            # The webhook holds one in flight and two queued; the rest were dropped.
            assert dispatch.dropped("sink_overflow") == 47
            assert dispatch.metrics.dispatch_queue_depth["webhook"]._value.get() == 2
            receiver.release()
            logs = await dispatch.wait_logs(100)
    by_sink = {
        name: [log.status for log in logs if log.sink == name] for name in ("webhook", "recording")
    }
    assert by_sink["recording"] == ["delivered"] * 50
    assert sorted(by_sink["webhook"]) == ["delivered"] * 3 + ["dropped"] * 47


async def test_silenced_and_inhibited_notifications_are_recorded_not_sent() -> None:
    recording = RecordingSink()
    matchers = parse_matchers(["rule_id=cross", "symbol=ETHUSDT"])
    silences = SilenceSet((Silence(7, matchers, 0.0, 2e9, "maintenance"),))
    with trio.fail_after(10):
        async with dispatching([recording], silences=silences) as dispatch:
            await dispatch.send.send(alert(1, symbol="ETHUSDT"))
            await dispatch.send.send(alert(2, inhibited_by="crash"))
            await dispatch.send.send(alert(3))
            logs = await dispatch.wait_logs(3)
    assert [(log.status, log.attempt, log.error) for log in logs] == [
        ("silenced", 0, "silence 7"),
        ("inhibited", 0, "inhibited by rule crash"),
        ("delivered", 1, None),
    ]
    assert [t.value for t in recording.transitions] == [50_003.0]
    assert (dispatch.dropped("silenced"), dispatch.dropped("inhibited")) == (1, 1)


async def test_shutdown_does_not_wait_for_a_hanging_sink(nursery: trio.Nursery) -> None:
    receiver = await nursery.start(Receiver(HANG).serve)
    sink = webhook(receiver, retries=3)
    sink.timeout = 60.0
    with trio.fail_after(10):
        async with dispatching([sink], drain_grace=0.2) as dispatch:
            for i in range(3):
                await dispatch.send.send(alert(i))
            await receiver.wait_requests(1)
        # Leaving the block closed the input and waited for the dispatcher: 0.2 s, not 60.
    assert dispatch.logs == []
    receiver.release()
