"""Builds ``grafana/oraculo-alerts.json``, the Grafana dashboard users import.

The committed JSON is what users import (Dashboards -> New -> Import, then pick the Prometheus
data source asked for by the ``DS_PROMETHEUS`` input); this script is how it is written, so
that every panel's PromQL lives in one readable place. Standard library only.

Usage::

    python grafana/build_dashboard.py            # rewrite grafana/oraculo-alerts.json
    python grafana/build_dashboard.py --check    # exit 1 if the committed JSON is stale

Variables: ``$service`` (the ``service`` label, ``alerts`` by default) and ``$shard`` (multi
select, "All" by default). The runbook rows at the bottom follow the README section "Is it
CPU-bound or GIL-bound?" question by question, with the plan's section 5 queries
(``grafana/runbook_queries.promql``) where ``service="alerts"`` becomes ``service="$service"``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).with_name("oraculo-alerts.json")
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
S = 'service="$service"'
"""The selector every query carries."""

WIDTH = 24
HEIGHT = 8

Panel = dict[str, Any]


def target(expr: str, legend: str = "", ref: str = "A", *, instant: bool = False) -> dict:
    """One PromQL query of a panel."""
    query: dict[str, Any] = {
        "datasource": DATASOURCE,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
        "refId": ref,
    }
    return query


def targets(*queries: tuple[str, str]) -> list[dict]:
    """Several queries, lettered A, B, C..."""
    return [target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(queries)]


def thresholds(*steps: tuple[float | None, str]) -> dict:
    return {
        "mode": "absolute",
        "steps": [{"color": color, "value": value} for value, color in steps],
    }


def timeseries(
    title: str,
    description: str,
    queries: list[dict],
    *,
    unit: str = "short",
    line: float | None = None,
    bars: bool = False,
    overrides: list[dict] | None = None,
    minimum: float | None = 0,
) -> Panel:
    """A time-series panel; ``line`` draws a red threshold line at that value."""
    custom: dict[str, Any] = {
        "drawStyle": "bars" if bars else "line",
        "lineWidth": 1,
        "fillOpacity": 60 if bars else 10,
        "showPoints": "never",
        "spanNulls": False,
        "thresholdsStyle": {"mode": "line" if line is not None else "off"},
    }
    defaults: dict[str, Any] = {
        "unit": unit,
        "custom": custom,
        "color": {"mode": "palette-classic"},
        "thresholds": thresholds((None, "green"), *([(line, "red")] if line is not None else [])),
    }
    if minimum is not None:
        defaults["min"] = minimum
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": queries,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": {
            "legend": {
                "displayMode": "table",
                "placement": "bottom",
                "calcs": ["lastNotNull", "max"],
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def stat(
    title: str,
    description: str,
    queries: list[dict],
    *,
    unit: str = "short",
    red_at: float | None = None,
    decimals: int | None = None,
) -> Panel:
    """A single-value panel, red from ``red_at``."""
    defaults: dict[str, Any] = {
        "unit": unit,
        "color": {"mode": "thresholds"},
        "thresholds": thresholds(
            (None, "green"), *([(red_at, "red")] if red_at is not None else [])
        ),
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": queries,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "area",
            "textMode": "auto",
        },
    }


def highlight(pattern: str, color: str = "red") -> dict:
    """A field override: series whose name matches ``pattern`` drawn thick and in ``color``."""
    return {
        "matcher": {"id": "byRegexp", "options": pattern},
        "properties": [
            {"id": "color", "value": {"mode": "fixed", "fixedColor": color}},
            {"id": "custom.lineWidth", "value": 3},
        ],
    }


def right_axis(pattern: str) -> dict:
    """A field override: series whose name matches ``pattern`` on the right-hand axis."""
    return {
        "matcher": {"id": "byRegexp", "options": pattern},
        "properties": [{"id": "custom.axisPlacement", "value": "right"}],
    }


def rate(metric: str, selector: str = "", window: str = "$__rate_interval") -> str:
    inner = f"{S},{selector}" if selector else S
    return f"rate({metric}{{{inner}}}[{window}])"


def quantile(q: float, metric: str, by: str, selector: str = "") -> str:
    """``histogram_quantile`` of a histogram's buckets summed by ``le`` and ``by``."""
    labels = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({labels}) ({rate(metric + '_bucket', selector)}))"


