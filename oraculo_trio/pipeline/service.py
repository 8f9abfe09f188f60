"""The root of the nursery tree: everything the service runs has an owner here.

::

    run_service
    ├── http (thread), watchdog (thread)
    ├── monitors nursery: lag monitor + instrument, process stats, signals (SIGHUP too),
    │                     silences refresh, rules reload (file / rules table), retention
    └── pipeline nursery: one generation per set of owned partitions (pipeline/partitions.py)
        ├── store writer            <- store channel (bounded; backpressure, never dropped)
        ├── dispatcher              <- dispatch channel (bounded; overflow dropped + counted)
        │                              └── one lane (bounded queue + workers) per sink
        ├── shard[i]: depth consumer, trade consumer  <- one bounded channel per stream
        ├── rule clock              ticks every engine, runs offloaded rules per batch
        └── feeds scope (pipeline/feeds_scope.py): feed connection[c] (depth and trade on
            separate connections), snapshot fetcher, book-live watch, trade backfills

Graceful shutdown (first SIGINT/SIGTERM, or :meth:`ServiceHandle.request_shutdown`):
the feeds scope is cancelled, the feed tasks close their channel ends, the consumers drain
what is queued and close theirs, the writer flushes and returns, the dispatcher finishes;
all within ``service.shutdown_grace``, after which the pipeline is cancelled (the writer
still flushes under a shield). A second signal exits at once. A change of the owned
partitions drains the pipeline the same way, then starts the next generation.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

import attrs
import trio

from oraculo_trio.api.server import Api, ApiSources
from oraculo_trio.core.claims import symbols_of
from oraculo_trio.core.engine import ShardEngine
from oraculo_trio.core.events import DEPTH, TRADE
from oraculo_trio.core.rules import CompiledRule
from oraculo_trio.core.sharding import shard_of
from oraculo_trio.core.silences import SilenceSet
from oraculo_trio.dispatch.dispatcher import run_dispatcher, run_silence_refresh
from oraculo_trio.dispatch.redeliver import unconfirmed_notifications
from oraculo_trio.dispatch.sinks import Sink, build_sinks
from oraculo_trio.errors import StoreError
from oraculo_trio.observe.health import FeedAge, Readiness, run_feed_age_watch, run_store_check
from oraculo_trio.observe.http import serve_http
from oraculo_trio.observe.instrument import LagInstrument, LagMonitor
from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.observe.process import run_process_stats
from oraculo_trio.observe.supervise import RestartPolicy, spawn, start
from oraculo_trio.observe.watchdog import Watchdog
from oraculo_trio.pipeline.channels import FeedPressure, InFlight, Room
from oraculo_trio.pipeline.connections import feed_connections
from oraculo_trio.pipeline.diffbooks import ShardBooks
from oraculo_trio.pipeline.exchange_clock import ClockWatch, ExchangeClock
from oraculo_trio.pipeline.feed import (
    ConnectionStatus,
)
from oraculo_trio.pipeline.feeds_scope import ShardChannels, open_books, run_feeds
from oraculo_trio.pipeline.partitions import Placement, claims_for, run_partitions
from oraculo_trio.pipeline.rest import RestBudget, rest_budgets, rest_endpoints
from oraculo_trio.pipeline.rule_clock import RuleLimiters, run_rule_clock
from oraculo_trio.pipeline.rules_source import RuleReloader
from oraculo_trio.pipeline.shards import (
    AlertOutlet,
    ConflationBuffer,
    ConsumerSettings,
    run_consumer,
)
from oraculo_trio.settings import Settings
from oraculo_trio.store.base import Store
from oraculo_trio.store.opening import open_store
from oraculo_trio.store.retention import run_retention
from oraculo_trio.store.writer import run_store_writer

LOGGER = logging.getLogger("oraculo_trio.pipeline.service")

TASK_NAMES = (
    "feed",
    "feed_age",
    "depth_consumer",
    "trade_consumer",
    "store_writer",
    "dispatcher",
    "lag_monitor",
    "process_stats",
    "store_check",
    "snapshot_fetcher",
    "book_live",
    "exchange_clock",
    "rule_clock",
    "rules_reload",
    "silences",
    "retention",
)


@attrs.define(eq=False)
class ServiceHandle:
    """What a running service hands to whoever started it (the CLI, tests, the demo)."""

    settings: Settings
    metrics: ServiceMetrics
    readiness: Readiness
    http_address: tuple[str, int]
    engines: Sequence[ShardEngine]
    connections: Sequence[ConnectionStatus]
    _shutdown: trio.Event = attrs.field(factory=trio.Event)
    stopped: trio.Event = attrs.field(factory=trio.Event)
    # Each shard's diff books (empty unless feed.depth_streams holds "depth").
    books: Sequence[ShardBooks] = ()
    # Per symbol shed, the update id its fresh snapshot holds: the depth readers skip older
    # diffs undecoded (shared by the books and the readers).
    caught_up_to: dict[str, int] = attrs.field(factory=dict)
    # Whether a feed reader found its read-ahead full lately (shedding needs a backlog of ours).
    feed_pressure: FeedPressure = attrs.field(factory=FeedPressure)
    # The age of what the consumers evaluate (the feed_behind readiness reason reads it).
    feed_age: FeedAge = attrs.field(factory=FeedAge)
    # The silences the dispatcher matches (refreshed from the store) and the rule reloader.
    silences: SilenceSet = attrs.field(factory=SilenceSet)
    rules: RuleReloader | None = None
    # The partitions this process processes now (pipeline/partitions.py).
    partitions: frozenset[int] = frozenset()
    # Each market's clock offset and REST weight budget (pipeline/exchange_clock.py, rest.py).
    clocks: dict[str, ExchangeClock] = attrs.field(factory=dict)
    rest_budgets: Mapping[str, RestBudget] = attrs.field(factory=dict)

    @property
    def metrics_url(self) -> str:
        host, port = self.http_address
        return f"http://{host}:{port}/metrics"

    def request_shutdown(self) -> None:
        """Begin a graceful shutdown: stop reading, drain, flush (bounded by the grace)."""
        self._shutdown.set()

    @property
    def shutdown_requested(self) -> trio.Event:
        """Set once a graceful shutdown has begun."""
        return self._shutdown

    def reload_rules(self) -> None:
        """Reload the rules from ``rules.source`` now (what SIGHUP does)."""
        if self.rules is not None:
            self.rules.request_reload()

    def update_feed_readiness(self) -> None:
        """Ready when every feed connection is connected; otherwise name the ones down."""
        down = [c.name for c in self.connections if not c.connected]
        detail = "disconnected: " + ", ".join(down) if down else ""
        self.readiness.set("feed", not down, detail)

    async def wait_connected(self) -> None:
        """Wait until every feed connection has connected once."""
        for status in self.connections:
            await status.connected_event.wait()


async def run_service(
    settings: Settings,
    rules: Sequence[CompiledRule] | None,
    *,
    sinks: Sequence[Sink] | None = None,
    handle_signals: bool = True,
    placement: Placement | None = None,
    task_status: trio.TaskStatus[ServiceHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the whole service until shutdown.

    Args:
        settings: validated configuration.
        rules: compiled rules (see :func:`~oraculo_trio.pipeline.rules_source.load_rule_file`),
            or None to read them from ``rules.source``; with ``rules.source = "db"`` the rules
            table is read in any case. Either way they reload while running (SIGHUP, or a
            change of the source seen every ``rules.reload_interval``).
        sinks: notification sinks; built from ``settings.dispatch`` when None.
        handle_signals: install SIGINT/SIGTERM (shutdown) and SIGHUP (reload the rules)
            handling (only from the main thread).
        placement: this process's place under ``run --workers N`` (None: not a worker); with
            ``cluster.mode``, decides which partitions it processes (pipeline/partitions.py).
        task_status: receives the :class:`ServiceHandle` once the HTTP endpoint is up, the
            store is open and the pipeline tasks are started.

    Raises:
        Whatever a non-restartable task raised, after the rest was shut down.

    Cancellation: cancels everything at once; the store writer still flushes what it holds
    under a shielded grace period.
    """
    placement = Placement() if placement is None else placement
    metrics = ServiceMetrics(
        shards=settings.pipeline.shards,
        # Only the limiters every service has: the store's and the rules' are registered by
        # process_stats when they exist (PostgreSQL's store has none: no series stuck at 0).
        limiters=("default",),
        tasks=TASK_NAMES,
        constant_labels=placement.metric_labels(settings.service.name),
    )
    readiness = Readiness(metrics, components=("feed", "store", "rules"))
    readiness.set("rules", bool(rules), f"{len(rules or ())} rules loaded")
    sinks = build_sinks(settings) if sinks is None else list(sinks)
    observe = settings.observe
    api = Api(
        ApiSources(symbols=settings.symbols, status=lambda: _status(settings, readiness)),
        host=settings.http.host,
        token=settings.http.api_token,
    )
    with (
        Watchdog(metrics, dump_after=observe.dump_after, dump_dir=observe.dump_dir) as watchdog,
        serve_http(
            settings.http.host, settings.http.port, metrics, readiness, watchdog=watchdog, api=api
        ) as http_address,
    ):
        readiness.set("store", False, "opening")
        async with open_store(
            settings.database.url,
            statement_timeout=settings.database.statement_timeout,
            metrics=metrics,
        ) as store:
            readiness.set("store", True)
            rule_limiters = RuleLimiters.create(settings.rules.offload_threads)
            limiters = _limiters(store, rule_limiters)
            engines = [ShardEngine() for _ in range(settings.pipeline.shards)]
            reloader = RuleReloader(settings, engines, metrics, readiness, store)
            await reloader.start(rules)
            # Bound before the first message, so no_data also judges a symbol that never speaks.
            started_at = reloader.clock()
            for symbol in settings.symbols:
                engines[shard_of(symbol, settings.pipeline.shards)].expect([symbol], started_at)
            clocks = {feed.market: ExchangeClock(feed.market) for feed in settings.feeds}
            handle = ServiceHandle(
                settings,
                metrics,
                readiness,
                http_address,
                engines,
                feed_connections(settings, clocks=clocks),
                clocks=clocks,
                rest_budgets=rest_budgets(settings, metrics, placement.rest_share()),
            )
            handle.rules = reloader
            handle.update_feed_readiness()
            _serve_api(api.sources, handle, store)
            try:
                async with trio.open_nursery() as monitors:
                    await _start_monitors(
                        monitors, handle, store, watchdog, limiters, handle_signals
                    )
                    # One pipeline generation per set of owned partitions.
                    await run_partitions(
                        handle,
                        store,
                        claims_for(settings, placement, metrics, readiness),
                        functools.partial(_run_pipeline, handle, store, sinks, rule_limiters),
                        functools.partial(feed_connections, settings, clocks=handle.clocks),
                        task_status=task_status,
                    )
                    monitors.cancel_scope.cancel()
            finally:
                handle.stopped.set()
    terms = " ".join(f"{key}={value}" for key, value in metrics.accounting().items())
    LOGGER.info("service stopped; accounting: %s", terms)
    # What a shutdown did with the alerts: every transition raised goes to the store.
    LOGGER.info("service stopped; alerts: %s", _alert_terms(metrics))


