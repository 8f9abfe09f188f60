"""The shipped Grafana dashboard, alerting rules, scrape configuration and runbook queries:
import-ready, generated, complete, and naming only metrics the service exports."""

from __future__ import annotations

import importlib.util
import json
import re
from typing import Any

import pytest
import trio

from oraculo_trio.observe.catalog import metric_catalog
from tests.observe.prometheus_testing import (
    DASHBOARD,
    GRAFANA,
    RULES,
    RUNBOOK_QUERIES,
    SCRAPE_CONFIG,
    dashboard_queries,
    runbook_queries,
    without_comparison,
)
from tests.services import require_tool

# Each panel the issue asks for: a title fragment and what its queries must read.
REQUIRED_PANELS = {
    "Scheduler lag: current and p99": [
        "oraculo_event_loop_lag_seconds",
        "histogram_quantile(0.99",
        "oraculo_scheduler_delay_seconds_bucket",
    ],
    "Lag spikes by threshold": ["oraculo_event_loop_lag_spikes_total", "by (threshold)"],
    "Queue time p50 / p95 / p99 by stream": [
        "histogram_quantile(0.5,",
        "histogram_quantile(0.95,",
        "histogram_quantile(0.99,",
        "oraculo_alerts_queue_time_seconds_bucket",
        "stream",
    ],
    "Queue depth by shard": ["oraculo_alerts_queue_depth", 'shard=~"$shard"'],
    "Drops by reason": ["oraculo_alerts_queue_dropped_total", "by (reason"],
    "In and out rates": [
        "oraculo_stage_messages_in_total",
        "oraculo_stage_messages_out_total",
        "oraculo_feed_messages_received_total",
    ],
    "DB insert p50 / p95": [
        "histogram_quantile(0.5,",
        "histogram_quantile(0.95,",
        "oraculo_db_insert_ms_bucket",
    ],
    "CPU cores": ["oraculo_cpu_process_cores"],
    "Top-k thread CPU": ['topk(10, rate(oraculo_thread_cpu_seconds{service="$service"}[1m]))'],
    "to_thread saturation": [
        "oraculo_to_thread_executor_threads",
        "oraculo_to_thread_executor_max_workers",
        "oraculo_to_thread_executor_queue_depth",
    ],
    "Task exceptions": ["oraculo_task_exceptions_total"],
    "Stack dumps": ["oraculo_dumps_total"],
    "Feed reconnects": ["oraculo_feed_reconnects_total"],
    "Alerts firing": ['oraculo_alerts_active{service="$service",state="firing"}'],
}
RULE_CONDITIONS = {
    "OraculoEventLoopLagHigh": ("oraculo_event_loop_lag_seconds", "> 0.5"),
    "OraculoStaleDrops": ('reason="stale_drop"', "> 0"),
    "OraculoMessagesDropped": ("oraculo_alerts_queue_dropped_total", "> 0"),
    "OraculoQueueDepthHigh": ("oraculo_alerts_queue_depth", "> 50"),
    "OraculoQueueTimeP95High": ("histogram_quantile(0.95", "> 0.2"),
    "OraculoQueueTimeLatestHigh": ("oraculo_alerts_queue_time_latest_seconds", "> 0.2"),
    "OraculoDbInsertP95High": ("oraculo_db_insert_ms_bucket", "> 50"),
    "OraculoDbTimeouts": ("oraculo_db_timeouts_total", "> 0"),
    "OraculoCpuSaturated": ("oraculo_cpu_process_cores", "> 0.9"),
    "OraculoTaskExceptions": ("oraculo_task_exceptions_total", "> 0"),
    "OraculoFeedDisconnected": ("oraculo_feed_connected", "== 0"),
    "OraculoFeedLagGrowing": ("deriv(oraculo_feed_lag_seconds", "> "),
    "OraculoStackDumped": ("oraculo_dumps_total", "> 0"),
}


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def rule_blocks() -> dict[str, dict[str, str]]:
    """Each alerting rule's fields of one line (``expr``, ``for``), by alert name."""
    blocks: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in RULES.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\s+(?:- )?(alert|expr|for): (.+)$", line)
        if match is None:
            continue
        key, value = match.groups()
        if key == "alert":
            current = blocks[value] = {}
        else:
            current[key] = value
    return blocks


