"""Open-loop load: a schedule of bursts, and the loop that publishes it in real time.

Open loop means the schedule never waits for the service (no coordinated omission): burst
``k`` is due at ``start + k * tick`` and carries every message scheduled for its tick; its
frames' event time ``E`` is that scheduled time, whenever they actually go out. When the
service pushes back (full socket, full exchange queue) the generator keeps to the schedule,
catching up as fast as it can, and records how late each burst was published, so the ages
the service measures (``now - E``) include the backlog.

- :class:`Schedule` (pure): ramp, warm-up and measured phases at a rate; how many messages
  each burst carries (exact: the counts are differences of ``floor(cumulative(t))``).
- :class:`Generator` (Trio): drives a schedule in real time through a :class:`Publisher`
  (``MockExchange.publish``), records lateness per phase, and counts what the exchange
  actually wrote to sockets inside the measured window.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import attrs
import trio

from oraculo_trio.loadtest.latency import Distribution
from oraculo_trio.mockexchange.markets.load import FrameSource
from oraculo_trio.mockexchange.markets.payloads import Frame

PHASES = ("ramp", "warmup", "measure")
"""Phases of a schedule, in order; ``done`` follows the last one."""

DONE = "done"

# Float noise when turning cumulative message counts into whole messages.
_EPSILON = 1e-9


@attrs.frozen
class Burst:
    """One scheduled burst: due ``offset`` seconds after the start, ``count`` messages."""

    index: int
    offset: float
    count: int
    phase: str


def _check_positive(_instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a positive number, got {value!r}")


def _check_non_negative(_instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a number >= 0, got {value!r}")


@attrs.frozen
class Schedule:
    """When each burst is due and how many messages it carries.

    The rate rises linearly from 0 to ``rate`` during ``ramp`` seconds, then holds through
    ``warmup`` and ``duration`` (the measured phase). Burst ``k`` is due at ``k * tick`` and
    carries the messages scheduled in ``[k * tick, (k + 1) * tick)``; counts are differences
    of ``floor(cumulative(t))``, so any run of bursts holds exactly the scheduled total.

    Attributes:
        rate: messages per second at full rate.
        duration: seconds of the measured phase.
        warmup: seconds at full rate before it (not measured).
        ramp: seconds of linear rise before the warm-up.
        tick: seconds between bursts.
    """

    rate: float = attrs.field(validator=_check_positive)
    duration: float = attrs.field(validator=_check_positive)
    warmup: float = attrs.field(default=0.0, validator=_check_non_negative)
    ramp: float = attrs.field(default=0.0, validator=_check_non_negative)
    tick: float = attrs.field(default=0.1, validator=_check_positive)

    @property
    def total(self) -> float:
        """Seconds from the first burst to the end of the measured phase."""
        return self.ramp + self.warmup + self.duration

    @property
    def measure_start(self) -> float:
        """Offset of the measured phase's start."""
        return self.ramp + self.warmup

    def cumulative(self, offset: float) -> float:
        """Messages scheduled in ``[0, offset)`` (fractional)."""
        offset = min(max(offset, 0.0), self.total)
        if offset < self.ramp:
            return self.rate * offset * offset / (2.0 * self.ramp)
        return self.rate * (self.ramp / 2.0 + (offset - self.ramp))

    def phase_at(self, offset: float) -> str:
        """The phase at ``offset`` seconds (``done`` from the end on)."""
        if offset < self.ramp:
            return "ramp"
        if offset < self.measure_start:
            return "warmup"
        if offset < self.total:
            return "measure"
        return DONE

    def bursts(self) -> Iterator[Burst]:
        """Every burst in order, including empty ones early in a ramp."""
        count = math.ceil(self.total / self.tick - _EPSILON)
        sent = 0
        for index in range(count):
            offset = index * self.tick
            # Round the boundaries as the window tests do, so phases start on a burst.
            due = math.floor(self.cumulative((index + 1) * self.tick) + _EPSILON)
            yield Burst(index, offset, due - sent, self.phase_at(offset + _EPSILON))
            sent = due

    def end_offset(self) -> float:
        """When the first burst after the schedule would be due: the end of the last tick."""
        return math.ceil(self.total / self.tick - _EPSILON) * self.tick

    def measured_count(self) -> int:
        """Messages the measured phase's bursts carry (what ``sent`` is compared with)."""
        return sum(b.count for b in self.bursts() if b.phase == "measure")


