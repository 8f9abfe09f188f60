"""Every metric oraculo-trio exports, as data: one
:class:`~oraculo_trio.observe.metric_spec.MetricSpec` per metric.

:class:`~oraculo_trio.observe.metrics.ServiceMetrics` and
:class:`~oraculo_trio.observe.metrics.SupervisorMetrics` are built from :data:`SERVICE_METRICS`
and :data:`SUPERVISOR_METRICS`; the README's metrics table is generated from them by
``python -m oraculo_trio.observe.catalog --readme README.md``. Adding a metric is adding a row.

Names, types and label names are a contract: dashboards, alerting rules and PromQL use them,
so a row is never renamed. That is why two names keep what ``promtool check metrics``
flags: ``oraculo_db_insert_ms`` (an abbreviated unit) and ``oraculo_threads_total`` (a gauge
ending in ``_total``).

The ``service`` label is declared on no row: the registry adds it (and any other constant
label, such as ``worker``) to every sample at scrape time.

This module imports nothing that does I/O and no Prometheus client: the catalog reads it alone.
"""

from __future__ import annotations

from oraculo_trio.core.events import STREAMS
from oraculo_trio.core.sync import BOOK_STATES, RESYNC_REASONS
from oraculo_trio.observe.metric_spec import (
    BOOLEAN,
    CORES,
    COUNT,
    COUNTER,
    GAUGE,
    HISTOGRAM,
    MILLISECONDS,
    SECONDS,
    TIMESTAMP,
    Given,
    MetricSpec,
)

# --- label values that exist from start-up, and histogram buckets ---

DROP_REASONS = ("stale_drop", "conflated", "superseded", "overflow", "unsynced")
"""Why a message was read but not evaluated (the accounting of ``docs/architecture.md``).
``superseded``: a diff a snapshot or the book already holds; ``unsynced``: a diff a syncing
book discarded before any snapshot took it (its buffer restarted or overflowed, or the
service stopped)."""

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

STAGES = ("feed_depth", "feed_trade", "depth", "trade", "store", "dispatch")
BACKPRESSURE_CHANNELS = ("trade_shard", "store", "dispatch")
SNAPSHOT_OUTCOMES = ("ok", "rate_limited", "banned", "error")
PARTITION_CHANGES = ("claimed", "released", "lost")

LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05,
    0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
DB_MS_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 50, 100, 250, 500, 1000, 5000)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
SYNC_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)
CPU_BUCKETS = (0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5)

# Label values known only to the owner of the metrics (ServiceMetrics(shards=4), register_sink).
SHARDS = Given("shards")
LIMITERS = Given("limiters")
TASKS = Given("tasks")
SINKS = Given("sinks")
WORKERS = Given("workers")

# --- the rows, in the order a scrape lists them ---

