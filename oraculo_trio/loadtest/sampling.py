"""Sampling a run: the service's ``/metrics``, ``/readyz`` and /proc once a second, the
generator's events, and Prometheus when it scrapes the service too.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from oraculo_trio.core.events import STREAMS
from oraculo_trio.loadtest.errors import LoadTestError
from oraculo_trio.loadtest.processes import process_cpu, process_rss
from oraculo_trio.observe.metric_table import SERVICE_METRICS
from oraculo_trio.observe.metrics import BAD_FRAME_REASONS, DROP_REASONS
from oraculo_trio.observe.report import histogram_buckets, histogram_quantile, parse_samples
from oraculo_trio.testing.processes import ChildProcess, ServiceProcess, child_process

IN_FLIGHT = tuple(spec.name for spec in SERVICE_METRICS if "in_flight" in spec.name)
"""The gauges of what the service holds between read and evaluated (read-ahead, channels,
buffers), where it exports them: the last term of the accounting at every scrape."""


def _total(samples: dict, name: str, **match: str) -> float:
    return sum(
        value
        for labels, value in samples.get(name, [])
        if all(labels.get(k) == v for k, v in match.items())
    )


def _histogram(samples: dict, name: str, match: dict[str, str] | None = None) -> dict[str, Any]:
    buckets = histogram_buckets(samples, name, match)
    return {
        "buckets": [[bound, count] for bound, count in buckets],
        "sum": _total(samples, name + "_sum", **(match or {})),
        "count": _total(samples, name + "_count", **(match or {})),
    }


def extract_metrics(text: str) -> dict[str, Any]:
    """The numbers a load test needs from one ``/metrics`` exposition."""
    samples = parse_samples(text)
    depths = [value for _, value in samples.get("oraculo_alerts_queue_depth", [])]
    dropped = {
        reason: _total(samples, "oraculo_alerts_queue_dropped_total", reason=reason)
        for reason in DROP_REASONS
    }
    dispatch: dict[str, float] = {}
    for labels, value in samples.get("oraculo_dispatch_attempts_total", []):
        dispatch[f"{labels.get('sink')}/{labels.get('outcome')}"] = value

    def per_stream(name: str) -> dict[str, float]:
        return {stream: _total(samples, name, stream=stream) for stream in STREAMS}

    def histograms(name: str) -> dict[str, dict[str, Any]]:
        return {stream: _histogram(samples, name, {"stream": stream}) for stream in STREAMS}

    bad = "oraculo_feed_bad_frames_total"
    in_flight = [_total(samples, name) for name in IN_FLIGHT if name in samples]
    return {
        "received": per_stream("oraculo_feed_messages_received_total"),
        "backfilled": _total(samples, "oraculo_feed_trades_backfilled_total"),
        "in_flight": sum(in_flight) if in_flight else None,
        "evaluated_age": histograms("oraculo_alerts_evaluated_age_seconds"),
        "evaluated": per_stream("oraculo_alerts_messages_evaluated_total"),
        "dropped": dropped,
        "bad_frames": sum(_total(samples, bad, reason=r) for r in BAD_FRAME_REASONS),
        "queue_time": histograms("oraculo_alerts_queue_time_seconds"),
        "queue_time_latest": per_stream("oraculo_alerts_queue_time_latest_seconds"),
        "queue_depth_max": max(depths, default=0.0),
        "queue_depth_sum": sum(depths),
        "lag": _total(samples, "oraculo_event_loop_lag_seconds"),
        "scheduler_delay": _histogram(samples, "oraculo_scheduler_delay_seconds"),
        "feed_lag": per_stream("oraculo_feed_lag_seconds"),
        "db_upsert": _histogram(samples, "oraculo_db_insert_ms", {"op": "upsert_rule_alert"}),
        "db_timeouts": _total(samples, "oraculo_db_timeouts_total"),
        "db_errors": _total(samples, "oraculo_db_errors_total"),
        "alert_transitions": _total(samples, "oraculo_alert_transitions_total"),
        "cpu_cores": _total(samples, "oraculo_cpu_process_cores"),
        "reconnects": _total(samples, "oraculo_feed_reconnects_total"),
        "dispatch": dispatch,
        "dispatch_dropped": _total(samples, "oraculo_dispatch_dropped_total"),
        "book": book_section(samples),
    }


def book_section(
    samples: Mapping[str, Sequence[tuple[Mapping[str, str], float]]],
) -> dict[str, Any]:
    """The ``book`` section of a load test's metrics.json, from the service's ``/metrics``.

    Args:
        samples: ``oraculo_trio.observe.report.parse_samples`` of an exposition.

    Returns:
        ``{"resyncs": int, "resyncs_by_reason": {reason: int}, "resync_seconds": {"p50",
        "p99"}, "snapshots": {outcome: int}, "rest_weight_used": int, "symbols": {state:
        int}}``; the quantiles are interpolated in the histogram's buckets (None when no
        resync finished).
    """

    def by(name: str, label: str) -> dict[str, int]:
        return {labels[label]: int(value) for labels, value in samples.get(name, ())}

    resyncs = by("oraculo_book_resyncs_total", "reason")
    buckets = histogram_buckets(samples, "oraculo_book_resync_seconds")  # type: ignore[arg-type]
    weight = sum(value for _, value in samples.get("oraculo_rest_weight_used_total", ()))
    return {
        "resyncs": sum(resyncs.values()),
        "resyncs_by_reason": resyncs,
        "resync_seconds": {
            "p50": histogram_quantile(0.5, buckets),
            "p99": histogram_quantile(0.99, buckets),
        },
        "snapshots": by("oraculo_book_snapshot_requests_total", "outcome"),
        "rest_weight_used": int(weight),
        "symbols": by("oraculo_book_symbols", "state"),
    }


@attrs.define(eq=False)
class RunState:
    """What the run has seen so far (filled by the reader and the sampler)."""

    generator: dict[str, Any] = attrs.field(factory=dict)  # the last stats event
    ready: dict[str, Any] = attrs.field(factory=dict)
    done: dict[str, Any] | None = None
    drained: dict[str, Any] | None = None
    phase: str = "starting"
    phase_changed: trio.Event = attrs.field(factory=trio.Event)
    generator_ended: trio.Event = attrs.field(factory=trio.Event)
    ready_event: trio.Event = attrs.field(factory=trio.Event)
    samples: list[dict[str, Any]] = attrs.field(factory=list)
    marks: dict[str, int] = attrs.field(factory=dict)
    started: float = attrs.field(factory=time.monotonic)


async def read_generator(generator: ChildProcess, state: RunState, ready: trio.Event) -> None:
    """Read the generator's JSON events into ``state`` until its stdout ends; set ``ready`` at
    its ``ready`` event."""
    while True:
        line = await generator.stdout.next_line()
        if line is None:
            state.generator_ended.set()
            state.phase_changed.set()
            return
        try:
            event = json.loads(line)
        except ValueError:
            continue
        kind = event.get("event")
        if kind == "ready":
            state.ready = event
            ready.set()
        elif kind == "stats":
            state.generator = event
        elif kind == "phase":
            state.phase = event["phase"]
            state.generator = {**state.generator, "sent": event["sent"]}
            state.phase_changed.set()
            state.phase_changed = trio.Event()
        elif kind in ("done", "drained"):
            setattr(state, kind, event)
            state.generator = {**state.generator, "sent": event["sent"]}
            state.phase_changed.set()
            state.phase_changed = trio.Event()


@attrs.define(eq=False)
class Sampler:
    """Takes one sample of the service (``/metrics``, ``/readyz``, /proc) and of the
    generator."""

    client: httpx.AsyncClient
    service: ServiceProcess
    generator: ChildProcess
    state: RunState

    async def sample(self, mark: str | None = None) -> dict[str, Any]:
        """Scrape ``/metrics`` and ``/readyz`` and read /proc; append the sample (with
        ``mark``) and return it.

        Raises:
            LoadTestError: the service stopped answering (it died).
        """
        try:
            response = await self.client.get(self.service.url + "/metrics")
            response.raise_for_status()
            ready = await self.client.get(self.service.url + "/readyz")
        except httpx.HTTPError as exc:
            code = self.service.process.poll()
            detail = f"exited with {code}" if code is not None else f"{exc!r}"
            raise LoadTestError(f"the service's /metrics failed: {detail}") from None
        metrics = extract_metrics(response.text)
        metrics.update(readiness(ready.status_code, ready.text))
        generator = self.state.generator
        sample = {
            "t": time.monotonic() - self.state.started,
            "wall": time.time(),
            "phase": self.state.phase,
            "mark": mark,
            "sent": generator.get("sent", 0),
            "generated": generator.get("generated", 0),
            "queued": generator.get("queued", 0),
            "generator_late_max": generator.get("late_max", 0.0),
            "generator_cpu": process_cpu(self.generator.pid),
            "service_cpu": process_cpu(self.service.pid),
            "service_rss": process_rss(self.service.pid),
            **metrics,
        }
        self.state.samples.append(sample)
        if mark is not None:
            self.state.marks[mark] = len(self.state.samples) - 1
        return sample


def readiness(status: int, body: str) -> dict[str, Any]:
    """What ``/readyz`` said: ``ready``, the reasons ``not_ready`` (``feed_behind``,
    ``book_not_live``, ...) and, when not ready, each reason's detail
    (``{"feed_behind": "7.2 s behind the exchange ..."}``)."""
    try:
        document = json.loads(body)
    except ValueError:
        document = {}
    if status == 200 or not isinstance(document, dict):
        return {"ready": status == 200, "not_ready": [], "not_ready_detail": {}}
    reasons = [r for r in document.get("reasons", []) if isinstance(r, dict) and "reason" in r]
    detail = {str(r["reason"]): str(r.get("detail", "")) for r in reasons}
    return {"ready": False, "not_ready": list(detail), "not_ready_detail": detail}


async def wait_ready(client: httpx.AsyncClient, service: ServiceProcess, within: float) -> None:
    """Wait until the service logged its address and ``/readyz`` answers 200.

    Raises:
        LoadTestError: the service exited, or was not ready within ``within`` seconds.
    """
    last = "no answer"
    with trio.move_on_after(within):
        await service.wait_address()
        while True:
            if service.returncode is not None:
                raise LoadTestError(
                    f"the service exited with {service.returncode}:\n{service.log_tail(15)}"
                )
            try:
                response = await client.get(service.url + "/readyz")
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text.strip()[:200]}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            await trio.sleep(0.1)  # readiness has no push: poll it
    raise LoadTestError(
        f"the service was not ready within {within:g} s (last /readyz: {last}):\n"
        + service.log_tail(15)
    )


PROMETHEUS_QUERIES = {
    "queue_time_p99": "histogram_quantile(0.99, sum by (le) "
    "(increase(oraculo_alerts_queue_time_seconds_bucket[{window}s])))",
    "queue_time_p95": "histogram_quantile(0.95, sum by (le) "
    "(increase(oraculo_alerts_queue_time_seconds_bucket[{window}s])))",
    "lag_p95": "quantile_over_time(0.95, oraculo_event_loop_lag_seconds[{window}s])",
    "lag_max": "max_over_time(oraculo_event_loop_lag_seconds[{window}s])",
    "queue_depth_peak": "max(max_over_time(oraculo_alerts_queue_depth[{window}s]))",
    "processed_rate": "sum(rate(oraculo_alerts_messages_evaluated_total[{window}s]))",
    "cpu_cores_avg": "avg_over_time(oraculo_cpu_process_cores[{window}s])",
}


LISTENING = re.compile(r'msg="Listening on" address=(?P<address>\S+)')
"""Prometheus's log line naming the address its web server bound."""