def _serve_api(sources: ApiSources, handle: ServiceHandle, store: Store) -> None:
    # The API reads this process's store and rules; a silence added through it reaches
    # the dispatcher at once rather than at the next dispatch.silence_refresh.
    async def rules() -> Sequence[CompiledRule]:
        return handle.rules.rules if handle.rules is not None else []

    async def silences_changed() -> None:
        now = time.time()
        handle.silences.replace(await store.fetch_silences(not_ended_at=now))
        handle.metrics.silences_active.set(handle.silences.active(now))

    sources.rules = rules
    sources.silences_changed = silences_changed
    sources.store = store


def _status(settings: Settings, readiness: Readiness) -> dict[str, object]:
    ready, components = readiness.snapshot()
    return {
        "service": settings.service.name,
        "ready": ready,
        "components": components,
        "symbols": list(settings.symbols),
    }


def _limiters(store: object, rule_limiters: RuleLimiters) -> dict[str, trio.CapacityLimiter]:
    # Every thread limiter process_stats reports, which creates their series: Trio's
    # default, the store's (SQLite's worker thread; PostgreSQL has no limiter, hence no
    # series), the rules'.
    limiters = {"default": trio.to_thread.current_default_thread_limiter()}
    if getattr(store, "limiter", None) is not None:
        limiters["store"] = store.limiter
    limiters.update(rule_limiters.by_name())
    return limiters


