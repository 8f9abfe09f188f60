"""Processes of the test harness: ``oraculo-trio`` (or any program) run as a subprocess.

::

    async with service_process(config) as service:      # oraculo-trio run --config CONFIG
        await service.wait_ready()                        # the port it bound, then /readyz
        text = await service.metrics()
        assert await service.stop(signal.SIGTERM) == 0   # drained and exited

Every child runs in a session (process group) of its own, so a signal meant for the test
runner does not reach it, and leaving the ``async with`` block stops the whole group:
SIGTERM, a grace period, SIGKILL. Its stdout and stderr are read as they come (a full pipe
would block its logging) and kept, line by line, in :class:`OutputLines`.

The service's HTTP endpoint is configured on port 0: the system picks a free port, and
:meth:`ServiceProcess.wait_address` reads the one the service bound from the line it logs
(``serving /metrics /healthz /readyz on http://HOST:PORT``). Under ``run --workers N`` the
supervisor logs that line before it starts any worker, and the workers' own lines carry a
``[worker i]`` tag, so the address found is the supervisor's. The line is logged at INFO:
:func:`service_process` refuses a configuration whose ``service.log_level`` is above INFO
(the default is INFO).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs
import trio

from oraculo_trio.errors import OraculoError
from oraculo_trio.settings import ENV_PREFIX
from oraculo_trio.testing.config import service_environ
from oraculo_trio.testing.net import Response, http_get

__all__ = [
    "SERVING_LINE",
    "ChildProcess",
    "OutputLines",
    "ServiceProcess",
    "ServiceProcessError",
    "child_process",
    "cli_argv",
    "cli_process",
    "parse_terms",
    "service_process",
]

LOGGER = logging.getLogger("oraculo_trio.testing.processes")

SERVING_LINE = re.compile(
    r"(?<!\] )oraculo_trio\.observe\.http: serving /metrics /healthz /readyz on "
    r"http://(?P<host>.+):(?P<port>\d+)\s*$"
)
"""The service's (or the supervisor's, not a worker's) log line naming its HTTP address."""

STOP_GRACE = 10.0
"""Seconds a child still running at the end of its block has to exit after SIGTERM."""

_UNSPECIFIED_HOSTS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}

Child = TypeVar("Child", bound="ChildProcess")


class ServiceProcessError(OraculoError):
    """Raised when a child process cannot be started, or exits (or ends its output) before
    it did what a test waits for: logging its address, answering ``/readyz``, a line."""


