"""What a load test concludes: KPIs, thresholds, the k6-style summary and the artifacts.

From the runner's samples (``/metrics`` and ``/proc`` once a second, marked at the start and
end of the measured phase and after the drain) this computes every KPI, checks the
thresholds, and writes ``metrics.json``, ``summary.txt`` and a self-contained
``report.html`` (inline SVG, no script, no network).

Windows: latency histograms (queue time, DB upserts) are the difference between the
measured phase's start and the end of the drain, so a backlog built during the measured
phase counts; scheduler lag, CPU and rates cover the measured phase; drops, peaks and the
accounting cover the whole run.

Thresholds are ``NAME OP VALUE[UNIT]`` (``queue_time_p99 < 10ms``, ``sent_rate_error <= 1%``;
units ``us ms s %``). A ``--threshold`` for a KPI replaces the default ones for that KPI.
Exit codes follow k6: 0 every threshold holds, 99 one fails, 1 the test could not run.
"""

from __future__ import annotations

import html
import json
import math
import os
import platform
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import attrs

from oraculo_trio.errors import ConfigError
from oraculo_trio.observe.metrics import DROP_REASONS
from oraculo_trio.observe.report import histogram_quantile

EXIT_PASS = 0
EXIT_ERROR = 1
EXIT_THRESHOLD = 99
EXIT_INTERRUPTED = 130

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

DEFAULT_THRESHOLDS = (
    "lag_p95 < 0.5s",
    "queue_time_mean < 200ms",
    "queue_time_latest_max <= 0.2s",
    "queue_depth_peak < 50",
    "stale_drop == 0",
    "conflated == 0",
    "overflow == 0",
    "db_upsert_p50 < 20ms",
    "db_upsert_p95 < 50ms",
    "db_timeouts == 0",
    "unaccounted == 0",
    "sent_rate_error <= 1%",
)
"""The old plan's acceptance (and the load test's own sanity: nothing unaccounted for, the
generator kept its rate)."""

#: CPU budget of --strict: 10 % of a core at 1,500 msg/s, scaled to the rate tested.
STRICT_CPU_AT_1500 = 0.10


def strict_thresholds(rate: float) -> tuple[str, ...]:
    """DESIGN.md's targets, added by ``--strict`` (the DB ones replace the defaults)."""
    cores = STRICT_CPU_AT_1500 * rate / 1500.0
    return (
        "queue_time_p99 < 10ms",
        "lag_p99 < 10ms",
        f"service_cpu_cores < {cores:.4g}",
        "db_upsert_p50 < 2ms",
        "db_upsert_p95 < 5ms",
    )


_THRESHOLD = re.compile(
    r"^\s*([a-z][a-z0-9_]*)\s*(<=|>=|==|!=|<|>)\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)"
    r"\s*(us|µs|ms|s|%)?\s*$"
)
_OPS = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}
_SECONDS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}


@attrs.frozen
class Threshold:
    """One ``NAME OP VALUE`` check; ``value`` is in the KPI's own unit."""

    metric: str
    op: str
    value: float
    text: str
    source: str = "user"

    def holds(self, measured: float) -> bool:
        return bool(_OPS[self.op](measured, self.value))


def parse_threshold(text: str, source: str = "user") -> Threshold:
    """Parse ``queue_time_p99 < 10ms`` into a :class:`Threshold` in the KPI's unit.

    Raises:
        ConfigError: bad syntax, an unknown KPI, or a unit that does not fit it.
    """
    match = _THRESHOLD.match(text)
    if match is None:
        raise ConfigError(
            f"--threshold {text!r}: expected NAME OP VALUE[UNIT], e.g. 'queue_time_p99 < 10ms' "
            "(OP one of < <= > >= == !=, UNIT one of us ms s %)"
        )
    name, op, number, unit = match.groups()
    if name not in KPIS:
        raise ConfigError(f"--threshold {text!r}: unknown KPI {name!r}; KPIs: {', '.join(KPIS)}")
    kpi_unit = KPIS[name][0]
    value = float(number)
    if unit is not None:
        if unit == "%" and kpi_unit == "ratio":
            value /= 100.0
        elif unit in _SECONDS and kpi_unit in ("s", "ms", "us"):
            value *= _SECONDS[unit] / _SECONDS[kpi_unit]
        else:
            raise ConfigError(
                f"--threshold {text!r}: unit {unit!r} does not fit {name} ({kpi_unit})"
            )
    return Threshold(name, op, value, f"{name} {op} {number}{unit or ''}", source)


