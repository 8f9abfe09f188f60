"""The root of the nursery tree: everything the service runs has an owner here.

::

    run_service
    ├── http (thread), watchdog (thread)
    ├── monitors nursery: lag monitor + instrument, process stats, signals
    └── pipeline nursery
        ├── store writer            <- store channel (bounded; backpressure, never dropped)
        ├── dispatcher              <- dispatch channel (bounded; overflow dropped + counted)
        ├── shard[i]: depth consumer, trade consumer  <- one bounded channel per stream
        └── feeds scope: feed connection[c] (depth and trade on separate connections)

Graceful shutdown (first SIGINT/SIGTERM, or :meth:`ServiceHandle.request_shutdown`):
the feeds scope is cancelled, the feed tasks close their channel ends, the consumers drain
what is queued and close theirs, the writer flushes and returns, the dispatcher finishes;
all within ``service.shutdown_grace``, after which the pipeline is cancelled (the writer
still flushes under a shield). A second signal exits at once.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
from collections.abc import Sequence

import attrs
import trio

from oraculo_trio.core.engine import ShardEngine
from oraculo_trio.core.events import DEPTH, TRADE
from oraculo_trio.core.rules import CompiledRule
from oraculo_trio.dispatch.dispatcher import run_dispatcher
from oraculo_trio.dispatch.sinks import LogSink, Sink, StdoutSink
from oraculo_trio.feeds.binance import combined_urls, stream_name
from oraculo_trio.observe.health import Readiness, run_store_check
from oraculo_trio.observe.http import serve_http
from oraculo_trio.observe.instrument import LagInstrument, LagMonitor
from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.observe.process import run_process_stats
from oraculo_trio.observe.supervise import RestartPolicy, spawn, supervised
from oraculo_trio.observe.watchdog import Watchdog
from oraculo_trio.pipeline.feed import ConnectionStatus, FeedConnectionSettings, run_feed_connection
from oraculo_trio.pipeline.shards import (
    AlertOutlet,
    ConflationBuffer,
    ConsumerSettings,
    ShardRouter,
    run_consumer,
)
from oraculo_trio.settings import Settings
from oraculo_trio.store.base import open_store
from oraculo_trio.store.writer import run_store_writer

LOGGER = logging.getLogger("oraculo_trio.pipeline.service")

TASK_NAMES = (
    "feed",
    "depth_consumer",
    "trade_consumer",
    "store_writer",
    "dispatcher",
    "lag_monitor",
    "process_stats",
    "store_check",
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

    @property
    def metrics_url(self) -> str:
        host, port = self.http_address
        return f"http://{host}:{port}/metrics"

    def request_shutdown(self) -> None:
        """Begin a graceful shutdown: stop reading, drain, flush (bounded by the grace)."""
        self._shutdown.set()

    def update_feed_readiness(self) -> None:
        """Ready when every feed connection is connected; otherwise name the ones down."""
        down = [c.name for c in self.connections if not c.connected]
        detail = "disconnected: " + ", ".join(down) if down else ""
        self.readiness.set("feed", not down, detail)

    async def wait_connected(self) -> None:
        """Wait until every feed connection has connected once."""
        for status in self.connections:
            await status.connected_event.wait()


def build_sinks(settings: Settings) -> list[Sink]:
    """The configured notification sinks."""
    sinks: list[Sink] = []
    for name in settings.dispatch.sinks:
        if name == "stdout":
            sinks.append(StdoutSink())
        elif name == "log":
            sinks.append(LogSink())
    return sinks


def feed_connections(settings: Settings) -> list[ConnectionStatus]:
    """One connection per stream family and group of <= max_streams_per_connection."""
    feed = settings.feed
    connections = []
    for stream, kinds in ((DEPTH, feed.depth_streams), (TRADE, feed.trade_streams)):
        names = [stream_name(symbol, kind) for symbol in feed.symbols for kind in kinds]
        if not names:
            continue
        for index, url in enumerate(
            combined_urls(feed.url, names, max_streams=feed.max_streams_per_connection)
        ):
            connections.append(ConnectionStatus(f"{stream}-{index}", stream, url))
    return connections


async def run_service(
    settings: Settings,
    rules: Sequence[CompiledRule],
    *,
    sinks: Sequence[Sink] | None = None,
    handle_signals: bool = True,
    task_status: trio.TaskStatus[ServiceHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the whole service until shutdown.

    Args:
        settings: validated configuration.
        rules: compiled rules (see :func:`oraculo_trio.settings.load_rule_file`).
        sinks: notification sinks; built from ``settings.dispatch`` when None.
        handle_signals: install SIGINT/SIGTERM handling (only from the main thread).
        task_status: receives the :class:`ServiceHandle` once the HTTP endpoint is up, the
            store is open and the pipeline tasks are started.

    Raises:
        Whatever a non-restartable task raised, after the rest was shut down.

    Cancellation: cancels everything at once; the store writer still flushes what it holds
    under a shielded grace period.
    """
    pipeline = settings.pipeline
    metrics = ServiceMetrics(
        shards=pipeline.shards,
        limiters=("default", "store"),
        tasks=TASK_NAMES,
        constant_labels={"service": settings.service.name},
    )
    readiness = Readiness(metrics, components=("feed", "store", "rules"))
    readiness.set("rules", bool(rules), f"{len(rules)} rules loaded")
    connections = feed_connections(settings)
    instrument = LagInstrument(slow_step_threshold=settings.observe.slow_step_threshold)
    lag_monitor = LagMonitor(instrument, instrumented=settings.observe.instrument)
    sinks = build_sinks(settings) if sinks is None else list(sinks)
    monitor_restart = RestartPolicy()

    with (
        Watchdog(
            metrics,
            dump_after=settings.observe.dump_after,
            dump_dir=settings.observe.dump_dir,
        ) as watchdog,
        serve_http(
            settings.http.host, settings.http.port, metrics, readiness, watchdog=watchdog
        ) as http_address,
    ):
        readiness.set("store", False, "opening")
        async with open_store(
            settings.database.url,
            statement_timeout=settings.database.statement_timeout,
            metrics=metrics,
        ) as store:
            readiness.set("store", True)
            limiters = {"default": trio.to_thread.current_default_thread_limiter()}
            if getattr(store, "limiter", None) is not None:
                limiters["store"] = store.limiter
            engines = [ShardEngine(list(rules)) for _ in range(pipeline.shards)]
            handle = ServiceHandle(settings, metrics, readiness, http_address, engines, connections)
            handle.update_feed_readiness()
            try:
                async with trio.open_nursery() as monitors:
                    spawn(
                        monitors, "watchdog", watchdog.run, metrics=metrics, restart=monitor_restart
                    )
                    spawn(
                        monitors,
                        "lag_monitor",
                        lag_monitor.run,
                        metrics,
                        settings.observe.lag_interval,
                        metrics=metrics,
                        restart=monitor_restart,
                    )
                    spawn(
                        monitors,
                        "process_stats",
                        run_process_stats,
                        metrics,
                        limiters,
                        metrics=metrics,
                        restart=monitor_restart,
                    )
                    spawn(
                        monitors,
                        "store_check",
                        run_store_check,
                        store.ping,
                        readiness,
                        settings.observe.store_check_interval,
                        metrics=metrics,
                        restart=monitor_restart,
                    )
                    if handle_signals:
                        # Started (receiver installed) before anyone learns we are up.
                        await monitors.start(_watch_signals, handle)
                    await _run_pipeline(handle, store, sinks, task_status=task_status)
                    monitors.cancel_scope.cancel()
            finally:
                handle.stopped.set()
    terms = " ".join(f"{key}={value}" for key, value in metrics.accounting().items())
    LOGGER.info("service stopped; accounting: %s", terms)