# ------------------------------------------------------------------------------------------
# Rows


def scheduler_row() -> tuple[str, list[Panel]]:
    lag = timeseries(
        "Scheduler lag: current and p99",
        "oraculo_event_loop_lag_seconds is the worst delay of the last interval (a task "
        "runnable but not running, or the heartbeat oversleeping); the p99 comes from the "
        "sampled delays in oraculo_scheduler_delay_seconds. The plan's KPI: below 0.5 s "
        "(red line); ours: p99 below 10 ms.",
        targets(
            (f"max(oraculo_event_loop_lag_seconds{{{S}}})", "lag (worst of last interval)"),
            (quantile(0.99, "oraculo_scheduler_delay_seconds", ""), "scheduler delay p99"),
            (quantile(0.5, "oraculo_scheduler_delay_seconds", ""), "scheduler delay p50"),
        ),
        unit="s",
        line=0.5,
    )
    spikes = timeseries(
        "Lag spikes by threshold",
        "Lag intervals that reached each threshold (0.5 s, 2 s, 10 s). Counted by the service "
        "itself, so a spike shorter than the scrape interval is never missed.",
        targets(
            (
                "sum by (threshold) (increase(oraculo_event_loop_lag_spikes_total"
                f"{{{S}}}[$__rate_interval]))",
                "lag >= {{threshold}} s",
            ),
        ),
        bars=True,
        overrides=[highlight("lag >= 10.0 s"), highlight("lag >= 2.0 s", "orange")],
    )
    slow = timeseries(
        "Slow task steps (top 10 tasks)",
        "Task steps longer than observe.slow_step_threshold (50 ms, like asyncio's "
        "slow_callback_duration), by task name; the longest step of each task is "
        "oraculo_slow_task_step_max_seconds. The service also logs a top-N table.",
        targets(
            (
                "topk(10, sum by (task) (increase(oraculo_slow_task_steps_total"
                f"{{{S}}}[$__rate_interval])))",
                "{{task}}",
            ),
            (f"max by (task) (oraculo_slow_task_step_max_seconds{{{S}}})", "max step {{task}}"),
        ),
        bars=True,
        overrides=[right_axis("max step .*")],
    )
    trio_tasks = timeseries(
        "Trio run loop",
        "Tasks alive, tasks runnable when sampled (a standing backlog means lag), and tasks "
        "waiting for a socket, from trio.lowlevel.current_statistics().",
        targets(
            (f"oraculo_trio_tasks_living{{{S}}}", "living"),
            (f"oraculo_trio_tasks_runnable{{{S}}}", "runnable"),
            (f"sum(oraculo_trio_io_waiting_tasks{{{S}}})", "waiting for I/O"),
        ),
    )
    return "Scheduler", [lag, spikes, slow, trio_tasks]


