"""Builds ``grafana/oraculo-alerts.json``, the Grafana dashboard users import.

The panels are written with Grafana's own ``grafana-foundation-sdk`` (its typed builders
produce the dashboard schema the Grafana version it is pinned for expects); this script is
where every panel's PromQL lives, and the committed JSON is its output::

    python grafana/build_dashboard.py            # rewrite grafana/oraculo-alerts.json
    python grafana/build_dashboard.py --check    # exit 1 if the committed JSON is stale
    python grafana/build_dashboard.py --runbook-base https://forge.example/org/oraculo-trio/blob/main/README.md

Variables: ``$datasource`` (any Prometheus: an imported or file-provisioned copy works as it
is), ``$service`` (the ``service`` label), ``$instance`` and ``$worker`` (the scrape target
and the ``run --workers`` process; "All" by default) and ``$shard``. Every panel keeps
``instance`` and ``worker`` apart, so the replicas and workers never hide behind one
``max()``.

Layout: an overview row of single values, the rows of each part of the service, then the
runbook rows (collapsed) that follow the README's "Is it CPU-bound or GIL-bound?" question by
question with ``grafana/runbook_queries.promql`` word for word (``service="alerts"`` becomes
``service="$service"``). Units come from the metric table: ``tests/observe/
test_grafana_files.py`` checks each query's unit against its metric's.

``--runbook-base`` points the alert rules' ``runbook_url`` (``grafana/prometheus-rules.yml``)
at the README as a forge renders it; by default they are ``README.md#<alert>``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as builders
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

OUTPUT = Path(__file__).with_name("oraculo-alerts.json")
RULES = Path(__file__).with_name("prometheus-rules.yml")
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
S = 'service="$service",instance=~"$instance",worker=~"$worker"'
"""The selector of every query outside the runbook rows."""
RB = 'service="$service"'
"""The runbook queries' selector, word for word."""
BY = "instance, worker"
"""What every aggregation keeps apart."""
WHO = "{{instance}} {{worker}}"

# Grafana's unit of each metric-table unit (and of derived values).
SECONDS = "s"
MILLISECONDS = "ms"
COUNT = "short"
PER_SECOND = "cps"
CORES = "suffix: cores"
BOOLEAN = "bool"
BYTES = "bytes"
RATIO = "percentunit"
TIMESTAMP = "dateTimeFromNow"
INFO = "none"

WIDTH = 24
HEIGHT = 8
STAT_HEIGHT = 4

Query = tuple[str, str] | tuple[str, str, str]
"""``(expr, legend)``, or ``(expr, legend, unit)`` for a query whose unit differs from its
panel's (drawn on the right axis)."""


def rate(metric: str, selector: str = "") -> str:
    inner = f"{S},{selector}" if selector else S
    return f"rate({metric}{{{inner}}}[$__rate_interval])"


def increase(metric: str, selector: str = "") -> str:
    inner = f"{S},{selector}" if selector else S
    return f"increase({metric}{{{inner}}}[$__rate_interval])"


def quantile(q: float, metric: str, by: str = "", selector: str = "") -> str:
    """``histogram_quantile`` of a histogram's buckets, by ``le``, instance, worker and ``by``."""
    labels = ", ".join(part for part in ("le", BY, by) if part)
    return f"histogram_quantile({q}, sum by ({labels}) ({rate(metric + '_bucket', selector)}))"


def percentiles(metric: str, *quantiles: float, by: str = "", selector: str = "") -> list[Query]:
    """One query per quantile of a histogram, legend ``p99 <instance> <worker> <by...>``."""
    legend = " ".join([WHO, *(f"{{{{{label.strip()}}}}}" for label in by.split(",") if label)])
    return [
        (quantile(q, metric, by, selector), f"p{q * 100:g} {legend}".rstrip()) for q in quantiles
    ]


def _targets(queries: Sequence[Query]) -> list[prometheus.Dataquery]:
    return [
        prometheus.Dataquery()
        .expr(query[0])
        .legend_format(query[1] or "__auto")
        .ref_id(chr(ord("A") + index))
        .datasource(DATASOURCE)
        for index, query in enumerate(queries)
    ]


def _thresholds(red_at: float | None, orange_at: float | None = None) -> Any:
    steps = [model.Threshold(value=None, color="green")]
    if orange_at is not None:
        steps.append(model.Threshold(value=orange_at, color="orange"))
    if red_at is not None:
        steps.append(model.Threshold(value=red_at, color="red"))
    return builders.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE).steps(steps)