def thresholds_for(rate: float, strict: bool, extra: Sequence[str]) -> list[Threshold]:
    """The defaults, plus ``--strict``'s, with ``extra`` replacing any of the same KPI.

    Raises:
        ConfigError: an expression that does not parse.
    """
    chosen = [parse_threshold(t, "default") for t in DEFAULT_THRESHOLDS]
    if strict:
        for threshold in (parse_threshold(t, "strict") for t in strict_thresholds(rate)):
            chosen = [t for t in chosen if t.metric != threshold.metric or t.source != "default"]
            chosen.append(threshold)
    user = [parse_threshold(t) for t in extra]
    replaced = {t.metric for t in user}
    return [t for t in chosen if t.metric not in replaced] + user


# --------------------------------------------------------------------------------------------
# KPIs from samples


def _delta_buckets(end: dict[str, Any], start: dict[str, Any] | None) -> list[tuple[float, float]]:
    before = {bound: count for bound, count in start["buckets"]} if start else {}
    return [(bound, count - before.get(bound, 0.0)) for bound, count in end["buckets"]]


def _merge(histograms: Iterable[list[tuple[float, float]]]) -> list[tuple[float, float]]:
    merged: dict[float, float] = {}
    for buckets in histograms:
        for bound, count in buckets:
            merged[bound] = merged.get(bound, 0.0) + count
    return sorted(merged.items())


def _max_bound(buckets: list[tuple[float, float]]) -> float | None:
    """The upper bound of the highest bucket that holds an observation (the max is below)."""
    previous = 0.0
    highest = None
    for bound, count in buckets:
        if count > previous:
            highest = bound
        previous = count
    return highest


def nearest_rank(values: Sequence[float], quantile: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(quantile * len(ordered)) - 1)]


def accounted(sample: dict[str, Any]) -> float:
    """evaluated + dropped (every reason) + bad frames, in one sample."""
    return (
        sum(sample["evaluated"].values()) + sum(sample["dropped"].values()) + sample["bad_frames"]
    )


@attrs.frozen
class Accounting:
    """DESIGN.md's accounting after the drain; ``unaccounted = sent - accounted``."""

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

    per_stream = {}
    for stream in c["queue_time"]:
        buckets = _delta_buckets(c["queue_time"][stream], a["queue_time"][stream])
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
    merged = _merge(buckets for buckets, _, _ in per_stream.values())
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
    values["queue_depth_peak"] = max(s["queue_depth_max"] for s in samples[marks.get("start", 0) :])

    for reason in DROP_REASONS:
        values[reason] = c["dropped"].get(reason, 0.0)
    values["bad_frames"] = c["bad_frames"]
    accounting = accounting_of(sent_final, c)
    values["unaccounted"] = accounting.unaccounted

    if generator_done is not None:
        expected = generator_done.get("expected") or 0
        window_sent = generator_done.get("window_sent", 0)
        if expected:
            values["sent_rate_error"] = abs(window_sent - expected) / expected
        lateness = (generator_done.get("lateness") or {}).get("measure") or {}
        values["generator_lateness_p50"] = lateness.get("p50")
        values["generator_lateness_p99"] = lateness.get("p99")
        values["generator_lateness_max"] = lateness.get("max")
        values["generator_cpu_cores"] = generator_done.get("measure_cpu_cores")

    db = _delta_buckets(c["db_upsert"], a["db_upsert"])
    db_count = c["db_upsert"]["count"] - a["db_upsert"]["count"]
    transitions = c["alert_transitions"] - first["alert_transitions"]
    values["alert_transitions"] = transitions
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
    values["db_timeouts"] = c["db_timeouts"]

    seconds = b["wall"] - a["wall"]
    if seconds > 0:
        cpu_a, cpu_b = a.get("service_cpu"), b.get("service_cpu")
        processed = accounted(b) - accounted(a)
        values["processed_rate"] = processed / seconds
        if cpu_a is not None and cpu_b is not None:
            values["service_cpu_cores"] = (cpu_b - cpu_a) / seconds
            if processed > 0:
                values["service_cpu_us_per_msg"] = (cpu_b - cpu_a) / processed * 1e6
        if generator_done is not None and generator_done.get("window_sent") is not None:
            values["sent_rate"] = generator_done["window_sent"] / duration
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
    delay = _delta_buckets(c["scheduler_delay"], a["scheduler_delay"])
    if c["scheduler_delay"]["count"] - a["scheduler_delay"]["count"] > 0:
        trends["scheduler_delay"] = {
            "p50": histogram_quantile(0.5, delay),
            "p99": histogram_quantile(0.99, delay),
        }
    return Measured(values, trends, accounting, notes)


