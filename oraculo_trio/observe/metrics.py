"""Every metric oraculo-trio exports, in one place, on one registry per service instance.

Names of DESIGN.md's contract are kept exactly (users' dashboards and PromQL use them), even
the two that ``promtool check metrics`` flags: ``oraculo_db_insert_ms`` (an abbreviated unit)
and ``oraculo_threads_total`` (a gauge ending in ``_total``).

The ``service`` label is not declared on each metric: a wrapping collector adds it (and any
other constant label, such as ``worker``) to every sample at scrape time, so the hot path
never pays for it.

Hot-path rule: bind ``.labels(...)`` once and keep the child. Histograms on the hot path are
:class:`FastHistogram`, whose ``observe`` is a bisect and two additions with no lock.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from oraculo_trio.core.events import STREAMS
from oraculo_trio.core.sync import BOOK_STATES, RESYNC_REASONS

SERVICE = "alerts"

DROP_REASONS = ("stale_drop", "conflated", "superseded", "overflow")
"""Why a message was read but not evaluated (DESIGN.md, "Accounting")."""

LAG_SPIKE_THRESHOLDS = ("0.5", "2.0", "10.0")

DB_OPS = ("upsert_rule_alert", "insert_alert_events", "insert_dispatch_logs", "migrate", "ping")

DISPATCH_DROP_REASONS = ("overflow", "sink_overflow", "silenced", "inhibited", "breaker_open")
"""Why a notification was not delivered (``oraculo_dispatch_dropped_total{reason}``)."""

BAD_FRAME_REASONS = (
    "malformed_json",
    "binary_frame",
    "unknown_stream",
    "invalid_payload",
    "invalid_value",
    "exchange_error",
    "too_large",
)

LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05,
    0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
DB_MS_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 50, 100, 250, 500, 1000, 5000)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
SYNC_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)
SNAPSHOT_OUTCOMES = ("ok", "rate_limited", "banned", "error")
CPU_BUCKETS = (0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5)


class FastHistogramChild:
    """One labelled series of a :class:`FastHistogram`. Not thread-safe by design: only
    the Trio thread observes; the scrape thread copies the counts in one C call."""

    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self._bounds, value)] += 1
        self.sum += value


class FastHistogram(Collector):
    """A Prometheus histogram cheap enough to observe per message.

    Exposed exactly like ``prometheus_client.Histogram`` (``_bucket``/``_count``/``_sum``).
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._bounds = tuple(float(b) for b in buckets)
        self._children: dict[tuple[str, ...], FastHistogramChild] = {}
        registry.register(self)

    def labels(self, *values: str) -> FastHistogramChild:
        key = tuple(str(v) for v in values)
        if len(key) != len(self._labelnames):
            raise ValueError(f"{self._name} takes labels {self._labelnames}, got {key}")
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = FastHistogramChild(self._bounds)
        return child

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)]

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for key, child in list(self._children.items()):
            counts = list(child.counts)
            total = 0
            buckets = []
            for bound, count in zip((*self._bounds, float("inf")), counts, strict=True):
                total += count
                buckets.append((_format_bound(bound), total))
            family.add_metric(list(key), buckets, child.sum)
        yield family


def _format_bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class ConstantLabels(Collector):
    """Re-exposes everything in ``inner`` with constant labels (``service``, ``worker``) added."""

    def __init__(self, inner: CollectorRegistry, labels: dict[str, str]) -> None:
        self._inner = inner
        self._labels = dict(labels)

    def collect(self) -> Iterator[Metric]:
        for family in self._inner.collect():
            relabelled = Metric(family.name, family.documentation, family.type, family.unit)
            for sample in family.samples:
                relabelled.samples.append(sample._replace(labels={**self._labels, **sample.labels}))
            yield relabelled


