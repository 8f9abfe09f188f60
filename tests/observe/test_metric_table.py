"""The metric table and the metric sets built from it: what a scrape shows is what a row says."""

from __future__ import annotations

import platform
import time
from typing import Any

import pytest
import trio
from prometheus_client import REGISTRY

import oraculo_trio
from oraculo_trio.core.events import STREAMS
from oraculo_trio.observe.metric_labels import (
    DEPTH_ONLY_DROP_REASONS,
    DROP_REASONS,
    TRADE_ONLY_DROP_REASONS,
)
from oraculo_trio.observe.metric_spec import COUNT, COUNTER, GAUGE, HISTOGRAM, SECONDS, MetricSpec
from oraculo_trio.observe.metric_table import SERVICE_METRICS
from oraculo_trio.observe.metrics import DB_OPS, MetricSet, ServiceMetrics, SupervisorMetrics
from oraculo_trio.observe.supervisor_table import SUPERVISOR_METRICS

TABLES = {"service": SERVICE_METRICS, "supervisor": SUPERVISOR_METRICS}


def build(table: str) -> MetricSet:
    if table == "service":
        metrics: MetricSet = ServiceMetrics(shards=3, tasks=("decoder",))
        metrics.register_sink("webhook")
        return metrics
    return SupervisorMetrics(workers=2)


def families(metrics: MetricSet) -> dict[str, Any]:
    return {family.name: family for family in metrics.inner.collect()}


def base_name(spec: MetricSpec) -> str:
    # prometheus_client names a counter's family without the ``_total`` of its samples.
    return spec.name.removesuffix("_total") if spec.type == COUNTER else spec.name


@pytest.mark.parametrize("table", sorted(TABLES))
def test_a_scrape_shows_each_row_with_its_name_type_help_and_labels(table: str) -> None:
    specs = TABLES[table]
    metrics = build(table)
    found = families(metrics)
    assert list(found) == [base_name(spec) for spec in specs]
    for spec in specs:
        family = found[base_name(spec)]
        assert (family.type, family.documentation) == (spec.type, spec.help)
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == set(spec.labels), sample


@pytest.mark.parametrize("table", sorted(TABLES))
def test_every_initial_series_exists_at_zero_from_start_up(table: str) -> None:
    metrics = build(table)
    found = families(metrics)
    for spec in TABLES[table]:
        samples = found[base_name(spec)].samples
        if spec.collected or spec.name == "oraculo_build_info":
            continue  # what the process is and holds: tested below
        if spec.labels and not spec.initial:
            assert samples == [], spec.name
        else:
            assert samples, spec.name
            values = {sample.value for sample in samples if not sample.name.endswith("_created")}
            # The supervisor sets oraculo_workers to its worker count as it starts.
            assert values == ({2.0} if spec.name == "oraculo_workers" else {0.0}), spec.name


def test_names_and_attributes_are_unique_across_both_tables() -> None:
    specs = SERVICE_METRICS + SUPERVISOR_METRICS
    assert len({spec.name for spec in specs}) == len(specs)
    assert len({spec.attribute for spec in specs}) == len(specs)


def test_children_are_bound_once_and_keyed_by_the_values_given() -> None:
    metrics = ServiceMetrics(shards=2)
    # A trade is never conflated, superseded, shed or unsynced: no series for those.
    assert set(metrics.dropped) == {(s, reason) for s in STREAMS for reason in DROP_REASONS} - {
        ("trade", reason) for reason in DEPTH_ONLY_DROP_REASONS
    } - {("depth", reason) for reason in TRADE_ONLY_DROP_REASONS}
    assert set(metrics.queue_depth) == {(s, shard) for s in STREAMS for shard in (0, 1)}
    assert set(metrics.received) == set(STREAMS)
    metrics.dropped["depth", "overflow"].inc(3)
    metrics.queue_depth["trade", 1].set(7)
    metrics.queue_time["depth"].observe(0.01)
    sample = metrics.inner.get_sample_value
    assert sample("oraculo_alerts_queue_dropped_total", {"stream": "depth", "reason": "overflow"})
    assert sample("oraculo_alerts_queue_depth", {"stream": "trade", "shard": "1"}) == 7
    assert sample("oraculo_alerts_queue_time_seconds_count", {"stream": "depth"}) == 1


