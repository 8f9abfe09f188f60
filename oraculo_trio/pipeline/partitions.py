"""Which partitions this process processes, and handing them over without losing an alert.

Symbols live in ``cluster.partitions`` partitions (``crc32(symbol) % P``). A process owns a
set of partitions and subscribes to, and evaluates, only their symbols:

- ``cluster.mode = "single"``: every partition, or with ``run --workers N`` the fixed share
  ``p % N == i`` of worker ``i`` (:class:`StaticClaims`);
- ``cluster.mode = "postgres"``: a fair share ``ceil(P / live instances)`` claimed as
  PostgreSQL advisory locks, rebalanced as instances come and go (:class:`PostgresClaims`,
  :mod:`oraculo_trio.store.coordination`).

The pipeline runs in *generations*, one per set of owned partitions (:func:`run_partitions`).
When the set changes, the running generation drains exactly like a graceful shutdown (feeds
closed, queues drained, the store writer flushed) and only then are partitions unlocked;
a claimed partition's alert states are loaded from the store before its symbols are
subscribed. So a partition is processed by one process at a time, and the next owner starts
from the alert states the previous one committed: no transition is repeated or lost. The
engines (market state, rule windows, alert trackers) of partitions that stay are kept.

The price of a change is a short pause of this process's feeds (the drain plus a reconnect,
usually well under a second): frames the exchange sends meanwhile are not seen. Changes only
happen when instances join or leave.

Fencing: when the claims session is lost (PostgreSQL restarted, network cut, a statement
timed out) its locks are gone, so this process stops processing every partition at once. It
joins again with a new session no sooner than ``claim_interval + database.statement_timeout``
later: by then any other instance that lost its session too (a PostgreSQL restart) has
noticed and stopped, so no partition is processed twice.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import attrs
import trio

from oraculo_trio.core.alerts import FIRING, INACTIVE
from oraculo_trio.core.claims import (
    plan_claims,
    preference,
    symbols_of,
    worker_partitions,
)
from oraculo_trio.core.sharding import partition_of, shard_of
from oraculo_trio.errors import StoreError, StoreUnavailable
from oraculo_trio.observe.health import Readiness
from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.observe.ratelimit import RateLimitedLog
from oraculo_trio.observe.supervise import RestartPolicy
from oraculo_trio.settings import Settings

LOGGER = logging.getLogger("oraculo_trio.pipeline.partitions")

RESTORE_ATTEMPTS = 5
"""Tries at loading alert states for claimed partitions before handing them back."""


@attrs.frozen
class Placement:
    """Where this process sits among the service's processes.

    Attributes:
        worker: this process's index under ``run --workers N``; None when not a worker.
        workers: N (1 when not supervised).
    """

    worker: int | None = None
    workers: int = 1

    def metric_labels(self, service: str) -> dict[str, str]:
        """Constant labels of this process's metrics: ``service`` and, for a worker, ``worker``."""
        labels = {"service": service}
        if self.worker is not None:
            labels["worker"] = str(self.worker)
        return labels

    def rest_share(self) -> float:
        """This process's share of the host's REST weight budget: the workers of one host
        share its IP, and the supervisor gives each ``1/N`` (each holds ``1/N`` of the
        partitions, so of the symbols and their snapshots)."""
        return 1.0 / max(1, self.workers)


def instance_id(settings: Settings, placement: Placement) -> str:
    """This process's name among the cluster's live instances."""
    base = settings.cluster.instance_id or f"{socket.gethostname()}-{os.getpid()}"
    return base if placement.worker is None else f"{base}-w{placement.worker}"


@attrs.frozen
class Change:
    """What changes in the owned partitions before the next generation.

    Attributes:
        claim: partitions just locked: load their alert states, then process them.
        release: partitions to hand back once the generation has drained.
        lost: partitions whose locks are gone: stop processing them, release nothing.
        stop: shutdown was requested.
    """

    claim: frozenset[int] = frozenset()
    release: frozenset[int] = frozenset()
    lost: frozenset[int] = frozenset()
    stop: bool = False

    def __bool__(self) -> bool:
        return bool(self.claim or self.release or self.lost or self.stop)