async def _start_monitors(
    monitors: trio.Nursery,
    handle: ServiceHandle,
    store: Store,
    watchdog: Watchdog,
    limiters: dict[str, trio.CapacityLimiter],
    handle_signals: bool,
) -> None:
    # The tasks that watch the service rather than carry its data; restarted when they fail.
    settings = handle.settings
    metrics = handle.metrics
    restart = RestartPolicy()
    instrument = LagInstrument(slow_step_threshold=settings.observe.slow_step_threshold)
    lag_monitor = LagMonitor(instrument, instrumented=settings.observe.instrument)
    supervision = {"metrics": metrics, "restart": restart}
    spawn(monitors, "watchdog", watchdog.run, **supervision)
    spawn(
        monitors,
        "lag_monitor",
        lag_monitor.run,
        metrics,
        settings.observe.lag_interval,
        **supervision,
    )
    spawn(monitors, "process_stats", run_process_stats, metrics, limiters, **supervision)
    spawn(
        monitors,
        "feed_age",
        run_feed_age_watch,
        handle.feed_age,
        handle.readiness,
        settings.pipeline.max_feed_lag,
        **supervision,
    )
    spawn(
        monitors,
        "store_check",
        run_store_check,
        store.ping,
        handle.readiness,
        settings.observe.store_check_interval,
        **supervision,
    )
    await start(
        monitors,
        "silences",
        run_silence_refresh,
        store,
        handle.silences,
        metrics,
        settings.dispatch.silence_refresh,
        **supervision,
    )
    spawn(monitors, "rules_reload", handle.rules.run, **supervision)
    database = settings.database
    if database.retention > 0:
        spawn(
            monitors,
            "retention",
            run_retention,
            store,
            database.retention,
            database.prune_interval,
            database.prune_batch,
            metrics,
            **supervision,
        )
    endpoints = rest_endpoints(settings)
    for feed in settings.feeds:
        if feed.clock_check_interval <= 0:
            continue
        watch = ClockWatch(
            handle.clocks[feed.market],
            endpoints[feed.market],
            handle.rest_budgets[feed.market],
            metrics,
            feed.clock_check_interval,
            feed.clock_offset_warning,
        )
        # Started (measured once, or tried) before any feed connects.
        await start(monitors, "exchange_clock", watch.run, **supervision)
    if handle_signals:
        # Started (receiver installed) before anyone learns we are up.
        await monitors.start(_watch_signals, handle)
        await monitors.start(handle.rules.watch_sighup)


