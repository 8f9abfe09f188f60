"""Readiness of the service's components, read by ``/readyz`` from the HTTP thread.

Each component (``feed``, ``store``, ``rules``, ...) registers and then says whether it is
ready and, when it is not, why. The service is ready when every registered component is.
``oraculo_ready`` follows the verdict. :func:`run_store_check` keeps the ``store`` component
up to date by pinging the store.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypedDict

import attrs
import trio

from oraculo_trio.errors import StoreError
from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.observe.supervise import sleep_to_tick

LOGGER = logging.getLogger("oraculo_trio.observe.health")


REASONS = {
    "feed": "feed_disconnected",
    "store": "store_down",
    "rules": "rules_not_loaded",
    "feed_lag": "feed_behind",
    "books": "book_not_live",
    "partitions": "partitions_not_claimed",
}
"""The reason ``/readyz`` gives for each component that is not ready."""


class ComponentStatus(TypedDict):
    """What ``/readyz`` says about one component."""

    ok: bool
    detail: str


class Reason(TypedDict, total=False):
    """One reason ``/readyz`` gives for not being ready: its code, the component, a line for a
    person, and what it names (``lag_seconds``, ``symbols``, ...)."""

    reason: str
    component: str
    detail: str


class Readiness:
    """Thread-safe readiness flags: set from the Trio thread, read from the HTTP thread.

    Each component is ready or not; one that is not gives a reason (:data:`REASONS`), a
    detail for a person, and may name what it is about (``set(..., symbols=[...])``).

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
        self._names: dict[str, dict[str, Any]] = {}
        for component in components:
            self._status[component] = {"ok": False, "detail": "starting"}
        with self._lock:
            self._publish_locked()

    def register(self, component: str, ok: bool = False, detail: str = "starting") -> None:
        """Add ``component`` (not ready by default); registering it again changes nothing."""
        with self._lock:
            self._status.setdefault(component, {"ok": ok, "detail": detail})
            self._publish_locked()

    def set(self, component: str, ok: bool, detail: str = "", **names: Any) -> None:
        """Say whether ``component`` is ready, and why not: ``detail`` for a person, ``names``
        for a program (JSON values: the symbols not live, the lag in seconds...).

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
            self._names[component] = dict(names)
            self._publish_locked()

    def snapshot(self) -> tuple[bool, dict[str, ComponentStatus]]:
        """Return (every component ready, a copy of each component's status)."""
        with self._lock:
            status: dict[str, ComponentStatus] = {
                name: {"ok": entry["ok"], "detail": entry["detail"]}
                for name, entry in self._status.items()
            }
        return all(entry["ok"] for entry in status.values()), status

    def reasons(self) -> list[Reason]:
        """Why the service is not ready, one entry per component that is not (none: ready)."""
        with self._lock:
            return [
                {
                    "reason": REASONS.get(name, f"{name}_not_ready"),
                    "component": name,
                    "detail": entry["detail"],
                    **self._names.get(name, {}),
                }
                for name, entry in sorted(self._status.items())
                if not entry["ok"]
            ]

    @property
    def ready(self) -> bool:
        """True when every registered component is ready."""
        return self.snapshot()[0]

    def _publish_locked(self) -> None:
        # Under the lock, so two threads' updates cannot publish out of order.
        if self._metrics is not None:
            ready = all(entry["ok"] for entry in self._status.values())
            self._metrics.ready.set(1 if ready else 0)


@attrs.define(eq=False)
class FeedAge:
    """The oldest message evaluated per stream since the last look: the consumers report
    each batch's (:meth:`observe`), :func:`run_feed_age_watch` takes them once a second."""

    worst: dict[str, float] = attrs.field(factory=dict)

    def observe(self, stream: str, age: float) -> None:
        if age > self.worst.get(stream, -math.inf):
            self.worst[stream] = age

    def take(self) -> dict[str, float]:
        worst, self.worst = self.worst, {}
        return worst


async def run_feed_age_watch(
    feed_age: FeedAge,
    readiness: Readiness,
    bound: float,
    interval: float = 1.0,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep the ``feed_lag`` component: not ready (``feed_behind``) while what the service
    evaluates is more than ``bound`` seconds behind the exchange's event time.

    Looked at every ``interval`` seconds, over the messages evaluated meanwhile; with none
    evaluated the verdict stays as it was (a stuck pipeline does not become ready).

    Cancellation: runs until cancelled.
    """
    readiness.register("feed_lag", ok=True, detail="")
    task_status.started()
    behind = False
    while True:
        await sleep_to_tick(interval)
        worst = feed_age.take()
        if not worst:
            continue
        lag = max(worst.values())
        if lag > bound:
            streams = {stream: round(age, 3) for stream, age in sorted(worst.items())}
            readiness.set(
                "feed_lag",
                False,
                f"{lag:.1f} s behind the exchange (pipeline.max_feed_lag = {bound:g} s)",
                lag_seconds=round(lag, 3),
                streams=streams,
            )
            if not behind:
                LOGGER.warning(
                    "feed behind: what is evaluated is %.1f s behind the exchange (%s)",
                    lag,
                    ", ".join(f"{stream} {age:.1f} s" for stream, age in streams.items()),
                )
            behind = True
        elif behind:
            readiness.set("feed_lag", True)
            LOGGER.info("feed caught up: %.2f s behind the exchange", lag)
            behind = False


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
        await sleep_to_tick(interval)
        await check()
