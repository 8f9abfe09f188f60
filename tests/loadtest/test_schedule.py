"""The open-loop generator: its schedule, and its real-time loop on a mock clock."""

from __future__ import annotations

import math
from collections.abc import Iterable

import pytest
import trio
import trio.testing
from trio_websocket import open_websocket_url

from oraculo_trio.loadtest.generator import serve_generator
from oraculo_trio.loadtest.schedule import Generator, Schedule
from oraculo_trio.loadtest.shape import GeneratorSpec, LoadShape, build_source
from oraculo_trio.mockexchange import Frame, LoadMarket, parse_distribution, synthetic_symbols

WALL = 1_700_000_000.0


def window_count(schedule: Schedule, start: float, end: float) -> int:
    return sum(b.count for b in schedule.bursts() if start <= b.offset + 1e-9 < end)


@pytest.mark.parametrize("rate", [1.0, 7.3, 500.0, 1500.0, 20_000.0, 33_333.3])
def test_any_whole_window_of_bursts_holds_exactly_the_rate(rate: float) -> None:
    schedule = Schedule(rate=rate, duration=10.0, warmup=1.0, tick=0.1)
    for start, end in ((0.0, 11.0), (1.0, 11.0), (2.5, 7.5), (3.0, 4.0)):
        assert window_count(schedule, start, end) in (
            math.floor(rate * end) - math.floor(rate * start),
            math.floor(rate * end + 1e-6) - math.floor(rate * start + 1e-6),
        )
    assert schedule.measured_count() == math.floor(rate * 11.0 + 1e-9) - math.floor(rate + 1e-9)
    assert abs(schedule.measured_count() - rate * 10.0) <= 1


def test_bursts_are_due_every_tick_with_their_phase() -> None:
    schedule = Schedule(rate=1000.0, duration=2.0, warmup=1.0, ramp=1.0, tick=0.1)
    bursts = list(schedule.bursts())
    assert len(bursts) == 40
    assert [b.offset for b in bursts[:3]] == pytest.approx([0.0, 0.1, 0.2])
    phases = [b.phase for b in bursts]
    assert phases == ["ramp"] * 10 + ["warmup"] * 10 + ["measure"] * 20
    # The ramp is linear from 0: half the full rate's messages, growing burst by burst.
    ramp = [b.count for b in bursts[:10]]
    assert sum(ramp) == 500
    assert ramp == sorted(ramp)
    assert ramp[0] < ramp[-1]
    assert all(b.count == 100 for b in bursts[10:])
    assert schedule.end_offset() == pytest.approx(4.0)


def test_batch_sets_the_burst_size_and_the_period() -> None:
    shape = LoadShape(rate=1500.0, batch=64, duration=2.0, warmup=0.0)
    schedule = shape.schedule()
    assert schedule.tick == pytest.approx(64 / 1500)
    counts = [b.count for b in schedule.bursts()]
    assert set(counts[:-1]) == {64}  # the last one ends with the schedule
    assert schedule.measured_count() == sum(counts) == 3000


def test_bad_schedules_and_distributions_are_refused() -> None:
    with pytest.raises(ValueError, match="rate"):
        Schedule(rate=0.0, duration=1.0)
    with pytest.raises(ValueError, match="warmup"):
        Schedule(rate=1.0, duration=1.0, warmup=-1.0)
    assert parse_distribution("uniform") is None
    assert parse_distribution("zipf:1.2") == pytest.approx(1.2)
    for bad in ("zipf", "zipf:0", "zipf:x", "pareto:1"):
        with pytest.raises(ValueError, match="distribution"):
            parse_distribution(bad)
    with pytest.raises(ValueError, match="stream"):
        build_source(LoadShape(stream="nope"))


class RecordingPublisher:
    """Records when each burst is published; a burst can be made slow on purpose."""

    def __init__(self, slow: dict[int, float] | None = None) -> None:
        self.frames_sent = 0
        self.bursts: list[tuple[float, int, set[int]]] = []
        self.slow = slow or {}

    async def publish(self, frames: Iterable[Frame]) -> None:
        index = len(self.bursts)
        frames = list(frames)
        stamps = {payload["E"] for _, payload in frames}
        self.bursts.append((trio.current_time(), len(frames), stamps))
        if index in self.slow:
            await trio.sleep(self.slow[index])
        self.frames_sent += len(frames)


