"""The HTTP endpoint (/metrics, /healthz, /readyz) and the Readiness it reports."""

from __future__ import annotations

import json
import logging

import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from oraculo_trio.errors import StoreUnavailable
from oraculo_trio.loadtest.sampling import readiness as load_readiness
from oraculo_trio.observe.health import FeedAge, Readiness, run_feed_age_watch, run_store_check
from oraculo_trio.observe.http import METRICS_CONTENT_TYPE, serve_http
from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.observe.report import health_report
from oraculo_trio.testing.net import fetch


async def test_metrics_parse_with_the_right_content_type() -> None:
    metrics = ServiceMetrics()
    metrics.task_exceptions.labels("decoder").inc()
    with trio.fail_after(10), serve_http("127.0.0.1", 0, metrics) as (host, port):
        response = await trio.to_thread.run_sync(fetch, f"http://{host}:{port}/metrics")
    assert response.status == 200
    assert response.content_type == METRICS_CONTENT_TYPE
    assert METRICS_CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"
    families = {family.name: family for family in text_string_to_metric_families(response.body)}
    dumps = families["oraculo_dumps"]
    assert dumps.type == "counter"
    assert [(s.name, s.labels, s.value) for s in dumps.samples if s.name.endswith("_total")] == [
        ("oraculo_dumps_total", {"service": "alerts", "reason": "event_loop_lag"}, 0.0)
    ]
    exceptions = {
        s.labels["task"]: s.value
        for s in families["oraculo_task_exceptions"].samples
        if s.name == "oraculo_task_exceptions_total"
    }
    assert exceptions["decoder"] == 1.0


async def test_readyz_names_what_is_not_ready_then_answers_200() -> None:
    metrics = ServiceMetrics()
    readiness = Readiness(metrics, components=("feed", "store", "rules"))
    readiness.set("feed", True)
    readiness.set("rules", True)
    readiness.set("store", False, "connecting to postgresql://db/alerts")
    with trio.fail_after(10), serve_http("127.0.0.1", 0, metrics, readiness) as (host, port):
        url = f"http://{host}:{port}/readyz"
        not_ready = await trio.to_thread.run_sync(fetch, url)
        readiness.set("store", True)
        ready = await trio.to_thread.run_sync(fetch, url)

    assert not_ready.status == 503
    assert not_ready.content_type == "application/json"
    body = json.loads(not_ready.body)
    assert body["ready"] is False
    assert body["not_ready"] == ["store"]
    assert body["components"]["store"] == {
        "ok": False,
        "detail": "connecting to postgresql://db/alerts",
    }
    assert body["reasons"] == [
        {
            "reason": "store_down",
            "component": "store",
            "detail": "connecting to postgresql://db/alerts",
        }
    ]
    assert ready.status == 200
    assert json.loads(ready.body)["not_ready"] == []
    assert json.loads(ready.body)["reasons"] == []


async def test_feed_behind_while_what_is_evaluated_is_late_then_ready_again(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="oraculo_trio.observe.health")
    metrics = ServiceMetrics()
    readiness = Readiness(metrics)
    ages = FeedAge()
    async with trio.open_nursery() as nursery:
        await nursery.start(run_feed_age_watch, ages, readiness, 5.0)
        ages.observe("depth", 0.2)
        ages.observe("trade", 1.0)
        await trio.sleep(1.5)
        assert readiness.ready
        ages.observe("depth", 0.3)
        ages.observe("trade", 7.25)
        await trio.sleep(1.0)
        assert readiness.reasons() == [
            {
                "reason": "feed_behind",
                "component": "feed_lag",
                "detail": "7.2 s behind the exchange (pipeline.max_feed_lag = 5 s)",
                "lag_seconds": 7.25,
                "streams": {"depth": 0.3, "trade": 7.25},
            }
        ]
        assert metrics.inner.get_sample_value("oraculo_ready") == 0.0
        # Nothing evaluated: the verdict stays (a stuck pipeline does not become ready).
        await trio.sleep(3.0)
        assert not readiness.ready
        ages.observe("trade", 0.5)
        await trio.sleep(1.0)
        assert readiness.ready
        nursery.cancel_scope.cancel()
    assert "feed behind" in caplog.text and "feed caught up" in caplog.text


