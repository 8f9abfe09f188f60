"""The metric sets of a service and of its ``--workers`` supervisor, built from data.

Every metric is a row of :mod:`oraculo_trio.observe.metric_table`; :class:`MetricSet` turns a
table into collectors on a :class:`~prometheus_client.CollectorRegistry` of its own (never the
global one: one registry per service instance).

The ``service`` label is not declared on each metric: a wrapping collector adds it (and any
other constant label, such as ``worker``) to every sample at scrape time, so the hot path
never pays for it.

Hot-path rule: bind ``.labels(...)`` once and keep the child (the table's ``children`` rows
are dicts of bound children). Histograms are :class:`FastHistogram`, whose ``observe`` is a
bisect and two additions with no lock.

No ``_created`` series: prometheus_client adds one to every counter, which doubles the
series of a scrape for a value nobody queries; :class:`ConstantLabels` leaves them out.
"""

from __future__ import annotations

import bisect
import itertools
import os
import platform
from collections.abc import Iterable, Iterator, Mapping, Sequence

import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

import oraculo_trio
from oraculo_trio.core.events import STREAMS
from oraculo_trio.observe.metric_labels import (
    BAD_FRAME_REASONS,
    DB_OPS,
    DROP_REASONS,
    LAG_SPIKE_THRESHOLDS,
    LIMITERS,
    SHARDS,
    SINKS,
    TASKS,
    WORKERS,
)
from oraculo_trio.observe.metric_spec import COUNTER, HISTOGRAM, LATENCY_BUCKETS, Given, MetricSpec
from oraculo_trio.observe.metric_table import SERVICE_METRICS
from oraculo_trio.observe.supervisor_table import SUPERVISOR_METRICS

__all__ = [
    "BAD_FRAME_REASONS",
    "DB_OPS",
    "DROP_REASONS",
    "LAG_SPIKE_THRESHOLDS",
    "LATENCY_BUCKETS",
    "SERVICE",
    "ConstantLabels",
    "FastHistogram",
    "FastHistogramChild",
    "MetricSet",
    "ServiceMetrics",
    "SupervisorMetrics",
]

SERVICE = "alerts"


class FastHistogramChild:
    """One labelled series of a :class:`FastHistogram`. Not thread-safe by design: only
    the Trio thread observes; the scrape thread copies the counts in one C call."""

    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self._bounds, value)] += 1
        self.sum += value


class FastHistogram(Collector):
    """A Prometheus histogram cheap enough to observe per message.

    Exposed exactly like ``prometheus_client.Histogram`` (``_bucket``/``_count``/``_sum``).
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._bounds = tuple(float(b) for b in buckets)
        self._children: dict[tuple[str, ...], FastHistogramChild] = {}
        registry.register(self)

    def labels(self, *values: str) -> FastHistogramChild:
        key = tuple(str(v) for v in values)
        if len(key) != len(self._labelnames):
            raise ValueError(f"{self._name} takes labels {self._labelnames}, got {key}")
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = FastHistogramChild(self._bounds)
        return child

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)]

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for key, child in list(self._children.items()):
            counts = list(child.counts)
            total = 0
            buckets = []
            for bound, count in zip((*self._bounds, float("inf")), counts, strict=True):
                total += count
                buckets.append((_format_bound(bound), total))
            family.add_metric(list(key), buckets, child.sum)
        yield family


def _format_bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class ConstantLabels(Collector):
    """Re-exposes everything in ``inner`` with constant labels (``service``, ``worker``) added,
    and without prometheus_client's ``_created`` series."""

    def __init__(self, inner: CollectorRegistry, labels: dict[str, str]) -> None:
        self._inner = inner
        self._labels = dict(labels)

    def collect(self) -> Iterator[Metric]:
        for family in self._inner.collect():
            relabelled = Metric(family.name, family.documentation, family.type, family.unit)
            created = family.name + "_created"
            for sample in family.samples:
                if sample.name != created:
                    labels = {**self._labels, **sample.labels}
                    relabelled.samples.append(sample._replace(labels=labels))
            yield relabelled