async def _run_pipeline(
    handle: ServiceHandle,
    store: object,
    sinks: Sequence[Sink],
    *,
    task_status: trio.TaskStatus[ServiceHandle],
) -> None:
    settings = handle.settings
    metrics = handle.metrics
    pipeline = settings.pipeline
    database = settings.database
    consumer_settings = ConsumerSettings(
        batch_max=pipeline.batch_max,
        batch_budget=pipeline.batch_budget_ms / 1000.0,
        stale_after=pipeline.stale_after,
        debug_batch_delay=pipeline.debug_batch_delay_ms / 1000.0,
    )
    feed = settings.feed
    connection_settings = FeedConnectionSettings(
        receive_buffer_size=feed.receive_buffer_size,
        max_message_size=feed.max_message_size,
        reconnect_initial=feed.reconnect_initial,
        reconnect_max=feed.reconnect_max,
        connection_lifetime=feed.connection_lifetime,
        stall_timeout=feed.stall_timeout,
    )
    async with trio.open_nursery() as nursery:
        store_send, store_receive = trio.open_memory_channel(database.channel_capacity)
        dispatch_send, dispatch_receive = trio.open_memory_channel(
            settings.dispatch.channel_capacity
        )
        writer = functools.partial(
            run_store_writer,
            batch_max=database.batch_max,
            batch_window=database.batch_window_ms / 1000.0,
            flush_grace=settings.service.shutdown_grace,
        )
        spawn(nursery, "store_writer", writer, store, store_receive, metrics, metrics=metrics)
        spawn(
            nursery,
            "dispatcher",
            run_dispatcher,
            dispatch_receive,
            sinks,
            store_send.clone(),
            metrics,
            metrics=metrics,
        )
        senders: dict[str, list[trio.MemorySendChannel]] = {DEPTH: [], TRADE: []}
        buffers = [ConflationBuffer() for _ in range(pipeline.shards)]
        with store_send, dispatch_send:
            for shard, engine in enumerate(handle.engines):
                for stream in (DEPTH, TRADE):
                    send, receive = trio.open_memory_channel(pipeline.channel_capacity)
                    senders[stream].append(send)
                    outlet = AlertOutlet(store_send.clone(), dispatch_send.clone(), metrics)
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
                        metrics=metrics,
                    )
        feeds_scope = trio.CancelScope()
        nursery.start_soon(
            _run_feeds,
            handle,
            feeds_scope,
            senders,
            buffers,
            connection_settings,
        )
        task_status.started(handle)
        await handle._shutdown.wait()
        LOGGER.info(
            "shutting down: draining queues and flushing the store (grace %.1fs)",
            settings.service.shutdown_grace,
        )
        feeds_scope.cancel()
        nursery.cancel_scope.deadline = trio.current_time() + settings.service.shutdown_grace
    if nursery.cancel_scope.cancelled_caught:
        LOGGER.warning("shutdown grace period ran out; the pipeline was cancelled")


