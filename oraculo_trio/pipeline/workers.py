"""``oraculo-trio run --workers N``: one Trio supervisor, N worker processes.

One Python process evaluates on one core (the GIL), so the service scales on a machine with
processes. Each worker is a whole service (the full nursery tree of
:func:`~oraculo_trio.pipeline.service.run_service`) for a disjoint set of partitions: with
``cluster.mode = "single"`` worker ``i`` owns the partitions ``p % N == i``; with
``cluster.mode = "postgres"`` every worker is an instance of the cluster and claims its fair
share (see :mod:`oraculo_trio.pipeline.partitions`).

The supervisor (:func:`run_supervisor`):

- migrates the store once, then starts the workers (``python -m oraculo_trio.cli run`` with
  the same configuration, ``--worker-index i``), each in its own session so a terminal's
  Ctrl-C reaches only the supervisor;
- restarts a worker that exits on its own, with exponential backoff (reset after a healthy
  minute);
- on SIGINT/SIGTERM sends SIGTERM to every worker and waits for each to drain (its
  ``service.shutdown_grace`` plus a margin, then SIGKILL); a second signal is forwarded as
  it is, which makes the workers exit at once; SIGHUP (reload the rules) is forwarded;
- serves ``/metrics`` for all workers on ``http.host:http.port``: each worker serves its own
  registry (every sample labelled ``worker="i"``) on an ephemeral 127.0.0.1 port, and the
  supervisor reads and merges them family by family at scrape time, with its own
  ``oraculo_worker_*`` series. ``/readyz`` is ready when every worker is.

A worker reports its endpoint on a socket inherited from the supervisor (``--worker-fd``)
and keeps that socket open: when it reads end-of-file the supervisor is gone (even killed
with SIGKILL), and the worker shuts down gracefully instead of running on as an orphan.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import signal
import socket
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any

import attrs
import trio
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from oraculo_trio.api.server import Api, ApiSources
from oraculo_trio.errors import ConfigError, OraculoError
from oraculo_trio.observe.health import ComponentStatus, Readiness, Reason
from oraculo_trio.observe.http import serve_http
from oraculo_trio.observe.logs import configure_logging
from oraculo_trio.observe.metrics import SupervisorMetrics
from oraculo_trio.observe.supervise import RestartPolicy
from oraculo_trio.pipeline.partitions import Placement
from oraculo_trio.settings import Settings

LOGGER = logging.getLogger("oraculo_trio.pipeline.workers")

MAX_WORKERS = 256

STOP_MARGIN = 5.0
"""Seconds a worker gets beyond ``service.shutdown_grace`` to exit before SIGKILL."""

SCRAPE_TIMEOUT = 5.0
"""Seconds the supervisor waits for one worker's /metrics or /readyz."""

RESTART = RestartPolicy(initial=0.5, maximum=30.0, reset_after=60.0)


def worker_count(value: str) -> int:
    """Parse ``--workers``: a positive integer, or ``auto`` (one per usable core).

    Raises:
        ConfigError: anything else.
    """
    if value == "auto":
        return max(1, len(os.sched_getaffinity(0)))
    try:
        count = int(value)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_WORKERS:
        raise ConfigError(
            f"--workers {value!r} is not allowed: expected an integer 1..{MAX_WORKERS} or 'auto'"
        )
    return count


@attrs.define(eq=False)
class WorkerSlot:
    """The supervisor's view of worker ``index``: its process and its HTTP endpoint."""

    index: int
    process: trio.Process | None = None
    # Base URL of the worker's HTTP endpoint, once reported (read by the HTTP thread).
    url: str | None = None
    started: trio.Event = attrs.field(factory=trio.Event)
    starts: int = 0


@attrs.define(eq=False)
class SupervisorHandle:
    """What a running supervisor hands to whoever started it."""

    http_address: tuple[str, int]
    slots: Sequence[WorkerSlot]
    metrics: SupervisorMetrics
    _shutdown: trio.Event = attrs.field(factory=trio.Event)

    def request_shutdown(self) -> None:
        """Drain every worker and stop (what the first SIGINT/SIGTERM does)."""
        self._shutdown.set()

    async def wait_workers_ready(self) -> None:
        """Wait until every worker has reported its endpoint once."""
        for slot in self.slots:
            await slot.started.wait()


