"""Readiness of the service's components, read by ``/readyz`` from the HTTP thread.

Each component (``feed``, ``store``, ``rules``, ...) registers and then says whether it is
ready and, when it is not, why. The service is ready when every registered component is.
``oraculo_ready`` follows the verdict.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TypedDict

from oraculo_trio.observe.metrics import ServiceMetrics


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