def exported_names() -> set[str]:
    """Every sample name a service can export (histograms with their three suffixes)."""
    names = set()
    for info in metric_catalog():
        names.add(info.name)
        if info.type == "histogram":
            names.update(info.name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names


def test_the_committed_dashboard_is_what_the_generator_writes() -> None:
    spec = importlib.util.spec_from_file_location("build_dashboard", GRAFANA / "build_dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert DASHBOARD.read_text(encoding="utf-8") == module.render(), (
        "grafana/oraculo-alerts.json is stale: run python grafana/build_dashboard.py"
    )


def test_the_dashboard_is_import_ready() -> None:
    dashboard = load_dashboard()
    assert [entry["name"] for entry in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    assert dashboard["id"] is None and dashboard["uid"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert set(variables) == {"service", "shard"}
    assert variables["shard"]["includeAll"] and variables["shard"]["multi"]
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], panel["title"]
        for query in panel["targets"]:
            assert query["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
    for variable in variables.values():
        assert variable["datasource"]["uid"] == "${DS_PROMETHEUS}"
    # Nothing overlaps on Grafana's 24-column grid.
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24
        area = {
            (x, y)
            for x in range(box["x"], box["x"] + box["w"])
            for y in range(box["y"], box["y"] + box["h"])
        }
        assert not area & cells, panel["title"]
        cells |= area


@pytest.mark.parametrize("title", REQUIRED_PANELS)
def test_the_dashboard_has_each_panel_the_issue_lists(title: str) -> None:
    panels = [p for p in load_dashboard()["panels"] if p["type"] != "row" and title in p["title"]]
    assert panels, f"no panel titled {title!r}"
    exprs = " ".join(query["expr"] for panel in panels for query in panel["targets"])
    for fragment in REQUIRED_PANELS[title]:
        assert fragment in exprs, (title, fragment)


def test_cpu_is_drawn_against_one_core_and_stale_drop_is_highlighted() -> None:
    panels = {p["title"]: p for p in load_dashboard()["panels"]}
    cpu = panels["CPU cores (1.0 = one core saturated)"]
    steps = cpu["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert {"color": "red", "value": 1.0} in steps
    assert cpu["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] == "line"
    drops = panels["Drops by reason (stale_drop in red)"]
    [override] = drops["fieldConfig"]["overrides"]
    assert override["matcher"]["options"] == "stale_drop.*"
    assert {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}} in override[
        "properties"
    ]


def test_every_runbook_query_is_in_a_runbook_row_of_the_dashboard() -> None:
    panels = load_dashboard()["panels"]
    rows: dict[str, list[str]] = {}
    row = ""
    for panel in panels:
        if panel["type"] == "row":
            row = panel["title"]
        else:
            rows.setdefault(row, []).extend(q["expr"] for q in panel["targets"])
    runbook = [
        expr for title, exprs in rows.items() if title.startswith("Runbook") for expr in exprs
    ]
    assert len([title for title in rows if title.startswith("Runbook")]) == 5
    for expr in runbook_queries():
        assert expr.replace('service="alerts"', 'service="$service"') in runbook, expr


def test_every_metric_the_grafana_files_name_is_exported() -> None:
    names = exported_names()
    texts = {
        "dashboard": " ".join(expr for _, expr in dashboard_queries(load_dashboard())),
        "rules": RULES.read_text(encoding="utf-8"),
        "runbook queries": RUNBOOK_QUERIES.read_text(encoding="utf-8"),
    }
    for where, text in texts.items():
        used = set(re.findall(r"\boraculo_[a-z_]+[a-z]", text))
        assert used, where
        assert used <= names, (where, sorted(used - names))


def test_the_rules_cover_the_issue_and_end_with_a_comparison() -> None:
    blocks = rule_blocks()
    for alert, (fragment, comparison) in RULE_CONDITIONS.items():
        expr = blocks[alert]["expr"]
        assert fragment in expr and comparison in expr, (alert, expr)
    assert blocks["OraculoCpuSaturated"]["for"] == "5m"
    for alert, block in blocks.items():
        assert without_comparison(block["expr"]), alert


@pytest.mark.promtool
async def test_promtool_accepts_the_rules_and_the_scrape_configuration() -> None:
    promtool = require_tool("promtool")
    with trio.fail_after(30):
        rules = await trio.run_process(
            [promtool, "check", "rules", str(RULES)], capture_stdout=True
        )
        config = await trio.run_process(
            [promtool, "check", "config", str(SCRAPE_CONFIG)], capture_stdout=True
        )
    assert b"SUCCESS: 16 rules found" in rules.stdout
    assert b"is valid prometheus config file syntax" in config.stdout