class _WorkerEndpoints:
    """Worker URLs as the HTTP thread reads them (written from the Trio thread)."""

    def __init__(self, slots: Sequence[WorkerSlot]) -> None:
        self._slots = slots
        self._lock = threading.Lock()

    def snapshot(self) -> list[tuple[int, str | None]]:
        with self._lock:
            return [(slot.index, slot.url) for slot in self._slots]

    def set(self, slot: WorkerSlot, url: str | None) -> None:
        with self._lock:
            slot.url = url


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class WorkersCollector(Collector):
    """Every worker's /metrics, merged family by family at scrape time (HTTP thread)."""

    def __init__(self, endpoints: _WorkerEndpoints, metrics: SupervisorMetrics) -> None:
        self._endpoints = endpoints
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for index, url in self._endpoints.snapshot():
            if url is None:
                continue
            try:
                status, body = _get(url + "/metrics")
                if status != 200:
                    raise OSError(f"HTTP {status}")
                parsed = list(text_string_to_metric_families(body.decode()))
            except (OSError, ValueError) as exc:
                self._metrics.worker_scrape_errors[str(index)].inc()
                LOGGER.warning("reading worker %d's /metrics failed: %s", index, exc)
                continue
            for family in parsed:
                merged = families.get(family.name)
                if merged is None:
                    families[family.name] = family
                else:
                    merged.samples.extend(family.samples)
        yield from families.values()


class WorkersReadiness(Readiness):
    """Ready when every worker's /readyz is; one component per worker."""

    def __init__(self, endpoints: _WorkerEndpoints) -> None:
        super().__init__()
        self._endpoints = endpoints

    def snapshot(self) -> tuple[bool, dict[str, ComponentStatus]]:
        status: dict[str, ComponentStatus] = {}
        for index, url in self._endpoints.snapshot():
            name = f"worker-{index}"
            if url is None:
                status[name] = {"ok": False, "detail": "not running"}
                continue
            try:
                code, body = _get(url + "/readyz")
                not_ready = json.loads(body).get("not_ready", [])
            except (OSError, ValueError) as exc:
                status[name] = {"ok": False, "detail": f"no answer: {exc}"}
                continue
            detail = "not ready: " + ", ".join(not_ready) if not_ready else ""
            status[name] = {"ok": code == 200, "detail": detail}
        return all(entry["ok"] for entry in status.values()), status

    def reasons(self) -> list[Reason]:
        """Every worker's reasons, each with its ``worker``; a worker that does not answer
        is a reason of its own (``worker_down``)."""
        reasons: list[Reason] = []
        for index, url in self._endpoints.snapshot():
            try:
                if url is None:
                    raise OSError("not running")
                _, body = _get(url + "/readyz")
                document = json.loads(body)
            except (OSError, ValueError) as exc:
                reasons.append(
                    {"reason": "worker_down", "component": f"worker-{index}", "detail": str(exc)}
                )
                continue
            for reason in document.get("reasons") or []:
                if isinstance(reason, dict):
                    reasons.append({**reason, "worker": index})
        return reasons


