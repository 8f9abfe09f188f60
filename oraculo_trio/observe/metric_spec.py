"""What one row of the metric table says: :class:`MetricSpec` and its vocabulary.

The rows themselves are in :mod:`oraculo_trio.observe.metric_table`; the builder that turns
them into collectors is :class:`oraculo_trio.observe.metrics.MetricSet`.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

# What the ``# TYPE`` line says; every histogram is a FastHistogram.
COUNTER = "counter"
GAUGE = "gauge"
HISTOGRAM = "histogram"
TYPES = (COUNTER, GAUGE, HISTOGRAM)

# What a dashboard panel showing the metric is measured in.
SECONDS = "seconds"
MILLISECONDS = "milliseconds"
COUNT = "count"
"""A number of things: messages, rows, tasks, requests, weight units."""
CORES = "cores"
"""CPU seconds per second."""
BOOLEAN = "boolean"
"""0 or 1."""
TIMESTAMP = "timestamp"
"""Unix time, seconds."""
BYTES = "bytes"
INFO = "info"
"""Always 1: the labels carry the information (``oraculo_build_info``)."""
UNITS = (SECONDS, MILLISECONDS, COUNT, CORES, BOOLEAN, TIMESTAMP, BYTES, INFO)

# Histogram bounds. Latency bounds are at most 20 % apart between 1 and 10 ms, where the
# targets sit (queue time and age p99 < 10 ms), so a percentile read from them is exact to
# within its bucket: a load test states that bucket as the error. Every bound of the first,
# coarser set is kept, so a query naming an ``le`` still finds it; one more level of bisect
# per observation is all the finer grid costs.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.00075,
    0.001, 0.00125, 0.0015, 0.00175, 0.002, 0.0025, 0.003, 0.0035, 0.004, 0.005,
    0.006, 0.007, 0.0075, 0.008, 0.009, 0.01,
    0.0125, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075,
    0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75,
    1.0, 1.5, 2.0, 2.5, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0,
)  # fmt: skip
DB_MS_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 50, 100, 250, 500, 1000, 5000)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
SYNC_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)
CPU_BUCKETS = (0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5)


@attrs.frozen
class Given:
    """Label values the owner of the metrics supplies: at start-up (``ServiceMetrics(shards=4)``
    makes shards 0 to 3) or later (``register_sink``, ``register_limiter``)."""

    name: str


InitialValues = Sequence[str] | Given


def _check_row(spec: MetricSpec) -> None:
    if spec.type not in TYPES:
        raise ValueError(f"{spec.name}: type {spec.type!r} is not one of {TYPES}")
    if spec.unit not in UNITS:
        raise ValueError(f"{spec.name}: unit {spec.unit!r} is not one of {UNITS}")
    if spec.type == COUNTER and not spec.name.endswith("_total"):
        raise ValueError(f"{spec.name}: a counter's exported name ends in _total")
    if (spec.type == HISTOGRAM) != bool(spec.buckets):
        raise ValueError(f"{spec.name}: a histogram, and only a histogram, has buckets")
    if spec.children and not spec.labels:
        raise ValueError(f"{spec.name}: children of a metric without labels")
    if spec.ledger and spec.type == HISTOGRAM:
        raise ValueError(f"{spec.name}: the ledger holds counters and gauges")
    if spec.collected and (spec.children or spec.initial or spec.buckets):
        raise ValueError(f"{spec.name}: a collected row has no children, initial values or buckets")
    if spec.initial and len(spec.initial) != len(spec.labels):
        raise ValueError(f"{spec.name}: initial values for {len(spec.initial)} of {spec.labels}")
    if any(len(values) != len(spec.labels) for values in spec.impossible):
        raise ValueError(f"{spec.name}: an impossible combination is not one of {spec.labels}")


@attrs.frozen
class MetricSpec:
    """One metric: what a scrape shows of it, and how the code holds it.

    The builder (:class:`~oraculo_trio.observe.metrics.MetricSet`) sets the attribute
    ``attribute`` of the metric set to:

    - without labels, the one series (a ``Gauge`` or ``Counter``, or the child of a
      ``FastHistogram``): ``metrics.db_up.set(1)``;
    - with labels and ``children``, a dict of bound children keyed by the label value (one
      label) or the tuple of values (several): ``metrics.dropped[stream, reason].inc()``, the
      hot path's way, with no label lookup per message;
    - with labels otherwise, the metric itself: ``metrics.dumps.labels(reason).inc()``.
    """

    attribute: str
    """The attribute of :class:`~oraculo_trio.observe.metrics.ServiceMetrics` (or
    ``SupervisorMetrics``) that holds the metric."""
    name: str
    """The exported name: counters end in ``_total``; histograms add ``_bucket``, ``_sum`` and
    ``_count`` to it."""
    type: str
    """One of :data:`TYPES`, as a scrape's ``# TYPE`` line says it."""
    unit: str
    """One of :data:`UNITS`: what a dashboard panel showing the metric is measured in."""
    help: str
    """The ``# HELP`` text."""
    labels: tuple[str, ...] = ()
    """Label names, in the order ``.labels(...)`` takes them (``service`` excluded)."""
    buckets: tuple[float, ...] = ()
    """A histogram's upper bounds (``+Inf`` is added)."""
    initial: tuple[InitialValues, ...] = ()
    """Values of each label whose series exist at zero from start-up (every combination);
    empty when series appear only as they are used. Values are turned into label strings;
    the children's keys keep them as given (shards are ints)."""
    impossible: tuple[tuple[str, ...], ...] = ()
    """Combinations of ``initial`` values that no code path produces (a conflated trade):
    not created, so that no series sits at zero for ever."""
    children: bool = False
    """Hold the metric as a dict of bound children (the hot path's way), not the metric."""
    ledger: bool = False
    """A term of the accounting: held by the :class:`~oraculo_trio.observe.metrics.Ledger`,
    whose terms a scrape sees captured together, so that they balance at every scrape.
    Its children are plain counters (``inc``) owned by the Trio thread."""
    collected: bool = False
    """Read at scrape time by a collector of the builder (the process's memory, CPU and file
    descriptors), never set by the code: the builder makes no attribute for it."""

    def __attrs_post_init__(self) -> None:
        _check_row(self)