def _alert_terms(metrics: ServiceMetrics) -> str:
    def total(name: str, **labels: str) -> int:
        return int(metrics.inner.get_sample_value(name, labels) or 0)

    raised = sum(
        total("oraculo_alert_transitions_total", state=state)
        for state in ("pending", "firing", "resolved", "inactive")
    )
    taken = total("oraculo_stage_messages_in_total", stage="store")
    written = total("oraculo_stage_messages_out_total", stage="store")
    return f"transitions={raised} store_items_taken={taken} store_items_written={written}"


async def _run_pipeline(
    handle: ServiceHandle,
    store: Store,
    sinks: Sequence[Sink],
    rule_limiters: RuleLimiters,
    *,
    task_status: trio.TaskStatus[ServiceHandle],
    until: trio.Event | None = None,
) -> None:
    # Runs until shutdown, or until ``until`` is set (the owned partitions change), then
    # drains and flushes.
    settings = handle.settings
    async with trio.open_nursery() as nursery:
        store_send, dispatch_send = _start_outlets(nursery, handle, store, sinks)
        # Before any new notification: those a previous run left in flight (at-least-once).
        await _redeliver(handle, store, sinks, dispatch_send)
        buffers = [ConflationBuffer(merge_diffs=True) for _ in range(settings.pipeline.shards)]
        requests = open_books(handle)
        in_flight = InFlight(buffers=buffers, books=handle.books)
        if requests is not None:
            in_flight.snapshots_in_channels = lambda: requests.in_channels
        clock_scope = trio.CancelScope()
        with store_send, dispatch_send:
            shard_channels = _start_consumers(
                nursery, handle, clock_scope, store_send, dispatch_send, buffers, rule_limiters
            )
        in_flight.channels = {
            stream: list(zip(receivers, shard_channels.rooms[stream], strict=True))
            for stream, receivers in shard_channels.receivers.items()
        }
        handle.metrics.ledger.attach(in_flight.count, trio.lowlevel.current_trio_token())
        feeds_scope = trio.CancelScope()
        nursery.start_soon(
            run_feeds, handle, feeds_scope, shard_channels, buffers, requests, in_flight
        )
        task_status.started(handle)
        # Everything made so far lives as long as the pipeline (modules, settings, books,
        # rules, metrics): out of the collector's reach, a full collection only scans what
        # came since. Measured at 1,500 msg/s: full collections of ~60,000 start-up objects
        # took up to 24 ms, each one a latency spike.
        gc.freeze()
        _raise_young_gc_threshold()
        await (handle._shutdown if until is None else until).wait()
        LOGGER.info(
            "%s: draining queues and flushing the store (grace %.1fs)",
            "shutting down" if handle._shutdown.is_set() else "owned partitions changing",
            settings.service.shutdown_grace,
        )
        feeds_scope.cancel()
        clock_scope.cancel()
        nursery.cancel_scope.deadline = trio.current_time() + settings.service.shutdown_grace
    # Drained: what a scrape shows from now on are the final counts.
    handle.metrics.ledger.detach()
    if nursery.cancel_scope.cancelled_caught:
        LOGGER.warning("shutdown grace period ran out; the pipeline was cancelled")