# --------------------------------------------------------------------------------------------
# Verdict


@attrs.frozen
class Check:
    """One threshold's outcome."""

    threshold: Threshold
    value: float | None
    passed: bool
    note: str = ""


def check_thresholds(thresholds: Sequence[Threshold], measured: Measured) -> list[Check]:
    """Apply each threshold to its KPI.

    A KPI without data fails, except the DB upsert latencies when no alert was raised (the
    store had nothing to write): those pass with a note saying so.
    """
    checks = []
    transitions = measured.values.get("alert_transitions") or 0
    for threshold in thresholds:
        value = measured.values.get(threshold.metric)
        if value is None:
            if threshold.metric.startswith("db_upsert") and not transitions:
                checks.append(Check(threshold, None, True, "no samples: no alert was raised"))
            else:
                note = "no data"
                if threshold.metric.startswith("db_upsert"):
                    note = f"no samples although {transitions:.0f} alert transitions were raised"
                checks.append(Check(threshold, None, False, note))
            continue
        checks.append(Check(threshold, value, threshold.holds(value)))
    return checks


# --------------------------------------------------------------------------------------------
# Formatting


def format_value(value: float | None, unit: str) -> str:
    """A KPI value for people: ``1.23ms``, ``0.0042 cores``, ``0.12%``, ``1,500``."""
    if value is None:
        return "n/a"
    if unit == "s":
        if abs(value) < 1e-3:
            return f"{value * 1e6:.0f}µs"
        if abs(value) < 1.0:
            return f"{value * 1e3:.2f}ms"
        return f"{value:.2f}s"
    if unit == "ms":
        return f"{value:.2f}ms"
    if unit == "us":
        return f"{value:.1f}µs"
    if unit == "ratio":
        return f"{value * 100:.2f}%"
    if unit == "cores":
        return f"{value:.3f} cores"
    if unit == "MB":
        return f"{value:.0f}MB"
    if unit == "msg/s":
        return f"{value:,.0f}/s"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.3f}"


def _kpi(name: str, value: float | None) -> str:
    return format_value(value, KPIS.get(name, ("", ""))[0])


def _dots(label: str, width: int = 34) -> str:
    return label + "." * max(2, width - len(label)) + ":"


def render_summary(
    title: str,
    context: Sequence[str],
    checks: Sequence[Check],
    measured: Measured,
    extra: Sequence[str] = (),
) -> str:
    """The k6-style summary: thresholds with ✓/✗, the accounting, then the trends."""
    lines = [f"  {title}"]
    lines.extend(f"  {line}" for line in context)
    lines.append("")
    lines.append("  THRESHOLDS")
    for check in checks:
        mark = "✓" if check.passed else "✗"
        shown = _kpi(check.threshold.metric, check.value)
        note = f"  ({check.note})" if check.note else ""
        lines.append(
            f"    {mark} {_dots(check.threshold.metric)} {shown}  [{check.threshold.text}]{note}"
        )
    acc = measured.accounting
    dropped = " ".join(f"{reason}={n}" for reason, n in acc.dropped.items())
    lines.append("")
    lines.append("  ACCOUNTING")
    lines.append(
        f"    sent={acc.sent} received={acc.received} evaluated={acc.evaluated} "
        f"dropped{{{dropped}}} bad_frames={acc.bad_frames} unaccounted={acc.unaccounted}"
    )
    lines.append("")
    lines.append("  TRENDS")
    values = measured.values
    for name, trend in measured.trends.items():
        unit = "ms" if name.startswith("db_") else "s"
        parts = []
        for key, value in trend.items():
            if key == "count":
                parts.append(f"n={value:,.0f}")
            elif key == "max_bound" and value is not None:
                parts.append(f"max<={format_value(value, unit)}")
            else:
                parts.append(f"{key}={format_value(value, unit)}")
        lines.append(f"    {_dots(name)} " + " ".join(parts))

    def v(name: str) -> str:
        return _kpi(name, values[name])

    rows = [
        ("throughput", f"sent={v('sent_rate')} processed={v('processed_rate')}"),
        ("queue_depth", f"peak={v('queue_depth_peak')}"),
        ("feed_lag", f"max={v('feed_lag_max')} (read time - E)"),
        (
            "service",
            f"cpu={v('service_cpu_cores')} ({v('service_cpu_us_per_msg')}/msg) "
            f"rss_max={v('service_rss_max')}",
        ),
        (
            "generator",
            f"lateness p50={v('generator_lateness_p50')} p99={v('generator_lateness_p99')} "
            f"max={v('generator_lateness_max')} cpu={v('generator_cpu_cores')} "
            f"rate_error={v('sent_rate_error')}",
        ),
        (
            "alerts",
            f"transitions={v('alert_transitions')} db_timeouts={v('db_timeouts')} "
            f"reconnects={v('reconnects')}",
        ),
    ]
    lines.extend(f"    {_dots(label)} {text}" for label, text in rows)
    lines.extend(f"    {line}" for line in extra)
    if measured.notes:
        lines.append("")
        lines.extend(f"  note: {note}" for note in measured.notes)
    passed = sum(1 for check in checks if check.passed)
    lines.append("")
    verdict = "PASS" if passed == len(checks) else "FAIL"
    lines.append(f"  {verdict}: {passed}/{len(checks)} thresholds hold")
    return "\n".join(lines) + "\n"