class Claims(Protocol):
    """Where owned partitions come from (see :class:`StaticClaims`, :class:`PostgresClaims`)."""

    interval: float
    """Seconds between rounds (``math.inf``: the set never changes)."""

    async def start(self, nursery: trio.Nursery) -> Change:
        """Start background tasks in ``nursery``; return the first claims."""
        ...

    async def round(self, owned: frozenset[int]) -> Change:
        """Look at the cluster once; return what to change (falsy: nothing)."""
        ...

    async def release(self, partitions: frozenset[int]) -> None:
        """Hand ``partitions`` back (their generation has drained)."""
        ...

    def wake(self) -> trio.Event:
        """Set when a round should run before ``interval`` is up (the session was lost)."""
        ...


@attrs.define(eq=False)
class StaticClaims:
    """A fixed set of partitions: single mode, or one worker's share of it."""

    partitions: frozenset[int]
    interval: float = float("inf")
    _never: trio.Event = attrs.field(factory=trio.Event)

    async def start(self, nursery: trio.Nursery) -> Change:
        return Change(claim=self.partitions)

    async def round(self, owned: frozenset[int]) -> Change:
        return Change()

    async def release(self, partitions: frozenset[int]) -> None:
        return None

    def wake(self) -> trio.Event:
        return self._never