def queues_row() -> tuple[str, list[Panel]]:
    queue_time = timeseries(
        "Queue time p50 / p95 / p99 by stream",
        "Pipeline time from frame read to rules evaluated (oraculo_alerts_queue_time_seconds). "
        "The plan's KPI: mean below 200 ms (red line at 0.2 s).",
        targets(
            *(
                (quantile(q, "oraculo_alerts_queue_time_seconds", "stream"), f"p{p} {{{{stream}}}}")
                for q, p in ((0.5, 50), (0.95, 95), (0.99, 99))
            ),
        ),
        unit="s",
        line=0.2,
    )
    latest = timeseries(
        "Queue time of the latest message",
        "oraculo_alerts_queue_time_latest_seconds: the queue time of the last message evaluated, "
        "by stream (the plan's gauge; alert above 0.2 s).",
        targets((f"oraculo_alerts_queue_time_latest_seconds{{{S}}}", "{{stream}}")),
        unit="s",
        line=0.2,
    )
    depth = timeseries(
        "Queue depth by shard",
        "Messages waiting in each shard's channel (plus conflated entries), per stream and "
        "shard ($shard). The plan's KPI: peak below 50.",
        targets(
            (
                f'max by (stream, shard) (oraculo_alerts_queue_depth{{{S},shard=~"$shard"}})',
                "{{stream}} shard {{shard}}",
            ),
        ),
        line=50,
    )
    drops = timeseries(
        "Drops by reason (stale_drop in red)",
        "Messages read but not evaluated, per second, by reason and stream. stale_drop (older "
        "than pipeline.stale_after) must stay at 0 under normal load; conflated and overflow "
        "mean overload; superseded diffs are normal while a diff book syncs.",
        targets(
            (
                "sum by (reason, stream) (rate(oraculo_alerts_queue_dropped_total"
                f"{{{S}}}[$__rate_interval]))",
                "{{reason}} {{stream}}",
            ),
        ),
        unit="ops",
        overrides=[highlight("stale_drop.*")],
    )
    return "Queues", [queue_time, latest, depth, drops]


def throughput_row() -> tuple[str, list[Panel]]:
    rates = timeseries(
        "In and out rates",
        "Frames read from the exchange per stream (oraculo_feed_messages_received_total), and "
        "messages entering and leaving each stage (oraculo_stage_messages_in/out_total). In "
        "and out of a stage should match; a gap is a backlog.",
        targets(
            (
                "sum by (stream) (rate(oraculo_feed_messages_received_total"
                f"{{{S}}}[$__rate_interval]))",
                "feed received {{stream}}",
            ),
            (
                f"sum by (stage) ({rate('oraculo_stage_messages_in_total')})",
                "in {{stage}}",
            ),
            (
                f"sum by (stage) ({rate('oraculo_stage_messages_out_total')})",
                "out {{stage}}",
            ),
        ),
        unit="ops",
    )
    batches = timeseries(
        "Batch size p50 / p99 and CPU per batch p99",
        "Messages per micro-batch (oraculo_batch_size) and thread CPU seconds per batch "
        "(oraculo_batch_cpu_seconds, right axis), by stage.",
        targets(
            (quantile(0.5, "oraculo_batch_size", "stage"), "size p50 {{stage}}"),
            (quantile(0.99, "oraculo_batch_size", "stage"), "size p99 {{stage}}"),
            (quantile(0.99, "oraculo_batch_cpu_seconds", "stage"), "cpu p99 {{stage}}"),
        ),
        overrides=[
            right_axis("cpu p99 .*"),
            {
                "matcher": {"id": "byRegexp", "options": "cpu p99 .*"},
                "properties": [{"id": "unit", "value": "s"}],
            },
        ],
    )
    feed_lag = timeseries(
        "Feed lag and bad frames",
        "oraculo_feed_lag_seconds: read time minus the exchange's event time E (exchange, "
        "network and clock skew); growing means we read slower than the exchange sends. Bad "
        "frames per second by reason on the right axis.",
        targets(
            (f"max by (stream) (oraculo_feed_lag_seconds{{{S}}})", "feed lag {{stream}}"),
            (
                f"sum by (reason) ({rate('oraculo_feed_bad_frames_total')})",
                "bad frames {{reason}}",
            ),
        ),
        unit="s",
        overrides=[right_axis("bad frames .*")],
    )
    reconnects = timeseries(
        "Feed reconnects and connections",
        "Reconnects by stream and reason (bars), and connections open (oraculo_feed_connected, "
        "right axis).",
        targets(
            (
                "sum by (stream, reason) (increase(oraculo_feed_reconnects_total"
                f"{{{S}}}[$__rate_interval]))",
                "reconnect {{stream}} {{reason}}",
            ),
            (f"sum by (stream) (oraculo_feed_connected{{{S}}})", "connected {{stream}}"),
        ),
        bars=True,
        overrides=[right_axis("connected .*")],
    )
    return "Throughput and feed", [rates, batches, feed_lag, reconnects]