@attrs.define(eq=False)
class OutputLines:
    """The lines one output stream of a child wrote so far (without their newlines).

    Attributes:
        name: ``stdout`` or ``stderr``, for messages.
        lines: every line, in order.
        ended: set once the stream reached its end (every writer closed it).
    """

    name: str
    lines: list[str] = attrs.field(factory=list)
    ended: trio.Event = attrs.field(factory=trio.Event)
    _changed: trio.Event = attrs.field(factory=trio.Event)
    _cursor: int = 0

    def add(self, line: str) -> None:
        """Keep one more line and wake whoever waits."""
        self.lines.append(line)
        self._wake()

    def end(self) -> None:
        """The stream ended: no line will come any more."""
        self.ended.set()
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    @property
    def text(self) -> str:
        """Every line so far, joined."""
        return "\n".join(self.lines)

    def count(self, text: str) -> int:
        """How many lines so far contain ``text``."""
        return sum(1 for line in self.lines if text in line)

    def tail(self, count: int = 30) -> str:
        """The last ``count`` lines, for failure messages."""
        return "\n".join(self.lines[-count:])

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds, checked after every new line.

        Raises:
            ServiceProcessError: the stream ended and ``predicate()`` still does not hold.

        Cancellation: stops waiting.
        """
        while not predicate():
            if self.ended.is_set():
                raise ServiceProcessError(
                    f"{self.name} ended before the awaited condition; its last lines:\n"
                    + self.tail()
                )
            await self._changed.wait()

    async def next_line(self) -> str | None:
        """The line after the last one :meth:`next_line` or :meth:`until` returned; None
        once the stream ended and every line was returned.

        Cancellation: stops waiting; the next call goes on from the same line.
        """
        await self.wait_until(lambda: self._cursor < len(self.lines) or self.ended.is_set())
        if self._cursor == len(self.lines):
            return None
        self._cursor += 1
        return self.lines[self._cursor - 1]

    async def until(self, pattern: str | re.Pattern[str]) -> re.Match[str]:
        """The next line matching ``pattern`` (searched), after the last one returned here.

        Raises:
            ServiceProcessError: the stream ended first.

        Cancellation: stops waiting; the next call goes on from the same line.
        """
        regex = re.compile(pattern)
        found: list[re.Match[str]] = []

        def matched() -> bool:
            while self._cursor < len(self.lines):
                match = regex.search(self.lines[self._cursor])
                self._cursor += 1
                if match is not None:
                    found.append(match)
                    return True
            return False

        try:
            await self.wait_until(matched)
        except ServiceProcessError:
            raise ServiceProcessError(
                f"{self.name} ended before a line matching {regex.pattern!r}; its last "
                f"lines:\n{self.tail()}"
            ) from None
        return found[0]

    async def first(self, pattern: re.Pattern[str]) -> re.Match[str]:
        """The first line ever written that matches ``pattern`` (searched).

        Raises:
            ServiceProcessError: the stream ended without one.

        Cancellation: stops waiting.
        """
        seen = 0
        found: list[re.Match[str]] = []

        def matched() -> bool:
            nonlocal seen
            while seen < len(self.lines):
                match = pattern.search(self.lines[seen])
                seen += 1
                if match is not None:
                    found.append(match)
                    return True
            return False

        await self.wait_until(matched)
        return found[0]


@attrs.define(eq=False)
class ChildProcess:
    """A child process in a process group of its own, with its output kept as it comes.

    Start one with :func:`child_process` (any program) or :func:`cli_process`.

    Attributes:
        name: what error messages call it.
        process: the child.
        stdout, stderr: its output.
    """

    name: str
    process: trio.Process
    stdout: OutputLines = attrs.field(factory=lambda: OutputLines("stdout"))
    stderr: OutputLines = attrs.field(factory=lambda: OutputLines("stderr"))

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once it exited (negative: killed by that signal), else None."""
        return self.process.returncode

    @property
    def lines(self) -> list[str]:
        """Its stderr lines (where the service logs)."""
        return self.stderr.lines

    def log_tail(self, count: int = 30) -> str:
        """The last ``count`` lines of stderr, then of stdout, for failure messages."""
        return (
            f"--- {self.name} stderr ---\n{self.stderr.tail(count)}\n"
            f"--- {self.name} stdout ---\n{self.stdout.tail(count)}"
        )

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` to the child alone (as ``kill PID`` would); nothing once it exited."""
        self.process.send_signal(signum)

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to the child's whole process group (ignored once it is gone)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    async def wait(self) -> int:
        """Wait until the child exited; return its exit code.

        Cancellation: stops waiting (the child runs on).
        """
        return await self.process.wait()

    async def wait_output(self) -> None:
        """Wait until both output streams ended (every process writing to them exited).

        Cancellation: stops waiting.
        """
        await self.stdout.ended.wait()
        await self.stderr.ended.wait()

    async def stop(self, signum: int = signal.SIGTERM, *, grace: float | None = None) -> int:
        """Send ``signum`` and wait until the child exited and its output ended.

        Args:
            signum: the signal; SIGKILL goes to the whole process group.
            grace: seconds to wait for the exit before SIGKILL of the group; None waits as
                long as it takes (bound it with the caller's ``fail_after``).

        Returns:
            The exit code (negative: killed by that signal).

        Cancellation: stops waiting; leaving the block still stops the child.
        """
        if signum == signal.SIGKILL:
            self.signal_group(signum)
        else:
            self.send_signal(signum)
        with trio.move_on_after(float("inf") if grace is None else grace):
            await self.process.wait()
        if self.process.returncode is None:
            self.signal_group(signal.SIGKILL)
            await self.process.wait()
        await self.wait_output()
        return self.process.returncode

    async def kill(self) -> int:
        """SIGKILL the whole process group and wait for the child's exit; return its code.

        Cancellation: stops waiting.
        """
        self.signal_group(signal.SIGKILL)
        return await self.process.wait()

    async def _close(self, grace: float) -> None:
        # SIGTERM, the grace, SIGKILL; then the stragglers of the group (grandchildren).
        with trio.CancelScope(shield=True):
            if self.process.returncode is None:
                self.signal_group(signal.SIGTERM)
                with trio.move_on_after(grace):
                    await self.process.wait()
            self.signal_group(signal.SIGKILL)
            await self.process.wait()


@attrs.define(eq=False)
class ServiceProcess(ChildProcess):
    """An ``oraculo-trio`` service (or ``run --workers N`` supervisor) as a child process.

    Start one with :func:`service_process` or :func:`cli_process`.
    """

    _address: tuple[str, int] | None = None

    async def wait_address(self) -> tuple[str, int]:
        """The ``(host, port)`` the service's HTTP endpoint bound, once it logged it.

        Raises:
            ServiceProcessError: its stderr ended without the line (it exited early, or
                logs above INFO).

        Cancellation: stops waiting.
        """
        if self._address is None:
            try:
                match = await self.stderr.first(SERVING_LINE)
            except ServiceProcessError:
                # The end of its stderr: it is exiting.
                with trio.move_on_after(STOP_GRACE):
                    await self.process.wait()
                raise ServiceProcessError(
                    f"{self.name} exited ({self.returncode}) without logging its HTTP "
                    f"address:\n{self.log_tail()}"
                ) from None
            host = _UNSPECIFIED_HOSTS.get(match["host"], match["host"])
            self._address = (host, int(match["port"]))
        return self._address

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``; call :meth:`wait_address` first."""
        if self._address is None:
            raise RuntimeError(f"{self.name}: address not known yet (await wait_address())")
        return self._address

    @property
    def url(self) -> str:
        """The base URL of its HTTP endpoint (``http://HOST:PORT``)."""
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    async def get(self, path: str) -> Response:
        """GET ``path`` (``/readyz``...) from its HTTP endpoint.

        Raises:
            OSError: no answer.

        Cancellation: abandons the request.
        """
        await self.wait_address()
        return await http_get(self.url + path)

    async def wait_ready(self, interval: float = 0.05) -> None:
        """Wait until its address is known and ``/readyz`` answers 200 (polled every
        ``interval`` s: readiness has no push).

        Raises:
            ServiceProcessError: it exited first.

        Cancellation: stops waiting.
        """
        await self.wait_address()
        while True:
            if self.process.poll() is not None:
                raise ServiceProcessError(
                    f"{self.name} exited ({self.returncode}) before /readyz answered 200:\n"
                    + self.log_tail()
                )
            try:
                status = (await self.get("/readyz")).status
            except OSError:
                status = 0
            if status == 200:
                return
            await trio.sleep(interval)

    async def metrics(self) -> str:
        """The exposition of its ``/metrics``.

        Raises:
            AssertionError: ``/metrics`` did not answer 200.

        Cancellation: abandons the request.
        """
        response = await self.get("/metrics")
        assert response.status == 200, f"/metrics answered {response.status}: {response.body}"
        return response.body

    def final_terms(self, what: str = "accounting") -> dict[str, int]:
        """The numbers of its last ``service stopped; <what>: k=v ...`` line.

        Raises:
            AssertionError: no such line.
        """
        pattern = re.compile(rf"service stopped; {what}: (.*)$")
        for line in reversed(self.stderr.lines):
            match = pattern.search(line)
            if match:
                return parse_terms(match.group(1))
        raise AssertionError(f"no 'service stopped; {what}' line:\n{self.log_tail()}")


def parse_terms(text: str) -> dict[str, int]:
    """``{"k": v}`` of the ``k=v`` integers in ``text`` (an accounting line)."""
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", text)}


def cli_argv(*args: str) -> list[str]:
    """``oraculo-trio ARGS`` as run by this interpreter."""
    return [sys.executable, "-m", "oraculo_trio.cli", *args]


def child_process(
    argv: Sequence[str],
    *,
    name: str | None = None,
    cwd: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    log_path: str | os.PathLike[str] | None = None,
    stdin: bool = False,
    stop_grace: float = STOP_GRACE,
) -> contextlib.AbstractAsyncContextManager[ChildProcess]:
    """Run ``argv`` as a :class:`ChildProcess` for the ``async with`` block.

    Args:
        argv: the program and its arguments.
        name: for messages (default: the program's name).
        cwd: its working directory (default: this process's).
        env: its environment (default: this process's).
        log_path: every output line is also appended to this file.
        stdin: give it a pipe as stdin (``process.stdin``); else /dev/null.
        stop_grace: seconds a child still running at the end of the block has between
            SIGTERM and SIGKILL (to its whole process group).

    Raises:
        ServiceProcessError: the program cannot be started.

    Cancellation: leaving the block stops the child, shielded, within ``stop_grace``.
    """
    return _open(ChildProcess, argv, name, cwd, env, log_path, stdin, stop_grace)


def cli_process(
    args: Sequence[str],
    *,
    name: str = "oraculo-trio",
    cwd: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    log_path: str | os.PathLike[str] | None = None,
    stop_grace: float = STOP_GRACE,
) -> contextlib.AbstractAsyncContextManager[ServiceProcess]:
    """Run ``oraculo-trio ARGS`` (``demo``, ``run``...) as a :class:`ServiceProcess`.

    ``env`` defaults to :func:`~oraculo_trio.testing.config.service_environ`: this
    environment without configuration variables. The other arguments are those of
    :func:`child_process`.

    Raises:
        ServiceProcessError: it cannot be started.

    Cancellation: leaving the block stops it, shielded, within ``stop_grace``.
    """
    env = service_environ() if env is None else env
    return _open(ServiceProcess, cli_argv(*args), name, cwd, env, log_path, False, stop_grace)


def service_process(
    config: str | os.PathLike[str],
    *args: str,
    workers: int | None = None,
    offline: bool = True,
    name: str = "service",
    cwd: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    log_path: str | os.PathLike[str] | None = None,
    stop_grace: float = STOP_GRACE,
) -> contextlib.AbstractAsyncContextManager[ServiceProcess]:
    """Run ``oraculo-trio run --config CONFIG [--workers N] ARGS`` as a
    :class:`ServiceProcess`, in the configuration's folder unless ``cwd`` is given.

    Args:
        config: the configuration file (see
            :func:`~oraculo_trio.testing.config.write_service_config`).
        args: more options of ``run``.
        workers: run the supervisor of that many worker processes.
        offline: pass ``--offline``: no check of ``feed.symbols`` against the exchange's
            ``exchangeInfo`` (a test's mock serves it on its REST port, which a test names
            in ``feed.rest_url`` when it wants the check).
        name, cwd, env, log_path, stop_grace: as for :func:`cli_process`.

    Raises:
        ServiceProcessError: it cannot be started, or would log above INFO (it could not
            say which port it bound).

    Cancellation: leaving the block stops it, shielded, within ``stop_grace``.
    """
    level = _log_level(config, args, service_environ() if env is None else env)
    if level not in ("DEBUG", "INFO"):
        raise ServiceProcessError(
            f"{name}: service.log_level {level} hides the line that names its HTTP address "
            "(logged at INFO): run it at INFO or DEBUG"
        )
    argv = ["run", "--config", str(config)]
    if workers is not None:
        argv += ["--workers", str(workers)]
    if offline:
        argv.append("--offline")
    cwd = Path(config).parent if cwd is None else cwd
    return cli_process(
        [*argv, *args], name=name, cwd=cwd, env=env, log_path=log_path, stop_grace=stop_grace
    )


def _log_level(config: str | os.PathLike[str], args: Sequence[str], env: Mapping[str, str]) -> str:
    """The service's log level: ``--log-level``, else its variable, else the file's."""
    for index, arg in enumerate(args):
        if arg.startswith("--log-level="):
            return arg.partition("=")[2]
        if arg == "--log-level" and index + 1 < len(args):
            return args[index + 1]
    if f"{ENV_PREFIX}SERVICE_LOG_LEVEL" in env:
        return env[f"{ENV_PREFIX}SERVICE_LOG_LEVEL"]
    try:
        with open(config, "rb") as file:
            return str(tomllib.load(file).get("service", {}).get("log_level", "INFO"))
    except (OSError, tomllib.TOMLDecodeError):
        return "INFO"  # the service itself says what is wrong with its file


@contextlib.asynccontextmanager
async def _open(
    kind: type[Child],
    argv: Sequence[str],
    name: str | None,
    cwd: str | os.PathLike[str] | None,
    env: dict[str, str] | None,
    log_path: str | os.PathLike[str] | None,
    stdin: bool,
    stop_grace: float,
) -> AsyncIterator[Child]:
    name = name or Path(argv[0]).name
    async with contextlib.AsyncExitStack() as files:
        log = None
        if log_path is not None:
            log = await files.enter_async_context(await trio.open_file(log_path, "ab", 0))
        try:
            process = await trio.lowlevel.open_process(
                list(argv),
                cwd=None if cwd is None else str(cwd),
                env=env,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise ServiceProcessError(f"cannot start {name} ({argv[0]}): {exc}") from None
        child = kind(name, process)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_read, process.stdout, child.stdout, log)
            nursery.start_soon(_read, process.stderr, child.stderr, log)
            try:
                yield child
            except BaseException as exc:
                if not isinstance(exc, KeyboardInterrupt):
                    # Under pytest, shown beside the failure ("Captured log").
                    LOGGER.warning(
                        "%s: its block ended with %s; its output:\n%s",
                        child.name,
                        type(exc).__name__,
                        child.log_tail(),
                    )
                raise
            finally:
                if process.stdin is not None:
                    # End of input first: a child reading commands stops on it by itself.
                    with trio.CancelScope(shield=True):
                        await process.stdin.aclose()
                await child._close(stop_grace)
                # Grandchildren in sessions of their own may still hold the pipes.
                nursery.cancel_scope.cancel()


async def _read(stream: trio.abc.ReceiveStream, lines: OutputLines, log: Any) -> None:
    """Keep every line of ``stream`` in ``lines`` (and ``log``) until its end."""
    buffer = b""
    try:
        while chunk := await stream.receive_some(65536):
            *complete, buffer = (buffer + chunk).split(b"\n")
            await _keep(complete, lines, log)
        if buffer:
            await _keep([buffer], lines, log)
    finally:
        lines.end()
        await stream.aclose()


async def _keep(complete: list[bytes], lines: OutputLines, log: Any) -> None:
    if log is not None and complete:
        # Whole lines in one append: stdout's and stderr's never cut into each other.
        await log.write(b"".join(line + b"\n" for line in complete))
    for line in complete:
        lines.add(line.decode("utf-8", "replace"))