def _read_proc(proc: str) -> dict[str, float]:
    """The collected process rows' values, by attribute, from ``proc`` (``/proc/self``)."""
    with open(f"{proc}/stat", "rb") as stat:
        data = stat.read()
    # After the comm field, which may hold spaces and parentheses.
    fields = data[data.rindex(b")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat", "rb") as system:
        boot = next(float(line.split()[1]) for line in system if line.startswith(b"btime"))
    values = {
        "process_cpu": (int(fields[11]) + int(fields[12])) / ticks,  # utime, stime
        "process_start_time": boot + int(fields[19]) / ticks,  # starttime
        "process_virtual_memory": float(fields[20]),  # vsize
        "process_resident_memory": float(int(fields[21]) * os.sysconf("SC_PAGE_SIZE")),  # rss
        "process_open_fds": float(len(os.listdir(f"{proc}/fd"))),
    }
    with open(f"{proc}/limits", encoding="ascii") as limits:
        for line in limits:
            if line.startswith("Max open files"):
                values["process_max_fds"] = float(line.split()[3])
    return values


class ProcessCollector(Collector):
    """The table's ``collected`` rows (``process_*``), read from ``/proc/self`` at each
    scrape; nothing where there is no ``/proc``."""

    def __init__(self, specs: Sequence[MetricSpec], proc: str = "/proc/self") -> None:
        self._specs = tuple(specs)
        self._proc = proc

    def collect(self) -> Iterator[Metric]:
        try:
            values = _read_proc(self._proc)
        except (OSError, ValueError, IndexError, StopIteration):
            return
        for spec in self._specs:
            value = values.get(spec.attribute)
            if value is None:
                continue
            if spec.type == COUNTER:
                yield CounterMetricFamily(spec.name, spec.help, value=value)
            else:
                yield GaugeMetricFamily(spec.name, spec.help, value=value)


def build_labels() -> tuple[str, str, str]:
    """``oraculo_build_info``'s label values: oraculo-trio's, Python's and Trio's versions."""
    return oraculo_trio.__version__, platform.python_version(), trio.__version__


def _new_family(spec: MetricSpec, registry: CollectorRegistry) -> Counter | Gauge | FastHistogram:
    if spec.type == HISTOGRAM:
        return FastHistogram(spec.name, spec.help, spec.labels, spec.buckets, registry)
    kind = Counter if spec.type == COUNTER else Gauge
    return kind(spec.name, spec.help, spec.labels, registry=registry)


class MetricSet:
    """The collectors of a table of :class:`~oraculo_trio.observe.metric_spec.MetricSpec`.

    Each row becomes the attribute ``spec.attribute`` (the series, a dict of bound children
    or the metric itself: see :class:`~oraculo_trio.observe.metric_spec.MetricSpec`), and
    every series of its ``initial`` label values is created at zero.

    Args:
        table: the rows, in the order a scrape lists them.
        given: the values of each :class:`~oraculo_trio.observe.metric_spec.Given` the
            table names (shards, limiters, ...).
        constant_labels: labels added to every sample; ``service="alerts"`` by default.

    Attributes:
        inner: the registry of the metrics themselves, without the constant labels.
        registry: what a scrape reads: ``inner`` with the constant labels added.
    """

    def __init__(
        self,
        table: Sequence[MetricSpec],
        given: Mapping[Given, Iterable[object]],
        constant_labels: dict[str, str] | None = None,
    ) -> None:
        self.inner = CollectorRegistry(auto_describe=True)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ConstantLabels(self.inner, constant_labels or {"service": SERVICE}))
        self._table = tuple(table)
        self._given = {name: tuple(values) for name, values in given.items()}
        self._families: dict[str, Counter | Gauge | FastHistogram] = {}
        collected = [spec for spec in self._table if spec.collected]
        for spec in self._table:
            if spec.collected:
                continue
            family = self._families[spec.attribute] = _new_family(spec, self.inner)
            if not spec.labels:
                # A Counter or Gauge without labels is its own series; a FastHistogram's is
                # its one child.
                series = family.labels() if isinstance(family, FastHistogram) else family
                setattr(self, spec.attribute, series)
            else:
                setattr(self, spec.attribute, {} if spec.children else family)
            self._create_series(spec, self._given)
        if collected:
            self.inner.register(ProcessCollector(collected))

    def _create_series(self, spec: MetricSpec, given: Mapping[Given, tuple[object, ...]]) -> None:
        """Create ``spec``'s series for every combination of its initial label values."""
        if not spec.initial:
            return
        family = self._families[spec.attribute]
        children = getattr(self, spec.attribute) if spec.children else None
        pools = [given[v] if isinstance(v, Given) else v for v in spec.initial]
        for values in itertools.product(*pools):
            child = family.labels(*(str(value) for value in values))
            if children is not None:
                children[values[0] if len(values) == 1 else values] = child

    def _add_given(self, name: Given, value: object) -> None:
        """Create the series of one more value of ``name`` (a sink, a limiter)."""
        self._given[name] = (*self._given[name], value)
        for spec in self._table:
            if name in spec.initial:
                self._create_series(spec, {**self._given, name: (value,)})

    def exposition(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)