async def test_healthz_without_a_watchdog_and_unknown_paths() -> None:
    with trio.fail_after(10), serve_http("127.0.0.1", 0, ServiceMetrics()) as (host, port):
        health = await trio.to_thread.run_sync(fetch, f"http://{host}:{port}/healthz?verbose=1")
        missing = await trio.to_thread.run_sync(fetch, f"http://{host}:{port}/nope")
        ready = await trio.to_thread.run_sync(fetch, f"http://{host}:{port}/readyz")
    assert (health.status, health.body) == (200, "ok\n")
    assert missing.status == 404
    assert ready.status == 200  # no Readiness: nothing to wait for


def test_readiness_tracks_components_and_the_ready_gauge() -> None:
    metrics = ServiceMetrics()
    ready = lambda: metrics.inner.get_sample_value("oraculo_ready")  # noqa: E731

    readiness = Readiness(metrics)
    assert readiness.snapshot() == (True, {})
    assert ready() == 1.0
    readiness.register("feed")
    assert readiness.snapshot() == (False, {"feed": {"ok": False, "detail": "starting"}})
    assert ready() == 0.0
    readiness.set("feed", True)
    assert readiness.ready
    assert ready() == 1.0
    readiness.register("feed")  # registering again keeps the state
    assert readiness.ready
    readiness.set("feed", False, "reconnecting")
    assert ready() == 0.0
    with pytest.raises(KeyError, match="unknown readiness component 'fede'"):
        readiness.set("fede", True)


async def test_store_check_follows_the_ping(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="oraculo_trio.observe.health")
    readiness = Readiness(ServiceMetrics())
    answers = iter([None, StoreUnavailable("connection refused"), StoreUnavailable("again"), None])

    async def ping() -> None:
        answer = next(answers)
        if answer is not None:
            raise answer

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(run_store_check, ping, readiness, 5.0)
            seen = [readiness.snapshot()[1]["store"]]
            await trio.sleep(1.0)  # half-way between pings from now on
            for _ in range(3):
                await trio.sleep(5.0)
                seen.append(readiness.snapshot()[1]["store"])
            nursery.cancel_scope.cancel()
    assert seen == [
        {"ok": True, "detail": ""},
        {"ok": False, "detail": "ping failed: connection refused"},
        {"ok": False, "detail": "ping failed: again"},
        {"ok": True, "detail": ""},
    ]
    # Only the changes are logged.
    messages = [r.getMessage() for r in caplog.records if r.name == "oraculo_trio.observe.health"]
    assert messages == ["store not reachable: connection refused", "store reachable again"]


async def test_health_report_summarises_the_writes_not_the_pings() -> None:
    metrics = ServiceMetrics()
    for _ in range(100):
        metrics.db_insert_ms["ping"].observe(0.05)
    for _ in range(10):
        metrics.db_insert_ms["upsert_rule_alert"].observe(3.0)
    with trio.fail_after(10), serve_http("127.0.0.1", 0, metrics) as (host, port):
        healthy, text = await trio.to_thread.run_sync(health_report, f"http://{host}:{port}")
    assert healthy
    [line] = [line for line in text.splitlines() if "db insert" in line]
    assert line == "  db insert: p50 3.50 ms, p95 4.85 ms"  # interpolated in the 2-5 ms bucket


async def test_the_load_tool_reads_readyz_by_reason_code() -> None:
    # The load tool's samples name what /readyz answers (the reason codes a user pages on),
    # not our component names; read from the real endpoint, not a hand-written body.
    metrics = ServiceMetrics()
    readiness = Readiness(metrics, components=("feed", "store"))
    readiness.set("feed", True)
    readiness.set("store", True)
    ages = FeedAge()
    with trio.fail_after(30), serve_http("127.0.0.1", 0, metrics, readiness) as (host, port):
        url = f"http://{host}:{port}/readyz"
        async with trio.open_nursery() as nursery:
            await nursery.start(run_feed_age_watch, ages, readiness, 5.0)
            while readiness.ready:
                ages.observe("depth", 9.5)
                await trio.sleep(0.05)
            behind = await trio.to_thread.run_sync(fetch, url)
            nursery.cancel_scope.cancel()
        readiness.set("feed_lag", True)
        ready = await trio.to_thread.run_sync(fetch, url)
    sample = load_readiness(behind.status, behind.body)
    assert sample["ready"] is False
    assert sample["not_ready"] == ["feed_behind"]
    assert sample["not_ready_detail"]["feed_behind"].startswith("9.5 s behind the exchange")
    assert load_readiness(ready.status, ready.body) == {
        "ready": True,
        "not_ready": [],
        "not_ready_detail": {},
    }
