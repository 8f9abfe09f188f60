"""``loadtest bench --overload``: hold twice the saturation the search found, and report what a
user waits for while the service cannot keep up.

The stage is one load test at 2x the saturation throughput for ``--overload-seconds`` (60 by
default). What it reports, from the per-second samples of the measured phase:

- the age of what is evaluated (``now - E``), p99 per stream over the whole stage and in
  10-second windows (does it stay bounded, or grow by a second every second?);
- the feed lag (read time - E), its highest sample;
- what ``/readyz`` said while it ran: how many samples were not ready, and each reason with
  its first detail (``feed_behind`` with the lag);
- the accounting at every scrape (``received = evaluated + dropped + bad frames + in flight``,
  where the service exports its in-flight gauge) and after the drain;
- what the overload policy dropped on purpose (conflated, overflow) and stale;
- the service's memory: the mean RSS of the second half minus the first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from oraculo_trio.loadtest.latency import Distribution
from oraculo_trio.loadtest.measure import delta_buckets
from oraculo_trio.loadtest.summary import format_value

OVERLOAD_FACTOR = 2.0
"""The stage's rate, in saturations."""

OVERLOAD_THRESHOLDS = ("evaluated_age_p99 < 1s", "unaccounted == 0")
"""What the stage must hold: the age of what is evaluated stays under a second, and every
frame is accounted for."""

WINDOW = 10.0
"""Seconds per window of the age's time course."""

GENERATOR_BOUND_CORES = 0.9
"""Generator CPU (its one thread, in cores) from which a late schedule is the generator's."""

GENERATOR_LATE = 1.0
"""Generator lateness p99 (seconds) past which the stage did not get its rate on time."""


def generator_bound(result: dict[str, Any]) -> bool:
    """Whether the generator, not the service, set the pace: its one thread was busy and its
    bursts went out late, so messages were old before they were sent (no read-ahead of the
    service holds them, and no policy of the service can skip them)."""
    late = result.get("generator_lateness_p99") or result.get("generator_lateness_max") or 0.0
    cores = result.get("generator_cpu_cores") or 0.0
    return late > GENERATOR_LATE and cores >= GENERATOR_BOUND_CORES


def age_windows(
    samples: Sequence[dict[str, Any]], stream: str, seconds: float = WINDOW
) -> list[dict[str, Any]]:
    """The p99 age of ``stream``'s evaluated messages in consecutive windows of the measured
    phase: ``[{"start": s, "end": s, "p99": seconds | None, "count": n}, ...]``."""
    windows = []
    start = samples[0]
    for sample in samples[1:]:
        if sample["t"] - start["t"] < seconds and sample is not samples[-1]:
            continue
        buckets = delta_buckets(sample["evaluated_age"][stream], start["evaluated_age"][stream])
        distribution = Distribution.from_buckets(buckets)
        found = distribution.percentile(0.99)
        windows.append(
            {
                "start": round(start["t"] - samples[0]["t"], 1),
                "end": round(sample["t"] - samples[0]["t"], 1),
                "p99": None if found is None else found.value,
                "count": distribution.count,
            }
        )
        start = sample
    return windows