def store_row() -> tuple[str, list[Panel]]:
    ops = 'op=~"upsert_rule_alert|insert_alert_events|insert_dispatch_logs"'
    db = timeseries(
        "DB insert p50 / p95",
        "Latency of store batch statements (oraculo_db_insert_ms, milliseconds), by op. The "
        "plan's KPI: p50 below 20 ms, p95 below 50 ms (red line); ours: 2 ms / 5 ms.",
        targets(
            (quantile(0.5, "oraculo_db_insert_ms", "op", ops), "p50 {{op}}"),
            (quantile(0.95, "oraculo_db_insert_ms", "op", ops), "p95 {{op}}"),
        ),
        unit="ms",
        line=50,
    )
    errors = timeseries(
        "DB errors, timeouts and pending rows",
        "Failed and timed-out store statements by op (the writer retries them, nothing is "
        "lost), and rows the writer holds (right axis).",
        targets(
            (
                f"sum by (op) (increase(oraculo_db_errors_total{{{S}}}[$__rate_interval]))",
                "errors {{op}}",
            ),
            (
                f"sum by (op) (increase(oraculo_db_timeouts_total{{{S}}}[$__rate_interval]))",
                "timeouts {{op}}",
            ),
            (f"oraculo_store_pending_rows{{{S}}}", "pending rows"),
        ),
        bars=True,
        overrides=[right_axis("pending rows"), highlight("timeouts .*")],
    )
    rows = timeseries(
        "DB rows written and store up",
        "Rows written per second by op, and oraculo_db_up (1 when the last statement succeeded, "
        "right axis).",
        targets(
            (f"sum by (op) ({rate('oraculo_db_rows_total')})", "rows {{op}}"),
            (f"oraculo_db_up{{{S}}}", "db up"),
            (f"oraculo_ready{{{S}}}", "ready"),
        ),
        unit="ops",
        overrides=[right_axis("db up|ready")],
    )
    alerts = timeseries(
        "Alerts firing",
        'Alerts currently firing (oraculo_alerts_active{state="firing"}) and pending, and '
        "alert transitions per second by new state.",
        targets(
            (f'sum(oraculo_alerts_active{{{S},state="firing"}})', "firing"),
            (f'sum(oraculo_alerts_active{{{S},state="pending"}})', "pending"),
            (
                f"sum by (state) ({rate('oraculo_alert_transitions_total')})",
                "transitions to {{state}}",
            ),
        ),
        overrides=[right_axis("transitions .*"), highlight("firing", "orange")],
    )
    return "Store and alerts", [db, errors, rows, alerts]


