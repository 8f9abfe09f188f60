"""The label values of oraculo-trio's metrics: the ones every service exports from start-up
(so that a ``rate()`` over them has a zero to start from), and the ones only the owner of the
metrics knows (:class:`~oraculo_trio.observe.metric_spec.Given`: the shards, sinks, workers
it was built with).

The rows that use them are in :mod:`~oraculo_trio.observe.metric_table` (histogram buckets:
:mod:`~oraculo_trio.observe.metric_spec`). Like them, this module imports no I/O.
"""

from __future__ import annotations

from oraculo_trio.observe.metric_spec import Given

# --- label values that exist from start-up ---

DROP_REASONS = ("stale_drop", "conflated", "superseded", "overflow", "unsynced", "duplicate")
"""Why a message was read but not evaluated (the accounting of ``docs/architecture.md``).
``superseded``: a diff a snapshot or the book already holds; ``unsynced``: a diff a syncing
book discarded before any snapshot took it (its buffer restarted or overflowed, or the
service stopped); ``duplicate``: a trade whose id was handed on already (the overlap of two
connections, or a trade a backfill fetched)."""

TRADES_MISSED_REASONS = ("no_keyless_history", "not_served", "over_limit", "rest_failed")
"""Why trades of a gap in trade ids were not backfilled: raw ``@trade`` ids on a market whose
``historicalTrades`` needs an API key; REST did not return them (beyond its history); more
than ``feed.backfill_max_trades`` at once; the request failed or timed out."""

DEPTH_ONLY_DROP_REASONS = ("conflated", "superseded", "overflow", "unsynced")
"""The drop reasons of depth alone: a trade is never conflated, superseded, shed or held
in a sync buffer (trades are evaluated in order, the reader waits for room). The metric
table creates no ``stream="trade"`` series for them, since none could ever move."""

TRADE_ONLY_DROP_REASONS = ("duplicate",)
"""The drop reasons of trades alone: only trade ids are followed (a depth message is never a
``duplicate``). No ``stream="depth"`` series for them."""

LAG_SPIKE_THRESHOLDS = ("0.5", "2.0", "10.0")

DB_OPS = ("upsert_rule_alert", "insert_alert_events", "insert_dispatch_logs", "migrate", "ping")
DB_WRITE_OPS = ("upsert_rule_alert", "insert_alert_events", "insert_dispatch_logs", "migrate")
"""The statements that write rows (``oraculo_db_rows_total{op}``; ``migrate``: migrations
applied). A ping writes none."""

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

STAGES = ("depth", "trade", "store", "dispatch")
"""Stages that count messages in and out (the feed's are ``oraculo_feed_*``)."""
BATCH_STAGES = ("depth", "trade", "store")
"""Stages that work in micro-batches (the dispatcher takes one notification at a time)."""
CPU_STAGES = ("depth", "trade")
"""Stages whose batches are timed in thread CPU (the store's and the dispatcher's work
waits on I/O)."""
BACKPRESSURE_CHANNELS = ("trade_shard", "store")
"""Channels whose producer waits when they are full (the dispatch channel drops instead:
``oraculo_dispatch_dropped_total{reason="overflow"}``)."""
SNAPSHOT_OUTCOMES = ("ok", "rate_limited", "banned", "error")
PARTITION_CHANGES = ("claimed", "released", "lost")

# Label values known only to the owner of the metrics (ServiceMetrics(shards=4), register_sink).
SHARDS = Given("shards")
LIMITERS = Given("limiters")
TASKS = Given("tasks")
SINKS = Given("sinks")
WORKERS = Given("workers")
