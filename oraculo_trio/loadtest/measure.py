"""KPIs from a run's samples: every value the verdict checks, the per-stream trends, the
accounting, and per-second series for plots.

The runner samples ``/metrics``, ``/readyz`` and ``/proc`` once a second, marked at the start
and end of the measured phase and after the drain. Windows: latency histograms (queue time,
the age of what is evaluated, DB upserts) are the difference between the measured phase's
start and the end of the drain, so a backlog built during the measured phase counts;
scheduler lag, CPU and rates cover the measured phase; drops, peaks and the accounting cover
the whole run.

Latency percentiles are HDR distributions (:mod:`~oraculo_trio.loadtest.latency`): a value
read from the service's buckets is its bucket's upper bound, with the bucket as its error
(:attr:`Measured.precision`), and a percentile of too few samples is None (``n/a``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from oraculo_trio.core.events import STREAMS
from oraculo_trio.loadtest.latency import Distribution, Percentile, label, min_samples
from oraculo_trio.observe.metrics import DROP_REASONS

Buckets = list[tuple[float, float]]

#: KPI name -> (unit, what it is). Units: s, ms, count, ratio, cores, us, MB, msg/s.
KPIS: dict[str, tuple[str, str]] = {
    "lag_p50": ("s", "scheduler lag (oraculo_event_loop_lag_seconds, per-second samples), p50"),
    "lag_p95": ("s", "scheduler lag, p95 of the measured phase's per-second samples (20 needed)"),
    "lag_p99": ("s", "scheduler lag, p99 (100 samples needed)"),
    "lag_max": ("s", "scheduler lag, max"),
    "queue_time_mean": ("s", "queue time (frame read -> rules evaluated), mean"),
    "queue_time_p50": ("s", "queue time, p50"),
    "queue_time_p95": ("s", "queue time, p95"),
    "queue_time_p99": ("s", "queue time, p99"),
    "queue_time_p999": ("s", "queue time, p99.9"),
    "queue_time_max": ("s", "queue time, the highest (its bucket's upper bound)"),
    "evaluated_age_p50": ("s", "age of what is evaluated (now - E), every stream, p50"),
    "evaluated_age_p99": ("s", "age of what is evaluated, p99"),
    "evaluated_age_p999": ("s", "age of what is evaluated, p99.9"),
    "evaluated_age_max": ("s", "age of what is evaluated, the highest (its bucket's bound)"),
    **{
        f"evaluated_age_p99_{stream}": ("s", f"age of the {stream} messages evaluated, p99")
        for stream in STREAMS
    },
    "queue_time_latest_max": ("s", "oraculo_alerts_queue_time_latest_seconds, highest sample"),
    "queue_depth_peak": ("count", "oraculo_alerts_queue_depth, highest sample (any shard)"),
    "stale_drop": ("count", "messages dropped as stale"),
    "conflated": ("count", "depth messages conflated (replaced by a newer one)"),
    "superseded": ("count", "diffs superseded by a snapshot"),
    "unsynced": ("count", "diffs a syncing book discarded before any snapshot took them"),
    "overflow": ("count", "messages shed on purpose"),
    "bad_frames": ("count", "frames the service could not use"),
    "duplicate": ("count", "trades whose id was handed on already (a connection overlap)"),
    "backfilled": ("count", "trades fetched over REST to fill a gap in trade ids"),
    "unaccounted": (
        "count",
        "sent + backfilled - (evaluated + dropped + bad frames), after the drain",
    ),
    "sent_rate_error": ("ratio", "|sent in the measured window - scheduled| / scheduled"),
    "db_upsert_p50": ("ms", "oraculo_db_insert_ms{op=upsert_rule_alert}, p50"),
    "db_upsert_p95": ("ms", "DB upsert, p95"),
    "db_upsert_p99": ("ms", "DB upsert, p99"),
    "db_upsert_max": ("ms", "DB upsert, the slowest (its bucket's upper bound)"),
    "db_timeouts": ("count", "store statements that timed out"),
    "service_cpu_cores": ("cores", "service process CPU over the measured phase"),
    "service_cpu_us_per_msg": ("us", "service CPU per message processed"),
    "service_rss_max": ("MB", "service resident memory, highest sample"),
    "processed_rate": ("msg/s", "messages evaluated or dropped per second, measured phase"),
    "sent_rate": ("msg/s", "messages written by the exchange per second, measured window"),
    "feed_lag_max": ("s", "oraculo_feed_lag_seconds (read time - E), highest sample"),
    "not_ready_samples": ("count", "samples whose /readyz did not answer 200, measured phase"),
    "unaccounted_max_at_scrape": (
        "count",
        "received + backfilled - (evaluated + dropped + bad frames + in flight), largest at "
        "any scrape "
        "(n/a: the service exports no in-flight gauge)",
    ),
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


def accounted(sample: dict[str, Any]) -> float:
    """evaluated + dropped (every reason) + bad frames, in one sample."""
    return (
        sum(sample["evaluated"].values()) + sum(sample["dropped"].values()) + sample["bad_frames"]
    )


@attrs.frozen
class Accounting:
    """The accounting after the drain: ``unaccounted = sent + backfilled - (accounted +
    in_flight)``, where accounted is evaluated + dropped (every reason) + bad frames,
    ``backfilled`` the trades the service fetched over REST to fill gaps in trade ids, and
    ``in_flight`` what the service still held when the drain ended (a drain that ran out of
    time)."""

    sent: int
    received: int
    evaluated: int
    dropped: dict[str, int]
    bad_frames: int
    unaccounted: int
    in_flight: int = 0
    backfilled: int = 0

    @classmethod
    def from_totals(
        cls,
        sent: float,
        received: float,
        evaluated: float,
        dropped: dict[str, float],
        bad: float,
        in_flight: float | None = 0,
        backfilled: float = 0,
    ) -> Accounting:
        """Compute ``unaccounted`` from the terms."""
        held = int(in_flight or 0)
        accounted_for = evaluated + sum(dropped.values()) + bad
        return cls(
            sent=int(sent),
            received=int(received),
            evaluated=int(evaluated),
            dropped={reason: int(dropped.get(reason, 0)) for reason in DROP_REASONS},
            bad_frames=int(bad),
            unaccounted=int(sent + backfilled - accounted_for - held),
            in_flight=held,
            backfilled=int(backfilled),
        )


def accounting_of(sent: float, sample: dict[str, Any]) -> Accounting:
    """The accounting of ``sent`` frames against one sample of the service's counters."""
    return Accounting.from_totals(
        sent,
        sum(sample["received"].values()),
        sum(sample["evaluated"].values()),
        sample["dropped"],
        sample["bad_frames"],
        sample.get("in_flight"),
        sample.get("backfilled", 0),
    )