def process_row() -> tuple[str, list[Panel]]:
    cpu = timeseries(
        "CPU cores (1.0 = one core saturated)",
        "oraculo_cpu_process_cores: process CPU seconds per second. Pure Python runs on one "
        "core at a time (the GIL), so 1.0 is the ceiling to watch (red line).",
        targets(
            (f"oraculo_cpu_process_cores{{{S}}}", "process CPU cores"),
            ("vector(1)", "one core"),
        ),
        line=1.0,
        overrides=[
            {
                "matcher": {"id": "byName", "options": "one core"},
                "properties": [
                    {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}},
                    {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
                ],
            }
        ],
    )
    threads = timeseries(
        "Top-k thread CPU",
        "The plan's query: CPU cores used by each thread (thread_name, native_id), top 10.",
        targets(
            (
                f"topk(10, rate(oraculo_thread_cpu_seconds{{{S}}}[1m]))",
                "{{thread_name}} ({{native_id}})",
            ),
        ),
    )
    pool = timeseries(
        "to_thread saturation",
        "Per CapacityLimiter: threads working against max_workers, and tasks queued for a "
        "thread (right axis). threads = max_workers with a queue means the pool is saturated.",
        targets(
            (f"oraculo_to_thread_executor_threads{{{S}}}", "threads {{limiter}}"),
            (f"oraculo_to_thread_executor_max_workers{{{S}}}", "max_workers {{limiter}}"),
            (f"oraculo_to_thread_executor_queue_depth{{{S}}}", "queued {{limiter}}"),
        ),
        overrides=[right_axis("queued .*"), highlight("queued .*", "orange")],
    )
    exceptions = timeseries(
        "Task exceptions",
        "Exceptions that escaped a supervised task, by task. A feed connection restarts with "
        "backoff; any other task stops the service with a non-zero exit.",
        targets(
            (
                f"sum by (task) (increase(oraculo_task_exceptions_total{{{S}}}[$__rate_interval]))",
                "{{task}}",
            ),
        ),
        bars=True,
    )
    dumps = stat(
        "Stack dumps in range",
        "Watchdog dumps (the loop was blocked longer than observe.dump_after); each is in the "
        "log and in var/dumps/<timestamp>.txt.",
        [target(f"sum(increase(oraculo_dumps_total{{{S}}}[$__range]))", "dumps", instant=True)],
        red_at=1,
        decimals=0,
    )
    last_exception = stat(
        "Last task exception",
        "oraculo_last_exception_timestamp_seconds (0: none since start).",
        [
            target(
                f"max(oraculo_last_exception_timestamp_seconds{{{S}}}) * 1000",
                "last exception",
                instant=True,
            )
        ],
        unit="dateTimeFromNow",
    )
    return "Process", [cpu, threads, pool, exceptions, dumps, last_exception]


