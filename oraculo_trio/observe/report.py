"""``oraculo-trio health``: a human summary of a running service, read over HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families

WRITE_OPS = ("upsert_rule_alert", "insert_alert_events", "insert_dispatch_logs")
"""The store statements ``db insert`` summarises (not ``ping`` or ``migrate``)."""


def _get(url: str, timeout: float) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def parse_samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples of a Prometheus text exposition, by sample name."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name].append((sample.labels, sample.value))
    return samples


def histogram_quantile(quantile: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus-style quantile from cumulative ``(le, count)`` buckets (sorted by le)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = quantile * buckets[-1][1]
    previous_bound, previous_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return previous_bound
            if count == previous_count:
                return bound
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / (
                count - previous_count
            )
        previous_bound, previous_count = bound, count
    return previous_bound


def histogram_buckets(
    samples: dict[str, list[tuple[dict[str, str], float]]],
    name: str,
    match: dict[str, str] | None = None,
) -> list[tuple[float, float]]:
    """Cumulative buckets of histogram ``name``, summed over series matching ``match``."""
    summed: dict[float, float] = defaultdict(float)
    for labels, value in samples.get(name + "_bucket", []):
        if match and any(labels.get(k) != v for k, v in match.items()):
            continue
        summed[float(labels["le"])] += value
    return sorted(summed.items())


def _sum(samples: dict, name: str, **match: str) -> float:
    return sum(
        value
        for labels, value in samples.get(name, [])
        if all(labels.get(k) == v for k, v in match.items())
    )


def health_report(base_url: str, *, timeout: float = 5.0) -> tuple[bool, str]:
    """Fetch /healthz, /readyz and /metrics and summarise them.

    Returns:
        (healthy, text): healthy when /healthz and /readyz both answer 200.
    """
    base = base_url.rstrip("/")
    try:
        health_status, health_body = _get(base + "/healthz", timeout)
        ready_status, ready_body = _get(base + "/readyz", timeout)
        _, metrics_text = _get(base + "/metrics", timeout)
    except (urllib.error.URLError, OSError) as exc:
        return False, f"UNHEALTHY: cannot reach {base}: {exc}"
    samples = parse_samples(metrics_text)
    lines = [
        f"service at {base}",
        f"  healthz: {health_status} {health_body.strip()[:200]}",
        f"  readyz:  {ready_status}",
    ]
    if ready_status != 200:
        try:
            lines.append("           " + json.dumps(json.loads(ready_body), sort_keys=True))
        except ValueError:
            lines.append("           " + ready_body.strip()[:200])
    lag = _sum(samples, "oraculo_event_loop_lag_seconds")
    lines.append(f"  scheduler lag: {lag * 1000:.1f} ms")
    for stream in ("depth", "trade"):
        buckets = histogram_buckets(
            samples, "oraculo_alerts_queue_time_seconds", {"stream": stream}
        )
        p99 = histogram_quantile(0.99, buckets)
        depths = [
            value
            for labels, value in samples.get("oraculo_alerts_queue_depth", [])
            if labels.get("stream") == stream
        ]
        p99_text = f"{p99 * 1000:.2f} ms" if p99 is not None else "n/a"
        received = _sum(samples, "oraculo_feed_messages_received_total", stream=stream)
        evaluated = _sum(samples, "oraculo_alerts_messages_evaluated_total", stream=stream)
        lines.append(
            f"  {stream}: received {received:.0f}, evaluated {evaluated:.0f}, "
            f"queue time p99 {p99_text}, queue depth max {max(depths, default=0):.0f}"
        )
    drops = defaultdict(float)
    for labels, value in samples.get("oraculo_alerts_queue_dropped_total", []):
        drops[labels.get("reason", "?")] += value
    lines.append("  dropped: " + ", ".join(f"{k}={v:.0f}" for k, v in sorted(drops.items())))
    lines.append(f"  bad frames: {_sum(samples, 'oraculo_feed_bad_frames_total'):.0f}")
    # The writes only: the store's health pings would make the insert latency look better.
    db_sum: dict[float, float] = defaultdict(float)
    for op in WRITE_OPS:
        for bound, count in histogram_buckets(samples, "oraculo_db_insert_ms", {"op": op}):
            db_sum[bound] += count
    db = sorted(db_sum.items())
    p50, p95 = histogram_quantile(0.5, db), histogram_quantile(0.95, db)
    if p50 is not None and p95 is not None:
        lines.append(f"  db insert: p50 {p50:.2f} ms, p95 {p95:.2f} ms")
    else:
        lines.append("  db insert: no writes yet")
    lines.append(f"  db timeouts: {_sum(samples, 'oraculo_db_timeouts_total'):.0f}")
    feeds = samples.get("oraculo_feed_connected", [])
    up = sum(1 for _, value in feeds if value == 1)
    lines.append(f"  feed connections: {up}/{len(feeds)} connected")
    healthy = health_status == 200 and ready_status == 200
    lines.insert(0, "HEALTHY" if healthy else "UNHEALTHY")
    return healthy, "\n".join(lines)