PERCENTILE_BOUND = {
    f"{kpi}_{p}": f"{kpi}_max"
    for kpi, percentiles in (
        ("lag", ("p50", "p95", "p99")),
        ("queue_time", ("p50", "p95", "p99", "p999")),
        ("evaluated_age", ("p50", "p99", "p999")),
        ("db_upsert", ("p50", "p95", "p99")),
    )
    for p in percentiles
}
"""A percentile KPI and the KPI that bounds it from above when it has too few samples."""


@attrs.frozen
class Measured:
    """KPI values, the per-stream trends and distributions, and the accounting of one run.

    Attributes:
        values: every KPI of :data:`KPIS` (None: no data, or too few samples).
        trends: per-stream and per-histogram summaries for the report.
        accounting: the accounting after the drain.
        notes: what a reader should know (a KPI n/a, reconnects...).
        precision: for a percentile read from buckets, ``(low, high)``: the true value lies
            in between (the value is ``high``).
        distributions: the latency distributions (``queue_time{depth}``,
            ``evaluated_age{trade}``...), for the percentile plots and ``summary.json``.
    """

    values: dict[str, float | None]
    trends: dict[str, dict[str, float | None]]
    accounting: Accounting
    notes: list[str]
    precision: dict[str, tuple[float, float]] = attrs.field(factory=dict)
    distributions: dict[str, Distribution] = attrs.field(factory=dict)


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
    result = Measured(dict.fromkeys(KPIS), {}, accounting_of(sent_final, c), notes)
    values, trends = result.values, result.trends

    _lag(result, [s["lag"] for s in measured_phase])
    _latency(result, "queue_time", a, c, (0.5, 0.95, 0.99, 0.999))
    _latency(result, "evaluated_age", a, c, (0.5, 0.99, 0.999))
    values["queue_time_latest_max"] = max(
        (max(s["queue_time_latest"].values()) for s in window), default=None
    )
    values["queue_depth_peak"] = max(s["queue_depth_max"] for s in samples[marks.get("start", 0) :])
    # Drops from the start of the load on: a diff-book cold start before it sheds, on purpose,
    # the oldest diffs of books waiting minutes for the weight budget (book.cold_start counts
    # them); the accounting still covers the whole run.
    for reason in DROP_REASONS:
        values[reason] = c["dropped"].get(reason, 0.0) - first["dropped"].get(reason, 0.0)
    values["bad_frames"] = c["bad_frames"]
    values["backfilled"] = c.get("backfilled", 0.0)
    values["unaccounted"] = result.accounting.unaccounted
    if generator_done is not None:
        _generator(values, generator_done)
    values["alert_transitions"] = c["alert_transitions"] - first["alert_transitions"]
    _db_upserts(result, a, c)
    values["db_timeouts"] = c["db_timeouts"]
    _rates(values, a, b, generator_done, duration)
    values["exchange_queued_max"] = max((s["queued"] for s in measured_phase), default=None)
    rss = [s["service_rss"] for s in samples if s.get("service_rss")]
    values["service_rss_max"] = max(rss) / 1e6 if rss else None
    values["feed_lag_max"] = max((max(s["feed_lag"].values()) for s in window), default=None)
    values["not_ready_samples"] = sum(1 for s in measured_phase if not s.get("ready", True))
    values["unaccounted_max_at_scrape"] = unaccounted_at_scrapes(samples)
    values["reconnects"] = c["reconnects"] - first["reconnects"]
    if values["reconnects"]:
        notes.append(f"the service reconnected {values['reconnects']:.0f} times during the run")
    delay = Distribution.from_buckets(delta_buckets(c["scheduler_delay"], a["scheduler_delay"]))
    if delay.count:
        trends["scheduler_delay"] = _trend(delay)
    return result


