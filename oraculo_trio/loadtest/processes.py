"""What the load tool adds to the test harness's processes (:mod:`oraculo_trio.testing.processes`):
the run's token in every child's environment, and what /proc says about a child.

Children are started with the harness (``child_process``, ``service_process``): each in a
session of its own, so a Ctrl-C at the terminal reaches only the runner, which stops each
group on every exit path (SIGTERM, a grace period, SIGKILL).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping

from oraculo_trio.observe.process import read_thread_cpu
from oraculo_trio.testing.config import service_environ

RUN_TOKEN_ENV = "LOADTEST_RUN_TOKEN"
"""Environment variable every child gets, with the run's token: lets a test (or a person)
find any process a run left behind in /proc/*/environ. (Not ORACULO_*: the service refuses
unknown ORACULO_ variables.)"""


def run_environ(
    sections: Mapping[str, Mapping[str, object]] | None = None, token: str | None = None
) -> dict[str, str]:
    """The environment of a child of this run: this process's, with the run's token, and
    ``PYTHONPATH`` starting where this ``oraculo_trio`` is imported from.

    Args:
        sections: the service's configuration, for the service itself: the ``ORACULO_*``
            variables of the keys it sets are left out (see
            :func:`~oraculo_trio.testing.config.service_environ`); None for other children.
        token: the run's token (default: the one this process was given, else a new one).
    """
    base = dict(os.environ)
    base[RUN_TOKEN_ENV] = token or os.environ.get(RUN_TOKEN_ENV) or secrets.token_hex(8)
    return service_environ(base, sections if sections is not None else {})


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