def progress_line(sample: dict[str, Any], previous: dict[str, Any] | None) -> str:
    """``[  12s measure] sent 1,500/s processed 1,500/s p99 0.80ms lag 1.2ms depth 3``."""
    sent_rate = processed_rate = 0.0
    p99 = None
    if previous is not None:
        dt = max(sample["wall"] - previous["wall"], 1e-9)
        sent_rate = (sample["sent"] - previous["sent"]) / dt
        processed_rate = (accounted(sample) - accounted(previous)) / dt
        buckets = _merge(
            _delta_buckets(sample["queue_time"][s], previous["queue_time"][s])
            for s in sample["queue_time"]
        )
        p99 = histogram_quantile(0.99, buckets)
    return (
        f"[{sample['t']:6.1f}s {sample['phase']:>7}] sent {sent_rate:>8,.0f}/s "
        f"processed {processed_rate:>8,.0f}/s p99 {format_value(p99, 's'):>8} "
        f"lag {format_value(sample['lag'], 's'):>8} depth {sample['queue_depth_max']:>4.0f} "
        f"gen-late {format_value(sample['generator_late_max'], 's'):>8}"
    )


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
            dt = max(sample["wall"] - previous["wall"], 1e-9)
            row["sent_rate"] = (sample["sent"] - previous["sent"]) / dt
            row["processed_rate"] = (accounted(sample) - accounted(previous)) / dt
            buckets = _merge(
                _delta_buckets(sample["queue_time"][s], previous["queue_time"][s])
                for s in sample["queue_time"]
            )
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