def unaccounted_at_scrapes(samples: Sequence[dict[str, Any]]) -> float | None:
    """The largest ``received + backfilled - (evaluated + dropped + bad frames + in flight)``
    of any scrape (the accounting while running); None when the service exports no in-flight
    gauge."""
    worst = None
    for sample in samples:
        if sample.get("in_flight") is None:
            return None
        taken_in = sum(sample["received"].values()) + sample.get("backfilled", 0)
        gap = taken_in - accounted(sample) - sample["in_flight"]
        worst = gap if worst is None or abs(gap) > abs(worst) else worst
    return worst


def _trend(distribution: Distribution, quantiles: Sequence[float] = (0.5, 0.99)) -> dict:
    """A distribution's count and percentiles (None: too few samples) for the trends."""
    trend: dict[str, float | None] = {"count": distribution.count}
    for quantile in quantiles:
        found = distribution.percentile(quantile)
        trend[label(quantile)] = None if found is None else found.value
    top = distribution.maximum()
    trend["max_bound"] = None if top is None else top.value
    return trend


def _keep(result: Measured, name: str, found: Percentile | None, scale: float = 1.0) -> None:
    """Set the KPI ``name`` to a percentile (and its bucket as its precision)."""
    if found is None:
        return
    result.values[name] = found.value * scale
    if found.low != found.value:
        result.precision[name] = (found.low * scale, found.value * scale)


def _lag(result: Measured, lags: list[float]) -> None:
    """Scheduler-lag percentiles of the measured phase's per-second samples."""
    distribution = Distribution.from_values(lags)
    for quantile in (0.5, 0.95, 0.99):
        name = f"lag_{label(quantile)}"
        _keep(result, name, distribution.percentile(quantile))
        if result.values[name] is None and lags:
            result.notes.append(
                f"{name} n/a: {len(lags)} one-second samples, it needs {min_samples(quantile)} "
                "(run longer); lag_max bounds it"
            )
    result.values["lag_max"] = max(lags, default=None)
    result.trends["lag"] = {
        key: result.values[f"lag_{key}"] for key in ("p50", "p95", "p99", "max")
    }