@contextlib.asynccontextmanager
async def running_prometheus(
    run_dir: Path, target: str, env: dict[str, str]
) -> AsyncIterator[tuple[ChildProcess, str]]:
    """A Prometheus scraping ``target`` (``host:port``) every second, for the block.

    Its web server listens on a port the system picks; the address comes from its log.

    Yields:
        The child and its base URL, once ``/-/ready`` answers.

    Raises:
        LoadTestError: ``prometheus`` is not installed, or not ready within 30 s.

    Cancellation: leaving the block stops it.
    """
    binary = shutil.which("prometheus")
    if binary is None:
        raise LoadTestError("--prometheus: `prometheus` not found (Debian package: prometheus)")
    config = run_dir / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: oraculo\n    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={run_dir / 'prometheus-data'}",
        "--web.listen-address=127.0.0.1:0",
        "--log.level=info",
    ]
    async with (
        child_process(argv, name="prometheus", cwd=run_dir, env=env) as child,
        httpx.AsyncClient(timeout=2.0) as client,
    ):
        with trio.move_on_after(30) as waiting:
            url = "http://" + (await child.stderr.first(LISTENING))["address"]
            while True:
                if child.returncode is not None:
                    raise LoadTestError(f"prometheus exited:\n{child.log_tail(10)}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(url + "/-/ready")).status_code == 200:
                        break
                await trio.sleep(0.2)  # a process starting up: poll its readiness
        if waiting.cancelled_caught:
            raise LoadTestError("prometheus was not ready within 30 s")
        yield child, url


async def query_prometheus(url: str, window: float, at: float) -> dict[str, float | None]:
    """Evaluate :data:`PROMETHEUS_QUERIES` over the ``window`` seconds ending at ``at``."""
    results: dict[str, float | None] = {}
    seconds = max(1, math.ceil(window))
    async with httpx.AsyncClient(timeout=5.0) as client:
        for name, template in PROMETHEUS_QUERIES.items():
            value = None
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, IndexError):
                response = await client.get(
                    url + "/api/v1/query",
                    params={"query": template.format(window=seconds), "time": f"{at:.3f}"},
                )
                result = response.json()["data"]["result"]
                if result:
                    value = float(result[0]["value"][1])
                    if not math.isfinite(value):
                        value = None
            results[name] = value
    return results
