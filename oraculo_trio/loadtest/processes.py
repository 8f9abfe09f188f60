"""The load test's child processes: each in its own session (process group), stopped on every
exit path, and what /proc says about them.

Every child runs in its own session, so a Ctrl-C at the terminal reaches only the runner,
which then stops each group on every exit path: SIGTERM, a short grace, SIGKILL. Every child's
environment carries the run's token (:data:`RUN_TOKEN_ENV`), so whatever a run started can be
found in /proc.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from oraculo_trio.loadtest.errors import LoadTestError
from oraculo_trio.observe.process import read_thread_cpu

#: The repository (or installation) root: children find the package there first.
ROOT = Path(__file__).resolve().parents[2]

#: Environment variable every child gets, with the run's token: lets a test (or a person)
#: find any process a run left behind in /proc/*/environ. (Not ORACULO_*: the service
#: refuses unknown ORACULO_ variables.)
RUN_TOKEN_ENV = "LOADTEST_RUN_TOKEN"


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


def open_logs(run_dir: Path, names: Sequence[str]) -> dict[str, Any]:
    """``<run_dir>/<name>.log`` opened for writing, for each name (the caller closes them)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    return {name: open(run_dir / f"{name}.log", "wb") for name in names}
