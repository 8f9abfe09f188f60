"""The /api/v1 API of a running service: answers, writes and their token, retention; and
schemathesis against the live endpoints (docs/openapi.yaml) with a bounded number of
examples."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from oraculo_trio.api.server import Api, ApiSources
from oraculo_trio.testing.config import service_environ

ROOT = Path(__file__).resolve().parents[2]
OPENAPI = ROOT / "docs" / "openapi.yaml"
# Its command line, with this interpreter (its package has no __main__).
SCHEMATHESIS = (
    sys.executable,
    "-c",
    "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())",
)


@pytest.fixture
def alert_rules() -> list[dict[str, Any]]:
    return [
        {"id": "big", "kind": "large_trade", "params": {"notional": 1000}, "severity": "critical",
         "trigger": "every_time", "labels": {"desk": "crypto"}},
        {"id": "above", "kind": "greater_than", "symbols": ["ETHUSDT"], "params": {"level": 10}},
    ]  # fmt: skip


@pytest.fixture
def alert_service_config() -> dict[str, Any]:
    # Retention of a second: the test sees history pruned while it runs.
    return {"database": {"retention": 1.0, "prune_interval": 0.2}}


def base_url(alert_service: Any) -> str:
    host, port = alert_service.handle.http_address
    return f"http://{host}:{port}/api/v1"


async def test_alerts_silences_rules_and_status(alert_service, market_script) -> None:
    async with httpx.AsyncClient(base_url=base_url(alert_service), timeout=10) as api:
        with trio.fail_after(20):
            market_script.trade("ETHUSDT", 20.0, qty=1)  # above: firing (and stays)
            await alert_service.wait_for_alert("above", "ETHUSDT", "firing")
            alerts = (await api.get("/alerts")).json()["alerts"]
            assert [(a["rule_id"], a["symbol"], a["state"]) for a in alerts] == [
                ("above", "ETHUSDT", "firing")
            ]
            assert alerts[0]["message"] == "ETHUSDT above 10 at 20" and alerts[0]["value"] == 20
            assert (await api.get("/alerts", params={"severity": "critical"})).json() == {
                "alerts": []
            }
            bad = await api.get("/alerts", params={"state": "fiering"})
            assert bad.status_code == 400
            assert "did you mean 'firing'?" in bad.json()["error"]

            body = {"matchers": ["severity=critical", 'symbol=~"BTC.*"'], "duration": "1h",
                    "comment": "test", "created_by": "me"}  # fmt: skip
            added = await api.post("/silences", json=body)
            assert added.status_code == 201, added.text
            silence = added.json()["silence"]
            assert added.json()["warnings"] == []
            # In force at once: the dispatcher's silences were refreshed by the write.
            market_script.trade("BTCUSDT", 100.0, qty=20)
            market_script.trade("ETHUSDT", 100.0, qty=20)
            await alert_service.wait_for_alert("big", "BTCUSDT", "firing")
            notified = await alert_service.notifications.wait_for(3)
            assert {(t.rule_id, t.symbol) for t in notified} >= {("big", "ETHUSDT")}
            assert ("big", "BTCUSDT") not in {(t.rule_id, t.symbol) for t in notified}

            nothing = {**body, "matchers": ["rule=nope"]}
            warned = (await api.post("/silences", json=nothing)).json()
            assert "matches no alert" in warned["warnings"][0]
            assert (await api.delete(f"/silences/{warned['silence']['id']}")).status_code == 200
            assert (await api.delete(f"/silences/{warned['silence']['id']}")).status_code == 404
            listed = (await api.get("/silences")).json()["silences"]
            assert [s["id"] for s in listed] == [silence["id"]]

            rules = (await api.get("/rules")).json()["rules"]
            assert [r["id"] for r in rules] == ["big", "above"]
            status = (await api.get("/status")).json()
            assert status["rules"] == 2 and status["alerts"]["firing"] >= 1
            assert status["silences_active"] == 1 and status["store"] == "sqlite"


async def test_retention_prunes_history_and_keeps_every_alert_state(
    alert_service, market_script
) -> None:
    with trio.fail_after(20):
        market_script.trade("BTCUSDT", 100.0, qty=20)
        await alert_service.wait_for_alert("big", "BTCUSDT", "resolved")
        store = alert_service.store
        # Older than a second, the transitions and their delivery records go...
        while await store.fetch_alert_events() or await store.fetch_dispatch_logs():  # noqa: ASYNC110
            await trio.sleep(0.05)
    # ... and the alert's latest state stays.
    (row,) = [r for r in await store.load_alert_states() if r.rule_id == "big"]
    assert (row.symbol, row.state, row.fire_count) == ("BTCUSDT", "resolved", 1)
    metrics = alert_service.handle.metrics.inner
    pruned = metrics.get_sample_value("oraculo_store_pruned_rows_total", {"table": "alert_events"})
    assert pruned >= 2


async def test_schemathesis_finds_no_server_error(alert_service, market_script, tmp_path) -> None:
    market_script.trade("ETHUSDT", 20.0, qty=1)
    await alert_service.wait_for_alert("above", "ETHUSDT", "firing")
    host, port = alert_service.handle.http_address
    argv = [
        *SCHEMATHESIS, "run", str(OPENAPI),
        "--url", f"http://{host}:{port}", "--max-examples", "20", "--seed", "7",
        "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_schema_conformance", "--phases", "examples,coverage,fuzzing",
        "--request-timeout", "10", "--max-time", "30", "--workers", "1",
        "--report-dir", str(tmp_path),
    ]  # fmt: skip
    started = time.monotonic()
    with trio.fail_after(90):
        result = await trio.run_process(
            argv, capture_stdout=True, capture_stderr=True, check=False, env=service_environ()
        )
    output = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, output[-6000:]
    assert time.monotonic() - started < 60


@pytest.mark.parametrize(
    ("host", "token", "header", "status"),
    [
        ("127.0.0.1", "", None, None),  # loopback, no token: writes accepted
        ("0.0.0.0", "", None, 403),  # reachable from elsewhere, no token: refused
        ("0.0.0.0", "s3cret", None, 401),
        ("0.0.0.0", "s3cret", "Bearer wrong", 401),
        ("0.0.0.0", "s3cret", "Bearer s3cret", None),
        ("127.0.0.1", "s3cret", None, 401),  # a token set is always required
    ],
)
async def test_writes_need_the_token_off_loopback(
    host: str, token: str, header: str | None, status: int | None
) -> None:
    api = Api(ApiSources(), host=host, token=token)
    headers = {"Authorization": header} if header else {}

    def write() -> tuple[int, str, bytes]:
        return api.respond("DELETE", "/api/v1/silences/1", headers, b"")

    answer = await trio.to_thread.run_sync(write)
    # Past the token, the (absent) store answers 503.
    assert answer[0] == (503 if status is None else status), answer
    assert (await trio.to_thread.run_sync(api.respond, "GET", "/api/v1/nope", {}, b""))[0] == 404
