"""The demo as a newcomer runs it: a subprocess, alerts on stdout and in the store, real
/metrics, and the accounting (docs/architecture.md) term by term."""

from __future__ import annotations

import re
import signal
import tomllib
from pathlib import Path

import trio
from prometheus_client.parser import text_string_to_metric_families

from oraculo_trio.demo import demo_rules_path
from oraculo_trio.store.opening import open_store
from oraculo_trio.testing.net import http_get
from oraculo_trio.testing.processes import cli_process, parse_terms
from tests.observe.prometheus_testing import EXPECTED_PROMTOOL_FINDINGS, promtool_findings

ROOT = Path(__file__).resolve().parents[2]

ALERT_LINE = re.compile(
    r"^(?P<at>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) (?P<state>FIRING|RESOLVED) "
    r"(?P<severity>info|warning|critical) (?P<rule>\S+) (?P<symbol>(usdm:)?[A-Z]+) "
    r'(?P<value>\S+) (?P<message>".*")$'
)

CONTRACT = (
    "oraculo_event_loop_lag_seconds",
    "oraculo_event_loop_lag_spikes_total",
    "oraculo_alerts_queue_time_seconds",
    "oraculo_alerts_queue_time_latest_seconds",
    "oraculo_alerts_queue_depth",
    "oraculo_alerts_queue_dropped_total",
    "oraculo_db_insert_ms",
    "oraculo_cpu_process_cores",
    "oraculo_threads_total",
    "oraculo_thread_cpu_seconds",
    "oraculo_to_thread_executor_queue_depth",
    "oraculo_to_thread_executor_threads",
    "oraculo_to_thread_executor_max_workers",
    "oraculo_task_exceptions_total",
    "oraculo_last_exception_timestamp_seconds",
    "oraculo_dumps_total",
    "oraculo_feed_lag_seconds",
    "oraculo_feed_bad_frames_total",
)


async def test_demo_end_to_end(tmp_path: Path) -> None:
    database = tmp_path / "demo.db"
    args = [
        "demo",
        "--duration",
        "9",
        "--http-port",
        "0",
        "--database-url",
        f"sqlite:///{database}",
    ]
    with trio.fail_after(60):
        async with cli_process(args, name="demo", cwd=tmp_path) as demo:
            metrics_url = (await demo.stdout.until(r"metrics at (http://\S+/metrics)"))[1]
            _, port = await demo.wait_address()
            assert metrics_url == f"http://127.0.0.1:{port}/metrics"
            await demo.stdout.until(r"^\S+Z FIRING ")
            scrape = await http_get(metrics_url)
            returncode = await demo.wait()
            await demo.wait_output()
    lines = demo.stdout.lines
    assert returncode == 0, demo.log_tail()
    assert scrape.status == 200
    exposition = scrape.body

    # /metrics parses, carries the contract with service="alerts", and promtool agrees.
    families = {f.name: f for f in text_string_to_metric_families(exposition)}
    samples = {s.name for f in families.values() for s in f.samples}
    for name in CONTRACT:
        assert any(sample.startswith(name) for sample in samples), name
    assert all(s.labels.get("service") == "alerts" for f in families.values() for s in f.samples)
    assert sorted(promtool_findings(exposition)) == sorted(EXPECTED_PROMTOOL_FINDINGS)

    # Each notification is one line (no colour through a pipe), and is in the store once.
    assert not any("\x1b[" in line for line in lines)
    alert_lines = [
        ALERT_LINE.match(line) for line in lines if not line.startswith(("oraculo", "ACC"))
    ]
    assert all(alert_lines), [line for line in lines if not ALERT_LINE.match(line)]
    printed = [[m["state"].lower(), m["rule"], m["symbol"]] for m in alert_lines]
    assert ["firing", "btc-crosses-50k", "BTCUSDT"] in printed
    assert ["firing", "eth-wide-spread", "ETHUSDT"] in printed
    # The second market (USD-M futures, its symbols named by market) notifies too.
    assert any(state == "firing" and symbol == "usdm:BTCUSDT" for state, _, symbol in printed)
    assert any(
        m["severity"] == "critical" and m["message"] == '"SOLUSDT block trade of 1,065,890 USDT"'
        for m in alert_lines
        if m["rule"] == "sol-block-trade" and m["state"] == "FIRING"
    )
    # Rules of at least five different kinds fired and resolved (within these 9 s).
    kinds = {r["id"]: r["kind"] for r in tomllib.loads(demo_rules_path().read_text())["rule"]}
    fired = {kinds[rule] for state, rule, _ in printed if state == "firing"}
    resolved = {kinds[rule] for state, rule, _ in printed if state == "resolved"}
    assert len(fired & resolved) >= 5, sorted(fired & resolved)
    async with open_store(f"sqlite:///{database}", statement_timeout=5) as store:
        events = await store.fetch_alert_events()
    # pending (and back to inactive) are stored, never notified.
    stored = [
        [e["state"], e["rule_id"], e["symbol"]]
        for e in events
        if e["state"] not in ("pending", "inactive")
    ]
    assert sorted(printed) == sorted(stored)

    # The accounting, term by term, once the demo has drained.
    terms = parse_terms(next(line for line in lines if line.startswith("ACCOUNTING")))
    assert terms["sent"] == terms["received"] > 0
    assert terms["received"] == (
        terms["evaluated"]
        + terms["stale_drop"]
        + terms["conflated"]
        + terms["superseded"]
        + terms["overflow"]
        + terms["bad_frames"]
    )
    assert terms["unaccounted"] == 0
    # The scripted market is light: nothing should have been dropped at all.
    assert terms["evaluated"] == terms["received"]


async def test_demo_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    args = ["demo", "--http-port", "0", "--database-url", f"sqlite:///{tmp_path / 'd.db'}"]
    with trio.fail_after(30):
        async with cli_process(args, name="demo", cwd=ROOT) as demo:
            await demo.stdout.until(r"metrics at ")
            returncode = await demo.stop(signal.SIGINT)
    assert returncode == 0, demo.log_tail()
    assert any(line.startswith("ACCOUNTING ") for line in demo.stdout.lines)
