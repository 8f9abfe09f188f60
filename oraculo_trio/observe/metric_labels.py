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

# Label values known only to the owner of the metrics (ServiceMetrics(shards=4), register_sink).
SHARDS = Given("shards")
LIMITERS = Given("limiters")
TASKS = Given("tasks")
SINKS = Given("sinks")
WORKERS = Given("workers")
