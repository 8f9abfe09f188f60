"""The verdict: thresholds, accounting, KPIs from samples, the summary and the artifacts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from oraculo_trio.errors import ConfigError
from oraculo_trio.loadtest.artifacts import metrics_document, write_json
from oraculo_trio.loadtest.bench import limited_by, summarize_profile
from oraculo_trio.loadtest.compare import compare, load_runs
from oraculo_trio.loadtest.html_report import render_html, series_charts
from oraculo_trio.loadtest.measure import Accounting, derive_series, measure
from oraculo_trio.loadtest.overload import render_overload
from oraculo_trio.loadtest.summary import render_summary
from oraculo_trio.loadtest.thresholds import check_thresholds, parse_threshold, thresholds_for

BOUNDS = [0.001, 0.01, 0.1, float("inf")]


@pytest.mark.parametrize(
    ("text", "metric", "op", "value"),
    [
        ("queue_time_p99 < 10ms", "queue_time_p99", "<", 0.01),
        ("lag_p95<0.5s", "lag_p95", "<", 0.5),
        ("lag_max <= 250us", "lag_max", "<=", 0.00025),
        ("db_upsert_p50 < 2ms", "db_upsert_p50", "<", 2.0),
        ("db_upsert_p95 < 0.05s", "db_upsert_p95", "<", 50.0),
        ("sent_rate_error <= 1%", "sent_rate_error", "<=", 0.01),
        ("unaccounted == 0", "unaccounted", "==", 0.0),
        ("processed_rate >= 25000", "processed_rate", ">=", 25000.0),
    ],
)
def test_thresholds_parse_into_the_kpi_unit(text: str, metric: str, op: str, value: float) -> None:
    threshold = parse_threshold(text)
    assert (threshold.metric, threshold.op) == (metric, op)
    assert threshold.value == pytest.approx(value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("queue_time_p99 10ms", "expected NAME OP VALUE"),
        ("nonsense < 1", "unknown KPI"),
        ("unaccounted < 5ms", "does not fit"),
        ("lag_p95 < 5%", "does not fit"),
    ],
)
def test_bad_thresholds_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_threshold(text)


def test_strict_and_user_thresholds_replace_the_defaults_of_their_kpi() -> None:
    defaults = {t.metric: t for t in thresholds_for(1500, False, ())}
    assert defaults["db_upsert_p50"].value == 20.0
    assert "queue_time_p99" not in defaults
    strict = {t.metric: t for t in thresholds_for(1500, True, ())}
    assert strict["db_upsert_p50"].value == 2.0
    assert strict["queue_time_p99"].value == pytest.approx(0.01)
    assert strict["service_cpu_cores"].value == pytest.approx(0.10)
    assert {t.metric: t for t in thresholds_for(3000, True, ())}["service_cpu_cores"].value == (
        pytest.approx(0.20)
    )
    user = thresholds_for(1500, True, ("queue_time_p99 < 1ms",))
    assert [t.value for t in user if t.metric == "queue_time_p99"] == [pytest.approx(0.001)]


def test_accounting_follows_the_design_formula() -> None:
    accounting = Accounting.from_totals(1000, 998, 990, {"stale_drop": 3, "conflated": 4}, bad=1)
    assert accounting.unaccounted == 1000 - (990 + 3 + 4 + 1)
    assert accounting.dropped == {
        "stale_drop": 3, "conflated": 4, "superseded": 0, "overflow": 0, "unsynced": 0,
        "duplicate": 0,
    }  # fmt: skip


def histogram(counts: list[float], total: float) -> dict[str, Any]:
    cumulative, running = [], 0.0
    for bound, count in zip(BOUNDS, counts, strict=True):
        running += count
        cumulative.append([bound, running])
    return {"buckets": cumulative, "sum": total, "count": running}


def sample(
    t: float,
    *,
    mark: str | None = None,
    sent: int,
    evaluated: int,
    queue: list[float],
    queue_sum: float,
    lag: float = 0.001,
    cpu: float = 0.0,
    db: list[float] | None = None,
    transitions: float = 0.0,
    conflated: float = 0.0,
) -> dict[str, Any]:
    empty = histogram([0, 0, 0, 0], 0.0)
    return {
        "t": t,
        "wall": 1000.0 + t,
        "phase": "measure",
        "mark": mark,
        "sent": sent,
        "generated": sent,
        "queued": 0,
        "generator_late_max": 0.0,
        "generator_cpu": 0.0,
        "service_cpu": cpu,
        "service_rss": 50_000_000,
        "received": {"depth": evaluated + conflated, "trade": 0},
        "evaluated": {"depth": evaluated, "trade": 0},
        "dropped": {"stale_drop": 0, "conflated": conflated, "superseded": 0, "overflow": 0},
        "bad_frames": 0,
        "queue_time": {"depth": histogram(queue, queue_sum), "trade": empty},
        # The age of what is evaluated: the queue time plus 2 ms of exchange and network.
        "evaluated_age": {
            "depth": histogram(queue, queue_sum + 0.002 * sum(queue)),
            "trade": empty,
        },
        "ready": True,
        "not_ready": [],
        "in_flight": None,
        "queue_time_latest": {"depth": 0.002, "trade": 0.0},
        "queue_depth_max": 3,
        "queue_depth_sum": 3,
        "lag": lag,
        "scheduler_delay": empty,
        "feed_lag": {"depth": 0.004, "trade": 0.0},
        "db_upsert": histogram(db, sum(db)) if db else histogram([0, 0, 0, 0], 0.0),
        "db_timeouts": 0,
        "db_errors": 0,
        "alert_transitions": transitions,
        "cpu_cores": 0.1,
        "reconnects": 0,
        "dispatch": {},
        "dispatch_dropped": 0,
    }


def run_samples(db: list[float] | None, transitions: float) -> tuple[list[dict], dict[str, int]]:
    samples = [
        sample(0, mark="start", sent=0, evaluated=0, queue=[0, 0, 0, 0], queue_sum=0),
        sample(1, mark="measure_start", sent=100, evaluated=100, queue=[100, 0, 0, 0],
               queue_sum=0.05),
        sample(2, sent=200, evaluated=200, queue=[150, 50, 0, 0], queue_sum=0.3, lag=0.004,
               cpu=0.05),
        sample(3, mark="measure_end", sent=300, evaluated=290, queue=[190, 90, 10, 0],
               queue_sum=1.2, lag=0.002, cpu=0.1, db=db, transitions=transitions),
        sample(4, mark="final", sent=300, evaluated=298, queue=[190, 98, 10, 0],
               queue_sum=1.3, cpu=0.1, db=db, transitions=transitions, conflated=2),
    ]  # fmt: skip
    return samples, {s["mark"]: i for i, s in enumerate(samples) if s["mark"]}


def test_kpis_come_from_the_measured_window() -> None:
    samples, marks = run_samples(db=[10, 8, 2, 0], transitions=20)
    done = {"expected": 200, "window_sent": 199, "lateness": {"measure": {"p99": 0.002}}}
    measured = measure(samples, marks, done, sent_final=300, duration=2.0)
    values = measured.values
    # Queue time: the histogram from measure_start to final (198 messages, 1.25 s in total).
    assert values["queue_time_mean"] == pytest.approx(1.25 / 198)
    # A percentile read from buckets is its bucket's upper bound, with the bucket as error.
    assert values["queue_time_p99"] == 0.1
    assert measured.precision["queue_time_p99"] == (0.01, 0.1)
    assert values["evaluated_age_p99"] == values["evaluated_age_p99_depth"] == 0.1
    assert values["evaluated_age_p99_trade"] is None
    # p99.9 of 198 messages, and any percentile of 3 one-second lag samples but the median:
    # too few samples, n/a.
    assert values["queue_time_p999"] is None
    assert values["lag_p95"] is None and values["lag_p99"] is None
    assert any("lag_p95 n/a: 3 one-second samples, it needs 20" in n for n in measured.notes)
    # Lag: the measured phase's per-second samples.
    assert values["lag_max"] == 0.004
    assert values["conflated"] == 2
    assert values["unaccounted"] == 300 - 298 - 2
    assert values["sent_rate_error"] == pytest.approx(0.005)
    assert values["service_cpu_cores"] == pytest.approx(0.05)
    assert values["processed_rate"] == pytest.approx(95.0)
    assert values["db_upsert_p50"] is not None
    assert values["generator_lateness_p99"] == 0.002
    checks = {
        c.threshold.metric: c for c in check_thresholds(thresholds_for(100, False, ()), measured)
    }
    assert not checks["conflated"].passed
    assert checks["unaccounted"].passed
    assert checks["sent_rate_error"].passed
    # lag_p95 is n/a, but every sample (the max, 4 ms) is under its 0.5 s limit.
    assert checks["lag_p95"].passed and checks["lag_p95"].value is None
    assert "lag_max holds it" in checks["lag_p95"].note


def test_drops_of_a_cold_start_before_the_load_are_not_the_loads() -> None:
    # Diff books shed 40 buffered diffs while waiting for the budget, before the load; the
    # load itself sheds 3. The accounting still covers the whole run.
    samples, marks = run_samples(db=None, transitions=0)
    for index, shed in ((0, 40), (1, 40), (2, 41), (3, 43), (4, 43)):
        samples[index]["dropped"]["overflow"] = shed
    measured = measure(samples, marks, None, sent_final=300, duration=2.0)
    assert measured.values["overflow"] == 3
    assert measured.accounting.dropped["overflow"] == 43


@pytest.mark.parametrize(("transitions", "passed"), [(0, True), (12, False)])
def test_no_db_samples_pass_only_when_no_alert_was_raised(transitions: float, passed: bool) -> None:
    samples, marks = run_samples(db=None, transitions=transitions)
    measured = measure(samples, marks, None, sent_final=300, duration=2.0)
    checks = [
        c for c in check_thresholds(thresholds_for(100, False, ()), measured)
        if c.threshold.metric.startswith("db_upsert")
    ]  # fmt: skip
    assert checks
    assert all(c.passed is passed and c.value is None for c in checks)
    assert ("no alert was raised" in checks[0].note) is passed


def test_summary_artifacts_and_compare(tmp_path: Path) -> None:
    samples, marks = run_samples(db=[10, 8, 2, 0], transitions=20)
    measured = measure(samples, marks, None, sent_final=300, duration=2.0)
    checks = check_thresholds(thresholds_for(100, False, ("queue_time_p99 < 1ms",)), measured)
    summary = render_summary("title", ["context"], checks, measured)
    assert "    ✗ queue_time_p99" in summary
    assert "100.00ms (in 10.00ms-100.00ms)" in summary
    assert "    ✓ lag_p95" in summary
    assert "unaccounted=0" in summary
    # No generator figures here: sent_rate_error has no data, and fails.
    verdict = (
        "FAIL: 10/13 thresholds hold; failed: conflated == 0, sent_rate_error <= 1%, "
        "queue_time_p99 < 1ms"
    )
    assert summary.splitlines()[0].strip() == verdict
    assert summary.rstrip().endswith(verdict)
    series = derive_series(samples)
    document = metrics_document(
        config={"stream": "depth", "rate": 100}, env={}, checks=checks, measured=measured,
        series=series,
    )  # fmt: skip
    write_json(tmp_path / "metrics.json", {**document, "nan": float("nan")})
    loaded = json.loads((tmp_path / "metrics.json").read_text())
    assert loaded["nan"] is None
    page = render_html(document, summary)
    # Five charts over time, and one percentile plot for the only stream with data.
    assert page.count("<svg") == len(series_charts(series)) + 1 == 6
    assert page.index('id="verdict"') < page.index("<pre>")
    assert "<script" not in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    runs = load_runs(tmp_path)
    table = compare(runs, runs, ("before", "after"))
    assert "queue_time_p99" in table
    assert "+0.0%" in table
    assert "{" not in table, "the accounting is a plain line, not a Python dict"


def test_profile_summary_from_py_spy_raw_stacks(tmp_path: Path) -> None:
    raw = tmp_path / "profile.txt"
    raw.write_text(
        "run (oraculo_trio/pipeline/feed.py:10);decode (oraculo_trio/feeds/binance.py:5) 30\n"
        "run (oraculo_trio/pipeline/feed.py:10);get_message (trio_websocket/_impl.py:9) 60\n"
        "consume (oraculo_trio/pipeline/shards.py:7) 10\n"
    )
    summary = summarize_profile(raw)
    assert summary["samples"] == 100
    assert summary["self_by_function"][0][:2] == ["get_message (trio_websocket/_impl.py)", 60]
    assert summary["total_by_function"][0][:2] == ["run (pipeline/feed.py)", 90]


def overload_stage(**figures: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        "rate": 100_000, "saturation": 50_000, "processed_rate": 72_000,
        "evaluated_age_p99": {"depth": {"whole": 15.0, "windows": []}},
        "feed_lag_max": 10.1, "unaccounted": 0, "unaccounted_max_at_scrape": 0,
        "readiness": {"samples": 31, "not_ready_samples": 19, "reasons": {
            "feed_behind": {"samples": 19, "detail": "5.1 s behind the exchange"}}},
        "dropped": {"conflated": 0, "overflow": 0, "stale_drop": 1_303_178},
        "rss_growth_mb": 0.6, "verdict": "fail", "failed": ["evaluated_age_p99 < 1s"],
        "generator_lateness_p99": 9.9, "generator_lateness_max": 9.9,
        "generator_cpu_cores": 0.98, "service_cpu_cores": 0.70,
    }  # fmt: skip
    return result | figures


def test_an_overload_stage_names_a_generator_that_could_not_keep_its_rate() -> None:
    lines = "\n".join(render_overload(overload_stage()))
    assert "feed_behind in 19 samples (5.1 s behind the exchange)" in lines
    assert "the generator could not publish this rate" in lines
    assert "0.98 cores" in lines and "the service used 0.70 cores" in lines
    on_time = "\n".join(render_overload(overload_stage(generator_lateness_p99=0.05)))
    assert "the generator could not" not in on_time
    idle_generator = overload_stage(generator_cpu_cores=0.5)
    assert "the generator could not" not in "\n".join(render_overload(idle_generator))


def test_a_failed_step_says_who_could_not_keep_up() -> None:
    step = {
        "pass": False, "failed": ["sent_rate_error <= 1%"], "exchange_queued_max": 16_384,
        "generator_lateness_p99": 2.0, "generator_cpu_cores": 0.5, "service_cpu_cores": 1.0,
    }  # fmt: skip
    assert limited_by(step) == "the service: 16,384 frames backed up in the exchange"
    busy_generator = limited_by(step | {"generator_cpu_cores": 0.97})
    assert busy_generator.startswith("the generator, not the service: 16,384 frames")
    assert limited_by(step | {"failed": ["queue_time_p99 <= 100ms"]}) == "the service"
