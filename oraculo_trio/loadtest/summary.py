"""The k6-style text: the summary of a run and its live progress line."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from oraculo_trio.loadtest.latency import Distribution
from oraculo_trio.loadtest.measure import KPIS, Measured, interval
from oraculo_trio.loadtest.thresholds import Check


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


def _kpi(name: str, value: float | None, measured: Measured | None = None) -> str:
    unit = KPIS.get(name, ("", ""))[0]
    shown = format_value(value, unit)
    precision = measured.precision.get(name) if measured is not None else None
    if precision is not None and value is not None:
        # A percentile read from the service's buckets: the true value is in that bucket.
        shown += f" (in {format_value(precision[0], unit)}-{format_value(precision[1], unit)})"
    return shown


def verdict_line(checks: Sequence[Check]) -> str:
    """``PASS: 12/12 thresholds hold`` or ``FAIL: 11/12 thresholds hold; failed: ...``."""
    passed = sum(1 for check in checks if check.passed)
    if passed == len(checks):
        return f"PASS: {passed}/{len(checks)} thresholds hold"
    failed = ", ".join(check.threshold.text for check in checks if not check.passed)
    return f"FAIL: {passed}/{len(checks)} thresholds hold; failed: {failed}"


def _dots(label: str, width: int = 34) -> str:
    return label + "." * max(2, width - len(label)) + ":"


def render_summary(
    title: str,
    context: Sequence[str],
    checks: Sequence[Check],
    measured: Measured,
    extra: Sequence[str] = (),
) -> str:
    """The k6-style summary: the verdict, thresholds with ✓/✗, the accounting, the trends.

    Latency percentiles read from the service's buckets show their bucket ("2.50ms (in
    2.00ms-2.50ms)"); a percentile of too few samples is ``n/a``.
    """
    lines = [f"  {verdict_line(checks)}", f"  {title}"]
    lines.extend(f"  {line}" for line in context)
    lines.append("")
    lines.append("  THRESHOLDS")
    for check in checks:
        mark = "✓" if check.passed else "✗"
        shown = _kpi(check.threshold.metric, check.value, measured)
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
        f"backfilled={acc.backfilled} dropped{{{dropped}}} bad_frames={acc.bad_frames} "
        f"in_flight={acc.in_flight} unaccounted={acc.unaccounted}"
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
            elif key == "max_bound":
                continue
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
            "evaluated_age",
            f"p50={_kpi('evaluated_age_p50', values['evaluated_age_p50'], measured)} "
            f"p99={_kpi('evaluated_age_p99', values['evaluated_age_p99'], measured)} (now - E)",
        ),
        (
            "readiness",
            f"not ready in {v('not_ready_samples')} samples; unaccounted at a scrape "
            f"(max) {v('unaccounted_max_at_scrape')}",
        ),
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
    lines.append("")
    lines.append(f"  {verdict_line(checks)}")
    return "\n".join(lines) + "\n"


def progress_line(sample: dict[str, Any], previous: dict[str, Any] | None) -> str:
    """``[  12s measure] sent 1,500/s processed 1,500/s p99 0.80ms lag 1.2ms depth 3``."""
    sent_rate = processed_rate = 0.0
    p99 = None
    if previous is not None:
        _, sent_rate, processed_rate, buckets = interval(sample, previous)
        found = Distribution.from_buckets(buckets).percentile(0.99)
        p99 = None if found is None else found.value
    return (
        f"[{sample['t']:6.1f}s {sample['phase']:>7}] sent {sent_rate:>8,.0f}/s "
        f"processed {processed_rate:>8,.0f}/s p99 {format_value(p99, 's'):>8} "
        f"lag {format_value(sample['lag'], 's'):>8} depth {sample['queue_depth_max']:>4.0f} "
        f"gen-late {format_value(sample['generator_late_max'], 's'):>8}"
    )