def _latency(
    result: Measured,
    key: str,
    a: dict[str, Any],
    c: dict[str, Any],
    quantiles: Sequence[float],
) -> None:
    """A service histogram per stream (``queue_time``, ``evaluated_age``) from the measured
    phase's start (``a``) to the end of the drain (``c``): its KPIs, trends, distributions."""
    merged: Distribution | None = None
    total = count = 0.0
    for stream in c[key]:
        end, start = c[key][stream], a[key][stream]
        distribution = Distribution.from_buckets(delta_buckets(end, start))
        n = end["count"] - start["count"]
        if n <= 0:
            continue
        result.distributions[f"{key}{{{stream}}}"] = distribution
        trend = _trend(distribution, quantiles)
        trend["avg"] = (end["sum"] - start["sum"]) / n
        if key == "queue_time":
            trend["latest_max"] = c["queue_time_latest"][stream]
        result.trends[f"{key}{{{stream}}}"] = trend
        if key == "evaluated_age":
            _keep(result, f"evaluated_age_p99_{stream}", distribution.percentile(0.99))
        merged = distribution if merged is None else merged.merge(distribution)
        total += end["sum"] - start["sum"]
        count += n
    if merged is None:
        return
    if key == "queue_time":
        result.values["queue_time_mean"] = total / count
    _keep(result, f"{key}_max", merged.maximum())
    for quantile in quantiles:
        _keep(result, f"{key}_{label(quantile).replace('.', '')}", merged.percentile(quantile))


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


def _db_upserts(result: Measured, a: dict[str, Any], c: dict[str, Any]) -> None:
    """DB upsert latency (milliseconds) from the measured phase's start to the drain's end."""
    db_count = c["db_upsert"]["count"] - a["db_upsert"]["count"]
    if db_count <= 0:
        return
    # The distribution holds seconds: the store's buckets are in milliseconds.
    buckets = [(bound / 1000.0, n) for bound, n in delta_buckets(c["db_upsert"], a["db_upsert"])]
    distribution = Distribution.from_buckets(buckets)
    for quantile in (0.5, 0.95, 0.99):
        _keep(result, f"db_upsert_{label(quantile)}", distribution.percentile(quantile), 1000.0)
    _keep(result, "db_upsert_max", distribution.maximum(), 1000.0)
    result.trends["db_upsert_ms"] = {
        "count": db_count,
        "avg": (c["db_upsert"]["sum"] - a["db_upsert"]["sum"]) / db_count,
        **{key: result.values[f"db_upsert_{key}"] for key in ("p50", "p95", "p99")},
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


MIN_INTERVAL = 0.5
"""Seconds a rate is computed over at least: a shorter interval (a phase mark right after a
sample) is merged into the next one, so each rate is weighted by its duration and a 0.05 s
sliver at a phase edge is never drawn as a spike."""


def _interval_percentile(buckets: Buckets, quantile: float) -> float | None:
    found = Distribution.from_buckets(buckets).percentile(quantile)
    return None if found is None else found.value


def derive_series(samples: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-interval rows (about one a second) for plots: rates, queue time and age
    percentiles, lag, depth, CPU, readiness."""
    rows = []
    previous = base = None
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
            "ready": 1.0 if sample.get("ready", True) else 0.0,
            "in_flight": sample.get("in_flight"),
        }
        if base is not None and sample["wall"] - base["wall"] >= MIN_INTERVAL:
            _interval_row(row, sample, base)
            base = sample
        elif base is None:
            base = sample
        rows.append(row)
        previous = sample
    return rows


def _interval_row(row: dict[str, Any], sample: dict[str, Any], base: dict[str, Any]) -> None:
    """The rates and percentiles of the interval from ``base`` to ``sample``."""
    dt, row["sent_rate"], row["processed_rate"], buckets = interval(sample, base)
    row["queue_time_p50"] = _interval_percentile(buckets, 0.5)
    row["queue_time_p99"] = _interval_percentile(buckets, 0.99)
    for stream in sample.get("evaluated_age", {}):
        age = delta_buckets(sample["evaluated_age"][stream], base["evaluated_age"][stream])
        row[f"evaluated_age_p99_{stream}"] = _interval_percentile(age, 0.99)
    for key, name in (
        ("service_cpu", "service_cpu_cores"),
        ("generator_cpu", "generator_cpu_cores"),
    ):
        if sample.get(key) is not None and base.get(key) is not None:
            row[name] = (sample[key] - base[key]) / dt