def runbook_rows() -> list[tuple[str, list[Panel]]]:
    # One row per question of the README runbook, with the plan's section 5 queries.
    one_core = (
        "Runbook 1: is one core saturated? (CPU-bound)",
        [
            timeseries(
                "CPU cores, 5 minute average",
                "Plan: avg_over_time(oraculo_cpu_process_cores[5m]) above 0.9 means the process "
                "keeps one core busy: CPU-bound. Below it, look for blocking calls instead "
                "(slow task steps, dumps).",
                targets(
                    (f"avg_over_time(oraculo_cpu_process_cores{{{S}}}[5m])", "avg 5m"),
                    (f"oraculo_cpu_process_cores{{{S}}}", "now"),
                ),
                line=0.9,
            ),
            timeseries(
                "Lag against CPU",
                "Lag that rises with CPU near 1.0 is work the loop cannot keep up with; lag "
                "with low CPU is a blocking call (see the dumps).",
                targets(
                    (f"oraculo_event_loop_lag_seconds{{{S}}}", "lag"),
                    (f"oraculo_cpu_process_cores{{{S}}}", "CPU cores"),
                ),
                unit="s",
                overrides=[
                    right_axis("CPU cores"),
                    {
                        "matcher": {"id": "byName", "options": "CPU cores"},
                        "properties": [{"id": "unit", "value": "short"}],
                    },
                ],
            ),
        ],
    )
    gil = (
        "Runbook 2: do several threads share one core? (GIL contention)",
        [
            stat(
                "Threads",
                "Plan: oraculo_threads_total >= 5 is when GIL contention becomes a suspect.",
                [target(f"oraculo_threads_total{{{S}}}", "threads", instant=True)],
                red_at=5,
                decimals=0,
            ),
            timeseries(
                "CPU summed over threads",
                "Plan: sum(rate(oraculo_thread_cpu_seconds[1m])) close to 1.0 core while several "
                "threads are busy indicates GIL contention.",
                targets(
                    (f"sum(rate(oraculo_thread_cpu_seconds{{{S}}}[1m]))", "sum over threads"),
                    (
                        f"count(rate(oraculo_thread_cpu_seconds{{{S}}}[1m]) > 0.05) or vector(0)",
                        "threads above 0.05 core",
                    ),
                ),
                line=1.0,
                overrides=[right_axis("threads above .*")],
            ),
        ],
    )
    hot = (
        "Runbook 3: one hot thread, or contention?",
        [
            {
                **timeseries(
                    "CPU by thread (top 10)",
                    "Plan: topk(10, rate(oraculo_thread_cpu_seconds[1m])). One thread near 1.0 "
                    "and the rest near 0: a single-threaded hotspot. Three to ten threads with "
                    "CPU whose sum stays near 1.0: GIL contention is very likely.",
                    targets(
                        (
                            f"topk(10, rate(oraculo_thread_cpu_seconds{{{S}}}[1m]))",
                            "{{thread_name}} ({{native_id}})",
                        ),
                    ),
                    bars=True,
                ),
                "options": {
                    "legend": {"displayMode": "table", "placement": "right", "calcs": ["mean"]},
                    "tooltip": {"mode": "multi", "sort": "desc"},
                },
            },
            timeseries(
                "Share of the hottest thread",
                "The busiest thread's CPU over all threads' CPU: near 1 is one hot thread; "
                "well below 1 with the sum near one core is contention.",
                targets(
                    (
                        f"max(rate(oraculo_thread_cpu_seconds{{{S}}}[1m])) / "
                        f"sum(rate(oraculo_thread_cpu_seconds{{{S}}}[1m]))",
                        "hottest thread share",
                    ),
                ),
                unit="percentunit",
            ),
        ],
    )
    executor = (
        "Runbook 4: does lag follow the to_thread executor?",
        [
            timeseries(
                "Lag against executor queue depth",
                "Plan: oraculo_event_loop_lag_seconds against "
                "oraculo_to_thread_executor_queue_depth. Lag rising with the queue means work "
                "waits for a thread (the loop is fine, the pool is the bottleneck).",
                targets(
                    (f"oraculo_event_loop_lag_seconds{{{S}}}", "lag"),
                    (f"oraculo_to_thread_executor_queue_depth{{{S}}}", "queued {{limiter}}"),
                ),
                unit="s",
                overrides=[
                    right_axis("queued .*"),
                    {
                        "matcher": {"id": "byRegexp", "options": "queued .*"},
                        "properties": [{"id": "unit", "value": "short"}],
                    },
                ],
            ),
            timeseries(
                "Executor threads against max_workers",
                "Plan: oraculo_to_thread_executor_threads against "
                "oraculo_to_thread_executor_max_workers: equal means saturated.",
                targets(
                    (f"oraculo_to_thread_executor_threads{{{S}}}", "threads {{limiter}}"),
                    (f"oraculo_to_thread_executor_max_workers{{{S}}}", "max_workers {{limiter}}"),
                ),
            ),
            timeseries(
                "Lag spikes in 15 minutes",
                "Plan: increase(oraculo_event_loop_lag_spikes_total[15m]) by threshold: how "
                "often the loop fell behind.",
                targets(
                    (
                        "increase(oraculo_event_loop_lag_spikes_total"
                        f'{{{S},threshold=~"0.5|2.0|10.0"}}[15m])',
                        "lag >= {{threshold}} s",
                    ),
                ),
            ),
        ],
    )
    failures = (
        "Runbook 5: errors and automatic dumps",
        [
            timeseries(
                "Task exceptions in 15 minutes",
                "Plan: increase(oraculo_task_exceptions_total[15m]) by task; the traceback is "
                "in the log at oraculo_last_exception_timestamp_seconds.",
                targets(
                    (f"increase(oraculo_task_exceptions_total{{{S}}}[15m])", "{{task}}"),
                ),
            ),
            stat(
                "Last exception (unix time)",
                "Plan: oraculo_last_exception_timestamp_seconds, to find the failure in the log.",
                [
                    target(
                        f"oraculo_last_exception_timestamp_seconds{{{S}}}",
                        "last exception",
                        instant=True,
                    )
                ],
                decimals=0,
            ),
            timeseries(
                "Dumps in the last hour",
                'Plan: increase(oraculo_dumps_total{reason="event_loop_lag"}[1h]): stacks '
                "were written while the loop was blocked (var/dumps, and the log).",
                targets(
                    (
                        f'increase(oraculo_dumps_total{{{S},reason="event_loop_lag"}}[1h])',
                        "dumps {{reason}}",
                    ),
                ),
            ),
        ],
    )
    return [one_core, gil, hot, executor, failures]


