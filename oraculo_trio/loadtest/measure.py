"""KPIs from a run's samples: every value the verdict checks, the per-stream trends, the
accounting, and per-second series for plots.

The runner samples ``/metrics`` and ``/proc`` once a second, marked at the start and end of
the measured phase and after the drain. Windows: latency histograms (queue time, DB upserts)
are the difference between the measured phase's start and the end of the drain, so a backlog
built during the measured phase counts; scheduler lag, CPU and rates cover the measured
phase; drops, peaks and the accounting cover the whole run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from oraculo_trio.loadtest.schedule import nearest_rank
from oraculo_trio.observe.metrics import DROP_REASONS
from oraculo_trio.observe.report import histogram_quantile

Buckets = list[tuple[float, float]]

#: KPI name -> (unit, what it is). Units: s, ms, count, ratio, cores, us, MB, msg/s.
KPIS: dict[str, tuple[str, str]] = {
    "lag_p50": ("s", "scheduler lag (oraculo_event_loop_lag_seconds, per-second samples), p50"),
    "lag_p95": ("s", "scheduler lag, p95 of the measured phase's per-second samples"),
    "lag_p99": ("s", "scheduler lag, p99"),
    "lag_max": ("s", "scheduler lag, max"),
    "queue_time_mean": ("s", "queue time (frame read -> rules evaluated), mean"),
    "queue_time_p50": ("s", "queue time, p50"),
    "queue_time_p95": ("s", "queue time, p95"),
    "queue_time_p99": ("s", "queue time, p99"),
    "queue_time_latest_max": ("s", "oraculo_alerts_queue_time_latest_seconds, highest sample"),
    "queue_depth_peak": ("count", "oraculo_alerts_queue_depth, highest sample (any shard)"),
    "stale_drop": ("count", "messages dropped as stale"),
    "conflated": ("count", "depth messages conflated (replaced by a newer one)"),
    "superseded": ("count", "diffs superseded by a snapshot"),
    "unsynced": ("count", "diffs a syncing book discarded before any snapshot took them"),
    "overflow": ("count", "messages shed on purpose"),
    "bad_frames": ("count", "frames the service could not use"),
    "unaccounted": ("count", "sent - (evaluated + dropped + bad frames), after the drain"),
    "sent_rate_error": ("ratio", "|sent in the measured window - scheduled| / scheduled"),
    "db_upsert_p50": ("ms", "oraculo_db_insert_ms{op=upsert_rule_alert}, p50"),
    "db_upsert_p95": ("ms", "DB upsert, p95"),
    "db_upsert_p99": ("ms", "DB upsert, p99"),
    "db_timeouts": ("count", "store statements that timed out"),
    "service_cpu_cores": ("cores", "service process CPU over the measured phase"),
    "service_cpu_us_per_msg": ("us", "service CPU per message processed"),
    "service_rss_max": ("MB", "service resident memory, highest sample"),
    "processed_rate": ("msg/s", "messages evaluated or dropped per second, measured phase"),
    "sent_rate": ("msg/s", "messages written by the exchange per second, measured window"),
    "feed_lag_max": ("s", "oraculo_feed_lag_seconds (read time - E), highest sample"),
    "generator_lateness_p50": ("s", "how late a burst finished publishing, p50"),
    "generator_lateness_p99": ("s", "generator lateness, p99"),
    "generator_lateness_max": ("s", "generator lateness, max"),
    "generator_cpu_cores": ("cores", "generator process CPU over the measured phase"),
    "exchange_queued_max": ("count", "frames waiting in the exchange's socket queues, peak"),
    "alert_transitions": ("count", "alert transitions raised during the run"),
    "reconnects": ("count", "feed reconnects during the run"),
}


def delta_buckets(end: dict[str, Any], start: dict[str, Any] | None) -> Buckets:
    """The observations of histogram ``end`` since ``start`` (cumulative buckets)."""
    before = {bound: count for bound, count in start["buckets"]} if start else {}
    return [(bound, count - before.get(bound, 0.0)) for bound, count in end["buckets"]]


def merge_buckets(histograms: Iterable[Buckets]) -> Buckets:
    """One histogram of several with the same bounds (the streams' queue times)."""
    merged: dict[float, float] = {}
    for buckets in histograms:
        for bound, count in buckets:
            merged[bound] = merged.get(bound, 0.0) + count
    return sorted(merged.items())


def _max_bound(buckets: Buckets) -> float | None:
    """The upper bound of the highest bucket that holds an observation (the max is below)."""
    previous = 0.0
    highest = None
    for bound, count in buckets:
        if count > previous:
            highest = bound
        previous = count
    return highest


def accounted(sample: dict[str, Any]) -> float:
    """evaluated + dropped (every reason) + bad frames, in one sample."""
    return (
        sum(sample["evaluated"].values()) + sum(sample["dropped"].values()) + sample["bad_frames"]
    )


@attrs.frozen
class Accounting:
    """The accounting after the drain: ``unaccounted = sent - accounted``, where accounted
    is evaluated + dropped (every reason) + bad frames."""

    sent: int
    received: int
    evaluated: int
    dropped: dict[str, int]
    bad_frames: int
    unaccounted: int

    @classmethod
    def from_totals(
        cls, sent: float, received: float, evaluated: float, dropped: dict[str, float], bad: float
    ) -> Accounting:
        """Compute ``unaccounted`` from the terms."""
        accounted_for = evaluated + sum(dropped.values()) + bad
        return cls(
            sent=int(sent),
            received=int(received),
            evaluated=int(evaluated),
            dropped={reason: int(dropped.get(reason, 0)) for reason in DROP_REASONS},
            bad_frames=int(bad),
            unaccounted=int(sent - accounted_for),
        )


def accounting_of(sent: float, sample: dict[str, Any]) -> Accounting:
    """The accounting of ``sent`` frames against one sample of the service's counters."""
    return Accounting.from_totals(
        sent,
        sum(sample["received"].values()),
        sum(sample["evaluated"].values()),
        sample["dropped"],
        sample["bad_frames"],
    )


@attrs.frozen
class Measured:
    """KPI values, the per-stream trends and the accounting of one run."""

    values: dict[str, float | None]
    trends: dict[str, dict[str, float | None]]
    accounting: Accounting
    notes: list[str]


def interval(
    sample: dict[str, Any], previous: dict[str, Any]
) -> tuple[float, float, float, Buckets]:
    """What happened between two samples: ``(seconds, sent/s, processed/s, queue-time
    buckets of the interval)``."""
    dt = max(sample["wall"] - previous["wall"], 1e-9)
    sent_rate = (sample["sent"] - previous["sent"]) / dt
    processed_rate = (accounted(sample) - accounted(previous)) / dt
    buckets = merge_buckets(
        delta_buckets(sample["queue_time"][s], previous["queue_time"][s])
        for s in sample["queue_time"]
    )
    return dt, sent_rate, processed_rate, buckets


def measure(
    samples: Sequence[dict[str, Any]],
    marks: dict[str, int],
    generator_done: dict[str, Any] | None,
    sent_final: float,
    duration: float,
) -> Measured:
    """Compute every KPI of :data:`KPIS` from the runner's samples.

    Args:
        samples: per-second (and marked) samples.
        marks: indexes of ``start``, ``measure_start``, ``measure_end`` and ``final``.
        generator_done: the generator's ``done`` event.
        sent_final: frames the exchange wrote in the whole run.
        duration: the measured phase's nominal seconds (for the sent rate).

    Returns:
        The values (None where there was no data), trends and accounting.
    """
    notes: list[str] = []
    first = samples[marks.get("start", 0)]
    a = samples[marks.get("measure_start", marks.get("start", 0))]
    b = samples[marks.get("measure_end", len(samples) - 1)]
    c = samples[marks.get("final", len(samples) - 1)]
    ia, ib, ic = samples.index(a), samples.index(b), samples.index(c)
    measured_phase = samples[ia : ib + 1]
    window = samples[ia : ic + 1]
    values: dict[str, float | None] = dict.fromkeys(KPIS)
    trends: dict[str, dict[str, float | None]] = {}

    lags = [s["lag"] for s in measured_phase]
    for q, name in ((0.5, "lag_p50"), (0.95, "lag_p95"), (0.99, "lag_p99")):
        values[name] = nearest_rank(lags, q)
    values["lag_max"] = max(lags, default=None)
    _queue_time(values, trends, a, c, window)
    values["queue_depth_peak"] = max(s["queue_depth_max"] for s in samples[marks.get("start", 0) :])

    for reason in DROP_REASONS:
        values[reason] = c["dropped"].get(reason, 0.0)
    values["bad_frames"] = c["bad_frames"]
    accounting = accounting_of(sent_final, c)
    values["unaccounted"] = accounting.unaccounted
    if generator_done is not None:
        _generator(values, generator_done)
    values["alert_transitions"] = c["alert_transitions"] - first["alert_transitions"]
    _db_upserts(values, trends, a, c)
    values["db_timeouts"] = c["db_timeouts"]
    _rates(values, a, b, generator_done, duration)
    values["exchange_queued_max"] = max((s["queued"] for s in measured_phase), default=None)
    rss = [s["service_rss"] for s in samples if s.get("service_rss")]
    values["service_rss_max"] = max(rss) / 1e6 if rss else None
    values["feed_lag_max"] = max((max(s["feed_lag"].values()) for s in window), default=None)
    values["reconnects"] = c["reconnects"] - first["reconnects"]
    if values["reconnects"]:
        notes.append(f"the service reconnected {values['reconnects']:.0f} times during the run")
    trends["lag"] = {
        "p50": values["lag_p50"],
        "p95": values["lag_p95"],
        "p99": values["lag_p99"],
        "max": values["lag_max"],
    }
    delay = delta_buckets(c["scheduler_delay"], a["scheduler_delay"])
    if c["scheduler_delay"]["count"] - a["scheduler_delay"]["count"] > 0:
        trends["scheduler_delay"] = {
            "p50": histogram_quantile(0.5, delay),
            "p99": histogram_quantile(0.99, delay),
        }
    return Measured(values, trends, accounting, notes)


def _queue_time(
    values: dict[str, float | None],
    trends: dict[str, dict[str, float | None]],
    a: dict[str, Any],
    c: dict[str, Any],
    window: Sequence[dict[str, Any]],
) -> None:
    """Queue time from the measured phase's start (``a``) to the end of the drain (``c``)."""
    per_stream = {}
    for stream in c["queue_time"]:
        buckets = delta_buckets(c["queue_time"][stream], a["queue_time"][stream])
        count = c["queue_time"][stream]["count"] - a["queue_time"][stream]["count"]
        total = c["queue_time"][stream]["sum"] - a["queue_time"][stream]["sum"]
        per_stream[stream] = (buckets, count, total)
        if count > 0:
            trends[f"queue_time{{{stream}}}"] = {
                "count": count,
                "avg": total / count,
                "p50": histogram_quantile(0.5, buckets),
                "p95": histogram_quantile(0.95, buckets),
                "p99": histogram_quantile(0.99, buckets),
                "max_bound": _max_bound(buckets),
                "latest_max": max((s["queue_time_latest"][stream] for s in window), default=None),
            }
    merged = merge_buckets(buckets for buckets, _, _ in per_stream.values())
    count = sum(n for _, n, _ in per_stream.values())
    if count > 0:
        values["queue_time_mean"] = sum(t for _, _, t in per_stream.values()) / count
        for q, name in (
            (0.5, "queue_time_p50"),
            (0.95, "queue_time_p95"),
            (0.99, "queue_time_p99"),
        ):
            values[name] = histogram_quantile(q, merged)
    values["queue_time_latest_max"] = max(
        (max(s["queue_time_latest"].values()) for s in window), default=None
    )


def _generator(values: dict[str, float | None], done: dict[str, Any]) -> None:
    """The generator's own figures, from its ``done`` event."""
    expected = done.get("expected") or 0
    window_sent = done.get("window_sent", 0)
    if expected:
        values["sent_rate_error"] = abs(window_sent - expected) / expected
    lateness = (done.get("lateness") or {}).get("measure") or {}
    values["generator_lateness_p50"] = lateness.get("p50")
    values["generator_lateness_p99"] = lateness.get("p99")
    values["generator_lateness_max"] = lateness.get("max")
    values["generator_cpu_cores"] = done.get("measure_cpu_cores")


def _db_upserts(
    values: dict[str, float | None],
    trends: dict[str, dict[str, float | None]],
    a: dict[str, Any],
    c: dict[str, Any],
) -> None:
    db = delta_buckets(c["db_upsert"], a["db_upsert"])
    db_count = c["db_upsert"]["count"] - a["db_upsert"]["count"]
    if db_count > 0:
        values["db_upsert_p50"] = histogram_quantile(0.5, db)
        values["db_upsert_p95"] = histogram_quantile(0.95, db)
        values["db_upsert_p99"] = histogram_quantile(0.99, db)
        trends["db_upsert_ms"] = {
            "count": db_count,
            "avg": (c["db_upsert"]["sum"] - a["db_upsert"]["sum"]) / db_count,
            "p50": values["db_upsert_p50"],
            "p95": values["db_upsert_p95"],
            "p99": values["db_upsert_p99"],
        }


def _rates(
    values: dict[str, float | None],
    a: dict[str, Any],
    b: dict[str, Any],
    generator_done: dict[str, Any] | None,
    duration: float,
) -> None:
    """Rates and CPU over the measured phase (``a`` to ``b``)."""
    seconds = b["wall"] - a["wall"]
    if seconds <= 0:
        return
    cpu_a, cpu_b = a.get("service_cpu"), b.get("service_cpu")
    processed = accounted(b) - accounted(a)
    values["processed_rate"] = processed / seconds
    if cpu_a is not None and cpu_b is not None:
        values["service_cpu_cores"] = (cpu_b - cpu_a) / seconds
        if processed > 0:
            values["service_cpu_us_per_msg"] = (cpu_b - cpu_a) / processed * 1e6
    if generator_done is not None and generator_done.get("window_sent") is not None:
        values["sent_rate"] = generator_done["window_sent"] / duration


def derive_series(samples: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-interval rows (about one a second) for plots: rates, queue time, lag, depth, CPU."""
    rows = []
    previous = None
    for sample in samples:
        if previous is not None and sample["wall"] - previous["wall"] < 0.5 and not sample["mark"]:
            continue  # the drain samples faster: keep about one row a second (and the marks)
        row: dict[str, Any] = {
            "t": round(sample["t"], 3),
            "phase": sample["phase"],
            "mark": sample["mark"],
            "sent": sample["sent"],
            "accounted": accounted(sample),
            "queue_time_latest_max": max(sample["queue_time_latest"].values()),
            "queue_depth_max": sample["queue_depth_max"],
            "lag": sample["lag"],
            "feed_lag_max": max(sample["feed_lag"].values()),
            "service_rss_mb": (sample["service_rss"] or 0) / 1e6,
            "generator_late_max": sample["generator_late_max"],
            "exchange_queued": sample["queued"],
        }
        if previous is not None:
            dt, row["sent_rate"], row["processed_rate"], buckets = interval(sample, previous)
            row["queue_time_p50"] = histogram_quantile(0.5, buckets)
            row["queue_time_p99"] = histogram_quantile(0.99, buckets)
            for key, name in (
                ("service_cpu", "service_cpu_cores"),
                ("generator_cpu", "generator_cpu_cores"),
            ):
                if sample.get(key) is not None and previous.get(key) is not None:
                    row[name] = (sample[key] - previous[key]) / dt
        rows.append(row)
        previous = sample
    return rows
