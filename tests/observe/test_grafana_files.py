"""The shipped Grafana dashboard, alerting rules, scrape configuration and runbook queries:
import-ready, generated, complete, in the metric table's units, without duplicated panels,
and naming only metrics the service exports (tests/observe/test_prometheus_real.py runs every
query on a live service)."""

from __future__ import annotations

import importlib.util
import json
import re
from typing import Any

import pytest
import trio

from oraculo_trio.observe.catalog import metric_catalog
from oraculo_trio.observe.metric_spec import (
    BOOLEAN,
    BYTES,
    CORES,
    COUNT,
    INFO,
    MILLISECONDS,
    SECONDS,
    TIMESTAMP,
)
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

# Panels an operator looks for: a title fragment and what its queries must read.
REQUIRED_PANELS = {
    "Scheduler lag: current and p99": [
        "oraculo_event_loop_lag_seconds",
        "histogram_quantile(0.99",
        "oraculo_scheduler_delay_seconds_bucket",
    ],
    "Lag spikes by threshold": ["oraculo_event_loop_lag_spikes_total", "threshold)"],
    "Queue time p50 / p95 / p99 by stream": [
        "histogram_quantile(0.5,",
        "histogram_quantile(0.95,",
        "histogram_quantile(0.99,",
        "oraculo_alerts_queue_time_seconds_bucket",
        "stream",
    ],
    "Evaluated age p50 / p99 by stream": ["oraculo_alerts_evaluated_age_seconds_bucket"],
    "Queue depth by shard": ["oraculo_alerts_queue_depth", 'shard=~"$shard"'],
    "Drops by reason": ["oraculo_alerts_queue_dropped_total", "reason, stream"],
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
    "CPU cores": ["oraculo_cpu_process_cores", "process_cpu_seconds_total"],
    "Resident memory": ["process_resident_memory_bytes"],
    "CPU by thread (top 10)": [
        'topk(10, rate(oraculo_thread_cpu_seconds{service="$service"}[1m]))'
    ],
    "to_thread saturation": [
        "oraculo_to_thread_executor_threads",
        "oraculo_to_thread_executor_max_workers",
        "oraculo_to_thread_executor_queue_depth",
    ],
    "Task exceptions": ["oraculo_task_exceptions_total"],
    "Dumps in the last hour": ["oraculo_dumps_total"],
    "Feed reconnects": ["oraculo_feed_reconnects_total"],
    "Alerts firing": ["oraculo_alerts_active{", 'state="firing"'],
    "Book resyncs by reason": ["oraculo_book_resyncs_total"],
    "Resync duration": ["oraculo_book_resync_seconds_bucket"],
    "Dispatch circuit breaker open": ["oraculo_dispatch_circuit_open"],
    "Rule reloads": ["oraculo_rules_reloads_total", "oraculo_rules_loaded"],
    "Version": ["oraculo_build_info"],
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


GRAFANA_UNITS = {
    SECONDS: "s",
    MILLISECONDS: "ms",
    COUNT: "short",
    CORES: "suffix: cores",
    BOOLEAN: "bool",
    TIMESTAMP: "dateTimeFromNow",
    BYTES: "bytes",
    INFO: "none",
}
"""The Grafana unit of a query that reads a metric as it is (or a quantile of it)."""
PER_SECOND = {COUNT: "cps", SECONDS: "suffix: cores"}
"""rate() of a counter: counts per second; CPU seconds per second are cores."""
RATIO = "percentunit"
METRIC = re.compile(r"\b((?:oraculo|process)_[a-z_]*[a-z])\b")
RANGE = re.compile(r"\[([^\]]+)\]")


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def rows_of(dashboard: dict[str, Any]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Each row and its panels: those that follow an expanded row, or a collapsed row's own."""
    rows: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            rows.append((panel, list(panel["panels"])))
        else:
            rows[-1][1].append(panel)
    return rows


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for _, panels in rows_of(dashboard) for panel in panels]


def metric_units() -> dict[str, tuple[str, str]]:
    """Every sample name a service exports -> (its row's unit, its row's type)."""
    units = {}
    for spec in metric_catalog():
        units[spec.name] = (spec.unit, spec.type)
        if spec.type == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                units[spec.name + suffix] = (spec.unit, spec.type)
    return units


def expected_unit(expr: str) -> str:
    """The Grafana unit a query's values are in, from the metric table's unit of what it reads.

    A quantile or a plain read keeps the metric's unit; rate() of a counter is per second
    (CPU seconds per second: cores); increase() over a window is a count; one thread's CPU over
    all threads' is a ratio; a timestamp times 1000 is a date.
    """
    names = set(METRIC.findall(expr))
    units = {metric_units()[name] for name in names}
    assert len(units) == 1, (expr, units)
    [(unit, kind)] = units
    if re.search(r"\)\s*/\s*sum\(", expr):
        return RATIO
    if expr.startswith("histogram_quantile("):
        return GRAFANA_UNITS[unit]
    if expr.startswith("count("):
        return GRAFANA_UNITS[COUNT]
    if "increase(" in expr:
        assert unit == COUNT, expr
        return GRAFANA_UNITS[COUNT]
    if "rate(" in expr:
        assert kind == "counter" or unit == SECONDS, expr  # thread CPU: a gauge that only grows
        return PER_SECOND[unit]
    if unit == TIMESTAMP:
        assert expr.endswith("* 1000"), f"{expr}: Grafana's date units read milliseconds"
    return GRAFANA_UNITS[unit]


def panel_units(panel: dict[str, Any]) -> dict[str, str]:
    """The unit Grafana shows each query of a panel in: the panel's, or its query override's."""
    units = {query["refId"]: panel["fieldConfig"]["defaults"]["unit"] for query in panel["targets"]}
    for override in panel["fieldConfig"]["overrides"]:
        if override["matcher"]["id"] == "byFrameRefID":
            for prop in override["properties"]:
                if prop["id"] == "unit":
                    units[override["matcher"]["options"]] = prop["value"]
    return units


def rule_blocks() -> dict[str, dict[str, str]]:
    """Each alerting rule's fields of one line (``expr``, ``for``, ``runbook_url``), by name."""
    blocks: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in RULES.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\s+(?:- )?(alert|expr|for|runbook_url): (.+)$", line)
        if match is None:
            continue
        key, value = match.groups()
        if key == "alert":
            current = blocks[value] = {}
        else:
            current[key] = value
    return blocks


def readme_anchors() -> set[str]:
    """The anchors a forge gives the README's headings (lower case, punctuation dropped)."""
    readme = (GRAFANA.parent / "README.md").read_text(encoding="utf-8")
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", readme, flags=re.M):
        slug = re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def build_module() -> Any:
    spec = importlib.util.spec_from_file_location("build_dashboard", GRAFANA / "build_dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_dashboard_is_what_the_generator_writes() -> None:
    assert DASHBOARD.read_text(encoding="utf-8") == build_module().render(), (
        "grafana/oraculo-alerts.json is stale: run python grafana/build_dashboard.py"
    )


def test_the_dashboard_is_import_ready_with_its_variables() -> None:
    dashboard = load_dashboard()
    assert "__inputs" not in dashboard, "a file-provisioned copy would keep ${DS_PROMETHEUS}"
    assert "id" not in dashboard and dashboard["uid"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert {"datasource", "service", "instance", "worker", "shard"} <= set(variables)
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("instance", "worker", "shard"):
        assert variables[name]["includeAll"] and variables[name]["multi"], name
        # "All" matches a series without the label too (a single process has no worker).
        assert variables[name]["allValue"] == ".*", name
    panels = all_panels(dashboard)
    ids = [p["id"] for p in dashboard["panels"]] + [
        p["id"] for row in dashboard["panels"] if row["type"] == "row" for p in row["panels"]
    ]
    assert len(set(ids)) == len(ids)
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel
        assert panel["targets"], panel["title"]
        for query in panel["targets"]:
            assert query["datasource"]["uid"] == "${datasource}", panel["title"]
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == "${datasource}"


def test_the_grid_has_no_overlap() -> None:
    cells: set[tuple[int, int]] = set()
    for row, panels in rows_of(load_dashboard()):
        # A collapsed row's panels take their place only when it opens: check them apart.
        area = set() if row["collapsed"] else cells
        for panel in [row, *panels] if not row["collapsed"] else panels:
            box = panel["gridPos"]
            assert box["x"] + box["w"] <= 24, panel["title"]
            mine = {
                (x, y)
                for x in range(box["x"], box["x"] + box["w"])
                for y in range(box["y"], box["y"] + box["h"])
            }
            assert not mine & area, panel["title"]
            area |= mine


def test_an_overview_row_first_and_the_reference_rows_collapsed() -> None:
    rows = rows_of(load_dashboard())
    overview, panels = rows[0]
    assert overview["title"] == "Overview" and not overview["collapsed"]
    assert {p["type"] for p in panels} == {"stat"}
    titles = " | ".join(p["title"] for p in panels)
    for what in ("Ready", "Messages read", "Alerts firing", "dropped", "lag", "age", "Memory"):
        assert what in titles, what
    for row, _ in rows:
        assert row["collapsed"] == row["title"].startswith("Runbook"), row["title"]


def test_every_panel_shows_its_metrics_unit() -> None:
    for panel in all_panels(load_dashboard()):
        units = panel_units(panel)
        for query in panel["targets"]:
            expected = expected_unit(query["expr"])
            assert units[query["refId"]] == expected, (panel["title"], query["expr"])


def test_no_two_panels_outside_the_overview_share_a_query() -> None:
    seen: dict[str, str] = {}
    for row, panels in rows_of(load_dashboard())[1:]:
        for panel in panels:
            for query in panel["targets"]:
                expr = " ".join(query["expr"].split())
                assert expr not in seen, (panel["title"], seen.get(expr), expr)
                seen[expr] = f"{row['title']} / {panel['title']}"


def test_rates_follow_the_scrape_interval_outside_the_runbook() -> None:
    for row, panels in rows_of(load_dashboard()):
        if row["title"].startswith("Runbook"):
            continue  # the runbook's own expressions, word for word
        for panel in panels:
            for query in panel["targets"]:
                for window in RANGE.findall(query["expr"]):
                    # A REST weight budget is per minute: the weight used is read per minute.
                    per_minute = panel["title"].startswith("REST weight per minute")
                    allowed = {"$__rate_interval"} | ({"1m"} if per_minute else set())
                    assert window in allowed, (panel["title"], query["expr"])


@pytest.mark.parametrize("title", REQUIRED_PANELS)
def test_the_dashboard_has_each_panel_an_operator_looks_for(title: str) -> None:
    panels = [p for p in all_panels(load_dashboard()) if title in p["title"]]
    assert panels, f"no panel titled {title!r}"
    exprs = " ".join(query["expr"] for panel in panels for query in panel["targets"])
    for fragment in REQUIRED_PANELS[title]:
        assert fragment in exprs, (title, fragment)


def test_cpu_is_drawn_against_one_core_and_stale_drop_is_highlighted() -> None:
    panels = {p["title"]: p for p in all_panels(load_dashboard())}
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
    rows = rows_of(load_dashboard())
    runbook = [
        query["expr"]
        for row, panels in rows
        if row["title"].startswith("Runbook")
        for panel in panels
        for query in panel["targets"]
    ]
    assert len([row for row, _ in rows if row["title"].startswith("Runbook")]) == 5
    for expr in runbook_queries():
        wanted = expr.replace('service="alerts"', 'service="$service"')
        # Word for word; a timestamp is only scaled to Grafana's milliseconds.
        assert any(query in (wanted, wanted + " * 1000") for query in runbook), expr


def test_every_metric_the_grafana_files_name_is_exported() -> None:
    names = set(metric_units())
    texts = {
        "dashboard": " ".join(expr for _, expr in dashboard_queries(load_dashboard())),
        "rules": RULES.read_text(encoding="utf-8"),
        "runbook queries": RUNBOOK_QUERIES.read_text(encoding="utf-8"),
    }
    for where, text in texts.items():
        used = set(METRIC.findall(text))
        assert used, where
        assert used <= names, (where, sorted(used - names))


def test_the_rules_cover_the_alerts_end_with_a_comparison_and_link_their_runbook() -> None:
    blocks = rule_blocks()
    for alert, (fragment, comparison) in RULE_CONDITIONS.items():
        expr = blocks[alert]["expr"]
        assert fragment in expr and comparison in expr, (alert, expr)
    assert blocks["OraculoCpuSaturated"]["for"] == "5m"
    anchors = readme_anchors()
    for alert, block in blocks.items():
        assert without_comparison(block["expr"]), alert
        base, _, anchor = block["runbook_url"].partition("#")
        assert base == "README.md" and anchor == alert.lower(), (alert, block["runbook_url"])
        assert anchor in anchors, f"the README has no section {alert} (#{anchor})"


def test_the_runbook_base_can_be_set_for_a_forge() -> None:
    base = "https://forge.example/org/oraculo-trio/blob/main/README.md"
    text = build_module().rules_with_runbook_base(RULES.read_text(encoding="utf-8"), base)
    urls = re.findall(r"runbook_url: (\S+)", text)
    assert len(urls) == len(rule_blocks())
    assert all(url.startswith(base + "#oraculo") for url in urls), urls


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