# ------------------------------------------------------------------------------------------
# Assembly


def layout(rows: list[tuple[str, list[Panel]]]) -> list[Panel]:
    """Rows one under the other; a row's panels share its width, two or three per line."""
    panels: list[Panel] = []
    y = 0
    next_id = 1
    for title, row_panels in rows:
        panels.append(
            {
                "type": "row",
                "title": title,
                "collapsed": False,
                "id": next_id,
                "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": y},
                "panels": [],
            }
        )
        next_id += 1
        y += 1
        x = 0
        per_line = 3 if len(row_panels) in (3, 6) else 2
        for panel in row_panels:
            width = WIDTH // per_line
            if x + width > WIDTH:
                x = 0
                y += HEIGHT
            panel["id"] = next_id
            next_id += 1
            panel["gridPos"] = {"h": HEIGHT, "w": width, "x": x, "y": y}
            panels.append(panel)
            x += width
        y += HEIGHT
    return panels


def variables() -> list[dict]:
    def query_variable(name: str, query: str, *, include_all: bool) -> dict:
        variable: dict[str, Any] = {
            "name": name,
            "label": name,
            "type": "query",
            "datasource": DATASOURCE,
            "definition": query,
            "query": {"query": query, "refId": f"{name}-values"},
            "refresh": 2,
            "sort": 3,
            "hide": 0,
            "regex": "",
            "options": [],
            "current": {},
            "multi": include_all,
            "includeAll": include_all,
            "skipUrlSync": False,
        }
        if include_all:
            variable["allValue"] = ".*"
        return variable

    return [
        query_variable(
            "service", "label_values(oraculo_event_loop_lag_seconds, service)", include_all=False
        ),
        query_variable(
            "shard", f"label_values(oraculo_alerts_queue_depth{{{S}}}, shard)", include_all=True
        ),
    ]


def dashboard() -> dict:
    """The whole dashboard, as Grafana's import expects it."""
    rows = [
        scheduler_row(),
        queues_row(),
        throughput_row(),
        store_row(),
        process_row(),
        *runbook_rows(),
    ]
    return {
        "__inputs": [
            {
                "name": "DS_PROMETHEUS",
                "label": "Prometheus",
                "description": "The Prometheus that scrapes oraculo-trio's /metrics.",
                "type": "datasource",
                "pluginId": "prometheus",
                "pluginName": "Prometheus",
            }
        ],
        "__elements": {},
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
            *(
                {"type": "panel", "id": kind, "name": kind.capitalize(), "version": ""}
                for kind in ("stat", "timeseries")
            ),
        ],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "description": "oraculo-trio: scheduler lag, queues, drops, store, CPU/GIL runbook. "
        "Generated by grafana/build_dashboard.py.",
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [],
        "liveNow": False,
        "panels": layout(rows),
        "refresh": "10s",
        "schemaVersion": 38,
        "style": "dark",
        "tags": ["oraculo-trio", "trio", "alerts"],
        "templating": {"list": variables()},
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": "oraculo-trio: alerts service",
        "uid": "oraculo-alerts",
        "version": 1,
        "weekStart": "",
    }


def render() -> str:
    """The dashboard as the committed file's text."""
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed JSON is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if OUTPUT.read_text(encoding="utf-8") != text:
            print(f"{OUTPUT} is stale: run python grafana/build_dashboard.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
