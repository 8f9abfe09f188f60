"""The list of every metric a service exports: name, type, labels and meaning.

The README's "Metrics" table is this module's output (``python -m
oraculo_trio.observe.catalog``), and a test checks that the README names every metric, so
the table cannot fall behind :class:`~oraculo_trio.observe.metrics.ServiceMetrics`.
"""

from __future__ import annotations

import attrs
from prometheus_client import CollectorRegistry

from oraculo_trio.observe.metrics import ServiceMetrics


@attrs.frozen
class MetricInfo:
    """One metric as a scrape shows it (besides the ``service`` label every metric carries)."""

    name: str
    """The exported name: counters end in ``_total``; histograms add ``_bucket``, ``_sum``
    and ``_count`` to it."""
    type: str
    labels: tuple[str, ...]
    meaning: str


def _collectors(registry: CollectorRegistry) -> list[object]:
    # prometheus_client has no public way to list a registry's collectors, and a labelled
    # metric with no series yet shows no label names in collect(); read them off the
    # collectors instead (every one of ours has _name, _labelnames and _documentation).
    return list(registry._collector_to_names)


def metric_catalog(metrics: ServiceMetrics | None = None) -> list[MetricInfo]:
    """Every metric of ``metrics`` (a fresh :class:`ServiceMetrics` when None), by name.

    Returns:
        One :class:`MetricInfo` per metric, sorted by exported name.
    """
    metrics = metrics if metrics is not None else ServiceMetrics()
    types = {family.name: family.type for family in metrics.inner.collect()}
    found = []
    for collector in _collectors(metrics.inner):
        base = collector._name
        kind = types[base]
        name = base + "_total" if kind == "counter" else base
        documentation = " ".join(collector._documentation.split())
        found.append(MetricInfo(name, kind, tuple(collector._labelnames), documentation))
    return sorted(found, key=lambda info: info.name)


def markdown_table(catalog: list[MetricInfo]) -> str:
    """The catalog as the README's Markdown table."""
    lines = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for info in catalog:
        labels = ", ".join(f"`{label}`" for label in info.labels) or "-"
        lines.append(f"| `{info.name}` | {info.type} | {labels} | {info.meaning} |")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(markdown_table(metric_catalog()))