def environment() -> dict[str, Any]:
    """Where the test ran: CPU, cores, Python, package versions, load, commit."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    for package in (
        "oraculo-trio",
        "trio",
        "trio-websocket",
        "msgspec",
        "prometheus-client",
        "httpx",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    commit = None
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            timeout=5,
            cwd=Path(__file__).resolve().parents[1],
        )
        commit = result.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "versions": versions,
        "commit": commit,
    }


# --------------------------------------------------------------------------------------------
# Artifacts


def metrics_document(
    *,
    config: dict[str, Any],
    env: dict[str, Any],
    checks: Sequence[Check],
    measured: Measured,
    series: list[dict[str, Any]],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``metrics.json``: config, environment, kpis, accounting, series (+ values, trends)."""
    tested = {check.threshold.metric for check in checks}
    kpis = [
        {
            "name": check.threshold.metric,
            "value": check.value,
            "threshold": check.threshold.text,
            "pass": check.passed,
            **({"note": check.note} if check.note else {}),
        }
        for check in checks
    ]
    kpis.extend(
        {"name": name, "value": value, "threshold": None, "pass": None}
        for name, value in measured.values.items()
        if name not in tested
    )
    return {
        "config": config,
        "environment": env,
        "kpis": kpis,
        "accounting": attrs.asdict(measured.accounting),
        "series": series,
        "values": measured.values,
        "units": {name: unit for name, (unit, _) in KPIS.items()},
        "trends": measured.trends,
        "notes": measured.notes,
        "verdict": "pass" if all(check.passed for check in checks) else "fail",
        **(extra or {}),
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write ``document`` as indented JSON (NaN and infinities become null)."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    path.write_text(json.dumps(clean(document), indent=2, sort_keys=False) + "\n")


# Inline SVG plots ---------------------------------------------------------------------------

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")


def svg_chart(
    title: str,
    xs: Sequence[float],
    lines: dict[str, Sequence[float | None]],
    *,
    unit: str = "",
    scale: float = 1.0,
    shade: tuple[float, float] | None = None,
    x_unit: str = "s",
    width: int = 760,
    height: int = 220,
) -> str:
    """A line chart as inline SVG: one polyline per series, axes, legend, shaded window."""
    left, right, top, bottom = 64, 16, 28, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    points = [
        (x, v * scale)
        for ys in lines.values()
        for x, v in zip(xs, ys, strict=False)
        if v is not None
    ]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<text x="{left}" y="16" font-size="13" font-weight="bold">{html.escape(title)}</text>',
    ]
    if not points:
        parts.append(f'<text x="{left}" y="{top + plot_h / 2}">no data</text></svg>')
        return "".join(parts)
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y1 = max(p[1] for p in points)
    y1 = y1 * 1.1 if y1 > 0 else 1.0
    x1 = x1 if x1 > x0 else x0 + 1.0

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def py(y: float) -> float:
        return top + plot_h - (y / y1) * plot_h

    if shade is not None:
        sx0, sx1 = px(max(shade[0], x0)), px(min(shade[1], x1))
        parts.append(
            f'<rect x="{sx0:.1f}" y="{top}" width="{max(sx1 - sx0, 0):.1f}" height="{plot_h}" '
            'fill="#eef5ff"/>'
        )
    parts.append(
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>'
    )
    for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = y1 * fraction
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{py(y):.1f}" y2="{py(y):.1f}" '
            'stroke="#e5e5e5"/>'
            f'<text x="{left - 4}" y="{py(y) + 4:.1f}" text-anchor="end">{_tick(y)}{unit}</text>'
        )
    for fraction in (0.0, 0.5, 1.0):
        x = x0 + (x1 - x0) * fraction
        parts.append(
            f'<text x="{px(x):.1f}" y="{height - 10}" text-anchor="middle">{x:,.0f}{x_unit}</text>'
        )
    for index, (name, ys) in enumerate(lines.items()):
        color = _COLORS[index % len(_COLORS)]
        coords = " ".join(
            f"{px(x):.1f},{py(v * scale):.1f}"
            for x, v in zip(xs, ys, strict=False)
            if v is not None
        )
        if coords:
            parts.append(
                f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{coords}"/>'
            )
        parts.append(
            f'<text x="{left + plot_w - 150}" y="{top + 14 + 14 * index}" fill="{color}">'
            f"{html.escape(name)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _tick(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def render_html(document: dict[str, Any], summary: str, charts: Sequence[str] | None = None) -> str:
    """The self-contained ``report.html``: summary, plots, KPI table, config, environment."""
    series = document.get("series", [])
    if charts is None:
        charts = series_charts(series)
    rows = []
    for kpi in document.get("kpis", []):
        status = "" if kpi["pass"] is None else ("pass" if kpi["pass"] else "fail")
        unit = KPIS.get(kpi["name"], ("", ""))[0]
        rows.append(
            f'<tr class="{status}"><td>{html.escape(kpi["name"])}</td>'
            f"<td>{html.escape(format_value(kpi['value'], unit))}</td>"
            f"<td>{html.escape(kpi['threshold'] or '')}</td>"
            f"<td>{'' if kpi['pass'] is None else ('✓' if kpi['pass'] else '✗')}</td></tr>"
        )
    config = html.escape(json.dumps(document.get("config", {}), indent=2))
    env = html.escape(json.dumps(document.get("environment", {}), indent=2))
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>oraculo-trio load test</title>"
        "<style>body{font-family:sans-serif;margin:24px;max-width:900px}"
        "pre{background:#f6f6f6;padding:8px;overflow-x:auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:3px 8px}"
        "tr.pass td:last-child{color:#2a7}tr.fail{background:#fdecec}"
        "tr.fail td:last-child{color:#c22}</style></head><body>"
        "<h1>oraculo-trio load test</h1>"
        f"<pre>{html.escape(summary)}</pre>"
        "<h2>Over time</h2><p>The shaded band is the measured phase.</p>"
        + "".join(f"<div>{chart}</div>" for chart in charts)
        + "<h2>KPIs</h2><table><tr><th>KPI</th><th>value</th><th>threshold</th><th></th></tr>"
        + "".join(rows)
        + "</table>"
        f"<h2>Configuration</h2><pre>{config}</pre>"
        f"<h2>Environment</h2><pre>{env}</pre>"
        "</body></html>\n"
    )