def graph(
    title: str,
    description: str,
    queries: Sequence[Query],
    unit: str,
    *,
    line: float | None = None,
    bars: bool = False,
    red: str | None = None,
    width: int = 12,
) -> timeseries.Panel:
    """A time-series panel in ``unit``; ``line`` draws a red threshold line, ``red`` paints
    the series whose name matches it red."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .min(0)
        .height(HEIGHT)
        .span(width)
        .draw_style(common.GraphDrawStyle.BARS if bars else common.GraphDrawStyle.LINE)
        .fill_opacity(60 if bars else 10)
        .line_width(1)
        .show_points(common.VisibilityMode.NEVER)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["lastNotNull", "max"])
        )
        .tooltip(
            common_builders.VizTooltipOptions()
            .mode(common.TooltipDisplayMode.MULTI)
            .sort(common.SortOrder.DESCENDING)
        )
        .thresholds(_thresholds(line))
        .thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(
                common.GraphThresholdsStyleMode.LINE
                if line is not None
                else common.GraphThresholdsStyleMode.OFF
            )
        )
    )
    for target in _targets(queries):
        panel.with_target(target)
    for index, query in enumerate(queries):
        if len(query) == 3:
            panel.override_by_query(
                chr(ord("A") + index),
                [
                    model.DynamicConfigValue(id_val="unit", value=query[2]),
                    model.DynamicConfigValue(id_val="custom.axisPlacement", value="right"),
                ],
            )
    if red is not None:
        panel.override_by_regexp(
            red,
            [
                model.DynamicConfigValue(
                    id_val="color", value={"mode": "fixed", "fixedColor": "red"}
                ),
                model.DynamicConfigValue(id_val="custom.lineWidth", value=3),
            ],
        )
    return panel


def single(
    title: str,
    description: str,
    query: Query,
    unit: str,
    *,
    red_at: float | None = None,
    orange_at: float | None = None,
    text: bool = False,
) -> stat.Panel:
    """A single-value panel of the overview (red from ``red_at``)."""
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .height(STAT_HEIGHT)
        .span(3)
        .thresholds(_thresholds(red_at, orange_at))
        .color_mode(
            common.BigValueColorMode.BACKGROUND if not text else common.BigValueColorMode.NONE
        )
        .graph_mode(common.BigValueGraphMode.NONE if text else common.BigValueGraphMode.AREA)
        .text_mode(common.BigValueTextMode.NAME if text else common.BigValueTextMode.AUTO)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    for target in _targets([query]):
        panel.with_target(target)
    return panel


# ------------------------------------------------------------------------------------------
# Rows: (title, collapsed, panels)

Row = tuple[str, bool, list[Any]]


def overview_row() -> Row:
    by = f"by ({BY})"
    not_superseded = 'reason!="superseded"'
    return (
        "Overview",
        False,
        [
            single(
                "Ready",
                "oraculo_ready: /readyz answers 200 (feed connected, store answering, rules "
                "loaded). Red: not ready; `oraculo-trio health` says why.",
                (f"min {by} (oraculo_ready{{{S}}})", WHO),
                BOOLEAN,
                red_at=None,
            ).thresholds(_ready_thresholds()),
            single(
                "Messages read",
                "Frames read from the exchange per second (every stream).",
                (f"sum {by} ({rate('oraculo_feed_messages_received_total')})", WHO),
                PER_SECOND,
            ),
            single(
                "Alerts firing",
                "Alerts in the firing state now.",
                (f'sum {by} (oraculo_alerts_active{{{S},state="firing"}})', WHO),
                COUNT,
                orange_at=1,
            ),
            single(
                "Messages dropped",
                "Messages read but not evaluated per second: stale, conflated or shed "
                "(superseded diffs, normal while a diff book syncs, left out).",
                (f"sum {by} ({rate('oraculo_alerts_queue_dropped_total', not_superseded)})", WHO),
                PER_SECOND,
                red_at=0.001,
            ),
            single(
                "Evaluated age p99",
                "How old a message is when its rules run (now - E), p99: what a user waits "
                "for, backlog included.",
                (quantile(0.99, "oraculo_alerts_evaluated_age_seconds"), WHO),
                SECONDS,
                orange_at=0.2,
                red_at=1.0,
            ),
            single(
                "Feed lag",
                "Read time minus the exchange's event time E, worst stream.",
                (f"max {by} (oraculo_feed_lag_seconds{{{S}}})", WHO),
                SECONDS,
                orange_at=0.5,
                red_at=2.0,
            ),
            single(
                "Scheduler lag",
                "Worst delay of a runnable task in the last interval (alert above 0.5 s).",
                (f"max {by} (oraculo_event_loop_lag_seconds{{{S}}})", WHO),
                SECONDS,
                orange_at=0.05,
                red_at=0.5,
            ),
            single(
                "Memory",
                "Resident memory of each process (it stays flat under load).",
                (f"max {by} (process_resident_memory_bytes{{{S}}})", WHO),
                BYTES,
            ),
        ],
    )


def _ready_thresholds() -> Any:
    return (
        builders.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=None, color="red"), model.Threshold(value=1, color="green")])
    )


def latency_row() -> Row:
    stream = f"{WHO} {{{{stream}}}}"
    return (
        "Latency and queues",
        False,
        [
            graph(
                "Evaluated age p50 / p99 by stream",
                "oraculo_alerts_evaluated_age_seconds: now minus the exchange's event time E "
                "when a message's rules run. Under overload this is what must stay bounded.",
                [
                    (
                        quantile(q, "oraculo_alerts_evaluated_age_seconds", "stream"),
                        f"p{p} {stream}",
                    )
                    for q, p in ((0.5, 50), (0.99, 99))
                ],
                SECONDS,
                line=1.0,
            ),
            graph(
                "Queue time p50 / p95 / p99 by stream",
                "Pipeline time from frame read to rules evaluated "
                "(oraculo_alerts_queue_time_seconds); red line at 0.2 s (the alert).",
                percentiles("oraculo_alerts_queue_time_seconds", 0.5, 0.95, 0.99, by="stream"),
                SECONDS,
                line=0.2,
            ),
            graph(
                "Queue time of the latest message",
                "oraculo_alerts_queue_time_latest_seconds: the last message evaluated, by "
                "stream (alert above 0.2 s).",
                [
                    (
                        f"max by ({BY}, stream) (oraculo_alerts_queue_time_latest_seconds{{{S}}})",
                        stream,
                    )
                ],
                SECONDS,
                line=0.2,
            ),
            graph(
                "Queue depth by shard",
                "Messages waiting in each shard's channel (plus conflated entries), per stream "
                "and shard ($shard); alert above 50.",
                [
                    (
                        f"max by ({BY}, stream, shard) "
                        f'(oraculo_alerts_queue_depth{{{S},shard=~"$shard"}})',
                        f"{stream} shard {{{{shard}}}}",
                    )
                ],
                COUNT,
                line=50,
            ),
            graph(
                "Drops by reason (stale_drop in red)",
                "Messages read but not evaluated, per second, by reason and stream. stale_drop "
                "must stay at 0; conflated and overflow mean overload; superseded diffs are "
                "normal while a diff book syncs.",
                [
                    (
                        f"sum by ({BY}, reason, stream) "
                        f"({rate('oraculo_alerts_queue_dropped_total')})",
                        "{{reason}} " + stream,
                    )
                ],
                PER_SECOND,
                red="stale_drop.*",
            ),
            graph(
                "Backpressure waits by channel",
                "Times a producer waited for a full bounded channel, per second: trades wait "
                "rather than drop, and the store pushes back on the rules.",
                [
                    (
                        f"sum by ({BY}, channel) ({rate('oraculo_backpressure_waits_total')})",
                        f"{WHO} {{{{channel}}}}",
                    )
                ],
                PER_SECOND,
            ),
        ],
    )


def throughput_row() -> Row:
    return (
        "Throughput and feed",
        False,
        [
            graph(
                "In and out rates",
                "Frames read from the exchange per stream, and messages entering and leaving "
                "each stage. In and out of a stage should match; a gap is a backlog.",
                [
                    (
                        f"sum by ({BY}, stream) ({rate('oraculo_feed_messages_received_total')})",
                        f"read {WHO} {{{{stream}}}}",
                    ),
                    (
                        f"sum by ({BY}, stage) ({rate('oraculo_stage_messages_in_total')})",
                        f"in {WHO} {{{{stage}}}}",
                    ),
                    (
                        f"sum by ({BY}, stage) ({rate('oraculo_stage_messages_out_total')})",
                        f"out {WHO} {{{{stage}}}}",
                    ),
                ],
                PER_SECOND,
            ),
            graph(
                "Batch size p50 / p99",
                "Messages per micro-batch, by stage (oraculo_batch_size).",
                percentiles("oraculo_batch_size", 0.5, 0.99, by="stage"),
                COUNT,
            ),
            graph(
                "CPU per batch p99",
                "Thread CPU seconds per micro-batch, by stage (oraculo_batch_cpu_seconds).",
                percentiles("oraculo_batch_cpu_seconds", 0.99, by="stage"),
                SECONDS,
            ),
            graph(
                "Feed lag by stream",
                "oraculo_feed_lag_seconds: read time minus the exchange's event time E "
                "(exchange, network and clock skew); growing means we read slower than the "
                "exchange sends.",
                [
                    (
                        f"max by ({BY}, stream) (oraculo_feed_lag_seconds{{{S}}})",
                        f"{WHO} {{{{stream}}}}",
                    )
                ],
                SECONDS,
            ),
            graph(
                "Bad frames by reason",
                "Frames the service could not use, per second, by reason; the connection "
                "survives each one.",
                [
                    (
                        f"sum by ({BY}, reason) ({rate('oraculo_feed_bad_frames_total')})",
                        f"{WHO} {{{{reason}}}}",
                    )
                ],
                PER_SECOND,
            ),
            graph(
                "Feed reconnects and connections",
                "Reconnects by stream and reason (bars), and whether each connection is open "
                "(oraculo_feed_connected, right axis).",
                [
                    (
                        f"sum by ({BY}, stream, reason) "
                        f"({increase('oraculo_feed_reconnects_total')})",
                        f"reconnect {WHO} {{{{stream}}}} {{{{reason}}}}",
                    ),
                    (
                        f"min by ({BY}, stream) (oraculo_feed_connected{{{S}}})",
                        f"connected {WHO} {{{{stream}}}}",
                        BOOLEAN,
                    ),
                ],
                COUNT,
                bars=True,
            ),
        ],
    )


def scheduler_row() -> Row:
    return (
        "Scheduler",
        False,
        [
            graph(
                "Scheduler lag: current and p99",
                "oraculo_event_loop_lag_seconds is the worst delay of the last interval (a "
                "task runnable but not running, or the heartbeat oversleeping); the p50 and "
                "p99 come from the sampled delays (oraculo_scheduler_delay_seconds). Red line: "
                "the 0.5 s alert.",
                [
                    (f"max by ({BY}) (oraculo_event_loop_lag_seconds{{{S}}})", f"lag {WHO}"),
                    (quantile(0.99, "oraculo_scheduler_delay_seconds"), f"delay p99 {WHO}"),
                    (quantile(0.5, "oraculo_scheduler_delay_seconds"), f"delay p50 {WHO}"),
                ],
                SECONDS,
                line=0.5,
            ),
            graph(
                "Lag spikes by threshold",
                "Lag intervals that reached 0.5 s, 2 s or 10 s. Counted by the service, so a "
                "spike shorter than the scrape interval is never missed.",
                [
                    (
                        f"sum by ({BY}, threshold) "
                        f"({increase('oraculo_event_loop_lag_spikes_total')})",
                        f"{WHO} lag >= {{{{threshold}}}} s",
                    )
                ],
                COUNT,
                bars=True,
                red=".*lag >= (2|10)\\.0 s",
            ),
            graph(
                "Slow task steps (top 10 tasks)",
                "Task steps longer than observe.slow_step_threshold (50 ms), by task (bars), "
                "and each task's longest step (right axis). The log has a top-10 table.",
                [
                    (
                        f"topk(10, sum by ({BY}, task) "
                        f"({increase('oraculo_slow_task_steps_total')}))",
                        f"{WHO} {{{{task}}}}",
                    ),
                    (
                        f"max by ({BY}, task) (oraculo_slow_task_step_max_seconds{{{S}}})",
                        f"longest {WHO} {{{{task}}}}",
                        SECONDS,
                    ),
                ],
                COUNT,
                bars=True,
            ),
            graph(
                "Trio run loop",
                "Tasks alive, tasks runnable when sampled (a standing backlog means lag), and "
                "tasks waiting for a socket (trio.lowlevel.current_statistics()).",
                [
                    (f"max by ({BY}) (oraculo_trio_tasks_living{{{S}}})", f"living {WHO}"),
                    (f"max by ({BY}) (oraculo_trio_tasks_runnable{{{S}}})", f"runnable {WHO}"),
                    (
                        f"sum by ({BY}) (oraculo_trio_io_waiting_tasks{{{S}}})",
                        f"waiting for I/O {WHO}",
                    ),
                ],
                COUNT,
            ),
        ],
    )


def store_row() -> Row:
    ops = 'op=~"upsert_rule_alert|insert_alert_events|insert_dispatch_logs"'
    op = f"{WHO} {{{{op}}}}"
    return (
        "Store",
        False,
        [
            graph(
                "DB insert p50 / p95",
                "Latency of store batch statements (oraculo_db_insert_ms), by op. Red line: "
                "the 50 ms alert on p95.",
                percentiles("oraculo_db_insert_ms", 0.5, 0.95, by="op", selector=ops),
                MILLISECONDS,
                line=50,
            ),
            graph(
                "DB errors and timeouts",
                "Failed and timed-out store statements by op; the writer retries them and "
                "holds its batch (nothing is lost).",
                [
                    (f"sum by ({BY}, op) ({increase('oraculo_db_errors_total')})", f"errors {op}"),
                    (
                        f"sum by ({BY}, op) ({increase('oraculo_db_timeouts_total')})",
                        f"timeouts {op}",
                    ),
                ],
                COUNT,
                bars=True,
                red="timeouts .*",
            ),
            graph(
                "DB rows written",
                "Rows written per second, by op.",
                [(f"sum by ({BY}, op) ({rate('oraculo_db_rows_total')})", op)],
                PER_SECOND,
            ),
            graph(
                "Store up and rows pending",
                "oraculo_db_up (1 when the last statement succeeded), and the rows the writer "
                "holds, not yet committed (right axis).",
                [
                    (f"min by ({BY}) (oraculo_db_up{{{S}}})", f"db up {WHO}"),
                    (
                        f"max by ({BY}) (oraculo_store_pending_rows{{{S}}})",
                        f"pending {WHO}",
                        COUNT,
                    ),
                ],
                BOOLEAN,
            ),
        ],
    )


def alerts_row() -> Row:
    sink = f"{WHO} {{{{sink}}}}"
    return (
        "Alerts, notifications and rules",
        False,
        [
            graph(
                "Alerts by state",
                "Alerts pending, firing and resolved now.",
                [(f"sum by ({BY}, state) (oraculo_alerts_active{{{S}}})", f"{WHO} {{{{state}}}}")],
                COUNT,
            ),
            graph(
                "Alert transitions by new state",
                "Alert transitions per second, by the state entered.",
                [
                    (
                        f"sum by ({BY}, state) ({rate('oraculo_alert_transitions_total')})",
                        f"{WHO} {{{{state}}}}",
                    )
                ],
                PER_SECOND,
            ),
            graph(
                "Notification attempts by sink and outcome",
                "Delivery attempts per second; failed ones are retried with backoff.",
                [
                    (
                        f"sum by ({BY}, sink, outcome) ({rate('oraculo_dispatch_attempts_total')})",
                        f"{sink} {{{{outcome}}}}",
                    )
                ],
                PER_SECOND,
                red=".*failed",
            ),
            graph(
                "Notifications not delivered by reason",
                "Dropped on purpose per second (and recorded): silenced, inhibited, the "
                "breaker open, or a full queue.",
                [
                    (
                        f"sum by ({BY}, reason) ({rate('oraculo_dispatch_dropped_total')})",
                        f"{WHO} {{{{reason}}}}",
                    )
                ],
                PER_SECOND,
            ),
            graph(
                "Dispatch circuit breaker open",
                "1 while a sink's breaker is open or half-open: its notifications are dropped "
                "(breaker_open) until a trial succeeds.",
                [(f"max by ({BY}, sink) (oraculo_dispatch_circuit_open{{{S}}})", sink)],
                BOOLEAN,
            ),
            graph(
                "Dispatch queue depth by sink",
                "Notifications waiting in each sink's bounded queue (full: sink_overflow).",
                [(f"max by ({BY}, sink) (oraculo_dispatch_queue_depth{{{S}}})", sink)],
                COUNT,
            ),
            graph(
                "Rule reloads and rules loaded",
                "Reloads by outcome (bars; error: the file was refused and the previous rules "
                "stay in force), and the rules loaded.",
                [
                    (
                        f"sum by ({BY}, outcome) ({increase('oraculo_rules_reloads_total')})",
                        f"reload {WHO} {{{{outcome}}}}",
                    ),
                    (f"max by ({BY}) (oraculo_rules_loaded{{{S}}})", f"loaded {WHO}"),
                ],
                COUNT,
                bars=True,
                red="reload .*error",
            ),
            graph(
                "Silences in effect",
                "Silences muting notifications now (`oraculo-trio silence list`).",
                [(f"max by ({BY}) (oraculo_silences_active{{{S}}})", WHO)],
                COUNT,
            ),
        ],
    )


def books_row() -> Row:
    return (
        "Diff books",
        False,
        [
            graph(
                "Book symbols by state",
                "Symbols with a diff book: syncing (rules paused) or live.",
                [(f"sum by ({BY}, state) (oraculo_book_symbols{{{S}}})", f"{WHO} {{{{state}}}}")],
                COUNT,
            ),
            graph(
                "Book resyncs by reason",
                "Books whose snapshot was fetched again: a gap in the diffs, a crossed book, "
                "or a snapshot older than the buffered diffs.",
                [
                    (
                        f"sum by ({BY}, reason) ({increase('oraculo_book_resyncs_total')})",
                        f"{WHO} {{{{reason}}}}",
                    )
                ],
                COUNT,
                bars=True,
            ),
            graph(
                "Resync duration p50 / p99",
                "Time from a resync's start to the book live again (oraculo_book_resync_seconds).",
                percentiles("oraculo_book_resync_seconds", 0.5, 0.99),
                SECONDS,
            ),
            graph(
                "Snapshot requests by outcome",
                "REST depth snapshots per second: ok, rate_limited (429), banned (418), error.",
                [
                    (
                        f"sum by ({BY}, outcome) ({rate('oraculo_book_snapshot_requests_total')})",
                        f"{WHO} {{{{outcome}}}}",
                    )
                ],
                PER_SECOND,
                red=".*(rate_limited|banned)",
            ),
            graph(
                "Snapshot latency p50 / p99",
                "A REST depth snapshot, request sent to body read (oraculo_book_snapshot_seconds).",
                percentiles("oraculo_book_snapshot_seconds", 0.5, 0.99),
                SECONDS,
            ),
            graph(
                "REST weight per minute against the budget",
                "Weight spent in the last minute (a minute, as the exchange counts it), the "
                "budget (feed.rest_weight_budget) and what the exchange says this IP used.",
                [
                    (
                        f"sum by ({BY}) (increase(oraculo_rest_weight_used_total{{{S}}}[1m]))",
                        f"used {WHO}",
                    ),
                    (f"max by ({BY}) (oraculo_rest_weight_budget{{{S}}})", f"budget {WHO}"),
                    (
                        f"max by ({BY}) (oraculo_rest_weight_reported{{{S}}})",
                        f"exchange says {WHO}",
                    ),
                ],
                COUNT,
                red="budget .*",
            ),
        ],
    )


def process_row() -> Row:
    cpu = graph(
        "CPU cores (1.0 = one core saturated)",
        "Process CPU in cores, as the service samples it (oraculo_cpu_process_cores) and from "
        "process_cpu_seconds_total. One Trio loop uses at most about one core: near 1.0 it is "
        "CPU-bound (see the runbook rows).",
        [
            (f"max by ({BY}) (oraculo_cpu_process_cores{{{S}}})", f"sampled {WHO}"),
            (f"sum by ({BY}) ({rate('process_cpu_seconds_total')})", f"process {WHO}"),
        ],
        CORES,
        line=1.0,
    )
    return (
        "Process",
        False,
        [
            cpu,
            graph(
                "Resident memory",
                "process_resident_memory_bytes of each process: every queue is bounded, so it "
                "stays flat under load.",
                [(f"max by ({BY}) (process_resident_memory_bytes{{{S}}})", WHO)],
                BYTES,
            ),
            graph(
                "File descriptors",
                "Open file descriptors against the process's limit.",
                [
                    (f"max by ({BY}) (process_open_fds{{{S}}})", f"open {WHO}"),
                    (f"max by ({BY}) (process_max_fds{{{S}}})", f"limit {WHO}"),
                ],
                COUNT,
                red="limit .*",
            ),
            graph(
                "to_thread saturation",
                "Per CapacityLimiter: threads working against max_workers, and tasks queued "
                "for a thread. threads = max_workers with a queue means the pool is saturated.",
                [
                    (
                        f"max by ({BY}, limiter) (oraculo_to_thread_executor_threads{{{S}}})",
                        f"threads {WHO} {{{{limiter}}}}",
                    ),
                    (
                        f"max by ({BY}, limiter) (oraculo_to_thread_executor_max_workers{{{S}}})",
                        f"max_workers {WHO} {{{{limiter}}}}",
                    ),
                    (
                        f"max by ({BY}, limiter) (oraculo_to_thread_executor_queue_depth{{{S}}})",
                        f"queued {WHO} {{{{limiter}}}}",
                    ),
                ],
                COUNT,
                red="queued .*",
            ),
            graph(
                "Task exceptions and stack dumps",
                "Exceptions that escaped a supervised task, by task (a feed connection "
                "restarts; any other task stops the service), and watchdog dumps (the loop "
                "blocked longer than observe.dump_after; see var/dumps).",
                [
                    (
                        f"sum by ({BY}, task) ({increase('oraculo_task_exceptions_total')})",
                        f"exception {WHO} {{{{task}}}}",
                    ),
                    (
                        f"sum by ({BY}, reason) ({increase('oraculo_dumps_total')})",
                        f"dump {WHO} {{{{reason}}}}",
                    ),
                ],
                COUNT,
                bars=True,
                red="exception .*",
            ),
            graph(
                "Started",
                "When each process started (process_start_time_seconds): a step is a restart.",
                [(f"max by ({BY}) (process_start_time_seconds{{{S}}}) * 1000", WHO)],
                TIMESTAMP,
            ),
            single(
                "Version",
                "oraculo_build_info: the versions of oraculo-trio, Python and Trio running.",
                (
                    f"max by ({BY}, version, python, trio) (oraculo_build_info{{{S}}})",
                    "{{version}} (Python {{python}}, Trio {{trio}}) " + WHO,
                ),
                INFO,
                text=True,
            )
            .span(12)
            .height(HEIGHT),
        ],
    )


def cluster_row() -> Row:
    return (
        "Cluster",
        False,
        [
            graph(
                "Partitions owned and members",
                "Partitions this process owns, and the live instances sharing them "
                "(cluster.mode postgres; 64 partitions and 1 member in single mode).",
                [
                    (f"max by ({BY}) (oraculo_cluster_partitions_owned{{{S}}})", f"owned {WHO}"),
                    (f"max by ({BY}) (oraculo_cluster_members{{{S}}})", f"members {WHO}"),
                ],
                COUNT,
                width=8,
            ),
            graph(
                "Partition changes",
                "Partitions claimed, released (rebalance, shutdown) or lost (claims session "
                "gone), and alert states restored on claiming them.",
                [
                    (
                        f"sum by ({BY}, change) "
                        f"({increase('oraculo_cluster_partition_changes_total')})",
                        f"{WHO} {{{{change}}}}",
                    ),
                    (
                        f"sum by ({BY}) "
                        f"({increase('oraculo_cluster_alert_states_restored_total')})",
                        f"states restored {WHO}",
                    ),
                ],
                COUNT,
                bars=True,
                red=".*lost",
                width=8,
            ),
            graph(
                "Claims session connected",
                "1 while this process's claims session with PostgreSQL is up.",
                [(f"min by ({BY}) (oraculo_cluster_connected{{{S}}})", WHO)],
                BOOLEAN,
                width=8,
            ),
        ],
    )


def runbook_rows() -> list[Row]:
    """One collapsed row per question of the README runbook, its queries word for word."""
    threads = f"rate(oraculo_thread_cpu_seconds{{{RB}}}[1m])"
    return [
        (
            "Runbook 1: is one core saturated? (CPU-bound)",
            True,
            [
                graph(
                    "CPU cores, 5 minute average",
                    "avg_over_time(oraculo_cpu_process_cores[5m]) above 0.9 means the process "
                    "keeps one core busy: CPU-bound. Below it, look for blocking calls instead "
                    "(slow task steps, dumps).",
                    [
                        (
                            f"avg_over_time(oraculo_cpu_process_cores{{{RB}}}[5m])",
                            "avg 5m {{instance}}",
                        ),
                        (f"oraculo_cpu_process_cores{{{RB}}}", "now {{instance}}"),
                    ],
                    CORES,
                    line=0.9,
                    width=24,
                )
            ],
        ),
        (
            "Runbook 2: do several threads share one core? (GIL contention)",
            True,
            [
                single(
                    "Threads",
                    "oraculo_threads_total of 5 or more makes GIL contention a suspect.",
                    (f"oraculo_threads_total{{{RB}}}", "{{instance}}"),
                    COUNT,
                    red_at=5,
                )
                .span(6)
                .height(HEIGHT),
                graph(
                    "CPU summed over threads",
                    "sum(rate(oraculo_thread_cpu_seconds[1m])) close to 1.0 core while several "
                    "threads are busy points at GIL contention.",
                    [
                        (f"sum({threads})", "sum over threads"),
                        (f"count({threads} > 0.05) or vector(0)", "threads above 0.05 core", COUNT),
                    ],
                    CORES,
                    line=1.0,
                    width=18,
                ),
            ],
        ),
        (
            "Runbook 3: one hot thread, or contention?",
            True,
            [
                graph(
                    "CPU by thread (top 10)",
                    "topk(10, rate(oraculo_thread_cpu_seconds[1m])). One thread near 1.0 and "
                    "the rest near 0: a single hot thread (normally MainThread, the Trio loop). "
                    "Three to ten threads whose sum stays near 1.0: GIL contention.",
                    [(f"topk(10, {threads})", "{{thread_name}} ({{native_id}})")],
                    CORES,
                    bars=True,
                ),
                graph(
                    "Share of the hottest thread",
                    "The busiest thread's CPU over all threads' CPU: near 1 is one hot thread; "
                    "well below 1 with the sum near one core is contention.",
                    [(f"max({threads}) / sum({threads})", "hottest thread share")],
                    RATIO,
                ),
            ],
        ),
        (
            "Runbook 4: does lag follow the to_thread executor?",
            True,
            [
                graph(
                    "Lag against executor queue depth",
                    "Lag rising with the queue means work waits for a thread (the loop is fine, "
                    "the pool is the bottleneck).",
                    [
                        (f"oraculo_event_loop_lag_seconds{{{RB}}}", "lag {{instance}}"),
                        (
                            f"oraculo_to_thread_executor_queue_depth{{{RB}}}",
                            "queued {{instance}} {{limiter}}",
                            COUNT,
                        ),
                    ],
                    SECONDS,
                    width=8,
                ),
                graph(
                    "Executor threads against max_workers",
                    "Equal means that pool (limiter store, rules, default) is saturated.",
                    [
                        (
                            f"oraculo_to_thread_executor_threads{{{RB}}}",
                            "threads {{instance}} {{limiter}}",
                        ),
                        (
                            f"oraculo_to_thread_executor_max_workers{{{RB}}}",
                            "max_workers {{instance}} {{limiter}}",
                        ),
                    ],
                    COUNT,
                    width=8,
                ),
                graph(
                    "Lag spikes in 15 minutes",
                    "increase(oraculo_event_loop_lag_spikes_total[15m]) by threshold: how often "
                    "the loop fell behind.",
                    [
                        (
                            "increase(oraculo_event_loop_lag_spikes_total"
                            f'{{{RB},threshold=~"0.5|2.0|10.0"}}[15m])',
                            "lag >= {{threshold}} s {{instance}}",
                        )
                    ],
                    COUNT,
                    width=8,
                ),
            ],
        ),
        (
            "Runbook 5: errors and automatic dumps",
            True,
            [
                graph(
                    "Task exceptions in 15 minutes",
                    "increase(oraculo_task_exceptions_total[15m]) by task; the traceback is in "
                    "the log at the time of the last exception.",
                    [(f"increase(oraculo_task_exceptions_total{{{RB}}}[15m])", "{{task}}")],
                    COUNT,
                    width=8,
                ),
                single(
                    "Last task exception",
                    "oraculo_last_exception_timestamp_seconds: when the last exception escaped "
                    "a task, to find its traceback in the log (1970: none since start).",
                    (f"oraculo_last_exception_timestamp_seconds{{{RB}}} * 1000", "{{instance}}"),
                    TIMESTAMP,
                )
                .span(8)
                .height(HEIGHT),
                graph(
                    "Dumps in the last hour",
                    'increase(oraculo_dumps_total{reason="event_loop_lag"}[1h]): stacks were '
                    "written while the loop was blocked (var/dumps, and the log).",
                    [
                        (
                            f'increase(oraculo_dumps_total{{{RB},reason="event_loop_lag"}}[1h])',
                            "dumps {{instance}}",
                        )
                    ],
                    COUNT,
                    width=8,
                ),
            ],
        ),
    ]


# ------------------------------------------------------------------------------------------
# Assembly


def variables() -> list[Any]:
    def query(name: str, label: str, expr: str, *, include_all: bool) -> Any:
        variable = (
            builders.QueryVariable(name)
            .label(label)
            .datasource(DATASOURCE)
            .query(expr)
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(model.VariableSort.NATURAL_ASC)
            .multi(include_all)
            .include_all(include_all)
        )
        return variable.all_value(".*") if include_all else variable

    selected = 'service="$service",instance=~"$instance"'
    return [
        builders.DatasourceVariable("datasource").label("Prometheus").type("prometheus"),
        query("service", "service", "label_values(oraculo_build_info, service)", include_all=False),
        query(
            "instance",
            "instance",
            'label_values(oraculo_build_info{service="$service"}, instance)',
            include_all=True,
        ),
        query(
            "worker",
            "worker (--workers)",
            f"label_values(oraculo_build_info{{{selected}}}, worker)",
            include_all=True,
        ),
        query(
            "shard",
            "shard",
            f"label_values(oraculo_alerts_queue_depth{{{S}}}, shard)",
            include_all=True,
        ),
    ]


def rows() -> list[Row]:
    return [
        overview_row(),
        latency_row(),
        throughput_row(),
        scheduler_row(),
        store_row(),
        alerts_row(),
        books_row(),
        process_row(),
        cluster_row(),
        *runbook_rows(),
    ]


def dashboard() -> dict[str, Any]:
    """The whole dashboard, as Grafana's import (or file provisioning) reads it."""
    board = (
        builders.Dashboard("oraculo-trio: alerts service")
        .uid("oraculo-alerts")
        .description(
            "oraculo-trio: readiness, latency and age, queues and drops, feed, store, "
            "notifications, diff books, process, and the CPU/GIL runbook. Generated by "
            "grafana/build_dashboard.py."
        )
        .tags(["oraculo-trio", "trio", "alerts"])
        .editable()
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .time("now-1h", "now")
        .refresh("10s")
        .timezone("browser")
    )
    for variable in variables():
        board.with_variable(variable)
    for title, collapsed, panels in rows():
        row = builders.Row(title).collapsed(collapsed)
        if collapsed:
            for panel in panels:
                row.with_panel(panel)
            board.with_row(row)
        else:
            # An expanded row's panels follow it on the top level, as Grafana saves them.
            board.with_row(row)
            for panel in panels:
                board.with_panel(panel)
    document = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    _number_panels(document["panels"])
    return document


