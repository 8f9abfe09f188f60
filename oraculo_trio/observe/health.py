"""Readiness of the service's components, read by ``/readyz`` from the HTTP thread.

Each component (``feed``, ``store``, ``rules``, ...) registers and then says whether it is
ready and, when it is not, why. The service is ready when every registered component is.
``oraculo_ready`` follows the verdict. :func:`run_store_check` keeps the ``store`` component
up to date by pinging the store.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import TypedDict

import trio

from oraculo_trio.errors import StoreError
from oraculo_trio.observe.metrics import ServiceMetrics

LOGGER = logging.getLogger("oraculo_trio.observe.health")


class ComponentStatus(TypedDict):
    """What ``/readyz`` says about one component."""

    ok: bool
    detail: str


class Readiness:
    """Thread-safe readiness flags: set from the Trio thread, read from the HTTP thread.

    Args:
        metrics: when given, ``oraculo_ready`` is kept at 1 (ready) or 0.
        components: components to register as not ready from the start.
    """

    def __init__(
        self, metrics: ServiceMetrics | None = None, components: Iterable[str] = ()
    ) -> None:
        self._metrics = metrics
        self._lock = threading.Lock()
        self._status: dict[str, ComponentStatus] = {}
        for component in components:
            self._status[component] = {"ok": False, "detail": "starting"}
        with self._lock:
            self._publish_locked()

    def register(self, component: str, ok: bool = False, detail: str = "starting") -> None:
        """Add ``component`` (not ready by default); registering it again changes nothing."""
        with self._lock:
            self._status.setdefault(component, {"ok": ok, "detail": detail})
            self._publish_locked()

    def set(self, component: str, ok: bool, detail: str = "") -> None:
        """Say whether ``component`` is ready, and why not.

        Raises:
            KeyError: ``component`` was never registered (a typo would otherwise hide a
                component that is not ready).
        """
        with self._lock:
            if component not in self._status:
                raise KeyError(
                    f"unknown readiness component {component!r}; registered: {sorted(self._status)}"
                )
            self._status[component] = {"ok": bool(ok), "detail": detail}
            self._publish_locked()

    def snapshot(self) -> tuple[bool, dict[str, ComponentStatus]]:
        """Return (every component ready, a copy of each component's status)."""
        with self._lock:
            status: dict[str, ComponentStatus] = {
                name: {"ok": entry["ok"], "detail": entry["detail"]}
                for name, entry in self._status.items()
            }
        return all(entry["ok"] for entry in status.values()), status

    @property
    def ready(self) -> bool:
        """True when every registered component is ready."""
        return self.snapshot()[0]

    def _publish_locked(self) -> None:
        # Under the lock, so two threads' updates cannot publish out of order.
        if self._metrics is not None:
            ready = all(entry["ok"] for entry in self._status.values())
            self._metrics.ready.set(1 if ready else 0)


async def run_store_check(
    ping: Callable[[], Awaitable[None]],
    readiness: Readiness,
    interval: float = 5.0,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Ping the store every ``interval`` seconds; the ``store`` component follows the answer.

    A ping that raises :class:`~oraculo_trio.errors.StoreError` (unreachable, timed out, a
    database that is gone) makes ``/readyz`` name the store with the error; the next ping that
    answers makes it ready again. Only the changes are logged. Each ping is bounded by the
    store's own statement timeout.

    Args:
        ping: the store's ``ping`` (a trivial statement).
        readiness: where the ``store`` component is registered.
        interval: seconds between pings.
        task_status: reports readiness after the first ping.

    Cancellation: runs until cancelled.
    """
    readiness.register("store")
    reachable: bool | None = None

    async def check() -> None:
        nonlocal reachable
        try:
            await ping()
        except StoreError as exc:
            if reachable is not False:
                LOGGER.warning("store not reachable: %s", exc)
            reachable = False
            readiness.set("store", False, f"ping failed: {exc}")
            return
        if reachable is False:
            LOGGER.info("store reachable again")
        reachable = True
        readiness.set("store", True)

    await check()
    task_status.started()
    while True:
        await trio.sleep(interval)
        await check()