def series_charts(series: Sequence[dict[str, Any]]) -> list[str]:
    """The four plots the issue asks for, plus CPU."""
    xs = [row["t"] for row in series]
    marks = {row["mark"]: row["t"] for row in series if row.get("mark")}
    shade = None
    if "measure_start" in marks:
        shade = (marks["measure_start"], marks.get("measure_end", xs[-1] if xs else 0.0))

    def col(name: str) -> list[float | None]:
        return [row.get(name) for row in series]

    return [
        svg_chart(
            "Queue time (frame read -> rules evaluated)",
            xs,
            {"p50": col("queue_time_p50"), "p99": col("queue_time_p99"),
             "latest (max)": col("queue_time_latest_max")},
            unit="ms", scale=1000.0, shade=shade,
        ),
        svg_chart(
            "Lag",
            xs,
            {"scheduler lag": col("lag"), "feed lag (read - E)": col("feed_lag_max"),
             "generator lateness": col("generator_late_max")},
            unit="ms", scale=1000.0, shade=shade,
        ),
        svg_chart("Queue depth (peak shard)", xs, {"depth": col("queue_depth_max")}, shade=shade),
        svg_chart(
            "Throughput",
            xs,
            {"sent/s": col("sent_rate"), "processed/s": col("processed_rate")},
            shade=shade,
        ),
        svg_chart(
            "CPU (cores)",
            xs,
            {"service": col("service_cpu_cores"), "generator": col("generator_cpu_cores")},
            shade=shade,
        ),
    ]  # fmt: skip


# --------------------------------------------------------------------------------------------
# compare


def load_metrics(path: str | Path) -> dict[str, Any]:
    """A ``metrics.json``, given it or its artifact directory.

    Raises:
        ConfigError: nothing readable there.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"compare: cannot read {path}: {exc}") from None


def compare(a: dict[str, Any], b: dict[str, Any], names: Sequence[str] = ("A", "B")) -> str:
    """A before/after table of two ``metrics.json`` documents: every KPI, then accounting."""
    values_a = a.get("values") or {k["name"]: k["value"] for k in a.get("kpis", [])}
    values_b = b.get("values") or {k["name"]: k["value"] for k in b.get("kpis", [])}
    verdict_a = {k["name"]: k["pass"] for k in a.get("kpis", []) if k.get("pass") is not None}
    verdict_b = {k["name"]: k["pass"] for k in b.get("kpis", []) if k.get("pass") is not None}
    width = 26
    lines = [
        f"{'KPI':<{width}} {names[0]:>16} {names[1]:>16} {'change':>10}",
        "-" * (width + 46),
    ]
    for name in [n for n in KPIS if n in values_a or n in values_b]:
        unit = KPIS[name][0]
        va, vb = values_a.get(name), values_b.get(name)
        change = ""
        if va is not None and vb is not None:
            if va:
                change = f"{(vb - va) / abs(va) * 100:+.1f}%"
            elif vb:
                change = "new"
        mark_a = {True: " ✓", False: " ✗"}.get(verdict_a.get(name), "  ")
        mark_b = {True: " ✓", False: " ✗"}.get(verdict_b.get(name), "  ")
        lines.append(
            f"{name:<{width}} {format_value(va, unit) + mark_a:>16} "
            f"{format_value(vb, unit) + mark_b:>16} {change:>10}"
        )
    lines.append("")
    for side, document in zip(names, (a, b), strict=True):
        acc = document.get("accounting", {})
        config = document.get("config", {})
        lines.append(
            f"{side}: {config.get('stream', '?')} {config.get('rate', '?')} msg/s "
            f"{config.get('duration', '?')} s, verdict {document.get('verdict', '?')}; "
            f"sent={acc.get('sent')} evaluated={acc.get('evaluated')} "
            f"dropped={acc.get('dropped')} unaccounted={acc.get('unaccounted')}"
        )
    return "\n".join(lines) + "\n"
