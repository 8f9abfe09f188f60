"""The operator's commands against a running demo: ``alerts list -o json`` agrees with
``alert_events``, and a silence with matchers mutes exactly the notifications it matches
(counted and recorded)."""

from __future__ import annotations

import json
import time
import tomllib
from pathlib import Path
from typing import Any

import trio
from prometheus_client.parser import text_string_to_metric_families

from oraculo_trio.demo import demo_rules_path
from oraculo_trio.dispatch.render import utc_iso
from oraculo_trio.store.opening import open_store
from oraculo_trio.testing.config import service_environ
from oraculo_trio.testing.processes import cli_argv, cli_process

SEVERITY = {r["id"]: r.get("severity", "warning") for r in tomllib.loads(
    demo_rules_path().read_text())["rule"]}  # fmt: skip


async def oraculo_json(*args: str) -> Any:
    result = await trio.run_process(
        cli_argv(*args, "-o", "json"), capture_stdout=True, capture_stderr=True,
        env=service_environ(), check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


def latest_per_alert(events: list[dict]) -> dict[tuple[str, str], dict]:
    latest: dict[tuple[str, str], dict] = {}
    for event in events:
        latest[event["rule_id"], event["symbol"]] = event
    return latest


async def test_alerts_list_and_a_silence_against_a_running_demo(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'demo.db'}"
    args = ["demo", "--duration", "14", "--database-url", database]
    with trio.fail_after(90):
        async with cli_process(args, name="demo", cwd=tmp_path) as demo:
            await demo.stdout.until(r"metrics at http://")
            host, port = await demo.wait_address()
            url = f"{host}:{port}"
            added = await oraculo_json(
                "silence", "add", "severity=critical", 'symbol=~"SOL.*"', "--for", "1h",
                "--comment", "SOL maintenance", "--url", url,
            )  # fmt: skip
            silenced_from = time.time()
            await demo.stdout.until(r" FIRING critical eth-wide-spread ")
            asked = time.time()
            listed = await oraculo_json("alerts", "list", "--url", url)
            # After the block trade (at 4 s of the script), which the silence mutes.
            await demo.stdout.until(r" RESOLVED critical eth-wide-spread ")
            exposition = await demo.metrics()
            scraped_at = time.time()
            async with open_store(database, statement_timeout=5) as store:
                events = await store.fetch_alert_events()
            assert await demo.wait() == 0, demo.log_tail()
        async with open_store(database, statement_timeout=5) as store:
            logs = await store.fetch_dispatch_logs()
            final_events = await store.fetch_alert_events()
    final = await oraculo_json("alerts", "list", "--state", "all", "--database-url", database)
    dropped_silenced = next(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "oraculo_dispatch_dropped_total" and sample.labels["reason"] == "silenced"
    )

    # The API's list is what alert_events says is firing (an alert that changed while we
    # asked may be either way).
    latest = latest_per_alert(events)
    moving = {key for key, event in latest.items() if event["at"] >= asked - 1.0}
    firing = {key for key, event in latest.items() if event["state"] == "firing"}
    shown = {(a["rule_id"], a["symbol"]) for a in listed}
    assert shown and shown - moving == firing - moving
    for alert in listed:
        if (alert["rule_id"], alert["symbol"]) in moving:
            continue
        event = latest[alert["rule_id"], alert["symbol"]]
        assert alert["last_change"] == utc_iso(event["at"])
        assert (alert["severity"], alert["message"]) == (event["severity"], event["message"])
    # Once stopped, the store's list agrees with the whole history, alert by alert.
    ended = latest_per_alert(final_events)
    assert {(a["rule_id"], a["symbol"]): a["state"] for a in final} == {
        key: event["state"] for key, event in ended.items()
    }

    # The silence muted exactly the critical SOL notifications after it was added.
    (silence,) = added
    assert silence["status"] == "active"
    after = [log for log in logs if log["at"] > silenced_from]
    muted = [log for log in after if log["status"] == "silenced"]
    expected = [
        log for log in after
        if SEVERITY[log["rule_id"]] == "critical" and log["symbol"].startswith("SOL")
    ]  # fmt: skip
    assert muted == expected and muted, after
    assert all(log["error"] == f"silence {silence['id']}" for log in muted)
    delivered = {(log["rule_id"], log["status"]) for log in after}
    assert ("eth-wide-spread", "delivered") in delivered
    assert ("sol-block-trade", "silenced") in delivered
    # ... and counted: oraculo_dispatch_dropped_total{reason="silenced"} when scraped.
    counted = [log for log in muted if log["at"] <= scraped_at]
    assert dropped_silenced == len(counted) > 0