YOUNG_GC_THRESHOLD = 10_000
"""Net container allocations between two young-generation collections (Python's default is
700). A batch in flight holds every decoded message with its levels, ~25 tracked objects a
diff, all freed by reference counting once handled: at the default a burst of 150 diffs set
off collections that each walked those live objects on cold caches (~140 µs) and moved them
to the older generation, to be walked again there. Timed with ``gc.callbacks`` at 1,500
diffs/s over 12 s: 109 young, 10 middle and 1 full collection, 0.31 % of a core; at 10,000,
none. Cycles are still collected, 14 times less often."""


def _raise_young_gc_threshold() -> None:
    # Process-wide, like gc.freeze(): a threshold set higher, or 0 (collection off), stays.
    young, middle, old = gc.get_threshold()
    if 0 < young < YOUNG_GC_THRESHOLD:
        gc.set_threshold(YOUNG_GC_THRESHOLD, middle, old)


def _start_outlets(
    nursery: trio.Nursery, handle: ServiceHandle, store: Store, sinks: Sequence[Sink]
) -> tuple[trio.MemorySendChannel, trio.MemorySendChannel]:
    # The store writer and the dispatcher; returns the send ends of their channels.
    settings = handle.settings
    metrics = handle.metrics
    database = settings.database
    store_send, store_receive = trio.open_memory_channel(database.channel_capacity)
    dispatch_send, dispatch_receive = trio.open_memory_channel(settings.dispatch.channel_capacity)
    writer = functools.partial(
        run_store_writer,
        batch_max=database.batch_max,
        batch_window=database.batch_window_ms / 1000.0,
        commit_interval=database.commit_interval_ms / 1000.0,
        flush_grace=settings.service.shutdown_grace,
    )
    spawn(nursery, "store_writer", writer, store, store_receive, metrics, metrics=metrics)
    dispatcher = functools.partial(
        run_dispatcher,
        silences=handle.silences,
        drain_grace=settings.service.shutdown_grace / 2,
    )
    spawn(
        nursery,
        "dispatcher",
        dispatcher,
        dispatch_receive,
        sinks,
        store_send.clone(),
        metrics,
        metrics=metrics,
    )
    return store_send, dispatch_send