def test_a_registered_sink_and_limiter_get_their_series() -> None:
    metrics = ServiceMetrics(limiters=())
    assert metrics.dispatch_queue_depth == {}
    metrics.register_sink("log")
    metrics.register_limiter("store")
    sample = metrics.inner.get_sample_value
    assert set(metrics.dispatch_queue_depth) == set(metrics.dispatch_circuit_open) == {"log"}
    for outcome in ("delivered", "failed"):
        assert sample("oraculo_dispatch_attempts_total", {"sink": "log", "outcome": outcome}) == 0
    assert sample("oraculo_to_thread_executor_max_workers", {"limiter": "store"}) == 0


def test_registering_a_limiter_twice_creates_its_series_once() -> None:
    # process_stats registers every limiter again when the supervisor restarts it.
    metrics = ServiceMetrics(limiters=("default",))
    metrics.register_limiter("store")
    metrics.register_limiter("store")
    limiters = [
        sample.labels["limiter"]
        for family in metrics.inner.collect()
        if family.name == "oraculo_to_thread_executor_threads"
        for sample in family.samples
    ]
    assert limiters == ["default", "store"]


def test_no_series_is_created_that_no_code_path_moves() -> None:
    metrics = ServiceMetrics()
    found = families(metrics)

    def values(name: str, label: str) -> set[str]:
        return {sample.labels[label] for sample in found[name].samples}

    # Only the statements that write rows count rows; the feed's stages are oraculo_feed_*.
    assert values("oraculo_db_rows", "op") == set(DB_OPS) - {"ping"}
    assert values("oraculo_stage_messages_in", "stage") == {"depth", "trade", "store", "dispatch"}
    assert values("oraculo_batch_size", "stage") == {"depth", "trade", "store"}
    assert values("oraculo_batch_cpu_seconds", "stage") == {"depth", "trade"}
    # The dispatch channel drops when full (dispatch_dropped{overflow}): no producer waits.
    assert values("oraculo_backpressure_waits", "channel") == {"trade_shard", "store"}


def test_the_supervisor_counts_its_workers() -> None:
    metrics = SupervisorMetrics(workers=3)
    assert metrics.inner.get_sample_value("oraculo_workers") == 3
    assert set(metrics.worker_up) == {"0", "1", "2"}


def test_every_sample_carries_the_constant_labels_and_nothing_is_global() -> None:
    metrics = ServiceMetrics(constant_labels={"service": "x", "worker": "1"})
    assert REGISTRY.get_sample_value("oraculo_db_up") is None
    for family in metrics.registry.collect():
        for sample in family.samples:
            assert (sample.labels["service"], sample.labels["worker"]) == ("x", "1")


@pytest.mark.parametrize(
    ("row", "complaint"),
    [
        ({"type": "summary"}, "type"),
        ({"unit": "furlongs"}, "unit"),
        ({"type": COUNTER, "name": "oraculo_x"}, "_total"),
        ({"type": HISTOGRAM}, "buckets"),
        ({"buckets": (1.0,)}, "buckets"),
        ({"children": True}, "children"),
        ({"labels": ("a", "b"), "initial": (("1",),)}, "initial"),
        (
            {"labels": ("a", "b"), "initial": (("1",), ("2",)), "impossible": (("1",),)},
            "impossible",
        ),
    ],
)
def test_a_bad_row_is_refused_with_its_name(row: dict[str, Any], complaint: str) -> None:
    fields = {"attribute": "x", "name": "oraculo_x", "type": GAUGE, "unit": COUNT, "help": "X."}
    with pytest.raises(ValueError, match=f"oraculo_x.*{complaint}"):
        MetricSpec(**(fields | row))


def test_every_row_states_a_unit() -> None:
    by_name = {spec.name: spec.unit for spec in SERVICE_METRICS}
    assert by_name["oraculo_db_insert_ms"] == "milliseconds"
    assert by_name["oraculo_alerts_queue_time_seconds"] == SECONDS


def test_the_process_says_what_it_runs_and_holds_and_no_created_series() -> None:
    text = ServiceMetrics().exposition().decode()
    samples = {
        line.split("{")[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if not line.startswith("#")
    }
    assert samples["process_resident_memory_bytes"] > 1e6
    assert samples["process_virtual_memory_bytes"] >= samples["process_resident_memory_bytes"]
    assert samples["process_cpu_seconds_total"] > 0
    assert samples["process_open_fds"] >= 3
    assert samples["process_max_fds"] >= samples["process_open_fds"]
    assert time.time() - 3600 * 24 < samples["process_start_time_seconds"] <= time.time()
    assert samples["oraculo_build_info"] == 1
    [info] = [line for line in text.splitlines() if line.startswith("oraculo_build_info{")]
    assert f'version="{oraculo_trio.__version__}"' in info
    assert f'python="{platform.python_version()}"' in info
    assert f'trio="{trio.__version__}"' in info
    assert "_created" not in text