async def run_supervisor(
    settings: Settings,
    workers: int,
    worker_command: Sequence[str],
    *,
    handle_signals: bool = True,
    task_status: trio.TaskStatus[SupervisorHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep ``workers`` worker processes running until shutdown, then drain them all.

    Args:
        settings: the validated configuration (the workers read the same sources).
        workers: how many worker processes.
        worker_command: argv of a worker without its ``--worker-index``/``--worker-fd``.
        handle_signals: forward SIGINT/SIGTERM (only from the main thread).
        task_status: receives a :class:`SupervisorHandle` once the HTTP endpoint is up and
            the workers are starting.

    Raises:
        ConfigError, StoreError: the store cannot be opened or migrated.

    Cancellation: every worker gets SIGTERM and its grace to drain (shielded), then SIGKILL.
    """
    from oraculo_trio.store.opening import open_store

    metrics = SupervisorMetrics(workers=workers, constant_labels={"service": settings.service.name})
    slots = [WorkerSlot(i) for i in range(workers)]
    endpoints = _WorkerEndpoints(slots)
    metrics.registry.register(WorkersCollector(endpoints, metrics))
    env = {**os.environ, "ORACULO_HTTP_HOST": "127.0.0.1"}
    # Opened (and migrated) before any worker opens it, so no two of them migrate at once;
    # kept open for the API, which answers for every worker from the store.
    async with open_store(
        settings.database.url, statement_timeout=settings.database.statement_timeout
    ) as store:
        api = Api(
            ApiSources(
                store=store,
                rules=functools.partial(_rules_of_source, settings, store),
                symbols=settings.symbols,
                status=lambda: {"service": settings.service.name, "workers": workers},
            ),
            host=settings.http.host,
            token=settings.http.api_token,
        )
        await _supervise(settings, workers, worker_command, handle_signals, task_status,
                         metrics, slots, endpoints, env, api)  # fmt: skip
    LOGGER.info("all workers stopped")


async def _rules_of_source(settings: Settings, store: Any) -> list[Any]:
    """The rules the workers run (their source read again); [] when it does not load."""
    from oraculo_trio.pipeline.rules_source import load_db_rules, load_rule_file, rules_path

    try:
        if settings.rules.source == "db":
            return await load_db_rules(store)
        return await trio.to_thread.run_sync(load_rule_file, rules_path(settings))
    except OraculoError as exc:
        LOGGER.warning("the API cannot read the rules: %s", exc)
        return []


async def _supervise(
    settings: Settings,
    workers: int,
    worker_command: Sequence[str],
    handle_signals: bool,
    task_status: trio.TaskStatus[SupervisorHandle],
    metrics: SupervisorMetrics,
    slots: list[WorkerSlot],
    endpoints: _WorkerEndpoints,
    env: dict[str, str],
    api: Api,
) -> None:
    with serve_http(
        settings.http.host,
        settings.http.port,
        metrics,  # serve_http only reads .registry
        WorkersReadiness(endpoints),
        api=api,
    ) as http_address:
        handle = SupervisorHandle(http_address, slots, metrics)
        grace = settings.service.shutdown_grace + STOP_MARGIN
        async with trio.open_nursery() as nursery:
            if handle_signals:
                await nursery.start(_forward_signals, handle)
            pool = _Workers(slots, worker_command, env, endpoints, metrics, grace)
            nursery.start_soon(pool.run)
            LOGGER.info(
                "supervising %d workers; /metrics of all of them on http://%s:%d/metrics",
                workers,
                *http_address,
            )
            task_status.started(handle)
            await handle._shutdown.wait()
            LOGGER.info("stopping %d workers (each drains within %.1f s)", workers, grace)
            pool.scope.cancel()
            # Each worker drains (shielded); meanwhile a second signal is still forwarded.
            await pool.done.wait()
            nursery.cancel_scope.cancel()


@attrs.define(eq=False)
class _Workers:
    """How the supervisor starts, restarts and stops its worker processes."""

    slots: Sequence[WorkerSlot]
    command: Sequence[str]
    env: dict[str, str]
    endpoints: _WorkerEndpoints
    metrics: SupervisorMetrics
    grace: float
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    done: trio.Event = attrs.field(factory=trio.Event)

    async def run(self) -> None:
        """Keep every worker running until ``scope`` is cancelled; then set ``done``."""
        try:
            with self.scope:
                async with trio.open_nursery() as nursery:
                    for slot in self.slots:
                        nursery.start_soon(self._keep, slot)
        finally:
            self.done.set()

    async def _keep(self, slot: WorkerSlot) -> None:
        """Run worker ``slot.index``, restarting it with backoff whenever it exits on its own."""
        failures = 0
        while True:
            began = trio.current_time()
            code = await self._run_once(slot)
            ran = trio.current_time() - began
            failures = 1 if ran >= RESTART.reset_after else failures + 1
            delay = RESTART.delay(failures)
            LOGGER.error(
                "worker %d exited with %s after %.1f s; restarting in %.2f s",
                slot.index,
                _describe_exit(code),
                ran,
                delay,
            )
            self.metrics.worker_restarts[str(slot.index)].inc()
            await trio.sleep(delay)

    async def _run_once(self, slot: WorkerSlot) -> int | None:
        """Start the worker and wait for its exit; return its exit code.

        Cancellation: SIGTERM, then the worker's grace to drain (shielded), then SIGKILL.
        """
        ours, theirs = socket.socketpair()
        try:
            process = await trio.lowlevel.open_process(
                [
                    *self.command,
                    "--worker-index",
                    str(slot.index),
                    "--worker-fd",
                    str(theirs.fileno()),
                ],
                pass_fds=(theirs.fileno(),),
                env=self.env,
                start_new_session=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        slot.process = process
        slot.starts += 1
        LOGGER.info("worker %d started (pid %d)", slot.index, process.pid)
        control = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
        try:
            async with control:
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._read_reports, control, slot)
                        await process.wait()
                        nursery.cancel_scope.cancel()
                    return process.returncode
                finally:
                    # SIGTERM first, with the control socket still open: the worker would
                    # take its end-of-file for a shutdown request, and the SIGTERM for a
                    # second one.
                    if process.returncode is None:
                        with trio.CancelScope(shield=True):
                            await _stop(process, self.grace)
        finally:
            self.endpoints.set(slot, None)
            self.metrics.worker_up[str(slot.index)].set(0)
            slot.process = None

    async def _read_reports(self, control: trio.SocketStream, slot: WorkerSlot) -> None:
        buffer = b""
        while True:
            data = await control.receive_some(4096)
            if not data:
                return
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                try:
                    report = json.loads(line)
                    host, port = report["http"]
                except (ValueError, KeyError, TypeError):
                    LOGGER.warning(
                        "worker %d sent an unreadable report: %r", slot.index, line[:200]
                    )
                    continue
                self.endpoints.set(slot, f"http://{host}:{port}")
                self.metrics.worker_up[str(slot.index)].set(1)
                slot.started.set()
                LOGGER.info("worker %d ready, metrics on http://%s:%d", slot.index, host, port)


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        return signal.Signals(-code).name
    return f"code {code}"


async def _stop(process: trio.Process, grace: float) -> None:
    """SIGTERM, ``grace`` seconds to drain, then SIGKILL."""
    process.send_signal(signal.SIGTERM)
    with trio.move_on_after(grace):
        await process.wait()
    if process.returncode is None:
        LOGGER.error("worker pid %d did not stop within %.1f s: killing it", process.pid, grace)
        process.kill()
        await process.wait()
    LOGGER.info("worker pid %d stopped (%s)", process.pid, _describe_exit(process.returncode))


async def _forward_signals(
    handle: SupervisorHandle, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                LOGGER.info("SIGHUP received: forwarded to every worker (rules reload)")
                _signal_workers(handle, signum)
                continue
            if not handle._shutdown.is_set():
                LOGGER.warning("%s received: draining every worker (send it again to exit)", name)
                handle.request_shutdown()
                continue
            LOGGER.error("second %s: forwarded, the workers exit at once", name)
            _signal_workers(handle, signum)


def _signal_workers(handle: SupervisorHandle, signum: int) -> None:
    for slot in handle.slots:
        if slot.process is not None and slot.process.returncode is None:
            slot.process.send_signal(signum)


async def run_worker(
    settings: Settings, rules: Sequence[Any], placement: Placement, control_fd: int
) -> None:
    """Run the service as worker ``placement.worker`` under a supervisor.

    Reports the worker's HTTP endpoint on ``control_fd``, then shuts down gracefully when
    the supervisor goes away (end-of-file on it), or on SIGTERM as any service does.

    Cancellation: cancels the service (its store writer still flushes, shielded).
    """
    from oraculo_trio.pipeline.service import run_service

    control = trio.SocketStream(trio.socket.from_stdlib_socket(socket.socket(fileno=control_fd)))
    watch = trio.CancelScope()

    async def service(*, task_status: trio.TaskStatus[Any]) -> None:
        try:
            await run_service(settings, rules, placement=placement, task_status=task_status)
        finally:
            watch.cancel()

    async with control, trio.open_nursery() as nursery:
        handle = await nursery.start(service)
        host, port = handle.http_address
        report = {"worker": placement.worker, "pid": os.getpid(), "http": [host, port]}
        await control.send_all(json.dumps(report).encode() + b"\n")
        with watch:
            # The supervisor never writes: end-of-file means it is gone.
            while await control.receive_some(4096):
                pass
            LOGGER.warning("the supervisor is gone: shutting down")
            handle.request_shutdown()


def _log_as_worker(settings: Settings, index: int) -> None:
    # Each line tagged with the worker (the supervisor's lines have no tag).
    configure_logging(settings.service.log_level, settings.service.log_format, worker=index)


def worker_command(args: argparse.Namespace, settings: Settings, workers: int) -> list[str]:
    """argv of a worker: ``run`` with the supervisor's configuration, on an ephemeral port."""
    command = [sys.executable, "-m", "oraculo_trio.cli", "run", "--workers", str(workers)]
    if settings.source != "defaults":
        command += ["--config", os.path.abspath(settings.source)]
    if getattr(args, "database_url", None):
        command += ["--database-url", args.database_url]
    if getattr(args, "log_level", None):
        command += ["--log-level", args.log_level]
    return [*command, "--http-port", "0"]


def run_workers_command(
    args: argparse.Namespace, settings: Settings, rules: Sequence[Any], workers: int
) -> int:
    """``run --workers N`` (the supervisor) or ``run --worker-index i`` (one worker).

    Returns:
        The exit code.
    """
    if args.worker_index is not None:
        if not 0 <= args.worker_index < workers or args.worker_fd is None:
            raise ConfigError(
                f"--worker-index {args.worker_index} needs --worker-fd and 0 <= index < "
                f"--workers ({workers}); these options are for the supervisor's use"
            )
        _log_as_worker(settings, args.worker_index)
        placement = Placement(worker=args.worker_index, workers=workers)
        trio.run(run_worker, settings, rules, placement, args.worker_fd)
        return 0
    LOGGER.info("starting %d workers (cluster.mode %s)", workers, settings.cluster.mode)
    trio.run(
        functools.partial(
            run_supervisor, settings, workers, worker_command(args, settings, workers)
        )
    )
    return 0
