"""``oraculo-trio health``: a human summary of a running service, read over HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import defaultdict
from typing import Any

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


def readiness_reasons(body: str) -> list[str]:
    """Every reason a ``/readyz`` body gives for not being ready, one line each.

    Read generically: a ``reasons`` list (``{"reason": "feed_behind", ...}``: the reason and
    its other fields), and the ``components`` that are not ``ok`` (with their ``detail``).
    """
    try:
        document = json.loads(body)
    except ValueError:
        return [body.strip()[:200]] if body.strip() else []
    if not isinstance(document, dict):
        return []
    lines = []
    for reason in document.get("reasons") or []:
        if isinstance(reason, dict):
            name = reason.get("reason", "?")
            rest = ", ".join(f"{k}={v}" for k, v in reason.items() if k != "reason")
            lines.append(f"{name}: {rest}" if rest else str(name))
        else:
            lines.append(str(reason))
    components = document.get("components") or {}
    if isinstance(components, dict):
        for name, entry in sorted(components.items()):
            if isinstance(entry, dict) and not entry.get("ok", True):
                detail = entry.get("detail") or "not ready"
                line = f"{name}: {detail}"
                if line not in lines:
                    lines.append(line)
    return lines


def health_summary(base_url: str, *, timeout: float = 5.0) -> dict[str, Any]:
    """Fetch /healthz, /readyz and /metrics and summarise them as a JSON-ready dict.

    ``healthy`` is true when /healthz and /readyz both answer 200; ``error`` is set (and
    nothing else) when the service cannot be reached.
    """
    base = base_url.rstrip("/")
    try:
        health_status, health_body = _get(base + "/healthz", timeout)
        ready_status, ready_body = _get(base + "/readyz", timeout)
        _, metrics_text = _get(base + "/metrics", timeout)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return {"url": base, "healthy": False, "error": f"cannot reach {base}: {reason}"}
    try:
        samples = parse_samples(metrics_text)
    except ValueError:
        samples = {}
    summary: dict[str, Any] = {
        "url": base,
        "healthy": health_status == 200 and ready_status == 200,
        "healthz": {"status": health_status, "body": health_body.strip()[:200]},
        "readyz": {"status": ready_status, "reasons": readiness_reasons(ready_body)},
        "scheduler_lag_ms": _sum(samples, "oraculo_event_loop_lag_seconds") * 1000,
        "streams": {},
    }
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
        summary["streams"][stream] = {
            "received": _sum(samples, "oraculo_feed_messages_received_total", stream=stream),
            "evaluated": _sum(samples, "oraculo_alerts_messages_evaluated_total", stream=stream),
            "queue_time_p99_ms": None if p99 is None else p99 * 1000,
            "queue_depth_max": max(depths, default=0),
        }
    drops: dict[str, float] = defaultdict(float)
    for labels, value in samples.get("oraculo_alerts_queue_dropped_total", []):
        drops[labels.get("reason", "?")] += value
    summary["dropped"] = dict(sorted(drops.items()))
    summary["bad_frames"] = _sum(samples, "oraculo_feed_bad_frames_total")
    # The writes only: the store's health pings would make the insert latency look better.
    db_sum: dict[float, float] = defaultdict(float)
    for op in WRITE_OPS:
        for bound, count in histogram_buckets(samples, "oraculo_db_insert_ms", {"op": op}):
            db_sum[bound] += count
    db = sorted(db_sum.items())
    summary["db_insert_ms"] = {
        "p50": histogram_quantile(0.5, db),
        "p95": histogram_quantile(0.95, db),
    }
    summary["db_timeouts"] = _sum(samples, "oraculo_db_timeouts_total")
    feeds = samples.get("oraculo_feed_connected", [])
    summary["feed_connections"] = {
        "connected": sum(1 for _, value in feeds if value == 1),
        "total": len(feeds),
    }
    summary["alerts_firing"] = _sum(samples, "oraculo_alerts_firing")
    return summary


def format_health(summary: dict[str, Any]) -> str:
    """:func:`health_summary` for a person."""
    if "error" in summary:
        return f"UNHEALTHY: {summary['error']}"
    lines = [
        "HEALTHY" if summary["healthy"] else "UNHEALTHY",
        f"service at {summary['url']}",
        f"  healthz: {summary['healthz']['status']} {summary['healthz']['body']}",
        f"  readyz:  {summary['readyz']['status']}",
    ]
    lines.extend(f"    not ready: {reason}" for reason in summary["readyz"]["reasons"])
    lines.append(f"  scheduler lag: {summary['scheduler_lag_ms']:.1f} ms")
    for stream, figures in summary["streams"].items():
        p99 = figures["queue_time_p99_ms"]
        p99_text = f"{p99:.2f} ms" if p99 is not None else "n/a"
        lines.append(
            f"  {stream}: received {figures['received']:.0f}, evaluated "
            f"{figures['evaluated']:.0f}, queue time p99 {p99_text}, queue depth max "
            f"{figures['queue_depth_max']:.0f}"
        )
    dropped = ", ".join(f"{k}={v:.0f}" for k, v in summary["dropped"].items())
    lines.append(f"  dropped: {dropped}")
    lines.append(f"  bad frames: {summary['bad_frames']:.0f}")
    db = summary["db_insert_ms"]
    if db["p50"] is not None and db["p95"] is not None:
        lines.append(f"  db insert: p50 {db['p50']:.2f} ms, p95 {db['p95']:.2f} ms")
    else:
        lines.append("  db insert: no writes yet")
    lines.append(f"  db timeouts: {summary['db_timeouts']:.0f}")
    feeds = summary["feed_connections"]
    lines.append(f"  feed connections: {feeds['connected']}/{feeds['total']} connected")
    lines.append(f"  alerts firing: {summary['alerts_firing']:.0f}")
    return "\n".join(lines)


def health_report(base_url: str, *, timeout: float = 5.0) -> tuple[bool, str]:
    """Fetch /healthz, /readyz and /metrics and summarise them.

    Returns:
        (healthy, text): healthy when /healthz and /readyz both answer 200.
    """
    summary = health_summary(base_url, timeout=timeout)
    return summary["healthy"], format_health(summary)