class ServiceMetrics:
    """All metrics of one service instance.

    Args:
        shards: shard count, so every ``oraculo_alerts_queue_depth{stream,shard}`` series
            exists at zero from start-up.
        limiters: names of the ``to_thread`` CapacityLimiters to pre-create series for.
        tasks: names of supervised tasks, pre-created in ``oraculo_task_exceptions_total``.
        constant_labels: labels added to every sample; ``service="alerts"`` by default.
    """

    def __init__(
        self,
        *,
        shards: int = 4,
        limiters: Sequence[str] = ("store", "rules"),
        tasks: Sequence[str] = (),
        constant_labels: dict[str, str] | None = None,
    ) -> None:
        self.inner = CollectorRegistry(auto_describe=True)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ConstantLabels(self.inner, constant_labels or {"service": SERVICE}))
        r = self.inner

        # --- scheduler (the plan's contract) ---
        self.event_loop_lag = Gauge(
            "oraculo_event_loop_lag_seconds",
            "Largest scheduler delay (runnable -> running) or heartbeat oversleep in the last "
            "interval, seconds.",
            registry=r,
        )
        self.event_loop_lag_spikes = Counter(
            "oraculo_event_loop_lag_spikes",
            "Scheduler lag intervals whose lag reached the threshold (seconds).",
            ["threshold"],
            registry=r,
        )
        for threshold in LAG_SPIKE_THRESHOLDS:
            self.event_loop_lag_spikes.labels(threshold)
        self.scheduler_delay = FastHistogram(
            "oraculo_scheduler_delay_seconds",
            "Delay between a task becoming runnable and running, seconds (sampled).",
            (),
            LATENCY_BUCKETS,
            r,
        ).labels()
        self.slow_task_steps = Counter(
            "oraculo_slow_task_steps",
            "Task steps that ran longer than slow_step_threshold, by task name.",
            ["task"],
            registry=r,
        )
        self.slow_task_step_max = Gauge(
            "oraculo_slow_task_step_max_seconds",
            "Longest single step of the task, seconds.",
            ["task"],
            registry=r,
        )

        # --- queues (the plan's contract) ---
        queue_time = FastHistogram(
            "oraculo_alerts_queue_time_seconds",
            "Pipeline time from frame read to rules evaluated, seconds.",
            ["stream"],
            LATENCY_BUCKETS,
            r,
        )
        self.queue_time = {stream: queue_time.labels(stream) for stream in STREAMS}
        queue_time_latest = Gauge(
            "oraculo_alerts_queue_time_latest_seconds",
            "Queue time of the last message evaluated, seconds.",
            ["stream"],
            registry=r,
        )
        self.queue_time_latest = {s: queue_time_latest.labels(s) for s in STREAMS}
        queue_depth = Gauge(
            "oraculo_alerts_queue_depth",
            "Messages waiting in a shard's channel (plus conflated entries), per stream and shard.",
            ["stream", "shard"],
            registry=r,
        )
        self.queue_depth = {
            (s, shard): queue_depth.labels(s, str(shard))
            for s in STREAMS
            for shard in range(shards)
        }
        dropped = Counter(
            "oraculo_alerts_queue_dropped",
            "Messages read but not evaluated, by stream and reason "
            "(stale_drop, conflated, superseded, overflow).",
            ["stream", "reason"],
            registry=r,
        )
        self.dropped = {
            (s, reason): dropped.labels(s, reason) for s in STREAMS for reason in DROP_REASONS
        }

        # --- feed ---
        received = Counter(
            "oraculo_feed_messages_received",
            "Frames read from the exchange (market data and bad frames; control frames excluded).",
            ["stream"],
            registry=r,
        )
        self.received = {s: received.labels(s) for s in STREAMS}
        evaluated = Counter(
            "oraculo_alerts_messages_evaluated",
            "Messages whose rules were evaluated.",
            ["stream"],
            registry=r,
        )
        self.evaluated = {s: evaluated.labels(s) for s in STREAMS}
        bad_frames = Counter(
            "oraculo_feed_bad_frames",
            "Frames that could not be used, by reason; the connection survives.",
            ["reason"],
            registry=r,
        )
        self.bad_frames = {reason: bad_frames.labels(reason) for reason in BAD_FRAME_REASONS}
        self.control_frames = Counter(
            "oraculo_feed_control_frames",
            "Control frames read (subscription acks, serverShutdown), not counted as messages.",
            ["kind"],
            registry=r,
        )
        feed_lag = Gauge(
            "oraculo_feed_lag_seconds",
            "Largest (read time - exchange event time E) in the last batch: exchange, network "
            "and clock skew, seconds.",
            ["stream"],
            registry=r,
        )
        self.feed_lag = {s: feed_lag.labels(s) for s in STREAMS}
        self.feed_connected = Gauge(
            "oraculo_feed_connected",
            "1 while the feed connection is open, else 0.",
            ["stream", "connection"],
            registry=r,
        )
        self.feed_reconnects = Counter(
            "oraculo_feed_reconnects",
            "Feed reconnects, by stream and reason.",
            ["stream", "reason"],
            registry=r,
        )

        # --- stages ---
        stage_in = Counter(
            "oraculo_stage_messages_in",
            "Messages entering a pipeline stage.",
            ["stage"],
            registry=r,
        )
        stage_out = Counter(
            "oraculo_stage_messages_out",
            "Messages leaving a pipeline stage.",
            ["stage"],
            registry=r,
        )
        self.stage_in: dict[str, Counter] = {}
        self.stage_out: dict[str, Counter] = {}
        batch_size = FastHistogram(
            "oraculo_batch_size",
            "Messages per micro-batch, by stage.",
            ["stage"],
            BATCH_SIZE_BUCKETS,
            r,
        )
        batch_cpu = FastHistogram(
            "oraculo_batch_cpu_seconds",
            "Thread CPU seconds per micro-batch, by stage.",
            ["stage"],
            CPU_BUCKETS,
            r,
        )
        self.batch_size: dict[str, FastHistogramChild] = {}
        self.batch_cpu: dict[str, FastHistogramChild] = {}
        for stage in ("feed_depth", "feed_trade", "depth", "trade", "store", "dispatch"):
            self.stage_in[stage] = stage_in.labels(stage)
            self.stage_out[stage] = stage_out.labels(stage)
            self.batch_size[stage] = batch_size.labels(stage)
            self.batch_cpu[stage] = batch_cpu.labels(stage)
        self.backpressure = Counter(
            "oraculo_backpressure_waits",
            "Times a producer had to wait because a bounded channel was full, by channel.",
            ["channel"],
            registry=r,
        )
        for channel in ("trade_shard", "store", "dispatch"):
            self.backpressure.labels(channel)

        # --- store ---
        db_insert_ms = FastHistogram(
            "oraculo_db_insert_ms",
            "Latency of a store batch statement, milliseconds (the plan's name).",
            ["op"],
            DB_MS_BUCKETS,
            r,
        )
        self.db_insert_ms = {op: db_insert_ms.labels(op) for op in DB_OPS}
        db_rows = Counter("oraculo_db_rows", "Rows written, by op.", ["op"], registry=r)
        db_errors = Counter(
            "oraculo_db_errors", "Failed store statements, by op.", ["op"], registry=r
        )
        db_timeouts = Counter(
            "oraculo_db_timeouts", "Store statements that timed out, by op.", ["op"], registry=r
        )
        self.db_rows = {op: db_rows.labels(op) for op in DB_OPS}
        self.db_errors = {op: db_errors.labels(op) for op in DB_OPS}
        self.db_timeouts = {op: db_timeouts.labels(op) for op in DB_OPS}
        self.db_up = Gauge(
            "oraculo_db_up", "1 when the last store statement succeeded.", registry=r
        )
        self.store_pending = Gauge(
            "oraculo_store_pending_rows", "Rows the writer holds, not yet committed.", registry=r
        )

        # --- alerts and dispatch ---
        self.alerts_active = Gauge(
            "oraculo_alerts_active", "Alerts currently in a state, by state.", ["state"], registry=r
        )
        self.alert_transitions = Counter(
            "oraculo_alert_transitions",
            "Alert transitions raised, by new state.",
            ["state"],
            registry=r,
        )
        for state in ("pending", "firing", "resolved"):
            self.alerts_active.labels(state)
            self.alert_transitions.labels(state)
        self.alert_transitions.labels("inactive")  # a pending alert whose condition cleared
        self.dispatch_attempts = Counter(
            "oraculo_dispatch_attempts",
            "Notification delivery attempts, by sink and outcome.",
            ["sink", "outcome"],
            registry=r,
        )
        self.dispatch_dropped = Counter(
            "oraculo_dispatch_dropped",
            "Notifications not delivered, by reason (overflow, silenced, breaker_open, ...).",
            ["reason"],
            registry=r,
        )
        for reason in DISPATCH_DROP_REASONS:
            self.dispatch_dropped.labels(reason)
        # --- rules and dispatch lanes (dispatch/dispatcher.py, rules_source.py) ---
        self._dispatch_queue_depth = Gauge(
            "oraculo_dispatch_queue_depth",
            "Notifications waiting in a sink's queue, by sink.",
            ["sink"],
            registry=r,
        )
        self._dispatch_circuit_open = Gauge(
            "oraculo_dispatch_circuit_open",
            "1 while a sink's circuit breaker is open or half-open (notifications dropped).",
            ["sink"],
            registry=r,
        )
        self.dispatch_queue_depth: dict[str, Gauge] = {}
        self.dispatch_circuit_open: dict[str, Gauge] = {}
        self.silences_active = Gauge(
            "oraculo_silences_active", "Silences in effect now.", registry=r
        )
        self.rules_loaded = Gauge(
            "oraculo_rules_loaded", "Rules loaded (enabled or not) from rules.source.", registry=r
        )
        self.rules_reloads = Counter(
            "oraculo_rules_reloads",
            "Rule reloads, by outcome (ok, error: the previous rules stay in force).",
            ["outcome"],
            registry=r,
        )
        for outcome in ("ok", "error"):
            self.rules_reloads.labels(outcome)

        # --- diff books (core/sync.py, pipeline/diffbooks.py, pipeline/snapshots.py) ---
        resyncs = Counter(
            "oraculo_book_resyncs",
            "Diff books whose REST snapshot was fetched again, by reason (gap, crossed, "
            "snapshot_stale).",
            ["reason"],
            registry=r,
        )
        self.book_resyncs = {reason: resyncs.labels(reason) for reason in RESYNC_REASONS}
        book_symbols = Gauge(
            "oraculo_book_symbols",
            "Symbols with a diff book, by state: syncing (rules paused) or live.",
            ["state"],
            registry=r,
        )
        self.book_symbols = {state: book_symbols.labels(state) for state in BOOK_STATES}
        self.book_resync_seconds = FastHistogram(
            "oraculo_book_resync_seconds",
            "Time a diff book took from a resync's start to live again, seconds.",
            (),
            SYNC_BUCKETS,
            r,
        ).labels()
        self.snapshot_seconds = FastHistogram(
            "oraculo_book_snapshot_seconds",
            "Latency of a REST depth snapshot request (sent -> body read), seconds.",
            (),
            LATENCY_BUCKETS,
            r,
        ).labels()
        snapshot_requests = Counter(
            "oraculo_book_snapshot_requests",
            "REST depth snapshot requests, by outcome (ok, rate_limited: 429, banned: 418, error).",
            ["outcome"],
            registry=r,
        )
        self.snapshot_requests = {o: snapshot_requests.labels(o) for o in SNAPSHOT_OUTCOMES}
        self.rest_weight_used = Counter(
            "oraculo_rest_weight_used",
            "REST request weight spent (the exchange's weight units); compare its rate with "
            "oraculo_rest_weight_budget.",
            registry=r,
        )
        self.rest_weight_budget = Gauge(
            "oraculo_rest_weight_budget",
            "REST request weight the service may spend per minute (feed.rest_weight_budget).",
            registry=r,
        )
        self.rest_weight_reported = Gauge(
            "oraculo_rest_weight_reported",
            "Request weight the exchange says this IP used in its current minute "
            "(X-MBX-USED-WEIGHT-1M of the last response).",
            registry=r,
        )

        # --- process (the plan's contract) ---
        self.cpu_process_cores = Gauge(
            "oraculo_cpu_process_cores", "Process CPU time rate, in cores.", registry=r
        )
        self.threads = Gauge(
            "oraculo_threads_total", "Threads in the process (the plan's name).", registry=r
        )
        self.thread_cpu_seconds = Gauge(
            "oraculo_thread_cpu_seconds",
            "Cumulative CPU seconds of each thread (a gauge, so rate() works on the plan's name).",
            ["thread_name", "native_id"],
            registry=r,
        )
        self.to_thread_queue_depth = Gauge(
            "oraculo_to_thread_executor_queue_depth",
            "Tasks waiting for a token of the named to_thread CapacityLimiter.",
            ["limiter"],
            registry=r,
        )
        self.to_thread_threads = Gauge(
            "oraculo_to_thread_executor_threads",
            "Tokens of the named CapacityLimiter in use (threads working).",
            ["limiter"],
            registry=r,
        )
        self.to_thread_max_workers = Gauge(
            "oraculo_to_thread_executor_max_workers",
            "Total tokens of the named CapacityLimiter.",
            ["limiter"],
            registry=r,
        )
        for limiter in limiters:
            self.register_limiter(limiter)
        self.task_exceptions = Counter(
            "oraculo_task_exceptions",
            "Exceptions that escaped a supervised task, by task.",
            ["task"],
            registry=r,
        )
        for task in tasks:
            self.task_exceptions.labels(task)
        self.last_exception_timestamp = Gauge(
            "oraculo_last_exception_timestamp_seconds",
            "Unix time of the last exception that escaped a task.",
            registry=r,
        )
        self.dumps = Counter(
            "oraculo_dumps",
            "Diagnostic stack dumps written, by reason.",
            ["reason"],
            registry=r,
        )
        self.dumps.labels("event_loop_lag")
        self.ready = Gauge(
            "oraculo_ready", "1 when /readyz answers 200 (feed, store and rules ready).", registry=r
        )

        # --- observability runtime additions (observe/process.py): Trio run-loop statistics ---
        self.trio_tasks_living = Gauge(
            "oraculo_trio_tasks_living", "Tasks alive in the Trio run loop.", registry=r
        )
        self.trio_tasks_runnable = Gauge(
            "oraculo_trio_tasks_runnable",
            "Tasks runnable but not yet running when sampled (a backlog means lag).",
            registry=r,
        )
        self.trio_io_waiting_tasks = Gauge(
            "oraculo_trio_io_waiting_tasks",
            "Tasks blocked waiting for a socket or file descriptor, by direction.",
            ["direction"],
            registry=r,
        )
        for direction in ("read", "write"):
            self.trio_io_waiting_tasks.labels(direction)
        self.trio_run_sync_soon_queue = Gauge(
            "oraculo_trio_run_sync_soon_queue_size",
            "Callbacks from other threads waiting to run in the Trio thread.",
            registry=r,
        )
        # --- end of observability runtime additions ---

        # --- cluster (pipeline/partitions.py) ---
        self.partitions_owned = Gauge(
            "oraculo_cluster_partitions_owned",
            "Partitions this process owns and processes now.",
            registry=r,
        )
        self.cluster_members = Gauge(
            "oraculo_cluster_members",
            "Live instances holding a membership lock in PostgreSQL (cluster.mode postgres); "
            "1 in single mode.",
            registry=r,
        )
        self.cluster_connected = Gauge(
            "oraculo_cluster_connected",
            "1 while this process's claims session with PostgreSQL is up (always 1 in single "
            "mode).",
            registry=r,
        )
        partition_changes = Counter(
            "oraculo_cluster_partition_changes",
            "Partitions claimed, released (rebalance, shutdown) or lost (claims session gone).",
            ["change"],
            registry=r,
        )
        self.partition_changes = {
            change: partition_changes.labels(change) for change in ("claimed", "released", "lost")
        }
        self.alert_states_restored = Counter(
            "oraculo_cluster_alert_states_restored",
            "Alert states loaded from the store on claiming partitions.",
            registry=r,
        )
        # --- end of cluster ---

    def register_sink(self, name: str) -> None:
        """Create the zero series of a notification sink (at dispatcher start-up)."""
        self.dispatch_queue_depth[name] = self._dispatch_queue_depth.labels(name)
        self.dispatch_circuit_open[name] = self._dispatch_circuit_open.labels(name)
        for outcome in ("delivered", "failed"):
            self.dispatch_attempts.labels(name, outcome)

    def register_limiter(self, name: str) -> None:
        """Create the zero series of a named CapacityLimiter."""
        self.to_thread_queue_depth.labels(name)
        self.to_thread_threads.labels(name)
        self.to_thread_max_workers.labels(name)

    def accounting(self) -> dict[str, int]:
        """DESIGN.md's accounting terms from this instance's counters.

        ``received = evaluated + stale_drop + conflated + superseded + overflow + bad_frames``;
        ``unaccounted`` is what is left over: messages still in a queue while running, and 0
        once the pipeline has drained.
        """

        def total(name: str, **labels: str) -> int:
            value = self.inner.get_sample_value(name, labels)
            return int(value or 0)

        terms = {
            "received": sum(
                total("oraculo_feed_messages_received_total", stream=s) for s in STREAMS
            ),
            "evaluated": sum(
                total("oraculo_alerts_messages_evaluated_total", stream=s) for s in STREAMS
            ),
        }
        for reason in DROP_REASONS:
            terms[reason] = sum(
                total("oraculo_alerts_queue_dropped_total", stream=s, reason=reason)
                for s in STREAMS
            )
        terms["bad_frames"] = sum(
            total("oraculo_feed_bad_frames_total", reason=r) for r in BAD_FRAME_REASONS
        )
        accounted = sum(value for key, value in terms.items() if key != "received")
        terms["unaccounted"] = terms["received"] - accounted
        return terms

    def exposition(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)


