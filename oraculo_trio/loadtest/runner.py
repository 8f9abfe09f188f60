"""The load-test runner: generator, service and Prometheus as processes, one measured run.

::

    run_load_test(config)
    ├── generator process   python -m oraculo_trio.loadtest.generator
    │                       (mock exchange + open-loop schedule)
    ├── service process     oraculo-trio run --config <run dir>/oraculo.toml (fresh store)
    ├── prometheus process  with --prometheus: scrapes the service every second
    ├── webhook receiver    with --webhook: answers 200 / 500 / never (in this process)
    └── sampler             /metrics + /proc every second; the generator's JSON events

Steps: start the generator (it prints its URL), the service pointed at it, wait for
``/readyz``, tell the generator to ``start``: ramp, warm-up, measured phase (the generator
marks the phases; the runner snapshots the service's counters at each mark), then drain (wait
until the service has accounted for every frame the exchange wrote) and stop everything.

Every child runs in its own session (process group), so a Ctrl-C at the terminal reaches only
the runner, which then stops each group on every exit path: SIGTERM, a short grace, SIGKILL.
The generator also stops when its stdin (the runner's pipe) closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import attrs
import httpx
import trio

from oraculo_trio.errors import ConfigError, OraculoError
from oraculo_trio.loadtest.generator import GeneratorSpec, build_source
from oraculo_trio.loadtest.report import accounted
from oraculo_trio.mockexchange.diffbook import book_section
from oraculo_trio.observe.metrics import BAD_FRAME_REASONS, DROP_REASONS
from oraculo_trio.observe.process import read_thread_cpu
from oraculo_trio.observe.report import histogram_buckets, parse_samples

LOGGER = logging.getLogger("oraculo_trio.loadtest.runner")

ROOT = Path(__file__).resolve().parents[2]

STREAMS = ("depth", "trade")

#: Environment variable every child gets, with the run's token: lets a test (or a person)
#: find any process a run left behind in /proc/*/environ. (Not ORACULO_*: the service
#: refuses unknown ORACULO_ variables.)
RUN_TOKEN_ENV = "LOADTEST_RUN_TOKEN"

#: Settings the runner decides; ``ORACULO_*`` variables for them are not passed to the service.
RUNNER_KEYS = (
    ("feed", "url"),
    ("feed", "symbols"),
    ("feed", "depth_streams"),
    ("feed", "trade_streams"),
    ("database", "url"),
    ("http", "host"),
    ("http", "port"),
    ("rules", "file"),
    ("rules", "source"),
    ("dispatch", "sinks"),
    ("dispatch", "webhook_url"),
    ("observe", "dump_dir"),
)

WEBHOOK_MODES = ("ok", "fail", "hang")


class LoadTestError(OraculoError):
    """Raised when a load test cannot run or finish: a process would not start or become
    ready, died during the run, or an option asks for something the service cannot do."""


@attrs.frozen
class RunConfig:
    """One load test, as ``oraculo-trio loadtest STREAM RATE`` describes it.

    Attributes:
        stream: ``depth``, ``trade``, ``mixed`` (or a registered source).
        rate: messages per second.
        duration: measured seconds.
        warmup: seconds at full rate before measuring.
        ramp: seconds of linear rise from 0 before the warm-up.
        symbols: synthetic symbols.
        distribution: ``uniform`` or ``zipf:S``.
        tick_ms: milliseconds between bursts.
        batch: messages per burst instead (the tick becomes batch / rate).
        trade_ratio: share of trades for ``mixed``.
        levels: partial book depth.
        seed: market seed.
        faithful: no ``E`` on partial books.
        database_url: a PostgreSQL server URL to create a fresh database on; None: SQLite.
        prometheus: also run a Prometheus scraping every second.
        webhook: ``ok`` / ``fail`` / ``hang``: a local receiver wired as the webhook sink.
        thresholds: extra ``--threshold`` expressions.
        strict: add DESIGN.md's targets to the thresholds.
        out: artifact directory (default ``artifacts/loadtest/<UTC timestamp>``).
        settings: ``section.key=value`` overrides for the service.
        rules: a rule file instead of the built-in load rules (made absolute).
        alert_period: seconds between alert frames (0: none).
        drain_timeout: seconds the drain may take.
        ready_timeout: seconds the service may take to become ready.
        profile: seconds of py-spy on the service during the measured phase (0: none).
        progress: print the live progress line.
        faults: faults the source injects (``depthdiff``: ``gaps,dups,429``...).
    """

    stream: str = "depth"
    rate: float = 1500.0
    duration: float = 60.0
    warmup: float = 5.0
    ramp: float = 0.0
    symbols: int = 50
    distribution: str = "uniform"
    tick_ms: float = 100.0
    batch: int | None = None
    trade_ratio: float = 0.2
    levels: int = 20
    seed: int = 0
    faithful: bool = False
    database_url: str | None = None
    prometheus: bool = False
    webhook: str | None = None
    thresholds: tuple[str, ...] = ()
    strict: bool = False
    out: str | None = None
    settings: tuple[str, ...] = ()
    rules: str | None = attrs.field(
        default=None, converter=lambda path: os.path.abspath(path) if path else None
    )
    alert_period: float = 0.5
    drain_timeout: float = 60.0
    ready_timeout: float = 30.0
    profile: float = 0.0
    progress: bool = True
    faults: str = ""

    def generator_spec(self) -> GeneratorSpec:
        """The generator process's spec."""
        return GeneratorSpec(
            stream=self.stream,
            rate=self.rate,
            duration=self.duration,
            warmup=self.warmup,
            ramp=self.ramp,
            symbols=self.symbols,
            distribution=self.distribution,
            tick=self.tick_ms / 1000.0,
            batch=self.batch,
            levels=self.levels,
            trade_ratio=self.trade_ratio,
            seed=self.seed,
            faithful=self.faithful,
            alert_period=self.alert_period,
            faults=self.faults,
        )

    def check(self) -> None:
        """Fail early on values the generator or the service would refuse.

        Raises:
            ConfigError: naming the option and what is allowed.
        """
        if self.webhook is not None and self.webhook not in WEBHOOK_MODES:
            raise ConfigError(f"--webhook {self.webhook!r}: expected one of {WEBHOOK_MODES}")
        try:
            spec = self.generator_spec()
            spec.schedule()
            build_source(spec)
        except ValueError as exc:
            raise ConfigError(f"loadtest: {exc}") from None
        for item in self.settings:
            parse_setting(item)


