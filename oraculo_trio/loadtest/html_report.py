"""The self-contained ``report.html``: a verdict banner, the summary, inline SVG plots (no
script, no network), the latency percentile plots, the KPI table, the configuration and the
environment.

Every time chart shares one X range (load start to the end of the drain) and shades the same
phases (warm-up, measured, drain), ticks fall on round values (1, 2 or 5 times a power of
ten) and both axes are titled. Charts scale with the page (``viewBox``); nothing is wider than
the page.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from typing import Any

import attrs

from oraculo_trio.loadtest.measure import KPIS
from oraculo_trio.loadtest.summary import format_value

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")
_PHASE_FILL = {"warm-up": "#f0f0f0", "measured": "#e3efff", "drain": "#fff4dc"}
WIDTH, HEIGHT = 860, 250
LEFT, RIGHT, TOP, BOTTOM = 72, 16, 30, 44


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten) covering ``[low, high]``."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        high = low + 1.0
    raw = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    ticks = [round(math.floor(low / step) * step, 12)]
    while ticks[-1] < high:
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


def _tick_text(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.6g}"


@attrs.frozen
class Axes:
    """Where a chart's data goes: the X range (shared by the time charts), axis titles and
    the shaded phases ``(name, start, end)``."""

    x_range: tuple[float, float]
    x_title: str
    y_title: str
    phases: tuple[tuple[str, float, float], ...] = ()
    x_labels: tuple[tuple[float, str], ...] = ()
    """Labelled X positions instead of round ticks (a percentile plot's p50, p99...)."""


def svg_chart(
    title: str,
    xs: Sequence[float],
    lines: dict[str, Sequence[float | None]],
    axes: Axes,
    *,
    scale: float = 1.0,
) -> str:
    """A line chart as inline SVG: one polyline per series, round ticks, titled axes, shaded
    phases, a legend."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    x0, x1 = axes.x_range
    points = [v * scale for ys in lines.values() for v in ys if v is not None and math.isfinite(v)]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        'width="100%" font-family="sans-serif" font-size="11" role="img">',
        f'<text x="{LEFT}" y="18" font-size="13" font-weight="bold">{html.escape(title)}</text>',
    ]
    y_ticks = nice_ticks(0.0, max(points, default=1.0) or 1.0)
    y1 = y_ticks[-1]

    def px(x: float) -> float:
        return LEFT + (x - x0) / ((x1 - x0) or 1.0) * plot_w

    def py(y: float) -> float:
        return TOP + plot_h - (y / y1) * plot_h

    for name, start, end in axes.phases:
        a, b = px(max(start, x0)), px(min(end, x1))
        parts.append(
            f'<rect x="{a:.1f}" y="{TOP}" width="{max(b - a, 0):.1f}" height="{plot_h}" '
            f'fill="{_PHASE_FILL.get(name, "#f6f6f6")}"/>'
            f'<text x="{a + 3:.1f}" y="{TOP + 11}" fill="#888">{html.escape(name)}</text>'
        )
    parts.append(
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>'
    )
    for y in y_ticks:
        parts.append(
            f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{py(y):.1f}" y2="{py(y):.1f}" '
            f'stroke="#e5e5e5"/><text x="{LEFT - 4}" y="{py(y) + 4:.1f}" '
            f'text-anchor="end">{_tick_text(y)}</text>'
        )
    x_labels = axes.x_labels or tuple((x, _tick_text(x)) for x in nice_ticks(x0, x1, 8))
    for x, text in x_labels:
        if x0 <= x <= x1:
            parts.append(
                f'<text x="{px(x):.1f}" y="{HEIGHT - 26}" text-anchor="middle">'
                f"{html.escape(text)}</text>"
            )
    parts.append(_axis_titles(axes, plot_w, plot_h))
    if not points:
        parts.append(f'<text x="{LEFT + 8}" y="{TOP + plot_h / 2}">no data</text>')
    for index, (name, ys) in enumerate(lines.items()):
        color = _COLORS[index % len(_COLORS)]
        for run in _runs(xs, ys, scale):
            coords = " ".join(f"{px(x):.1f},{py(v):.1f}" for x, v in run)
            parts.append(
                f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{coords}"/>'
            )
        parts.append(
            f'<text x="{LEFT + plot_w - 200}" y="{TOP + 26 + 14 * index}" fill="{color}">'
            f"{html.escape(name)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _axis_titles(axes: Axes, plot_w: float, plot_h: float) -> str:
    return (
        f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 8}" text-anchor="middle" fill="#444">'
        f"{html.escape(axes.x_title)}</text>"
        f'<text transform="translate(14 {TOP + plot_h / 2}) rotate(-90)" text-anchor="middle" '
        f'fill="#444">{html.escape(axes.y_title)}</text>'
    )


def _runs(
    xs: Sequence[float], ys: Sequence[float | None], scale: float
) -> list[list[tuple[float, float]]]:
    """The series split where a value is missing (a gap, not a line to zero)."""
    runs: list[list[tuple[float, float]]] = [[]]
    for x, v in zip(xs, ys, strict=False):
        if v is None or not math.isfinite(v):
            if runs[-1]:
                runs.append([])
            continue
        runs[-1].append((x, v * scale))
    return [run for run in runs if run]


# Percentile plot: X is -log10(1 - q), so p50, p90, p99, p99.9 are equally spaced.
_PERCENTILE_TICKS = ((0.0, "p0"), (0.5, "p50"), (0.9, "p90"), (0.99, "p99"), (0.999, "p99.9"))


def _nines(quantile: float) -> float:
    return -math.log10(max(1.0 - quantile, 1e-6))


def percentile_chart(title: str, curves: dict[str, Sequence[Sequence[float]]]) -> str:
    """An HDR percentile plot: latency (ms) against the percentile, one curve per series of
    ``(quantile, seconds)`` points (each only as far as its samples allow)."""
    xs_all = [_nines(q) for points in curves.values() for q, _ in points]
    x1 = max(max(xs_all, default=2.0), 2.0)
    lines = {}
    xs: list[float] = []
    for name, points in curves.items():
        offset = len(xs)
        xs.extend(_nines(q) for q, _ in points)
        # Each curve has its own X values: pad the others with gaps.
        lines[name] = [None] * offset + [value for _, value in points]
    for name in lines:
        lines[name] = lines[name] + [None] * (len(xs) - len(lines[name]))
    labels = tuple((_nines(q), text) for q, text in _PERCENTILE_TICKS)
    axes = Axes((0.0, x1), "percentile", "milliseconds", x_labels=labels)
    return svg_chart(title, xs, lines, axes, scale=1000.0)


_STYLE = (
    "body{font-family:sans-serif;margin:16px auto;max-width:1100px;padding:0 12px;"
    "overflow-wrap:anywhere}"
    ".banner{padding:14px 18px;border-radius:6px;font-size:20px;font-weight:bold;color:#fff;"
    "margin-bottom:16px}.banner.pass{background:#1e8e3e}.banner.fail{background:#c5221f}"
    ".banner ul{margin:6px 0 0;font-size:15px;font-weight:normal}"
    "pre{background:#f6f6f6;padding:8px;white-space:pre-wrap;overflow-wrap:anywhere;"
    "font-size:12px}"
    "table{border-collapse:collapse;max-width:100%}td,th{border:1px solid #ddd;padding:3px 8px;"
    "overflow-wrap:anywhere}"
    "tr.pass td:last-child{color:#2a7}tr.fail{background:#fdecec}"
    "tr.fail td:last-child{color:#c22}svg{display:block;max-width:100%;height:auto}"
)


def banner(document: dict[str, Any]) -> str:
    """The verdict banner: PASS or FAIL, and each threshold that failed with its value."""
    checked = [kpi for kpi in document.get("kpis", []) if kpi.get("pass") is not None]
    failed = [kpi for kpi in checked if not kpi["pass"]]
    verdict = document.get("verdict", "fail" if failed else "pass")
    text = (
        f"PASS: {len(checked)}/{len(checked)} thresholds hold"
        if verdict == "pass"
        else f"FAIL: {len(checked) - len(failed)}/{len(checked)} thresholds hold"
    )
    items = "".join(
        f"<li>{html.escape(kpi['threshold'])}: measured "
        f"{html.escape(format_value(kpi['value'], KPIS.get(kpi['name'], ('', ''))[0]))}"
        f"{html.escape(' (' + kpi['note'] + ')' if kpi.get('note') else '')}</li>"
        for kpi in failed
    )
    return (
        f'<div class="banner {verdict}" id="verdict">{html.escape(text)}'
        f"{f'<ul>{items}</ul>' if items else ''}</div>"
    )


def render_html(document: dict[str, Any], summary: str, charts: Sequence[str] | None = None) -> str:
    """The self-contained ``report.html``: banner, summary, plots, KPI table, config,
    environment."""
    if charts is None:
        charts = [*series_charts(document.get("series", [])), *latency_charts(document)]
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
    verdict = banner(document) if document.get("kpis") else ""
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>oraculo-trio load test</title><style>{_STYLE}</style></head><body>"
        f"{verdict}<h1>oraculo-trio load test</h1>"
        f"<pre>{html.escape(summary)}</pre>"
        "<h2>Over time</h2><p>Every chart spans the whole run; the shaded bands are the "
        "warm-up, the measured phase and the drain (the generator has stopped: rates fall "
        "to 0 by design).</p>"
        + "".join(f"<div>{chart}</div>" for chart in charts)
        + "<h2>KPIs</h2>"
        "<table><tr><th>KPI</th><th>value</th><th>threshold</th><th></th></tr>"
        + "".join(rows)
        + "</table>"
        f"<h2>Configuration</h2><pre>{config}</pre>"
        f"<h2>Environment</h2><pre>{env}</pre>"
        "</body></html>\n"
    )


def phases_of(series: Sequence[dict[str, Any]]) -> tuple[tuple[str, float, float], ...]:
    """The warm-up, measured and drain bands from the series' marks."""
    marks = {row["mark"]: row["t"] for row in series if row.get("mark")}
    if not series:
        return ()
    start = marks.get("start", series[0]["t"])
    measure_start = marks.get("measure_start")
    if measure_start is None:
        return ()
    measure_end = marks.get("measure_end", series[-1]["t"])
    final = marks.get("final", series[-1]["t"])
    return (
        ("warm-up", start, measure_start),
        ("measured", measure_start, measure_end),
        ("drain", measure_end, final),
    )


def series_charts(series: Sequence[dict[str, Any]]) -> list[str]:
    """The run's plots over time: queue time, lag, queue depth, throughput, CPU, all on one
    X range with the same phases shaded."""
    xs = [row["t"] for row in series]
    phases = phases_of(series)
    x_range = (min(xs, default=0.0), max(xs, default=1.0))

    def axes(y_title: str) -> Axes:
        return Axes(x_range, "seconds since the runner started", y_title, phases)

    def col(name: str) -> list[float | None]:
        return [row.get(name) for row in series]

    return [
        svg_chart(
            "Queue time (frame read -> rules evaluated)", xs,
            {"p50": col("queue_time_p50"), "p99": col("queue_time_p99"),
             "latest (max)": col("queue_time_latest_max")},
            axes("milliseconds"), scale=1000.0,
        ),
        svg_chart(
            "Lag", xs,
            {"scheduler lag": col("lag"), "feed lag (read - E)": col("feed_lag_max"),
             "generator lateness": col("generator_late_max")},
            axes("milliseconds"), scale=1000.0,
        ),
        svg_chart("Queue depth (peak shard)", xs, {"depth": col("queue_depth_max")},
                  axes("messages")),
        svg_chart(
            "Throughput", xs,
            {"sent/s": col("sent_rate"), "processed/s": col("processed_rate")},
            axes("messages per second"),
        ),
        svg_chart(
            "CPU", xs,
            {"service": col("service_cpu_cores"), "generator": col("generator_cpu_cores")},
            axes("cores"),
        ),
    ]  # fmt: skip


def latency_charts(document: dict[str, Any]) -> list[str]:
    """One HDR percentile plot per stream: queue time and the age of what is evaluated."""
    curves = document.get("latency_curves", {})
    charts = []
    for stream in sorted({key.split("{")[1].rstrip("}") for key in curves}):
        lines = {
            name: curves[f"{name}{{{stream}}}"]
            for name in ("queue_time", "evaluated_age")
            if f"{name}{{{stream}}}" in curves
        }
        charts.append(percentile_chart(f"Latency percentiles: {stream}", lines))
    return charts