class ServiceMetrics(MetricSet):
    """All metrics of one service instance: the rows of
    :data:`~oraculo_trio.observe.metric_table.SERVICE_METRICS`, one attribute each.

    Args:
        shards: shard count, so every ``oraculo_alerts_queue_depth{stream,shard}`` series
            exists at zero from start-up.
        limiters: names of the ``to_thread`` CapacityLimiters to pre-create series for.
        tasks: names of supervised tasks, pre-created in ``oraculo_task_exceptions_total``.
        constant_labels: labels added to every sample; ``service="alerts"`` by default.
    """

    def __init__(
        self,
        *,
        shards: int = 4,
        limiters: Sequence[str] = ("store", "rules"),
        tasks: Sequence[str] = (),
        constant_labels: dict[str, str] | None = None,
    ) -> None:
        given = {SHARDS: range(shards), LIMITERS: limiters, TASKS: tasks, SINKS: ()}
        super().__init__(SERVICE_METRICS, given, constant_labels)
        self.build_info.labels(*build_labels()).set(1)

    def register_sink(self, name: str) -> None:
        """Create the zero series of a notification sink (at dispatcher start-up)."""
        self._add_given(SINKS, name)

    def register_limiter(self, name: str) -> None:
        """Create the zero series of a named CapacityLimiter."""
        self._add_given(LIMITERS, name)

    def accounting(self) -> dict[str, int]:
        """The accounting terms (``docs/architecture.md``) from this instance's counters.

        ``received = evaluated + stale_drop + conflated + superseded + overflow + bad_frames``;
        ``unaccounted`` is what is left over: messages still in a queue while running, and 0
        once the pipeline has drained.
        """

        def total(name: str, **labels: str) -> int:
            value = self.inner.get_sample_value(name, labels)
            return int(value or 0)

        terms = {
            "received": sum(
                total("oraculo_feed_messages_received_total", stream=s) for s in STREAMS
            ),
            "evaluated": sum(
                total("oraculo_alerts_messages_evaluated_total", stream=s) for s in STREAMS
            ),
        }
        for reason in DROP_REASONS:
            terms[reason] = sum(
                total("oraculo_alerts_queue_dropped_total", stream=s, reason=reason)
                for s in STREAMS
            )
        terms["bad_frames"] = sum(
            total("oraculo_feed_bad_frames_total", reason=r) for r in BAD_FRAME_REASONS
        )
        accounted = sum(value for key, value in terms.items() if key != "received")
        terms["unaccounted"] = terms["received"] - accounted
        return terms


class SupervisorMetrics(MetricSet):
    """Metrics of the ``run --workers N`` supervisor itself (its workers have their own): the
    rows of :data:`~oraculo_trio.observe.supervisor_table.SUPERVISOR_METRICS`.

    Args:
        workers: worker processes kept running; every ``worker`` series exists from start-up.
        constant_labels: labels added to every sample; ``service="alerts"`` by default.
    """

    def __init__(self, *, workers: int, constant_labels: dict[str, str] | None = None) -> None:
        super().__init__(
            SUPERVISOR_METRICS, {WORKERS: [str(i) for i in range(workers)]}, constant_labels
        )
        self.workers.set(workers)