async def _run_feeds(
    handle: ServiceHandle,
    scope: trio.CancelScope,
    senders: dict[str, list[trio.MemorySendChannel]],
    buffers: list[ConflationBuffer],
    connection_settings: FeedConnectionSettings,
) -> None:
    metrics = handle.metrics
    with scope:
        async with trio.open_nursery() as nursery:
            for status in handle.connections:
                router = ShardRouter(
                    status.stream,
                    [send.clone() for send in senders[status.stream]],
                    buffers if status.stream == DEPTH else None,
                    metrics,
                )
                nursery.start_soon(
                    _own_router_and_read, router, status, metrics, connection_settings, handle
                )
            # The originals are closed once every connection holds its clones.
            for stream_senders in senders.values():
                for send in stream_senders:
                    send.close()


async def _own_router_and_read(
    router: ShardRouter,
    status: ConnectionStatus,
    metrics: ServiceMetrics,
    connection_settings: FeedConnectionSettings,
    handle: ServiceHandle,
) -> None:
    # The router's channel clones outlive restarts of the connection task: they are closed
    # here, once, when the feed stops for good, which lets the consumers drain and finish.
    with router:
        await supervised(
            "feed",
            functools.partial(run_feed_connection, on_change=handle.update_feed_readiness),
            status,
            router,
            metrics,
            connection_settings,
            metrics=metrics,
            restart=RestartPolicy(),
        )


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