def _start_consumers(
    nursery: trio.Nursery,
    handle: ServiceHandle,
    clock_scope: trio.CancelScope,
    store_send: trio.MemorySendChannel,
    dispatch_send: trio.MemorySendChannel,
    buffers: Sequence[ConflationBuffer],
    rule_limiters: RuleLimiters,
) -> ShardChannels:
    # The rule clock (until ``clock_scope`` is cancelled) and each shard's depth and trade
    # consumers, each with outlet clones; returns the consumers' channels.
    settings = handle.settings
    metrics = handle.metrics
    # Every outlet hands on one batch at a time, in the order raised (AlertOutlet).
    order = trio.Lock()
    spawn(
        nursery,
        "rule_clock",
        _run_in_scope,
        clock_scope,
        run_rule_clock,
        handle.engines,
        AlertOutlet(store_send.clone(), dispatch_send.clone(), metrics, order),
        settings.rules.tick_interval,
        rule_limiters,
        metrics=metrics,
    )
    consumer_settings = ConsumerSettings.from_settings(settings)
    channels = ShardChannels()
    for shard, engine in enumerate(handle.engines):
        for stream in (DEPTH, TRADE):
            send, receive = trio.open_memory_channel(settings.pipeline.channel_capacity)
            room = Room()
            channels.senders[stream].append(send)
            channels.receivers[stream].append(receive)
            channels.rooms[stream].append(room)
            outlet = AlertOutlet(store_send.clone(), dispatch_send.clone(), metrics, order)
            spawn(
                nursery,
                f"{stream}_consumer",
                run_consumer,
                stream,
                shard,
                receive,
                buffers[shard] if stream == DEPTH else None,
                engine,
                outlet,
                metrics,
                consumer_settings,
                handle.books[shard] if handle.books and stream == DEPTH else None,
                room,
                handle.feed_age,
                metrics=metrics,
            )
    return channels


async def _redeliver(
    handle: ServiceHandle,
    store: object,
    sinks: Sequence[Sink],
    dispatch_send: trio.MemorySendChannel,
) -> None:
    # The owned alerts' latest notifications not recorded as delivered (dispatch/redeliver.py).
    settings = handle.settings
    owned = set(symbols_of(settings.symbols, handle.partitions, settings.cluster.partitions))
    try:
        transitions = await unconfirmed_notifications(store, [s.name for s in sinks], owned)
    except StoreError as exc:
        LOGGER.warning("notifications in flight before the last stop not checked: %s", exc)
        return
    if transitions:
        LOGGER.warning(
            "sending again %d notifications not recorded as delivered before the last stop",
            len(transitions),
        )
    for transition in transitions:
        try:
            dispatch_send.send_nowait(transition)
        except trio.WouldBlock:
            handle.metrics.dispatch_dropped.labels("overflow").inc()


async def _run_in_scope(
    scope: trio.CancelScope, fn: Callable[..., Awaitable[object]], *args: object
) -> None:
    # A task that runs until shutdown begins (its outlet closes, so the writer can finish).
    with scope:
        await fn(*args)


async def _watch_signals(
    handle: ServiceHandle, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            if not handle._shutdown.is_set():
                LOGGER.warning(
                    "%s received: shutting down gracefully (send it again to exit at once)",
                    signal.Signals(signum).name,
                )
                handle.request_shutdown()
            else:
                LOGGER.error("second signal: exiting at once")
                os._exit(128 + signum)
