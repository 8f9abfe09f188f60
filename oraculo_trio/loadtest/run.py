"""One measured run: the generator, the service and Prometheus as processes.

::

    run_load_test(config)
    ├── generator process   python -m oraculo_trio.loadtest.generator
    │                       (mock exchange + open-loop schedule)
    ├── service process     oraculo-trio run --config <run dir>/oraculo.toml (fresh store)
    ├── prometheus process  with --prometheus: scrapes the service every second
    ├── webhook receiver    with --webhook: answers 200 / 500 / never (in this process)
    └── sampler             /metrics, /readyz and /proc every second; the generator's events

Steps: start the generator (it prints its URL), the service pointed at it (on a port the
system picks: the harness reads the one it bound from its log), wait for ``/readyz``; with diff
books, tell the generator to ``prime`` (its market ticks at its rate) and time how long every
book takes to go live (the cold start: snapshots within the REST weight budget); then tell it
to ``start``: ramp, warm-up, measured phase (the generator marks the phases; the runner
snapshots the service's counters at each mark), then drain (wait until the service has
accounted for every frame the exchange wrote) and stop everything. Processes are the test
harness's (:mod:`oraculo_trio.testing.processes`): each in a session of its own, stopped on
every exit path. The generator also stops when its stdin (the runner's pipe) closes.

:func:`calibrate` runs the generator alone, against a client that discards everything.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
import httpx
import trio

from oraculo_trio.loadtest.configuration import (
    RunConfig,
    fresh_store,
    load_rules_text,
    scratch_dir,
    service_config,
)
from oraculo_trio.loadtest.errors import LoadTestError
from oraculo_trio.loadtest.measure import accounted
from oraculo_trio.loadtest.processes import RUN_TOKEN_ENV, run_environ
from oraculo_trio.loadtest.sampling import (
    RunState,
    Sampler,
    query_prometheus,
    read_generator,
    running_prometheus,
    wait_ready,
)
from oraculo_trio.loadtest.shape import GeneratorSpec
from oraculo_trio.observe.report import parse_samples
from oraculo_trio.settings import ENV_NOT_CONFIG, ENV_PREFIX
from oraculo_trio.testing.config import write_service_config
from oraculo_trio.testing.processes import (
    ChildProcess,
    ServiceProcess,
    child_process,
    service_process,
)

LOGGER = logging.getLogger("oraculo_trio.loadtest.run")

OnSample = Callable[[dict[str, Any], RunConfig], None]
"""Called with each per-second sample (the live progress line)."""


@attrs.define(eq=False)
class WebhookReceiver:
    """A local HTTP endpoint that answers 200 (``ok``), 500 (``fail``) or never (``hang``)."""

    mode: str
    url: str = ""
    requests: int = 0

    async def serve(self, *, task_status: trio.TaskStatus[WebhookReceiver]) -> None:
        """Listen on 127.0.0.1 (a free port) until cancelled.

        Cancellation: closes the listener and every connection.
        """
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/alerts"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, self._handle, listeners)
            task_status.started(self)

    def result(self, final: dict[str, Any]) -> dict[str, Any]:
        """What it saw, beside what the service's last sample says it sent."""
        return {
            "mode": self.mode,
            "url": self.url,
            "requests": self.requests,
            "dispatch": final["dispatch"],
            "dispatch_dropped": final["dispatch_dropped"],
        }

    async def _handle(self, stream: trio.SocketStream) -> None:
        buffer = b""
        async with stream:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                while True:
                    while b"\r\n\r\n" not in buffer:
                        chunk = await stream.receive_some(65536)
                        if not chunk:
                            return
                        buffer += chunk
                    head, buffer = buffer.split(b"\r\n\r\n", 1)
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value.strip() or 0)
                    while len(buffer) < length:
                        chunk = await stream.receive_some(65536)
                        if not chunk:
                            return
                        buffer += chunk
                    buffer = buffer[length:]
                    self.requests += 1
                    if self.mode == "hang":
                        await trio.sleep_forever()
                    status = b"200 OK" if self.mode == "ok" else b"500 Internal Server Error"
                    await stream.send_all(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n")


@attrs.frozen
class RunOutput:
    """Everything a run produced, for the report."""

    config: RunConfig
    run_dir: Path
    store: str
    samples: list[dict[str, Any]]
    marks: dict[str, int]
    generator_ready: dict[str, Any]
    generator_done: dict[str, Any] | None
    prometheus: dict[str, float | None] | None
    webhook: dict[str, Any] | None
    profile: Path | None
    notes: list[str]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    service_exit: int | None
    cold_start: dict[str, Any] | None = None


async def run_load_test(
    config: RunConfig,
    run_dir: Path,
    *,
    on_sample: OnSample | None = None,
    say: Callable[[str], None] = lambda _text: None,
) -> RunOutput:
    """Run one load test; every process it started is stopped when it returns or raises.

    Args:
        config: the test (checked again here, before anything starts).
        run_dir: where the run's files go (service config and logs, profiles).
        on_sample: called with each per-second sample (the live progress line).
        say: one-line status messages (starting, ready, draining).

    Returns:
        The samples and marks the report is computed from.

    Raises:
        LoadTestError: a process would not start, become ready or keep running.
        ConfigError: an option or ``--set`` value the service refuses.

    Cancellation: stops every process (SIGTERM, then SIGKILL after a short grace).
    """
    config.check()
    token = _prepare(run_dir)
    load_before = os.getloadavg()
    state = RunState()
    shape = config.shape
    extras: dict[str, Any] = {"prometheus": None, "webhook": None, "notes": [], "cold": None}
    # Children stop before the store is dropped and the scratch directory removed, and before
    # the nursery (the generator's reader, the webhook receiver) is cancelled.
    async with (
        scratch_dir() as scratch,
        fresh_store(config.database_url, scratch) as (database_url, store_kind),
        httpx.AsyncClient(timeout=5.0) as client,
        trio.open_nursery() as nursery,
    ):
        try:
            async with (
                _generator(config.generator_spec(), state, run_dir, token, nursery) as generator,
                contextlib.AsyncExitStack() as stack,
            ):
                say(f"starting the generator ({shape.stream} {shape.rate:g} msg/s)")
                await _wait_generator(generator, state)
                receiver = None
                if config.webhook is not None:
                    receiver = await nursery.start(WebhookReceiver(config.webhook).serve)
                config_path, sections = _configure_service(
                    config, run_dir, scratch, state.ready, database_url, receiver
                )
                env = run_environ(sections, token)
                extras["notes"].extend(_passed_through(env))
                say(f"starting the service (store {store_kind})")
                service = await stack.enter_async_context(
                    service_process(
                        config_path, cwd=run_dir, env=env, log_path=run_dir / "service.log"
                    )
                )
                await wait_ready(client, service, config.ready_timeout)
                prometheus_url = None
                if config.prometheus:
                    host, port = service.address
                    _, prometheus_url = await stack.enter_async_context(
                        running_prometheus(scratch, f"{host}:{port}", run_environ(token=token))
                    )
                sampler = Sampler(client, service, generator, state)
                if "depth" in state.ready.get("depth_kinds", ()):
                    say(f"diff books: waiting for {len(state.ready['symbols'])} to go live")
                    extras["cold"] = await _prime_books(generator, client, service, state)
                    say(_cold_start_line(extras["cold"]))
                await sampler.sample("start")
                say("service ready: load starts")
                assert generator.process.stdin is not None
                await generator.process.stdin.send_all(b"start\n")
                profile_path = await _measure(
                    config, state, sampler, run_dir, stack, token, on_sample
                )
                say("draining")
                await _drain(config, state, sampler, on_sample)
                final = await sampler.sample("final")
                if prometheus_url is not None:
                    extras["prometheus"] = await _query_measured(prometheus_url, state)
                if receiver is not None:
                    extras["webhook"] = receiver.result(final)
                say("stopping the service")
                service_exit = await service.stop(signal.SIGTERM, grace=15.0)
        finally:
            nursery.cancel_scope.cancel()
    return RunOutput(
        config=config,
        run_dir=run_dir,
        store=store_kind,
        samples=state.samples,
        marks=state.marks,
        generator_ready=state.ready,
        generator_done=state.done,
        prometheus=extras["prometheus"],
        webhook=extras["webhook"],
        profile=profile_path,
        notes=extras["notes"],
        load_before=load_before,
        load_after=os.getloadavg(),
        service_exit=service_exit,
        cold_start=extras["cold"],
    )


def _prepare(run_dir: Path) -> str:
    """Create the run's directory; return the run's token (inherited, or a new one)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    return os.environ.get(RUN_TOKEN_ENV) or secrets.token_hex(8)


def _passed_through(env: dict[str, str]) -> list[str]:
    """A note naming the ``ORACULO_*`` configuration variables the service still gets."""
    passed = sorted(
        name for name in env if name.startswith(ENV_PREFIX) and not name.startswith(ENV_NOT_CONFIG)
    )
    return ["service environment overrides passed through: " + ", ".join(passed)] if passed else []


def _configure_service(
    config: RunConfig,
    run_dir: Path,
    scratch: Path,
    ready: dict[str, Any],
    database_url: str,
    receiver: WebhookReceiver | None,
) -> tuple[Path, dict[str, dict[str, Any]]]:
    """Write the service's ``oraculo.toml`` (and the load rules) for the generator that said
    ``ready``; return its path and its sections."""
    sections = service_config(
        config,
        exchange_url=ready["url"],
        symbols=ready["symbols"],
        depth_kinds=ready["depth_kinds"],
        trade_kinds=ready["trade_kinds"],
        database_url=database_url,
        rules_file=config.rules or str(run_dir / "rules.toml"),
        webhook_url=receiver.url if receiver is not None else None,
        scratch=scratch,
        rest_url=ready.get("rest_url", ""),
        source_settings=ready.get("service"),
    )
    if config.rules is None:
        (run_dir / "rules.toml").write_text(load_rules_text())
    return write_service_config(run_dir, sections), sections


BOOKS_TIMEOUT = 900.0
"""Seconds the cold start may take before the load starts anyway (500 books of weight 50
at the default budget of 3000 a minute need about 9 minutes)."""


async def _prime_books(
    generator: ChildProcess, client: httpx.AsyncClient, service: ServiceProcess, state: RunState
) -> dict[str, Any]:
    """The cold start: the market ticks; how long until every book is live, and whether any
    snapshot was refused (429/418) on the way."""
    symbols = len(state.ready["symbols"])
    assert generator.process.stdin is not None
    await generator.process.stdin.send_all(b"prime\n")
    started = trio.current_time()
    live = 0
    samples: dict[str, Any] = {}
    with trio.move_on_after(BOOKS_TIMEOUT):
        while live < symbols:
            await trio.sleep(0.1)  # the service's counters have no event to wait on
            response = await client.get(service.url + "/metrics")
            samples = parse_samples(response.text)
            live = int(_total(samples, "oraculo_book_symbols", state="live"))
    took = trio.current_time() - started if live >= symbols else None
    return {
        "symbols": symbols,
        "live": live,
        "live_after_seconds": took,
        "timeout_seconds": BOOKS_TIMEOUT,
        "rate_limited": int(
            _total(samples, "oraculo_book_snapshot_requests_total", outcome="rate_limited")
            + _total(samples, "oraculo_book_snapshot_requests_total", outcome="banned")
        ),
        "rest_weight_used": int(_total(samples, "oraculo_rest_weight_used_total")),
        "rest_weight_budget_per_minute": _total(samples, "oraculo_rest_weight_budget"),
        # Diffs of books still waiting for their snapshot, past the sync buffer's bound.
        "overflow": int(_total(samples, "oraculo_alerts_queue_dropped_total", reason="overflow")),
    }


def _total(samples: dict[str, Any], name: str, **labels: str) -> float:
    return sum(
        value
        for sample_labels, value in samples.get(name, ())
        if all(sample_labels.get(k) == v for k, v in labels.items())
    )


def _cold_start_line(cold_start: dict[str, Any]) -> str:
    took = cold_start["live_after_seconds"]
    limit = cold_start["timeout_seconds"]
    shown = f"{took:.1f} s" if took is not None else f"not within {limit:g} s"
    return (
        f"diff books: {cold_start['live']}/{cold_start['symbols']} live after {shown}, "
        f"{cold_start['rate_limited']} snapshots refused (429/418), "
        f"{cold_start.get('overflow', 0)} buffered diffs shed (overflow)"
    )


async def _query_measured(prometheus_url: str, state: RunState) -> dict[str, float | None]:
    """Prometheus's answers over the measured phase."""
    start = state.samples[state.marks["measure_start"]]["wall"]
    end = state.samples[state.marks.get("measure_end", len(state.samples) - 1)]["wall"]
    await trio.sleep(1.5)  # one more scrape lands
    return await query_prometheus(prometheus_url, end - start, end)


@contextlib.asynccontextmanager
async def _generator(
    spec: GeneratorSpec, state: RunState, run_dir: Path, token: str, nursery: trio.Nursery
) -> AsyncIterator[ChildProcess]:
    """The generator process for the block, its events read into ``state``.

    Raises:
        ServiceProcessError: it cannot be started.

    Cancellation: leaving the block closes its stdin (it stops) and stops it.
    """
    argv = [sys.executable, "-m", "oraculo_trio.loadtest.generator", "--spec", spec.to_json()]
    async with child_process(
        argv,
        name="generator",
        cwd=run_dir,
        env=run_environ(token=token),
        log_path=run_dir / "generator.log",
        stdin=True,
        stop_grace=5.0,
    ) as generator:
        nursery.start_soon(read_generator, generator, state, state.ready_event)
        yield generator


async def _wait_generator(generator: ChildProcess, state: RunState) -> None:
    """Wait for the generator's ``ready`` event.

    Raises:
        LoadTestError: it did not say ``ready`` within 30 s.
    """
    with trio.move_on_after(30):
        await state.ready_event.wait()
    if not state.ready_event.is_set():
        raise LoadTestError(f"the generator did not start within 30 s:\n{generator.log_tail(15)}")


async def _measure(
    config: RunConfig,
    state: RunState,
    sampler: Sampler,
    run_dir: Path,
    stack: contextlib.AsyncExitStack,
    token: str,
    on_sample: OnSample | None,
) -> Path | None:
    """Sample every second until the generator is done; mark the measured phase."""
    profile_path = None
    next_sample = trio.current_time() + 1.0
    seen_phase = state.phase
    while "measure_end" not in state.marks:
        # A phase change that came while we were scraping is handled at once, not a second
        # later (the mark must be taken as close to the generator's phase change as we can).
        if state.done is None and state.phase == seen_phase:
            changed = state.phase_changed
            with trio.move_on_at(next_sample):
                await changed.wait()
        seen_phase = state.phase
        _check_alive(state, sampler)
        mark = None
        if state.phase in ("measure", "done") and "measure_start" not in state.marks:
            mark = "measure_start"
            if config.profile > 0:
                profile_path = await _start_profile(
                    stack, sampler.service, run_dir, config.profile, token
                )
        elif state.done is not None:
            mark = "measure_end"
        sample = await sampler.sample(mark)
        if on_sample is not None:
            on_sample(sample, config)
        if trio.current_time() >= next_sample:
            next_sample += 1.0
            if next_sample < trio.current_time():
                next_sample = trio.current_time() + 1.0
    return profile_path


def _check_alive(state: RunState, sampler: Sampler) -> None:
    """Raises LoadTestError when the generator or the service exited during the run."""
    generator, service = sampler.generator, sampler.service
    if state.generator_ended.is_set() and state.done is None:
        raise LoadTestError(
            f"the generator exited with {generator.process.poll()}:\n{generator.log_tail(15)}"
        )
    if service.process.poll() is not None:
        raise LoadTestError(
            f"the service exited with {service.returncode} during the run:\n" + service.log_tail(15)
        )


async def _drain(
    config: RunConfig,
    state: RunState,
    sampler: Sampler,
    on_sample: OnSample | None,
) -> None:
    """Wait until the exchange wrote everything and the service accounted for all of it."""
    with trio.move_on_after(config.drain_timeout):
        while state.drained is None and not state.generator_ended.is_set():
            changed = state.phase_changed
            await changed.wait()
        sent = state.drained["sent"] if state.drained is not None else state.generator["sent"]
        while True:
            sample = await sampler.sample()
            if on_sample is not None and len(state.samples) % 5 == 0:
                on_sample(sample, config)
            if accounted(sample) >= sent:
                return
            await trio.sleep(0.2)  # the service's counters have no push: poll them


async def _start_profile(
    stack: contextlib.AsyncExitStack,
    service: ServiceProcess,
    run_dir: Path,
    seconds: float,
    token: str,
) -> Path | None:
    """py-spy on the service for ``seconds`` (raw collapsed stacks); None without py-spy."""
    binary = shutil.which("py-spy")
    if binary is None:
        LOGGER.warning("py-spy not found (pip install py-spy): no profile")
        return None
    path = run_dir / "profile.txt"
    argv = [
        binary, "record", "--pid", str(service.pid), "--duration", str(max(1, int(seconds))),
        "--rate", "250", "--format", "raw", "--nonblocking", "--output", str(path),
    ]  # fmt: skip
    await stack.enter_async_context(
        child_process(
            argv,
            name="py-spy",
            cwd=run_dir,
            env=run_environ(token=token),
            log_path=run_dir / "py-spy.log",
            stop_grace=seconds + 5.0,
        )
    )
    return path


# --------------------------------------------------------------------------------------------
# Calibration: the generator alone, against a client that discards everything


async def _discard(
    url: str, counter: list[int], *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """A WebSocket client that reads and discards: handshake by hand, then count bytes."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    async with stream:
        resource = parts.path + (f"?{parts.query}" if parts.query else "")
        await stream.send_all(
            (
                f"GET {resource} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = await stream.receive_some(65536)
            if not chunk:
                raise LoadTestError("calibration: the exchange closed during the handshake")
            response += chunk
        if not response.startswith(b"HTTP/1.1 101"):
            raise LoadTestError(f"calibration: handshake refused: {response[:80]!r}")
        task_status.started()
        while True:
            chunk = await stream.receive_some(1 << 20)
            if not chunk:
                return
            counter[0] += len(chunk)


async def calibrate(
    spec: GeneratorSpec, run_dir: Path, say: Callable[[str], None] = lambda _t: None
) -> dict[str, Any]:
    """Run only the generator, against a client that reads and discards the bytes.

    Measures what the generator alone can do: its rate accuracy over the measured phase,
    its lateness and its CPU.

    Returns:
        The generator's ``done`` event plus ``bytes`` read and ``rate_error``.

    Raises:
        LoadTestError: the generator did not start or finish.

    Cancellation: stops the generator.
    """
    state = RunState()
    counter = [0]
    token = _prepare(run_dir)
    async with trio.open_nursery() as nursery:
        try:
            async with _generator(spec, state, run_dir, token, nursery) as generator:
                await _wait_generator(generator, state)
                assert generator.process.stdin is not None
                streams = state.ready["streams"]
                url = f"{state.ready['url']}/stream?streams={'/'.join(streams)}"
                await nursery.start(_discard, url, counter)
                say(f"calibrating: {spec.shape.rate:g} msg/s for {spec.shape.duration:g} s")
                await generator.process.stdin.send_all(b"start\n")
                while state.drained is None and not state.generator_ended.is_set():
                    changed = state.phase_changed
                    await changed.wait()
                if state.done is None:
                    raise LoadTestError(f"the generator ended early:\n{generator.log_tail(15)}")
        finally:
            nursery.cancel_scope.cancel()
    done = dict(state.done)
    expected = done["expected"] or 1
    done["bytes"] = counter[0]
    done["rate_error"] = abs(done["window_sent"] - expected) / expected
    return done