SERVICE_METRICS: tuple[MetricSpec, ...] = (
    # --- scheduler ---
    MetricSpec(
        "event_loop_lag",
        "oraculo_event_loop_lag_seconds",
        GAUGE,
        SECONDS,
        "Largest scheduler delay (runnable -> running) or heartbeat oversleep in the last "
        "interval, seconds.",
    ),
    MetricSpec(
        "event_loop_lag_spikes",
        "oraculo_event_loop_lag_spikes_total",
        COUNTER,
        COUNT,
        "Scheduler lag intervals whose lag reached the threshold (seconds).",
        labels=("threshold",),
        initial=(LAG_SPIKE_THRESHOLDS,),
    ),
    MetricSpec(
        "scheduler_delay",
        "oraculo_scheduler_delay_seconds",
        HISTOGRAM,
        SECONDS,
        "Delay between a task becoming runnable and running, seconds (sampled).",
        buckets=LATENCY_BUCKETS,
    ),
    MetricSpec(
        "slow_task_steps",
        "oraculo_slow_task_steps_total",
        COUNTER,
        COUNT,
        "Task steps that ran longer than slow_step_threshold, by task name.",
        labels=("task",),
    ),
    MetricSpec(
        "slow_task_step_max",
        "oraculo_slow_task_step_max_seconds",
        GAUGE,
        SECONDS,
        "Longest single step of the task, seconds.",
        labels=("task",),
    ),
    # --- queues ---
    MetricSpec(
        "queue_time",
        "oraculo_alerts_queue_time_seconds",
        HISTOGRAM,
        SECONDS,
        "Pipeline time from frame read to rules evaluated, seconds.",
        labels=("stream",),
        buckets=LATENCY_BUCKETS,
        initial=(STREAMS,),
        children=True,
    ),
    MetricSpec(
        "evaluated_age",
        "oraculo_alerts_evaluated_age_seconds",
        HISTOGRAM,
        SECONDS,
        "Age of each message when its rules were evaluated: now minus the exchange's event "
        "time E (minus the read time where a payload has no E), seconds. What a user waits "
        "for, backlog included.",
        labels=("stream",),
        buckets=LATENCY_BUCKETS,
        initial=(STREAMS,),
        children=True,
    ),
    MetricSpec(
        "queue_time_latest",
        "oraculo_alerts_queue_time_latest_seconds",
        GAUGE,
        SECONDS,
        "Queue time of the last message evaluated, seconds.",
        labels=("stream",),
        initial=(STREAMS,),
        children=True,
    ),
    MetricSpec(
        "queue_depth",
        "oraculo_alerts_queue_depth",
        GAUGE,
        COUNT,
        "Messages waiting in a shard's channel (plus conflated entries), per stream and shard.",
        labels=("stream", "shard"),
        initial=(STREAMS, SHARDS),
        children=True,
    ),
    MetricSpec(
        "dropped",
        "oraculo_alerts_queue_dropped_total",
        COUNTER,
        COUNT,
        "Messages read but not evaluated, by stream and reason "
        "(stale_drop, conflated, superseded, overflow).",
        labels=("stream", "reason"),
        initial=(STREAMS, DROP_REASONS),
        children=True,
    ),
    # --- feed ---
    MetricSpec(
        "received",
        "oraculo_feed_messages_received_total",
        COUNTER,
        COUNT,
        "Frames read from the exchange (market data and bad frames; control frames excluded).",
        labels=("stream",),
        initial=(STREAMS,),
        children=True,
    ),
    MetricSpec(
        "evaluated",
        "oraculo_alerts_messages_evaluated_total",
        COUNTER,
        COUNT,
        "Messages whose rules were evaluated.",
        labels=("stream",),
        initial=(STREAMS,),
        children=True,
    ),
    MetricSpec(
        "bad_frames",
        "oraculo_feed_bad_frames_total",
        COUNTER,
        COUNT,
        "Frames that could not be used, by reason; the connection survives.",
        labels=("reason",),
        initial=(BAD_FRAME_REASONS,),
        children=True,
    ),
    MetricSpec(
        "control_frames",
        "oraculo_feed_control_frames_total",
        COUNTER,
        COUNT,
        "Control frames read (subscription acks, serverShutdown), not counted as messages.",
        labels=("kind",),
    ),
    MetricSpec(
        "feed_lag",
        "oraculo_feed_lag_seconds",
        GAUGE,
        SECONDS,
        "Largest (read time - exchange event time E) in the last batch: exchange, network "
        "and clock skew, seconds.",
        labels=("stream",),
        initial=(STREAMS,),
        children=True,
    ),
    MetricSpec(
        "feed_connected",
        "oraculo_feed_connected",
        GAUGE,
        BOOLEAN,
        "1 while the feed connection is open, else 0.",
        labels=("stream", "connection"),
    ),
    MetricSpec(
        "feed_reconnects",
        "oraculo_feed_reconnects_total",
        COUNTER,
        COUNT,
        "Feed reconnects, by stream and reason.",
        labels=("stream", "reason"),
    ),
    # --- stages ---
    MetricSpec(
        "stage_in",
        "oraculo_stage_messages_in_total",
        COUNTER,
        COUNT,
        "Messages entering a pipeline stage.",
        labels=("stage",),
        initial=(STAGES,),
        children=True,
    ),
    MetricSpec(
        "stage_out",
        "oraculo_stage_messages_out_total",
        COUNTER,
        COUNT,
        "Messages leaving a pipeline stage.",
        labels=("stage",),
        initial=(STAGES,),
        children=True,
    ),
    MetricSpec(
        "batch_size",
        "oraculo_batch_size",
        HISTOGRAM,
        COUNT,
        "Messages per micro-batch, by stage.",
        labels=("stage",),
        buckets=BATCH_SIZE_BUCKETS,
        initial=(STAGES,),
        children=True,
    ),
    MetricSpec(
        "batch_cpu",
        "oraculo_batch_cpu_seconds",
        HISTOGRAM,
        SECONDS,
        "Thread CPU seconds per micro-batch, by stage.",
        labels=("stage",),
        buckets=CPU_BUCKETS,
        initial=(STAGES,),
        children=True,
    ),
    MetricSpec(
        "backpressure",
        "oraculo_backpressure_waits_total",
        COUNTER,
        COUNT,
        "Times a producer had to wait because a bounded channel was full, by channel.",
        labels=("channel",),
        initial=(BACKPRESSURE_CHANNELS,),
    ),
    # --- store ---
    MetricSpec(
        "db_insert_ms",
        "oraculo_db_insert_ms",
        HISTOGRAM,
        MILLISECONDS,
        "Latency of a store batch statement, milliseconds.",
        labels=("op",),
        buckets=DB_MS_BUCKETS,
        initial=(DB_OPS,),
        children=True,
    ),
    MetricSpec(
        "db_rows",
        "oraculo_db_rows_total",
        COUNTER,
        COUNT,
        "Rows written, by op.",
        labels=("op",),
        initial=(DB_OPS,),
        children=True,
    ),
    MetricSpec(
        "db_errors",
        "oraculo_db_errors_total",
        COUNTER,
        COUNT,
        "Failed store statements, by op.",
        labels=("op",),
        initial=(DB_OPS,),
        children=True,
    ),
    MetricSpec(
        "db_timeouts",
        "oraculo_db_timeouts_total",
        COUNTER,
        COUNT,
        "Store statements that timed out, by op.",
        labels=("op",),
        initial=(DB_OPS,),
        children=True,
    ),
    MetricSpec(
        "db_up",
        "oraculo_db_up",
        GAUGE,
        BOOLEAN,
        "1 when the last store statement succeeded.",
    ),
    MetricSpec(
        "store_pending",
        "oraculo_store_pending_rows",
        GAUGE,
        COUNT,
        "Rows the writer holds, not yet committed.",
    ),
    # --- alerts and dispatch ---
    MetricSpec(
        "alerts_active",
        "oraculo_alerts_active",
        GAUGE,
        COUNT,
        "Alerts currently in a state, by state.",
        labels=("state",),
        initial=(("pending", "firing", "resolved"),),
    ),
    MetricSpec(
        "alert_transitions",
        "oraculo_alert_transitions_total",
        COUNTER,
        COUNT,
        "Alert transitions raised, by new state.",
        labels=("state",),
        # "inactive": a pending alert whose condition cleared.
        initial=(("pending", "firing", "resolved", "inactive"),),
    ),
    MetricSpec(
        "dispatch_attempts",
        "oraculo_dispatch_attempts_total",
        COUNTER,
        COUNT,
        "Notification delivery attempts, by sink and outcome.",
        labels=("sink", "outcome"),
        initial=(SINKS, ("delivered", "failed")),
    ),
    MetricSpec(
        "dispatch_dropped",
        "oraculo_dispatch_dropped_total",
        COUNTER,
        COUNT,
        "Notifications not delivered, by reason (overflow, silenced, breaker_open, ...).",
        labels=("reason",),
        initial=(DISPATCH_DROP_REASONS,),
    ),
    # --- rules and dispatch lanes ---
    MetricSpec(
        "dispatch_queue_depth",
        "oraculo_dispatch_queue_depth",
        GAUGE,
        COUNT,
        "Notifications waiting in a sink's queue, by sink.",
        labels=("sink",),
        initial=(SINKS,),
        children=True,
    ),
    MetricSpec(
        "dispatch_circuit_open",
        "oraculo_dispatch_circuit_open",
        GAUGE,
        BOOLEAN,
        "1 while a sink's circuit breaker is open or half-open (notifications dropped).",
        labels=("sink",),
        initial=(SINKS,),
        children=True,
    ),
    MetricSpec(
        "silences_active",
        "oraculo_silences_active",
        GAUGE,
        COUNT,
        "Silences in effect now.",
    ),
    MetricSpec(
        "rules_loaded",
        "oraculo_rules_loaded",
        GAUGE,
        COUNT,
        "Rules loaded (enabled or not) from rules.source.",
    ),
    MetricSpec(
        "rules_reloads",
        "oraculo_rules_reloads_total",
        COUNTER,
        COUNT,
        "Rule reloads, by outcome (ok, error: the previous rules stay in force).",
        labels=("outcome",),
        initial=(("ok", "error"),),
    ),
    # --- diff books ---
    MetricSpec(
        "book_resyncs",
        "oraculo_book_resyncs_total",
        COUNTER,
        COUNT,
        "Diff books whose REST snapshot was fetched again, by reason (gap, crossed, "
        "snapshot_stale).",
        labels=("reason",),
        initial=(RESYNC_REASONS,),
        children=True,
    ),
    MetricSpec(
        "book_symbols",
        "oraculo_book_symbols",
        GAUGE,
        COUNT,
        "Symbols with a diff book, by state: syncing (rules paused) or live.",
        labels=("state",),
        initial=(BOOK_STATES,),
        children=True,
    ),
    MetricSpec(
        "book_resync_seconds",
        "oraculo_book_resync_seconds",
        HISTOGRAM,
        SECONDS,
        "Time a diff book took from a resync's start to live again, seconds.",
        buckets=SYNC_BUCKETS,
    ),
    MetricSpec(
        "snapshot_seconds",
        "oraculo_book_snapshot_seconds",
        HISTOGRAM,
        SECONDS,
        "Latency of a REST depth snapshot request (sent -> body read), seconds.",
        buckets=LATENCY_BUCKETS,
    ),
    MetricSpec(
        "snapshot_requests",
        "oraculo_book_snapshot_requests_total",
        COUNTER,
        COUNT,
        "REST depth snapshot requests, by outcome (ok, rate_limited: 429, banned: 418, error).",
        labels=("outcome",),
        initial=(SNAPSHOT_OUTCOMES,),
        children=True,
    ),
    MetricSpec(
        "rest_weight_used",
        "oraculo_rest_weight_used_total",
        COUNTER,
        COUNT,
        "REST request weight spent (the exchange's weight units); compare its rate with "
        "oraculo_rest_weight_budget.",
    ),
    MetricSpec(
        "rest_weight_budget",
        "oraculo_rest_weight_budget",
        GAUGE,
        COUNT,
        "REST request weight the service may spend per minute (feed.rest_weight_budget, "
        "summed over the markets; a worker's share under run --workers).",
    ),
    MetricSpec(
        "exchange_clock_offset",
        "oraculo_exchange_clock_offset_seconds",
        GAUGE,
        SECONDS,
        "The exchange's clock minus ours, by market (GET .../time): ages and feed lag are "
        "corrected by it.",
        labels=("market",),
    ),
    MetricSpec(
        "rest_weight_reported",
        "oraculo_rest_weight_reported",
        GAUGE,
        COUNT,
        "Request weight the exchange says this IP used in its current minute "
        "(X-MBX-USED-WEIGHT-1M of the last response).",
    ),
    # --- process ---
    MetricSpec(
        "cpu_process_cores",
        "oraculo_cpu_process_cores",
        GAUGE,
        CORES,
        "Process CPU time rate, in cores.",
    ),
    MetricSpec(
        "threads",
        "oraculo_threads_total",
        GAUGE,
        COUNT,
        "Threads in the process.",
    ),
    MetricSpec(
        "thread_cpu_seconds",
        "oraculo_thread_cpu_seconds",
        GAUGE,
        SECONDS,
        "Cumulative CPU seconds of each thread (a gauge whose rate() is the thread's CPU use).",
        labels=("thread_name", "native_id"),
    ),
    MetricSpec(
        "to_thread_queue_depth",
        "oraculo_to_thread_executor_queue_depth",
        GAUGE,
        COUNT,
        "Tasks waiting for a token of the named to_thread CapacityLimiter.",
        labels=("limiter",),
        initial=(LIMITERS,),
    ),
    MetricSpec(
        "to_thread_threads",
        "oraculo_to_thread_executor_threads",
        GAUGE,
        COUNT,
        "Tokens of the named CapacityLimiter in use (threads working).",
        labels=("limiter",),
        initial=(LIMITERS,),
    ),
    MetricSpec(
        "to_thread_max_workers",
        "oraculo_to_thread_executor_max_workers",
        GAUGE,
        COUNT,
        "Total tokens of the named CapacityLimiter.",
        labels=("limiter",),
        initial=(LIMITERS,),
    ),
    MetricSpec(
        "task_exceptions",
        "oraculo_task_exceptions_total",
        COUNTER,
        COUNT,
        "Exceptions that escaped a supervised task, by task.",
        labels=("task",),
        initial=(TASKS,),
    ),
    MetricSpec(
        "last_exception_timestamp",
        "oraculo_last_exception_timestamp_seconds",
        GAUGE,
        TIMESTAMP,
        "Unix time of the last exception that escaped a task.",
    ),
    MetricSpec(
        "dumps",
        "oraculo_dumps_total",
        COUNTER,
        COUNT,
        "Diagnostic stack dumps written, by reason.",
        labels=("reason",),
        initial=(("event_loop_lag",),),
    ),
    MetricSpec(
        "ready",
        "oraculo_ready",
        GAUGE,
        BOOLEAN,
        "1 when /readyz answers 200 (feed, store and rules ready).",
    ),
    # --- the Trio run loop ---
    MetricSpec(
        "trio_tasks_living",
        "oraculo_trio_tasks_living",
        GAUGE,
        COUNT,
        "Tasks alive in the Trio run loop.",
    ),
    MetricSpec(
        "trio_tasks_runnable",
        "oraculo_trio_tasks_runnable",
        GAUGE,
        COUNT,
        "Tasks runnable but not yet running when sampled (a backlog means lag).",
    ),
    MetricSpec(
        "trio_io_waiting_tasks",
        "oraculo_trio_io_waiting_tasks",
        GAUGE,
        COUNT,
        "Tasks blocked waiting for a socket or file descriptor, by direction.",
        labels=("direction",),
        initial=(("read", "write"),),
    ),
    MetricSpec(
        "trio_run_sync_soon_queue",
        "oraculo_trio_run_sync_soon_queue_size",
        GAUGE,
        COUNT,
        "Callbacks from other threads waiting to run in the Trio thread.",
    ),
    # --- cluster ---
    MetricSpec(
        "partitions_owned",
        "oraculo_cluster_partitions_owned",
        GAUGE,
        COUNT,
        "Partitions this process owns and processes now.",
    ),
    MetricSpec(
        "cluster_members",
        "oraculo_cluster_members",
        GAUGE,
        COUNT,
        "Live instances holding a membership lock in PostgreSQL (cluster.mode postgres); "
        "1 in single mode.",
    ),
    MetricSpec(
        "cluster_connected",
        "oraculo_cluster_connected",
        GAUGE,
        BOOLEAN,
        "1 while this process's claims session with PostgreSQL is up (always 1 in single mode).",
    ),
    MetricSpec(
        "partition_changes",
        "oraculo_cluster_partition_changes_total",
        COUNTER,
        COUNT,
        "Partitions claimed, released (rebalance, shutdown) or lost (claims session gone).",
        labels=("change",),
        initial=(PARTITION_CHANGES,),
        children=True,
    ),
    MetricSpec(
        "alert_states_restored",
        "oraculo_cluster_alert_states_restored_total",
        COUNTER,
        COUNT,
        "Alert states loaded from the store on claiming partitions.",
    ),
)
"""The metrics of one service process (``oraculo-trio run``, or one of its ``--workers``)."""

SUPERVISOR_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "workers",
        "oraculo_workers",
        GAUGE,
        COUNT,
        "Worker processes the supervisor keeps running.",
    ),
    MetricSpec(
        "worker_up",
        "oraculo_worker_up",
        GAUGE,
        BOOLEAN,
        "1 while the worker process runs and has reported its endpoint.",
        labels=("worker",),
        initial=(WORKERS,),
        children=True,
    ),
    MetricSpec(
        "worker_restarts",
        "oraculo_worker_restarts_total",
        COUNTER,
        COUNT,
        "Worker processes started again after an unexpected exit.",
        labels=("worker",),
        initial=(WORKERS,),
        children=True,
    ),
    MetricSpec(
        "worker_scrape_errors",
        "oraculo_worker_scrape_errors_total",
        COUNTER,
        COUNT,
        "Failed reads of a worker's /metrics by the supervisor.",
        labels=("worker",),
        initial=(WORKERS,),
        children=True,
    ),
)
"""The metrics of the ``run --workers N`` supervisor itself (its workers export their own)."""