def _number_panels(panels: list[dict[str, Any]], start: int = 1) -> int:
    """Give every panel (nested ones too) its own id, in order."""
    next_id = start
    for panel in panels:
        panel["id"] = next_id
        next_id = _number_panels(panel.get("panels", []), next_id + 1)
    return next_id


def render() -> str:
    """The dashboard as the committed file's text."""
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


RUNBOOK_URL = re.compile(r"^(?P<indent>\s+runbook_url: )\S+?#(?P<anchor>[a-z0-9-]+)$", re.M)


def rules_with_runbook_base(text: str, base: str) -> str:
    """``prometheus-rules.yml``'s text with every ``runbook_url`` at ``base#<anchor>``."""
    return RUNBOOK_URL.sub(lambda m: f"{m['indent']}{base}#{m['anchor']}", text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed JSON is stale")
    parser.add_argument(
        "--runbook-base",
        metavar="URL",
        help="point every alert rule's runbook_url at URL#<anchor> (the README as a forge "
        "renders it); default README.md",
    )
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if OUTPUT.read_text(encoding="utf-8") != text:
            print(f"{OUTPUT} is stale: run python grafana/build_dashboard.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    if args.runbook_base:
        RULES.write_text(
            rules_with_runbook_base(RULES.read_text(encoding="utf-8"), args.runbook_base)
        )
        print(f"wrote {RULES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