@attrs.define(eq=False)
class Lateness:
    """How late each burst finished publishing, per phase, seconds (one float per burst)."""

    by_phase: dict[str, list[float]] = attrs.field(factory=lambda: {p: [] for p in PHASES})
    last_second_max: float = 0.0

    def record(self, phase: str, seconds: float) -> None:
        self.by_phase[phase].append(seconds)
        if seconds > self.last_second_max:
            self.last_second_max = seconds

    def take_second_max(self) -> float:
        value, self.last_second_max = self.last_second_max, 0.0
        return value

    def summary(self, phase: str = "measure") -> dict[str, float | None]:
        """Percentiles of the phase's bursts: None where there are too few bursts for one
        (p99 needs 100; see :mod:`~oraculo_trio.loadtest.latency`)."""
        values = self.by_phase[phase]
        distribution = Distribution.from_values(values)

        def at(quantile: float) -> float | None:
            found = distribution.percentile(quantile)
            return None if found is None else found.value

        return {
            "bursts": len(values),
            "p50": at(0.50),
            "p95": at(0.95),
            "p99": at(0.99),
            "max": max(values, default=None),
        }


class Publisher(Protocol):
    """Where bursts go: ``MockExchange`` (``publish`` queues to subscribers;
    ``frames_sent`` counts frames written to sockets)."""

    frames_sent: int

    async def publish(self, frames: Iterable[Frame]) -> None: ...


@attrs.frozen
class GeneratorResult:
    """What a finished schedule did.

    Attributes:
        generated: messages handed to the publisher, per phase.
        window_sent: frames the publisher wrote to sockets during the measured phase's real
            time (sampled when its first burst and the first burst after it were due).
        expected: messages the measured phase's bursts carry.
        lateness: per-phase lateness summaries.
        late_bursts: measured bursts that finished more than one tick late.
        alerts: alert frames sent.
    """

    generated: dict[str, int]
    window_sent: int
    expected: int
    lateness: dict[str, dict[str, float | None]]
    late_bursts: int
    alerts: int


@attrs.define(eq=False)
class Generator:
    """Publishes a :class:`Schedule` in real time, open loop.

    Attributes:
        schedule: when and how much.
        source: what (``frames(count, now_ms)``).
        publisher: where (``MockExchange``).
        wall_clock: epoch seconds, for the frames' scheduled time ``E``.
        on_event: called with ``{"event": "phase", ...}`` at each phase change.
    """

    schedule: Schedule
    source: FrameSource
    publisher: Publisher
    wall_clock: Callable[[], float] = time.time
    on_event: Callable[[dict[str, Any]], None] = lambda _event: None
    lateness: Lateness = attrs.field(factory=Lateness)
    phase: str = attrs.field(init=False, default="idle")
    generated: dict[str, int] = attrs.field(init=False, factory=lambda: dict.fromkeys(PHASES, 0))
    started_wall: float | None = attrs.field(init=False, default=None)

    async def run(self) -> GeneratorResult:
        """Publish every burst at its time, then wait for the end of the last tick.

        A late burst is published at once (catching up) with its scheduled ``E``; lateness is
        measured when ``publisher.publish`` returns.

        Returns:
            The :class:`GeneratorResult`.

        Cancellation: stops between bursts (or inside a blocked publish).
        """
        schedule = self.schedule
        anchor = trio.current_time()
        wall = self.started_wall = self.wall_clock()
        frames = self.source.frames
        publish = self.publisher.publish
        record = self.lateness.record
        window_start = window_end = 0
        late_bursts = 0
        for burst in schedule.bursts():
            deadline = anchor + burst.offset
            await trio.sleep_until(deadline)
            if burst.phase != self.phase:
                if burst.phase == "measure":
                    window_start = self.publisher.frames_sent
                self._enter(burst.phase, burst.offset)
            if burst.count:
                await publish(frames(burst.count, int((wall + burst.offset) * 1000)))
                self.generated[burst.phase] += burst.count
            late = trio.current_time() - deadline
            record(burst.phase, late)
            if burst.phase == "measure" and late > schedule.tick:
                late_bursts += 1
        await trio.sleep_until(anchor + schedule.end_offset())
        window_end = self.publisher.frames_sent
        self._enter(DONE, schedule.end_offset())
        return GeneratorResult(
            generated=dict(self.generated),
            window_sent=window_end - window_start,
            expected=schedule.measured_count(),
            lateness={phase: self.lateness.summary(phase) for phase in PHASES},
            late_bursts=late_bursts,
            alerts=getattr(self.source, "alerts_sent", 0),
        )

    def _enter(self, phase: str, offset: float) -> None:
        self.phase = phase
        self.on_event(
            {
                "event": "phase",
                "phase": phase,
                "offset": offset,
                "sent": self.publisher.frames_sent,
                "generated": sum(self.generated.values()),
            }
        )
