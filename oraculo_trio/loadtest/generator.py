"""The generator process: ``python -m oraculo_trio.loadtest.generator --spec JSON``.

It hosts the mock exchange and publishes the spec's schedule through it, open loop
(``schedule.py``). JSON lines on stdout (``ready``, ``phase``, ``stats``, ``done``,
``drained``), commands on stdin (``start``; ``quit`` or the end of input stops it). The load
test's run (``run.py``) drives it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import attrs
import trio

from oraculo_trio.loadtest.schedule import DONE, Generator
from oraculo_trio.loadtest.shape import GeneratorSpec, build_source
from oraculo_trio.mockexchange.config import ExchangeSettings
from oraculo_trio.mockexchange.exchange import MockExchange

LOGGER = logging.getLogger("oraculo_trio.loadtest.generator")


def _emit(event: dict[str, Any]) -> None:
    # One JSON line per event, flushed: the runner reads them as they come.
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def _commands(stream: trio.abc.ReceiveStream) -> AsyncIterator[str]:
    buffer = b""
    while True:
        chunk = await stream.receive_some(4096)
        if not chunk:
            return
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line.decode().strip()


async def _stats_loop(
    exchange: MockExchange, generator: Generator, emit: Callable[[dict[str, Any]], None]
) -> None:
    started = time.monotonic()
    while True:
        # Faster once the schedule is over: the runner's drain waits on these numbers.
        await trio.sleep(0.5 if generator.phase != DONE else 0.1)
        connections = exchange.statistics().connections
        emit(
            {
                "event": "stats",
                "elapsed": time.monotonic() - started,
                "phase": generator.phase,
                "sent": exchange.frames_sent,
                "generated": sum(generator.generated.values()),
                "queued": sum(c.queued for c in connections),
                "connections": len(connections),
                "cpu": time.process_time(),
                "late_max": generator.lateness.take_second_max(),
            }
        )


async def serve_generator(
    spec: GeneratorSpec,
    commands: trio.abc.ReceiveStream,
    emit: Callable[[dict[str, Any]], None] = _emit,
) -> None:
    """The generator process: a mock exchange publishing ``spec``'s schedule on command.

    Events (JSON lines through ``emit``): ``ready`` (``url``, ``streams``, ``symbols``, the
    service's ``depth_kinds``/``trade_kinds``) once the exchange listens; on ``prime`` the
    market ticks on its own (diff books sync before the load) until ``start``; after the ``start``
    command, ``phase`` at each phase change and ``stats`` twice a second; ``done`` (the
    :class:`GeneratorResult`, ``measure_cpu_cores``) at the end of the schedule; ``drained``
    (``sent``) once every generated frame is written to its socket (or the queues stayed
    empty for a second). It keeps serving until ``commands`` ends or says ``quit``.

    Args:
        spec: what to generate.
        commands: lines ``start`` / ``quit`` (the runner's pipe; its end means stop).
        emit: where events go.

    Cancellation: stops the exchange and the schedule.
    """
    shape = spec.shape
    source = build_source(shape)
    exchange = MockExchange(
        source,  # type: ignore[arg-type]
        ExchangeSettings(
            tick=shape.burst_period,
            queue_size=spec.queue_size,
            overflow=spec.overflow,  # type: ignore[arg-type]
            max_requests_per_s=None,
        ),
    )
    # The exchange's own tick loop stays paused: the generator keeps the schedule.
    exchange.pause()
    generator = Generator(shape.schedule(), source, exchange, on_event=emit)
    streams = source.streams() if hasattr(source, "streams") else []
    async with trio.open_nursery() as nursery:
        await nursery.start(exchange.serve, spec.host, 0)
        emit(
            {
                "event": "ready",
                "url": exchange.ws_url,
                "pid": os.getpid(),
                "streams": streams,
                "depth_kinds": list(source.depth_kinds),
                "trade_kinds": list(source.trade_kinds),
                "symbols": list(source.symbols),
                "rest_url": exchange.rest_url,
                # Service settings the source needs (diff books: a snapshot deep enough).
                "service": getattr(source, "service_settings", {}),
            }
        )
        started = False
        async for command in _commands(commands):
            if command == "prime" and not started:
                # Diff books sync before the load: the market ticks on its own at its rate.
                exchange.resume()
            elif command == "start" and not started:
                started = True
                exchange.pause()
                nursery.start_soon(_stats_loop, exchange, generator, emit)
                nursery.start_soon(_run_schedule, exchange, generator, emit)
            elif command == "quit":
                break
        nursery.cancel_scope.cancel()


async def _run_schedule(
    exchange: MockExchange, generator: Generator, emit: Callable[[dict[str, Any]], None]
) -> None:
    cpu_start = time.process_time()
    marks: dict[str, tuple[float, float]] = {}

    def on_event(event: dict[str, Any]) -> None:
        if event["phase"] in ("measure", DONE):
            marks[event["phase"]] = (time.process_time(), time.monotonic())
        emit(event)

    generator.on_event = on_event
    result = await generator.run()
    cores = None
    if len(marks) == 2:
        (cpu0, wall0), (cpu1, wall1) = marks["measure"], marks[DONE]
        cores = (cpu1 - cpu0) / max(wall1 - wall0, 1e-9)
    emit(
        {
            "event": "done",
            **attrs.asdict(result),
            "sent": exchange.frames_sent,
            "rest_refused": _refused(exchange),
            "cpu_seconds": time.process_time() - cpu_start,
            "measure_cpu_cores": cores,
            "tick": generator.schedule.tick,
        }
    )
    # Drained: every frame queued for a connection written (those of the priming ticks too:
    # comparing with the schedule's own count would end the drain while frames it made still
    # wait), or nothing queued and nothing written for 1 s (a connection that went away).
    generated = sum(generator.generated.values())
    quiet_since = None
    last_sent = -1
    while exchange.frames_sent + exchange.frames_unwritten < exchange.frames_queued:
        queued = sum(c.queued for c in exchange.statistics().connections)
        if queued == 0 and exchange.frames_sent == last_sent:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= 1.0:
                break
        else:
            quiet_since = None
        last_sent = exchange.frames_sent
        await trio.sleep(0.02)
    emit({"event": "drained", "sent": exchange.frames_sent, "generated": generated})


def _refused(exchange: MockExchange) -> int:
    """REST requests the exchange refused (429, 418): Binance's per-IP limit was passed."""
    rest = exchange.rest
    return 0 if rest is None else rest.count(429) + rest.count(418)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m oraculo_trio.loadtest.generator --spec JSON``: the generator process."""
    parser = argparse.ArgumentParser(prog="python -m oraculo_trio.loadtest.generator")
    parser.add_argument("--spec", required=True, help="GeneratorSpec as JSON")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    spec = GeneratorSpec.from_json(args.spec)

    async def run() -> None:
        await serve_generator(spec, trio.lowlevel.FdStream(os.dup(sys.stdin.fileno())))

    try:
        trio.run(run)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