def readiness_seen(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What ``/readyz`` said over ``samples``: not-ready count, and each reason's count and
    first detail."""
    reasons: dict[str, dict[str, Any]] = {}
    for sample in samples:
        for reason in sample.get("not_ready", []):
            entry = reasons.setdefault(
                reason, {"samples": 0, "detail": sample.get("not_ready_detail", {}).get(reason)}
            )
            entry["samples"] += 1
    not_ready = sum(1 for sample in samples if not sample.get("ready", True))
    return {"samples": len(samples), "not_ready_samples": not_ready, "reasons": reasons}


def rss_growth_mb(samples: Sequence[dict[str, Any]]) -> float | None:
    """Mean resident memory of the second half of ``samples`` minus the first's, MB."""
    rss = [s["service_rss"] for s in samples if s.get("service_rss")]
    if len(rss) < 4:
        return None
    half = len(rss) // 2
    return (sum(rss[half:]) / len(rss[half:]) - sum(rss[:half]) / half) / 1e6


def overload_result(
    rate: float,
    saturation: float,
    samples: Sequence[dict[str, Any]],
    marks: dict[str, int],
    document: dict[str, Any],
) -> dict[str, Any]:
    """The stage's figures, from its samples and its ``metrics.json`` document."""
    measured = samples[marks["measure_start"] : marks.get("measure_end", len(samples) - 1) + 1]
    values = document["values"]
    streams = [
        stream
        for stream in measured[-1].get("evaluated_age", {})
        if measured[-1]["evaluated_age"][stream]["count"]
        > measured[0]["evaluated_age"][stream]["count"]
    ]
    return {
        "rate": rate,
        "saturation": saturation,
        "processed_rate": values.get("processed_rate"),
        "evaluated_age_p99": {
            stream: {
                "whole": values.get(f"evaluated_age_p99_{stream}"),
                "windows": age_windows(measured, stream),
            }
            for stream in streams
        },
        "feed_lag_max": values.get("feed_lag_max"),
        "readiness": readiness_seen(measured),
        "unaccounted": values.get("unaccounted"),
        "unaccounted_max_at_scrape": values.get("unaccounted_max_at_scrape"),
        "dropped": {
            reason: values.get(reason) for reason in ("conflated", "overflow", "stale_drop")
        },
        "rss_growth_mb": rss_growth_mb(measured),
        "generator_lateness_p99": values.get("generator_lateness_p99"),
        "generator_lateness_max": values.get("generator_lateness_max"),
        "generator_cpu_cores": values.get("generator_cpu_cores"),
        "service_cpu_cores": values.get("service_cpu_cores"),
        "verdict": document.get("verdict"),
        "failed": [k["threshold"] for k in document.get("kpis", []) if k.get("pass") is False],
    }


def render_overload(result: dict[str, Any]) -> list[str]:
    """The stage's lines in the bench summary."""
    lines = [
        f"  overload: {result['rate']:,.0f} msg/s (2 x saturation {result['saturation']:,.0f}), "
        f"processed {result['processed_rate'] or 0:,.0f}/s; verdict {result['verdict']}"
        + (f" ({'; '.join(result['failed'])})" if result["failed"] else "")
    ]
    for stream, age in result["evaluated_age_p99"].items():
        course = " ".join(f"{w['end']:g}s:{format_value(w['p99'], 's')}" for w in age["windows"])
        lines.append(
            f"    age of evaluated {stream} p99: {format_value(age['whole'], 's')} over the "
            f"stage; by {WINDOW:g} s window: {course}"
        )
    readiness = result["readiness"]
    reasons = ", ".join(
        f"{name} in {entry['samples']} samples ({entry['detail'] or 'no detail'})"
        for name, entry in readiness["reasons"].items()
    )
    lines.append(
        f"    /readyz: not ready in {readiness['not_ready_samples']} of "
        f"{readiness['samples']} samples" + (f": {reasons}" if reasons else "")
    )
    scrape = result["unaccounted_max_at_scrape"]
    dropped = " ".join(f"{k}={v or 0:,.0f}" for k, v in result["dropped"].items())
    lines.append(
        f"    feed lag max {format_value(result['feed_lag_max'], 's')}; {dropped}; unaccounted "
        f"{result['unaccounted'] or 0:.0f} after the drain, "
        + (
            f"{scrape:.0f} at the worst scrape"
            if scrape is not None
            else "n/a at a scrape (no in-flight gauge exported)"
        )
        + "; RSS growth "
        + (f"{growth:+.1f} MB" if (growth := result["rss_growth_mb"]) is not None else "n/a")
        + " (2nd half - 1st)"
    )
    if generator_bound(result):
        lines.append(
            "    the generator could not publish this rate: its thread used "
            f"{result['generator_cpu_cores']:.2f} cores and its bursts went out up to "
            f"{format_value(result['generator_lateness_max'], 's')} late; the ages above are "
            "mostly that backlog, in the sender, where no policy of the service applies (the "
            f"service used {result['service_cpu_cores'] or 0:.2f} cores)"
        )
    return lines
