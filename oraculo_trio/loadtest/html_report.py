"""The self-contained ``report.html``: the summary, inline SVG plots (no script, no
network), the KPI table, the configuration and the environment."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import Any

from oraculo_trio.loadtest.measure import KPIS
from oraculo_trio.loadtest.summary import format_value

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
    """The run's plots: queue time, lag, queue depth, throughput and CPU over time."""
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