@attrs.define(eq=False)
class PostgresClaims:
    """Fair shares of the partitions, claimed as advisory locks in PostgreSQL.

    A background task keeps the claims session open, reopening it with backoff when it is
    lost; rounds read ``pg_locks`` through it and lock free partitions up to the fair share.
    """

    url: str
    cluster: str
    instance_id: str
    partitions: int
    interval: float
    statement_timeout: float
    metrics: ServiceMetrics
    readiness: Readiness
    _order: list[int] = attrs.field(init=False)
    _locks: Any = None
    # The session the owned partitions were claimed in: a new session holds none of them.
    _owner_session: Any = None
    _wake: trio.Event = attrs.field(factory=trio.Event)
    _log: RateLimitedLog = attrs.field(factory=lambda: RateLimitedLog(LOGGER, interval=30.0))

    def __attrs_post_init__(self) -> None:
        self._order = preference(self.instance_id, self.partitions)

    async def start(self, nursery: trio.Nursery) -> Change:
        self.readiness.register("partitions", False, "joining the cluster")
        await nursery.start(self._keep_session)
        return await self.round(frozenset())

    def wake(self) -> trio.Event:
        return self._wake

    async def round(self, owned: frozenset[int]) -> Change:
        locks = self._locks
        if locks is not self._owner_session and owned:
            return Change(lost=owned)
        if locks is None:
            return Change()
        try:
            view = await locks.view()
        except StoreUnavailable:
            return Change(lost=owned)
        self.metrics.cluster_members.set(view.members)
        missing = owned - view.mine
        if missing:
            return Change(lost=frozenset(missing))
        plan = plan_claims(owned, view.taken, view.members, self._order)
        if plan.release:
            return Change(release=frozenset(plan.release))
        if not plan.claim:
            return Change()
        try:
            claimed = await locks.claim(plan.claim)
        except StoreUnavailable:
            return Change(lost=owned)
        self._owner_session = locks
        return Change(claim=claimed)

    async def release(self, partitions: frozenset[int]) -> None:
        locks = self._locks
        if locks is None or locks is not self._owner_session:
            return  # that session is gone, and its locks with it
        try:
            await locks.release(partitions)
        except StoreUnavailable:
            pass  # the session was terminated: its locks are gone as well

    async def _keep_session(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Hold a claims session open; after losing one, open the next with backoff.

        The first session must open (its failure raises), later ones are retried forever.
        """
        from oraculo_trio.store.coordination import open_partition_locks

        restart = RestartPolicy(initial=min(1.0, self.interval), maximum=30.0)
        # Whoever lost its session when we did (a PostgreSQL restart) notices within a round
        # and a statement timeout, and stops processing; only then do we come back and claim.
        fence = self.interval + self.statement_timeout
        failures = 0
        first = True
        while True:
            try:
                async with open_partition_locks(
                    self.url,
                    cluster=self.cluster,
                    instance_id=self.instance_id,
                    statement_timeout=self.statement_timeout,
                    keepalive=fence,
                ) as locks:
                    failures = 0
                    self._connected(locks)
                    if first:
                        first = False
                        task_status.started()
                    else:
                        LOGGER.info("claims session open again (%s)", self.instance_id)
                    await locks.lost.wait()
                    self._log.warning("lost", "claims session lost, and its locks with it")
            except StoreError as exc:
                if first:
                    raise
                self._log.warning("open", "claims session not open: %s", exc)
            finally:
                self._disconnected()
            failures += 1
            await trio.sleep(max(fence, restart.delay(failures)))

    def _connected(self, locks: Any) -> None:
        self._locks = locks
        self.metrics.cluster_connected.set(1)
        self.readiness.set("partitions", True, f"instance {self.instance_id}")

    def _disconnected(self) -> None:
        self._locks = None
        self.metrics.cluster_connected.set(0)
        self.readiness.set("partitions", False, "claims session with PostgreSQL lost")
        self._wake.set()
        self._wake = trio.Event()


def claims_for(
    settings: Settings, placement: Placement, metrics: ServiceMetrics, readiness: Readiness
) -> Claims:
    """The claims source the configuration asks for."""
    cluster = settings.cluster
    if cluster.mode == "postgres":
        return PostgresClaims(
            url=settings.database.url,
            cluster=settings.service.name,
            instance_id=instance_id(settings, placement),
            partitions=cluster.partitions,
            interval=cluster.claim_interval,
            statement_timeout=settings.database.statement_timeout,
            metrics=metrics,
            readiness=readiness,
        )
    worker = 0 if placement.worker is None else placement.worker
    metrics.cluster_members.set(1)
    metrics.cluster_connected.set(1)
    return StaticClaims(worker_partitions(worker, placement.workers, cluster.partitions))


class _Service(Protocol):
    # The parts of ServiceHandle this module uses.
    settings: Settings
    metrics: ServiceMetrics
    engines: Sequence[Any]
    connections: Sequence[Any]
    partitions: frozenset[int]
    shutdown_requested: trio.Event

    def update_feed_readiness(self) -> None: ...


async def run_partitions(
    handle: _Service,
    store: Any,
    claims: Claims,
    run_generation: Callable[..., Any],
    connections_for: Callable[[Sequence[str]], Sequence[Any]],
    *,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the pipeline for the partitions ``claims`` gives, one generation per claim set.

    Args:
        handle: the service's handle: its engines, connections and owned partitions are
            updated between generations.
        store: the open store (alert states of claimed partitions are loaded from it).
        claims: where owned partitions come from.
        run_generation: ``run_generation(until=event, task_status=...)`` runs the pipeline
            for ``handle.connections`` until ``event`` is set, then drains and flushes.
        connections_for: the feed connections of a list of symbols.
        task_status: receives the handle once the first generation runs.

    Raises:
        Whatever a generation raised.

    Cancellation: the running generation is cancelled; owned partitions are released
    (when the claims session can still do it, else with the session).
    """
    settings = handle.settings
    metrics = handle.metrics
    owned: frozenset[int] = frozenset()
    started = False
    async with trio.open_nursery() as nursery:
        change = await claims.start(nursery)
        try:
            while True:
                owned = await _apply(handle, store, claims, owned, change)
                # Before the first generation runs, whoever started us waits for it: a
                # shutdown asked for meanwhile is served by that generation.
                if change.stop or (started and handle.shutdown_requested.is_set()):
                    break
                handle.connections = connections_for(
                    symbols_of(settings.symbols, owned, settings.cluster.partitions)
                )
                handle.update_feed_readiness()
                until = trio.Event()
                async with trio.open_nursery() as generation:
                    await generation.start(_generation, run_generation, until)
                    if not started:
                        started = True
                        task_status.started(handle)
                    change = await _next_change(handle, claims, owned)
                    until.set()
        finally:
            if owned:
                with trio.move_on_after(settings.database.statement_timeout, shield=True):
                    await claims.release(owned)
                metrics.partition_changes["released"].inc(len(owned))
                metrics.partitions_owned.set(0)
            nursery.cancel_scope.cancel()


async def _generation(
    run_generation: Callable[..., Any],
    until: trio.Event,
    *,
    task_status: trio.TaskStatus[None],
) -> None:
    await run_generation(until=until, task_status=task_status)


async def _next_change(handle: _Service, claims: Claims, owned: frozenset[int]) -> Change:
    """Run claim rounds until one asks for a change, or until shutdown is requested."""
    shutdown = handle.shutdown_requested
    while True:
        with trio.move_on_after(claims.interval):
            await _either(shutdown, claims.wake())
        if shutdown.is_set():
            return Change(stop=True)
        change = await claims.round(owned)
        if change:
            return change


async def _either(first: trio.Event, second: trio.Event) -> None:
    async with trio.open_nursery() as nursery:
        for event in (first, second):
            nursery.start_soon(_set_then_cancel, event, nursery.cancel_scope)


async def _set_then_cancel(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def _apply(
    handle: _Service, store: Any, claims: Claims, owned: frozenset[int], change: Change
) -> frozenset[int]:
    """Apply ``change`` between generations (no consumer runs); return the new owned set."""
    settings = handle.settings
    metrics = handle.metrics
    partitions = settings.cluster.partitions
    gone = (change.release | change.lost) & owned
    owned = owned - gone
    if change.lost:
        metrics.partition_changes["lost"].inc(len(change.lost & gone))
        LOGGER.error(
            "claims session lost: stopped processing %d partitions; claiming again once "
            "a new session is up",
            len(gone),
        )
    if change.release:
        await claims.release(change.release)
        metrics.partition_changes["released"].inc(len(change.release))
        LOGGER.info("released %d partitions (rebalance)", len(change.release))
    claimed = change.claim - owned
    if claimed and not await _restore(handle, store, claimed):
        await claims.release(claimed)
        claimed = frozenset()
    if claimed:
        owned = owned | claimed
        metrics.partition_changes["claimed"].inc(len(claimed))
        LOGGER.info("claimed %d partitions; owning %d of %d", len(claimed), len(owned), partitions)
    # Whatever the engines know of symbols outside the owned partitions goes: the released
    # ones, and any bound in advance for every symbol at start-up.
    for engine in handle.engines:
        strangers = [s for s in engine.markets if partition_of(s, partitions) not in owned]
        if strangers:
            _forget(handle, engine, strangers)
    handle.partitions = owned
    metrics.partitions_owned.set(len(owned))
    return owned


def _forget(handle: _Service, engine: Any, symbols: Iterable[str]) -> None:
    symbols = set(symbols)
    _count_active(handle, engine, symbols, -1)
    engine.forget(symbols)


def _count_active(handle: _Service, engine: Any, symbols: set[str], step: int) -> None:
    # oraculo_alerts_active{state} and oraculo_alerts_firing{rule_id, severity} follow the
    # alerts an engine takes on (restored) or lets go of (forgotten).
    active = handle.metrics.alerts_active
    firing = handle.metrics.alerts_firing
    severity = {rule.spec.id: rule.spec.severity for rule in engine.rules}
    for tracker in engine.trackers():
        if tracker.symbol in symbols and tracker.state != INACTIVE:
            active.labels(tracker.state).inc(step)
            if tracker.state == FIRING and tracker.rule_id in severity:
                firing.labels(tracker.rule_id, severity[tracker.rule_id]).inc(step)


async def _restore(handle: _Service, store: Any, claimed: frozenset[int]) -> bool:
    """Load the stored alert states of ``claimed`` into the engines; False if the store
    would not answer (the partitions are then handed back rather than processed blind)."""
    settings = handle.settings
    symbols = symbols_of(settings.symbols, claimed, settings.cluster.partitions)
    if not symbols:
        return True
    restart = RestartPolicy(initial=0.2, maximum=2.0)
    attempt = 0
    while True:
        attempt += 1
        try:
            rows = await store.load_alert_states()
            break
        except StoreUnavailable as exc:
            LOGGER.warning("loading alert states failed (attempt %d): %s", attempt, exc)
            if attempt == RESTORE_ATTEMPTS:
                LOGGER.error(
                    "alert states of %d claimed partitions not loaded: handing them back",
                    len(claimed),
                )
                return False
        await trio.sleep(restart.delay(attempt))
    engines = handle.engines
    wanted = set(symbols)
    by_shard: dict[int, list[Any]] = {}
    for row in rows:
        if row.symbol in wanted:
            by_shard.setdefault(shard_of(row.symbol, len(engines)), []).append(row)
    now = time.time()
    restored = 0
    for symbol in symbols:
        # Watched from now: a time-driven rule (no_data) judges the symbol from its claim.
        engines[shard_of(symbol, len(engines))].expect((symbol,), now)
    for shard, shard_rows in by_shard.items():
        restored += engines[shard].restore(shard_rows, now)
    for engine in engines:
        _count_active(handle, engine, wanted, 1)
    handle.metrics.alert_states_restored.inc(restored)
    return True