class SupervisorMetrics:
    """Metrics of the ``run --workers N`` supervisor itself (its workers have their own).

    Args:
        workers: worker processes kept running; every ``worker`` series exists from start-up.
        constant_labels: labels added to every sample; ``service="alerts"`` by default.
    """

    def __init__(self, *, workers: int, constant_labels: dict[str, str] | None = None) -> None:
        self.inner = CollectorRegistry(auto_describe=True)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ConstantLabels(self.inner, constant_labels or {"service": SERVICE}))
        r = self.inner
        self.workers = Gauge(
            "oraculo_workers", "Worker processes the supervisor keeps running.", registry=r
        )
        self.workers.set(workers)
        worker_up = Gauge(
            "oraculo_worker_up",
            "1 while the worker process runs and has reported its endpoint.",
            ["worker"],
            registry=r,
        )
        worker_restarts = Counter(
            "oraculo_worker_restarts",
            "Worker processes started again after an unexpected exit.",
            ["worker"],
            registry=r,
        )
        scrape_errors = Counter(
            "oraculo_worker_scrape_errors",
            "Failed reads of a worker's /metrics by the supervisor.",
            ["worker"],
            registry=r,
        )
        names = [str(i) for i in range(workers)]
        self.worker_up = {name: worker_up.labels(name) for name in names}
        self.worker_restarts = {name: worker_restarts.labels(name) for name in names}
        self.worker_scrape_errors = {name: scrape_errors.labels(name) for name in names}
