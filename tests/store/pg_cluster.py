"""A private, throwaway PostgreSQL cluster for tests that stop and restart the server.

Never touches the shared server on 5432: ``initdb`` into a fresh directory under the system
temp dir, started with ``pg_ctl`` on a free port of 127.0.0.1, trust authentication, Unix
socket inside the directory. As root, every command runs as the ``postgres`` OS user
(``runuser -u postgres --``), which then owns the directory (initdb refuses to run as root).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from oraculo_trio.loadtest.processes import free_port


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


class PgCluster:
    """One private cluster: :meth:`create`, then :meth:`start` / :meth:`stop` at will,
    :meth:`destroy` at the end.

    Attributes:
        base: the temp directory (data in ``base/data``, socket and log beside it).
        port: the TCP port on 127.0.0.1.
    """

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
        self.port = free_port()

    @property
    def url(self) -> str:
        """The DSN of the cluster's ``postgres`` database."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60.0) -> None:
        command = [*self._as_postgres, str(self.bin_dir / args[0]), *args[1:]]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(command)} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}\n--- server log ---\n{log}"
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
        """Start the server and wait until it accepts connections."""
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
        if (self.data / "postmaster.pid").exists():
            try:
                self.stop("immediate")
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.base, ignore_errors=True)