def parse_setting(item: str) -> tuple[str, str, str]:
    """``section.key=value`` -> (section, key, value).

    Raises:
        ConfigError: not of that form.
    """
    name, sep, value = item.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not section or not key:
        raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE")
    return section, key, value.strip()


# --------------------------------------------------------------------------------------------
# Child processes


@attrs.define(eq=False)
class Child:
    """A child process in its own process group (``start_new_session``)."""

    name: str
    process: trio.Process

    @property
    def pid(self) -> int:
        return self.process.pid

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to the child's whole process group (ignored once it is gone)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    async def stop(self, grace: float) -> int | None:
        """SIGTERM the group, wait up to ``grace`` seconds, then SIGKILL it; reap the child.

        Returns:
            The exit code (negative: killed by that signal).

        Cancellation: not interruptible in practice (callers shield it); always reaps.
        """
        if self.process.returncode is None:
            self.signal_group(signal.SIGTERM)
            with trio.move_on_after(grace):
                await self.process.wait()
        # Stragglers in the group (grandchildren), and the child itself if it ignored TERM.
        self.signal_group(signal.SIGKILL)
        await self.process.wait()
        return self.process.returncode


@attrs.define(eq=False)
class Children:
    """Every child of a run; ``aclose`` stops them all, whatever happened."""

    token: str
    env: dict[str, str]
    started: list[Child] = attrs.field(factory=list)

    async def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cwd: Path,
        stdin: int | None = None,
        stdout: int | Any = None,
        stderr: int | Any = None,
        env: dict[str, str] | None = None,
    ) -> Child:
        """Start ``argv`` in a new session with the run's environment.

        Raises:
            LoadTestError: the program cannot be started.
        """
        try:
            process = await trio.lowlevel.open_process(
                list(argv),
                cwd=str(cwd),
                env=env if env is not None else self.env,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        except OSError as exc:
            raise LoadTestError(f"cannot start {name} ({argv[0]}): {exc}") from None
        child = Child(name, process)
        self.started.append(child)
        return child

    async def aclose(self, grace: float = 3.0) -> None:
        """Stop every child still running (in parallel), each within ``grace`` seconds.

        Cancellation: shielded; bounded by ``grace`` plus the SIGKILL.
        """
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as nursery:
                for child in self.started:
                    nursery.start_soon(child.stop, grace)


@contextlib.asynccontextmanager
async def open_children(token: str | None = None) -> AsyncIterator[Children]:
    """Children that are all stopped when the block exits, on every path.

    Each child's environment has :data:`RUN_TOKEN_ENV` set to ``token`` (default: the one this
    process was given, else a new one), so whatever a run started can be found in /proc.
    """
    token = token or os.environ.get(RUN_TOKEN_ENV) or secrets.token_hex(8)
    env = dict(os.environ)
    env[RUN_TOKEN_ENV] = token
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    children = Children(token, env)
    try:
        yield children
    finally:
        await children.aclose()


class LineReader:
    """Lines of a child's stdout."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""

    async def next_line(self) -> str | None:
        """The next line without its newline; None at the end of the stream."""
        while b"\n" not in self._buffer:
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode("utf-8", "replace")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) of process ``pid``; None once it is gone."""
    return read_thread_cpu(pid, "/proc")


def process_rss(pid: int) -> int | None:
    """Resident set size of process ``pid`` in bytes; None once it is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file (for error messages)."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("    " + line for line in text[-lines:])


# --------------------------------------------------------------------------------------------
# The store


def admin_sql(url: str, *statements: str, timeout: float = 10.0) -> None:
    """Run ``statements`` on the PostgreSQL server at ``url`` (CREATE/DROP DATABASE...).

    Blocking: asyncpg on its own asyncio loop, so call it from a worker thread (the runner)
    or outside any Trio run (sync test fixtures).

    Raises:
        OSError, asyncpg.PostgresError, asyncpg.InterfaceError: as asyncpg raises them.
    """
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(url, timeout=timeout)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


@contextlib.asynccontextmanager
async def fresh_store(database_url: str | None, run_dir: Path) -> AsyncIterator[tuple[str, str]]:
    """A fresh, empty store for one run.

    Args:
        database_url: a PostgreSQL URL (its database is only used to connect: a new database
            ``oraculo_loadtest_<hex>`` is created beside it and dropped afterwards), or None
            for a new SQLite file in ``run_dir``.
        run_dir: the run's scratch directory.

    Yields:
        ``(url, kind)``: the service's ``database.url`` and ``sqlite`` / ``postgresql``.

    Raises:
        LoadTestError: the PostgreSQL server cannot be reached or refuses.
    """
    if database_url is None:
        yield f"sqlite:///{run_dir / 'oraculo.db'}", "sqlite"
        return
    if not database_url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"--database-url {database_url!r}: expected a postgresql:// URL")
    name = f"oraculo_loadtest_{secrets.token_hex(6)}"
    parts = urlsplit(database_url)
    url = urlunsplit(parts._replace(path=f"/{name}"))
    try:
        await trio.to_thread.run_sync(admin_sql, database_url, f'CREATE DATABASE "{name}"')
    except Exception as exc:  # asyncpg's errors and OSError: all mean "cannot create"
        raise LoadTestError(
            f"cannot create a database on {parts.hostname}:{parts.port}: {exc}"
        ) from None
    try:
        yield url, "postgresql"
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(15):
            try:
                await trio.to_thread.run_sync(
                    admin_sql, database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
                )
            except Exception:
                LOGGER.warning("could not drop database %s", name, exc_info=True)


# --------------------------------------------------------------------------------------------
# Service configuration


def load_rules_text() -> str:
    """The built-in load rules: alert on the generator's alert frames (wide spread, spike).

    Every alert frame fires an alert that the next normal message resolves, so the store
    writes about ``2 / alert_period`` transitions a second whatever the rate.
    """
    from oraculo_trio.loadtest.generator import SPIKE_LEVEL, WIDE_SPREAD_BPS

    return (
        "# Written by oraculo-trio loadtest: alert on the generator's alert frames.\n"
        "[[rule]]\n"
        'id = "loadtest-wide-spread"\n'
        'kind = "spread_above_bps"\n'
        'symbols = ["*"]\n'
        f"params = {{ bps = {WIDE_SPREAD_BPS} }}\n"
        'trigger = "every_time"\n'
        'message = "{symbol} spread {value:.0f} bps"\n'
        "\n"
        "[[rule]]\n"
        'id = "loadtest-price-spike"\n'
        'kind = "crossing"\n'
        'symbols = ["*"]\n'
        f"params = {{ level = {SPIKE_LEVEL} }}\n"
        'trigger = "every_time"\n'
        'message = "{symbol} traded at {value}"\n'
    )


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def toml_document(sections: dict[str, dict[str, Any]]) -> str:
    """A TOML document of scalar and list values (enough for the service's settings)."""
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)


def service_sections(
    config: RunConfig,
    *,
    exchange_url: str,
    symbols: Sequence[str],
    depth_kinds: Sequence[str],
    trade_kinds: Sequence[str],
    database_url: str,
    http_port: int,
    rules_file: str,
    webhook_url: str | None,
    scratch: Path,
    rest_url: str = "",
    source_settings: dict[str, dict[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """The service's configuration for one run (``--set`` overrides applied last)."""
    sections: dict[str, dict[str, Any]] = {
        "service": {"log_level": "INFO"},
        "feed": {
            "url": exchange_url,
            "symbols": list(symbols),
            "depth_streams": list(depth_kinds),
            "trade_streams": list(trade_kinds),
            "reconnect_initial": 0.2,
            "reconnect_max": 2.0,
            **({"rest_url": rest_url} if rest_url else {}),
        },
        "rules": {"file": rules_file, "source": "file"},
        "database": {"url": database_url},
        "dispatch": {
            "sinks": ["webhook"] if webhook_url else ["log"],
            **({"webhook_url": webhook_url} if webhook_url else {}),
        },
        "http": {"host": "127.0.0.1", "port": http_port},
        "observe": {"dump_dir": str(scratch / "dumps")},
    }
    # What the source needs (a diff book's snapshot depth...); --set still wins.
    for section, values in (source_settings or {}).items():
        sections.setdefault(section, {}).update(values)
    for item in config.settings:
        section, key, value = parse_setting(item)
        sections.setdefault(section, {})[key] = value
    return sections


def service_env(base: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The service's environment: ``base`` without ``ORACULO_*`` variables for keys the
    runner sets. Returns it and the names of the ``ORACULO_*`` overrides passed through."""
    from oraculo_trio.settings import ENV_NOT_CONFIG, ENV_PREFIX

    blocked = {f"{ENV_PREFIX}{s.upper()}_{k.upper()}" for s, k in RUNNER_KEYS}
    env = {k: v for k, v in base.items() if k not in blocked}
    passed = sorted(k for k in env if k.startswith(ENV_PREFIX) and not k.startswith(ENV_NOT_CONFIG))
    return env, passed


def check_webhook_sink(config_path: Path) -> None:
    """Fail clearly when this service cannot deliver to a webhook.

    Raises:
        LoadTestError: ``dispatch.sinks = ["webhook"]`` builds no sink named ``webhook``.
    """
    from oraculo_trio.pipeline.service import build_sinks
    from oraculo_trio.settings import load_settings

    settings = load_settings(config_path, environ={})
    try:
        sinks = build_sinks(settings)
    except (TypeError, ValueError, OraculoError) as exc:
        raise LoadTestError(
            f"--webhook: the service cannot build its webhook sink: {exc}"
        ) from None
    if not any(getattr(sink, "name", None) == "webhook" for sink in sinks):
        raise LoadTestError(
            "--webhook: this service has no webhook sink yet (dispatch.sinks = ['webhook'] "
            "builds none in oraculo_trio.pipeline.service.build_sinks); run without --webhook"
        )


# --------------------------------------------------------------------------------------------
# Prometheus and the webhook receiver


PROMETHEUS_QUERIES = {
    "queue_time_p99": "histogram_quantile(0.99, sum by (le) "
    "(increase(oraculo_alerts_queue_time_seconds_bucket[{window}s])))",
    "queue_time_p95": "histogram_quantile(0.95, sum by (le) "
    "(increase(oraculo_alerts_queue_time_seconds_bucket[{window}s])))",
    "lag_p95": "quantile_over_time(0.95, oraculo_event_loop_lag_seconds[{window}s])",
    "lag_max": "max_over_time(oraculo_event_loop_lag_seconds[{window}s])",
    "queue_depth_peak": "max(max_over_time(oraculo_alerts_queue_depth[{window}s]))",
    "processed_rate": "sum(rate(oraculo_alerts_messages_evaluated_total[{window}s]))",
    "cpu_cores_avg": "avg_over_time(oraculo_cpu_process_cores[{window}s])",
}


async def start_prometheus(
    children: Children, run_dir: Path, target_port: int, log: Any
) -> tuple[Child, str]:
    """A Prometheus scraping ``127.0.0.1:target_port`` every second.

    Returns:
        The child and its base URL, once ``/-/ready`` answers.

    Raises:
        LoadTestError: ``prometheus`` is not installed, or not ready within 30 s.
    """
    binary = shutil.which("prometheus")
    if binary is None:
        raise LoadTestError("--prometheus: `prometheus` not found (Debian package: prometheus)")
    port = free_port()
    config = run_dir / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: oraculo\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{target_port}']\n"
    )
    child = await children.start(
        "prometheus",
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={run_dir / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        cwd=run_dir,
        stdout=log,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(timeout=2.0) as client:
        with trio.move_on_after(30) as waiting:
            while True:
                if child.process.poll() is not None:
                    raise LoadTestError(f"prometheus exited with {child.process.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(url + "/-/ready")).status_code == 200:
                        break
                await trio.sleep(0.2)
    if waiting.cancelled_caught:
        raise LoadTestError("prometheus was not ready within 30 s")
    return child, url


async def query_prometheus(url: str, window: float, at: float) -> dict[str, float | None]:
    """Evaluate :data:`PROMETHEUS_QUERIES` over the ``window`` seconds ending at ``at``."""
    results: dict[str, float | None] = {}
    seconds = max(1, math.ceil(window))
    async with httpx.AsyncClient(timeout=5.0) as client:
        for name, template in PROMETHEUS_QUERIES.items():
            value = None
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, IndexError):
                response = await client.get(
                    url + "/api/v1/query",
                    params={"query": template.format(window=seconds), "time": f"{at:.3f}"},
                )
                result = response.json()["data"]["result"]
                if result:
                    value = float(result[0]["value"][1])
                    if not math.isfinite(value):
                        value = None
            results[name] = value
    return results


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


# --------------------------------------------------------------------------------------------
# Sampling the service


def _total(samples: dict, name: str, **match: str) -> float:
    return sum(
        value
        for labels, value in samples.get(name, [])
        if all(labels.get(k) == v for k, v in match.items())
    )


def _histogram(samples: dict, name: str, match: dict[str, str] | None = None) -> dict[str, Any]:
    buckets = histogram_buckets(samples, name, match)
    return {
        "buckets": [[bound, count] for bound, count in buckets],
        "sum": _total(samples, name + "_sum", **(match or {})),
        "count": _total(samples, name + "_count", **(match or {})),
    }


def extract_metrics(text: str) -> dict[str, Any]:
    """The numbers a load test needs from one ``/metrics`` exposition."""
    samples = parse_samples(text)
    depths = [value for _, value in samples.get("oraculo_alerts_queue_depth", [])]
    dropped = {
        reason: _total(samples, "oraculo_alerts_queue_dropped_total", reason=reason)
        for reason in DROP_REASONS
    }
    dispatch: dict[str, float] = {}
    for labels, value in samples.get("oraculo_dispatch_attempts_total", []):
        dispatch[f"{labels.get('sink')}/{labels.get('outcome')}"] = value

    def per_stream(name: str) -> dict[str, float]:
        return {stream: _total(samples, name, stream=stream) for stream in STREAMS}

    def histograms(name: str) -> dict[str, dict[str, Any]]:
        return {stream: _histogram(samples, name, {"stream": stream}) for stream in STREAMS}

    bad = "oraculo_feed_bad_frames_total"
    return {
        "received": per_stream("oraculo_feed_messages_received_total"),
        "evaluated": per_stream("oraculo_alerts_messages_evaluated_total"),
        "dropped": dropped,
        "bad_frames": sum(_total(samples, bad, reason=r) for r in BAD_FRAME_REASONS),
        "queue_time": histograms("oraculo_alerts_queue_time_seconds"),
        "queue_time_latest": per_stream("oraculo_alerts_queue_time_latest_seconds"),
        "queue_depth_max": max(depths, default=0.0),
        "queue_depth_sum": sum(depths),
        "lag": _total(samples, "oraculo_event_loop_lag_seconds"),
        "scheduler_delay": _histogram(samples, "oraculo_scheduler_delay_seconds"),
        "feed_lag": per_stream("oraculo_feed_lag_seconds"),
        "db_upsert": _histogram(samples, "oraculo_db_insert_ms", {"op": "upsert_rule_alert"}),
        "db_timeouts": _total(samples, "oraculo_db_timeouts_total"),
        "db_errors": _total(samples, "oraculo_db_errors_total"),
        "alert_transitions": _total(samples, "oraculo_alert_transitions_total"),
        "cpu_cores": _total(samples, "oraculo_cpu_process_cores"),
        "reconnects": _total(samples, "oraculo_feed_reconnects_total"),
        "dispatch": dispatch,
        "dispatch_dropped": _total(samples, "oraculo_dispatch_dropped_total"),
        "book": book_section(samples),
    }


# --------------------------------------------------------------------------------------------
# One run


@attrs.define(eq=False)
class RunState:
    """What the run has seen so far (filled by the reader and the sampler)."""

    generator: dict[str, Any] = attrs.field(factory=dict)  # the last stats event
    ready: dict[str, Any] = attrs.field(factory=dict)
    done: dict[str, Any] | None = None
    drained: dict[str, Any] | None = None
    phase: str = "starting"
    phase_changed: trio.Event = attrs.field(factory=trio.Event)
    generator_ended: trio.Event = attrs.field(factory=trio.Event)
    samples: list[dict[str, Any]] = attrs.field(factory=list)
    marks: dict[str, int] = attrs.field(factory=dict)
    started: float = attrs.field(factory=time.monotonic)


async def _read_generator(reader: LineReader, state: RunState, ready: trio.Event) -> None:
    while True:
        line = await reader.next_line()
        if line is None:
            state.generator_ended.set()
            state.phase_changed.set()
            return
        try:
            event = json.loads(line)
        except ValueError:
            continue
        kind = event.get("event")
        if kind == "ready":
            state.ready = event
            ready.set()
        elif kind == "stats":
            state.generator = event
        elif kind == "phase":
            state.phase = event["phase"]
            state.generator = {**state.generator, "sent": event["sent"]}
            state.phase_changed.set()
            state.phase_changed = trio.Event()
        elif kind in ("done", "drained"):
            setattr(state, kind, event)
            state.generator = {**state.generator, "sent": event["sent"]}
            state.phase_changed.set()
            state.phase_changed = trio.Event()


@attrs.define(eq=False)
class Sampler:
    """Takes one sample of the service (metrics + /proc) and of the generator."""

    client: httpx.AsyncClient
    metrics_url: str
    service: Child
    generator: Child
    state: RunState

    async def sample(self, mark: str | None = None) -> dict[str, Any]:
        """Scrape ``/metrics`` and read /proc; append the sample (with ``mark``) and return it.

        Raises:
            LoadTestError: the service stopped answering (it died).
        """
        try:
            response = await self.client.get(self.metrics_url)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            code = self.service.process.poll()
            detail = f"exited with {code}" if code is not None else f"{exc!r}"
            raise LoadTestError(f"the service's /metrics failed: {detail}") from None
        metrics = extract_metrics(response.text)
        generator = self.state.generator
        sample = {
            "t": time.monotonic() - self.state.started,
            "wall": time.time(),
            "phase": self.state.phase,
            "mark": mark,
            "sent": generator.get("sent", 0),
            "generated": generator.get("generated", 0),
            "queued": generator.get("queued", 0),
            "generator_late_max": generator.get("late_max", 0.0),
            "generator_cpu": process_cpu(self.generator.pid),
            "service_cpu": process_cpu(self.service.pid),
            "service_rss": process_rss(self.service.pid),
            **metrics,
        }
        self.state.samples.append(sample)
        if mark is not None:
            self.state.marks[mark] = len(self.state.samples) - 1
        return sample


async def wait_ready(client: httpx.AsyncClient, url: str, service: Child, within: float) -> None:
    """Wait for ``/readyz`` to answer 200.

    Raises:
        LoadTestError: the service exited, or was not ready within ``within`` seconds.
    """
    last = "no answer"
    with trio.move_on_after(within):
        while True:
            if service.process.poll() is not None:
                raise LoadTestError(f"the service exited with {service.process.returncode}")
            try:
                response = await client.get(url)
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text.strip()[:200]}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            await trio.sleep(0.1)
    raise LoadTestError(f"the service was not ready within {within:g} s (last /readyz: {last})")


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


Console = Callable[[dict[str, Any], RunConfig], None]


async def run_load_test(
    config: RunConfig,
    run_dir: Path,
    *,
    on_sample: Console | None = None,
    say: Callable[[str], None] = lambda _text: None,
) -> RunOutput:
    """Run one load test; every process it started is stopped when it returns or raises.

    Args:
        config: the test.
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
    logs = _open_logs(run_dir, ("service", "generator", "prometheus"))
    rules_file = config.rules
    notes: list[str] = []
    load_before = os.getloadavg()
    state = RunState()
    spec = config.generator_spec()
    prometheus_result: dict[str, float | None] | None = None
    webhook_result: dict[str, Any] | None = None
    profile_path: Path | None = None
    service_exit: int | None = None
    try:
        # Children stop before the store is dropped and the scratch directory removed.
        async with (
            _scratch() as scratch,
            fresh_store(config.database_url, scratch) as (database_url, store_kind),
            open_children() as children,
            httpx.AsyncClient(timeout=5.0) as client,
            trio.open_nursery() as nursery,
        ):
            say(f"starting the generator ({config.stream} {config.rate:g} msg/s)")
            generator = await _start_generator(
                children, nursery, spec, state, run_dir, logs["generator"]
            )

            webhook_url = None
            receiver = None
            if config.webhook is not None:
                receiver = await nursery.start(WebhookReceiver(config.webhook).serve)
                webhook_url = receiver.url

            if rules_file is None:
                rules_file = _write(run_dir / "rules.toml", load_rules_text())
            http_port = free_port()
            ready = state.ready
            sections = service_sections(
                config,
                exchange_url=ready["url"],
                symbols=ready["symbols"],
                depth_kinds=ready["depth_kinds"],
                trade_kinds=ready["trade_kinds"],
                database_url=database_url,
                http_port=http_port,
                rules_file=rules_file,
                webhook_url=webhook_url,
                scratch=scratch,
                rest_url=ready.get("rest_url", ""),
                source_settings=ready.get("service"),
            )
            config_path = Path(_write(run_dir / "oraculo.toml", toml_document(sections)))
            from oraculo_trio.settings import load_settings

            load_settings(config_path, environ={})  # a bad --set fails here, named
            if webhook_url is not None:
                check_webhook_sink(config_path)
            env, passed = service_env(children.env)
            if passed:
                notes.append("service environment overrides passed through: " + ", ".join(passed))

            say(f"starting the service (store {store_kind})")
            service = await children.start(
                "service",
                [sys.executable, "-m", "oraculo_trio.cli", "run", "--config", str(config_path)],
                cwd=run_dir,
                stdout=logs["service"],
                stderr=logs["service"],
                env=env,
            )
            base = f"http://127.0.0.1:{http_port}"
            try:
                await wait_ready(client, base + "/readyz", service, config.ready_timeout)
            except LoadTestError as exc:
                raise LoadTestError(f"{exc}\n{tail(run_dir / 'service.log')}") from None
            prometheus_url = None
            if config.prometheus:
                _, prometheus_url = await start_prometheus(
                    children, scratch, http_port, logs["prometheus"]
                )
            sampler = Sampler(client, base + "/metrics", service, generator, state)
            await sampler.sample("start")
            say("service ready: load starts")
            await generator.process.stdin.send_all(b"start\n")
            profile_path = await _measure(
                config, state, sampler, service, run_dir, children, on_sample
            )
            say("draining")
            await _drain(config, state, sampler, on_sample)
            final = await sampler.sample("final")
            if prometheus_url is not None:
                start = state.samples[state.marks["measure_start"]]["wall"]
                end = state.samples[state.marks.get("measure_end", len(state.samples) - 1)]["wall"]
                await trio.sleep(1.5)  # one more scrape lands
                prometheus_result = await query_prometheus(prometheus_url, end - start, end)
            if receiver is not None:
                webhook_result = {
                    "mode": receiver.mode,
                    "url": receiver.url,
                    "requests": receiver.requests,
                    "dispatch": final["dispatch"],
                    "dispatch_dropped": final["dispatch_dropped"],
                }
            say("stopping the service")
            service_exit = await service.stop(grace=15.0)
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await generator.process.stdin.send_all(b"quit\n")
            await generator.stop(grace=5.0)
            nursery.cancel_scope.cancel()
    finally:
        for log in logs.values():
            log.close()
    return RunOutput(
        config=config,
        run_dir=run_dir,
        store=store_kind,
        samples=state.samples,
        marks=state.marks,
        generator_ready=state.ready,
        generator_done=state.done,
        prometheus=prometheus_result,
        webhook=webhook_result,
        profile=profile_path,
        notes=notes,
        load_before=load_before,
        load_after=os.getloadavg(),
        service_exit=service_exit,
    )


async def _start_generator(
    children: Children,
    nursery: trio.Nursery,
    spec: GeneratorSpec,
    state: RunState,
    run_dir: Path,
    log: Any,
) -> Child:
    """Start the generator process and its event reader; return once it is ready.

    Raises:
        LoadTestError: it did not say ``ready`` within 30 s.
    """
    generator = await children.start(
        "generator",
        [sys.executable, "-m", "oraculo_trio.loadtest.generator", "--spec", spec.to_json()],
        cwd=run_dir,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
    )
    assert generator.process.stdout is not None
    ready = trio.Event()
    nursery.start_soon(_read_generator, LineReader(generator.process.stdout), state, ready)
    with trio.move_on_after(30):
        await ready.wait()
    if not ready.is_set():
        raise LoadTestError(
            "the generator did not start within 30 s:\n" + tail(run_dir / "generator.log")
        )
    return generator


async def _measure(
    config: RunConfig,
    state: RunState,
    sampler: Sampler,
    service: Child,
    run_dir: Path,
    children: Children,
    on_sample: Console | None,
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
        if state.generator_ended.is_set() and state.done is None:
            raise LoadTestError(
                f"the generator exited with {sampler.generator.process.poll()}:\n"
                + tail(run_dir / "generator.log")
            )
        if service.process.poll() is not None:
            raise LoadTestError(
                f"the service exited with {service.process.returncode} during the run:\n"
                + tail(run_dir / "service.log")
            )
        mark = None
        if state.phase in ("measure", "done") and "measure_start" not in state.marks:
            mark = "measure_start"
            if config.profile > 0:
                profile_path = await _start_profile(children, service, run_dir, config.profile)
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


async def _drain(
    config: RunConfig,
    state: RunState,
    sampler: Sampler,
    on_sample: Console | None,
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
            await trio.sleep(0.2)


async def _start_profile(
    children: Children, service: Child, run_dir: Path, seconds: float
) -> Path | None:
    """py-spy on the service for ``seconds`` (raw collapsed stacks); None without py-spy."""
    binary = shutil.which("py-spy")
    if binary is None:
        LOGGER.warning("py-spy not found (pip install py-spy): no profile")
        return None
    path = run_dir / "profile.txt"
    log = _open_logs(run_dir, ("py-spy",))["py-spy"]
    try:
        await children.start(
            "py-spy",
            [
                binary,
                "record",
                "--pid",
                str(service.pid),
                "--duration",
                str(max(1, int(seconds))),
                "--rate",
                "250",
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(path),
            ],
            cwd=run_dir,
            stdout=log,
            stderr=log,
        )
    finally:
        log.close()
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
    with _open_logs(run_dir, ("generator",))["generator"] as log:
        async with open_children() as children, trio.open_nursery() as nursery:
            generator = await _start_generator(children, nursery, spec, state, run_dir, log)
            assert generator.process.stdin is not None
            streams = state.ready["streams"]
            url = f"{state.ready['url']}/stream?streams={'/'.join(streams)}"
            await nursery.start(_discard, url, counter)
            say(f"calibrating: {spec.rate:g} msg/s for {spec.duration:g} s")
            await generator.process.stdin.send_all(b"start\n")
            while state.drained is None and not state.generator_ended.is_set():
                changed = state.phase_changed
                await changed.wait()
            if state.done is None:
                raise LoadTestError(
                    "the generator ended early:\n" + tail(run_dir / "generator.log")
                )
            nursery.cancel_scope.cancel()
    done = dict(state.done)
    expected = done["expected"] or 1
    done["bytes"] = counter[0]
    done["rate_error"] = abs(done["window_sent"] - expected) / expected
    return done


def our_error(exc: BaseException) -> OraculoError | None:
    """The first :class:`OraculoError` of ``exc`` (alone or in exception groups), when
    everything else in it is a cancellation; None otherwise (a bug: keep its traceback)."""
    if isinstance(exc, OraculoError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        found = None
        for inner in exc.exceptions:
            if isinstance(inner, trio.Cancelled):
                continue
            error = our_error(inner)
            if error is None:
                return None
            found = found or error
        return found
    return None


def utc_stamp() -> str:
    """``20250102T030405Z``: the artifact directory name."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def default_out(kind: str = "loadtest") -> Path:
    """``./artifacts/<kind>/<UTC timestamp>``, absolute (a suffix keeps two runs in one second
    apart)."""
    base = Path("artifacts").absolute() / kind / utc_stamp()
    path = base
    index = 1
    while path.exists():
        index += 1
        path = base.with_name(f"{base.name}-{index}")
    return path


async def with_signals(
    work: Callable[[], Awaitable[Any]],
) -> tuple[Any, int | None]:
    """Run ``work()``; SIGINT or SIGTERM cancels it (its cleanup still runs).

    Returns:
        ``(result, None)``, or ``(None, signum)`` when a signal cancelled it.
    """
    received: list[int] = []
    result = None
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            work_scope = trio.CancelScope()

            async def watch() -> None:
                async for signum in signals:
                    if not received:
                        received.append(signum)
                        LOGGER.warning("%s: stopping the load test", signal.Signals(signum).name)
                        work_scope.cancel()

            nursery.start_soon(watch)
            with work_scope:
                result = await work()
            nursery.cancel_scope.cancel()
    return result, (received[0] if received else None)


def _open_logs(run_dir: Path, names: Sequence[str]) -> dict[str, Any]:
    """``<run_dir>/<name>.log`` opened for writing, for each name (the caller closes them)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    return {name: open(run_dir / f"{name}.log", "wb") for name in names}


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@contextlib.asynccontextmanager
async def _scratch() -> AsyncIterator[Path]:
    # The store, Prometheus's data and dumps: bulky, not evidence. Removed on every path.
    path = Path(tempfile.mkdtemp(prefix="oraculo-loadtest-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
