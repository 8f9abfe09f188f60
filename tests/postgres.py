"""PostgreSQL for the tests (the fixtures are in tests/conftest.py).

- The shared server of ``ORACULO_TEST_DATABASE_URL`` (default
  ``postgresql://postgres@127.0.0.1:5432/postgres``): each test gets a fresh database on it,
  dropped afterwards.
- A private, throwaway cluster for the tests that stop, restart or reconfigure the server:
  never the shared one. ``initdb`` into a fresh directory under the system temp dir,
  started with ``pg_ctl`` on 127.0.0.1, trust authentication, Unix socket inside the
  directory. As root, every command runs as the ``postgres`` OS user (``runuser -u
  postgres --``), which then owns the directory (initdb refuses to run as root).

PostgreSQL has no "port 0": the private cluster takes a port below the kernel's ephemeral
range (where no outgoing connection and no port-0 listener can land on it, even between a
stop and a restart) that is free when it starts, and tries another one if a server of
another run took it meanwhile.
"""

from __future__ import annotations

import contextlib
import glob
import os
import random
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from oraculo_trio.testing.postgres import admin_sql, fresh_database
from tests.services import unavailable

DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SERVER_ENV = "ORACULO_TEST_DATABASE_URL"
ADMIN_TIMEOUT = 5.0

#: What asyncpg raises when a server cannot be reached or refuses.
UNREACHABLE = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


def server_url() -> str:
    """The admin URL of the shared test server."""
    return os.environ.get(SERVER_ENV, DEFAULT_SERVER_URL)


def checked_server() -> str:
    """:func:`server_url`, once it answered; else the test is unavailable."""
    url = server_url()
    try:
        admin_sql(url, "SELECT 1", timeout=ADMIN_TIMEOUT)
    except UNREACHABLE as exc:
        parts = urlsplit(url)
        unavailable(
            f"PostgreSQL at {parts.hostname}:{parts.port} is not reachable "
            f"({type(exc).__name__}: {exc}); set {SERVER_ENV}"
        )
    return url


class ClusterUnavailable(Exception):
    """No PostgreSQL server binaries (or no ``postgres`` user to run them as root)."""


def find_bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding ``initdb`` and ``pg_ctl``."""
    candidates = []
    for path in glob.glob("/usr/lib/postgresql/*/bin"):
        version = Path(path).parent.name
        if os.access(os.path.join(path, "initdb"), os.X_OK) and version.isdigit():
            candidates.append((int(version), Path(path)))
    if not candidates:
        raise ClusterUnavailable("no initdb under /usr/lib/postgresql/*/bin")
    return max(candidates)[1]


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def quiet_port(host: str = "127.0.0.1") -> int:
    """A port of ``host`` below the ephemeral range, free at the time of the call."""
    floor = _ephemeral_floor()
    while True:
        port = random.randrange(max(1024, floor - 12000), floor)
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        return port


class PgCluster:
    """One private cluster: :meth:`create`, then :meth:`start` / :meth:`stop` at will,
    :meth:`destroy` at the end.

    Attributes:
        base: the temp directory (data in ``base/data``, socket and log beside it).
        port: the TCP port on 127.0.0.1 (settled by the first :meth:`start`).
    """

    START_ATTEMPTS = 5

    def __init__(self) -> None:
        self.bin_dir = find_bin_dir()
        self._as_postgres: list[str] = []
        if os.geteuid() == 0:
            try:
                import pwd

                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise ClusterUnavailable("running as root and there is no postgres user") from None
            self._as_postgres = ["runuser", "-u", "postgres", "--"]
            self._uid, self._gid = pw.pw_uid, pw.pw_gid
        self.base = Path(tempfile.mkdtemp(prefix="oraculo-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self.port = quiet_port()
        self._started_once = False

    @property
    def url(self) -> str:
        """The DSN of the cluster's ``postgres`` database."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def _run(self, *args: str, timeout: float = 60.0) -> None:
        command = [*self._as_postgres, str(self.bin_dir / args[0]), *args[1:]]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}\n--- server log ---\n{self._log_text()}"
            )

    def create(self) -> None:
        """``initdb`` (trust auth, no fsync: the data is thrown away)."""
        if self._as_postgres:
            os.chown(self.base, self._uid, self._gid)
        os.chmod(self.base, 0o700)
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
            "-E", "UTF8", "--no-sync", "--no-instructions",
        )  # fmt: skip

    def start(self) -> None:
        """Start the server and wait until it accepts connections.

        The first start moves to another port while the chosen one turns out taken;
        later ones keep the port (the URL is out by then).
        """
        attempts = 1 if self._started_once else self.START_ATTEMPTS
        for attempt in range(attempts):
            logged = self._log_size()
            try:
                self._pg_ctl_start()
            except RuntimeError:
                taken = b"could not bind" in self.log.read_bytes()[logged:]
                if not taken or attempt == attempts - 1:
                    raise
                self.port = quiet_port()
            else:
                self._started_once = True
                return

    def _log_size(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    def _log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def _pg_ctl_start(self) -> None:
        options = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: abort transactions, close connections) and wait."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        """Stop the server if it runs (immediately) and delete the directory."""
        if self.running:
            try:
                self.stop("immediate")
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def private_cluster() -> Iterator[PgCluster]:
    """A private cluster, created and started; destroyed when the block ends. Unavailable
    (skipped, or failed under ``ORACULO_REQUIRE_SERVICES=1``) without PostgreSQL's binaries."""
    try:
        cluster = PgCluster()
    except ClusterUnavailable as exc:
        unavailable(f"cannot create a private PostgreSQL cluster: {exc}")
    try:
        cluster.create()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@contextlib.contextmanager
def private_database(cluster: PgCluster) -> Iterator[str]:
    """A fresh database on ``cluster``, which is (re)started if a test left it stopped."""

    def ensure_running() -> None:
        if not cluster.running:
            cluster.start()

    ensure_running()
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(fresh_database(cluster.url, "oraculo_rel", timeout=ADMIN_TIMEOUT))
        # Before the drop, which needs the server up whatever the test did to it.
        stack.callback(ensure_running)
        yield url