async def test_bursts_go_out_on_schedule_with_e_the_scheduled_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    schedule = Schedule(rate=1000.0, duration=1.0, warmup=0.5, tick=0.1)
    market = LoadMarket(synthetic_symbols(5), alert_period=None)
    publisher = RecordingPublisher()
    events: list[dict] = []
    generator = Generator(
        schedule, market, publisher, wall_clock=lambda: WALL, on_event=events.append
    )
    start = trio.current_time()
    with trio.fail_after(10):
        result = await generator.run()
    assert [round(t - start, 6) for t, _, _ in publisher.bursts] == [
        round(0.1 * k, 6) for k in range(15)
    ]
    for k, (_, count, stamps) in enumerate(publisher.bursts):
        assert count == 100
        assert stamps == {int((WALL + 0.1 * k) * 1000)}
    assert [e["phase"] for e in events] == ["warmup", "measure", "done"]
    assert result.generated == {"ramp": 0, "warmup": 500, "measure": 1000}
    assert result.window_sent == result.expected == 1000
    assert result.late_bursts == 0
    assert result.lateness["measure"]["max"] == 0.0


async def test_a_slow_publish_is_caught_up_and_its_lateness_recorded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Burst 3 blocks for 0.35 s (the service pushing back): bursts 4-6 become due meanwhile;
    # they go out at once, back to back, still stamped with their scheduled times.
    schedule = Schedule(rate=100.0, duration=1.0, tick=0.1)
    publisher = RecordingPublisher(slow={3: 0.35})
    generator = Generator(
        schedule,
        LoadMarket(synthetic_symbols(2), alert_period=None),
        publisher,
        wall_clock=lambda: WALL,
    )
    start = trio.current_time()
    with trio.fail_after(10):
        result = await generator.run()
    times = [round(t - start, 6) for t, _, _ in publisher.bursts]
    assert times[:4] == [0.0, 0.1, 0.2, 0.3]
    assert times[4:7] == [0.65, 0.65, 0.65]
    assert times[7:] == [0.7, 0.8, 0.9]
    assert [stamps for _, _, stamps in publisher.bursts][5] == {int((WALL + 0.5) * 1000)}
    lateness = result.lateness["measure"]
    assert lateness["max"] == pytest.approx(0.35)
    assert result.late_bursts == 3  # bursts 3, 4 and 5 ended more than a tick late
    # Every message still went out within the window: the rate is kept.
    assert result.window_sent == result.expected == 100


async def test_the_generator_drains_what_it_queued_the_priming_ticks_included() -> None:
    # "drained" gives the runner its expectation of what the service will receive (sent). The
    # priming ticks' frames count in what the exchange writes: compared with the schedule's
    # own count, the drain ended while the schedule's last frames still waited in the queue
    # (the service then received more than was "sent"). A client slower than the rate keeps
    # a backlog until the end.
    shape = LoadShape(stream="depthdiff", rate=3000, duration=0.5, warmup=0.0, symbols=3)
    spec = GeneratorSpec(shape=shape, queue_size=64)
    events: list[dict] = []
    changed = trio.Event()

    def emit(event: dict) -> None:
        nonlocal changed
        events.append(event)
        changed.set()
        changed = trio.Event()

    async def event(name: str) -> dict:
        while not any(e["event"] == name for e in events):
            await changed.wait()
        return next(e for e in events if e["event"] == name)

    commands_in, commands_out = trio.testing.memory_stream_one_way_pair()
    received = 0
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_generator, spec, commands_out, emit)
            ready = await event("ready")
            url = f"{ready['url']}/stream?streams={'/'.join(ready['streams'])}"
            async with open_websocket_url(url) as ws:
                await commands_in.send_all(b"prime\n")
                await ws.get_message()
                received += 1
                await commands_in.send_all(b"start\n")
                while not any(e["event"] == "drained" for e in events):
                    await ws.get_message()
                    received += 1
                    await trio.sleep(0.002)  # slower than the rate: a backlog builds
                sent = (await event("drained"))["sent"]
                while received < sent:
                    await ws.get_message()
                    received += 1
                # Nothing arrives after what "drained" counted.
                with trio.move_on_after(1.0):
                    await ws.get_message()
                    received += 1
            nursery.cancel_scope.cancel()
    done = next(e for e in events if e["event"] == "done")
    assert received == sent
    # The priming ticks were written too, before and beside the schedule's frames.
    assert sent > sum(done["generated"].values())
