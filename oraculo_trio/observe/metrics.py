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
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

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


class LedgerChild:
    """One series of a ledger metric: a plain count, changed only by the Trio thread."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount

    def set(self, value: int) -> None:
        self.value = value


class LedgerFamily(Collector):
    """A counter or gauge of the accounting, exposed from the :class:`Ledger`'s last capture."""

    def __init__(self, spec: MetricSpec, registry: CollectorRegistry, ledger: Ledger) -> None:
        self.spec = spec
        self.children: dict[tuple[str, ...], LedgerChild] = {}
        self._ledger = ledger
        ledger.families.append(self)
        registry.register(self)

    def labels(self, *values: str) -> LedgerChild:
        key = tuple(str(v) for v in values)
        if len(key) != len(self.spec.labels):
            raise ValueError(f"{self.spec.name} takes labels {self.spec.labels}, got {key}")
        child = self.children.get(key)
        if child is None:
            child = self.children[key] = LedgerChild()
        return child

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        for key, value in self._ledger.values(self).items():
            family.add_metric(list(key), value)
        yield family

    def _family(self) -> CounterMetricFamily | GaugeMetricFamily:
        spec = self.spec
        if spec.type == COUNTER:
            return CounterMetricFamily(
                spec.name.removesuffix("_total"), spec.help, labels=spec.labels
            )
        return GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)


class Ledger:
    """The accounting's terms, captured together so that every scrape sees them balance:
    ``received + backfilled = evaluated + dropped + bad_frames + in_flight``
    (``docs/architecture.md``).

    The counters change in the Trio thread, between its checkpoints; a scrape runs in the HTTP
    thread. :meth:`refresh` (HTTP thread) has the Trio thread run :meth:`capture` between two
    task steps, where no message is halfway through a stage, and counts what is in flight
    from the queues themselves at that moment. A loop too busy or blocked to answer within
    the scrape's patience is served the previous capture: older, but balanced.

    Without an attached pipeline (tests, a service not yet started or already drained) the
    live values are served and nothing is in flight.
    """

    def __init__(self) -> None:
        self.families: list[LedgerFamily] = []
        self._token: trio.lowlevel.TrioToken | None = None
        self._in_flight: Callable[[], Mapping[str, int]] | None = None
        self._in_flight_family: LedgerFamily | None = None
        self._captured: dict[LedgerFamily, dict[tuple[str, ...], int]] | None = None

    def attach(
        self, in_flight: Callable[[], Mapping[str, int]], token: trio.lowlevel.TrioToken
    ) -> None:
        """Count ``in_flight()`` (per stream, called in the Trio thread) into the ledger's
        gauge at each capture; captures run in the thread of ``token``."""
        gauges = [family for family in self.families if family.spec.type != COUNTER]
        (self._in_flight_family,) = gauges
        self._in_flight, self._token = in_flight, token
        self._captured = None

    def detach(self) -> None:
        """The pipeline is gone: serve live values again (nothing is in flight)."""
        if self._in_flight_family is not None:
            for child in self._in_flight_family.children.values():
                child.value = 0
        self._in_flight = self._token = self._in_flight_family = None
        self._captured = None

    def capture(self) -> None:
        """Copy every term now. In the Trio thread (or with no Trio loop running)."""
        if self._in_flight is not None and self._in_flight_family is not None:
            counts = self._in_flight()
            for key, child in self._in_flight_family.children.items():
                child.value = counts.get(key[0], 0)
        self._captured = {
            family: {key: child.value for key, child in family.children.items()}
            for family in self.families
        }

    def refresh(self, patience: float = 0.5) -> None:
        """Capture from the Trio thread, waiting ``patience`` seconds at most. Any thread."""
        token = self._token
        if token is None:
            self._captured = None
            return
        done = threading.Event()

        def capture() -> None:
            try:
                self.capture()
            finally:
                done.set()

        try:
            token.run_sync_soon(capture)
        except trio.RunFinishedError:
            self._captured = None
            return
        done.wait(patience)

    def values(self, family: LedgerFamily) -> dict[tuple[str, ...], int]:
        captured = self._captured
        if captured is not None and family in captured:
            return captured[family]
        return {key: child.value for key, child in family.children.items()}


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


def _new_family(
    spec: MetricSpec, registry: CollectorRegistry, ledger: Ledger
) -> Counter | Gauge | FastHistogram | LedgerFamily:
    if spec.ledger:
        return LedgerFamily(spec, registry, ledger)
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
        self.ledger = Ledger()
        self._families: dict[str, Counter | Gauge | FastHistogram | LedgerFamily] = {}
        collected = [spec for spec in self._table if spec.collected]
        for spec in self._table:
            if spec.collected:
                continue
            family = self._families[spec.attribute] = _new_family(spec, self.inner, self.ledger)
            if not spec.labels:
                # A Counter or Gauge without labels is its own series; a FastHistogram's is
                # its one child.
                series = (
                    family.labels() if isinstance(family, FastHistogram | LedgerFamily) else family
                )
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
        impossible = set(spec.impossible)
        for values in itertools.product(*pools):
            if impossible and tuple(str(value) for value in values) in impossible:
                continue
            child = family.labels(*(str(value) for value in values))
            if children is not None:
                children[values[0] if len(values) == 1 else values] = child

    def _add_given(self, name: Given, value: object) -> None:
        """Create the series of one more value of ``name`` (a sink, a limiter); a value
        already known (a restarted task registering again) changes nothing."""
        if value in self._given[name]:
            return
        self._given[name] = (*self._given[name], value)
        for spec in self._table:
            if name in spec.initial:
                self._create_series(spec, {**self._given, name: (value,)})

    def exposition(self) -> bytes:
        """The registry in Prometheus text format, the accounting captured together."""
        self.ledger.refresh()
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
        """The accounting terms (``docs/architecture.md``), summed over streams and labels.

        ``received + backfilled = evaluated + stale_drop + conflated + superseded + overflow
        + unsynced + duplicate + bad_frames + in_flight``; ``unaccounted`` is what is left
        over, 0 unless a message went missing.
        Call it in the Trio thread (between task steps the terms balance) or once the
        pipeline has stopped; another thread reads :attr:`ledger` through a scrape.
        """
        self.ledger.capture()

        def total(family: LedgerFamily, **labels: str) -> int:
            values = self.ledger.values(family)
            names = family.spec.labels
            return sum(
                value
                for key, value in values.items()
                if all(key[names.index(name)] == want for name, want in labels.items())
            )

        terms = {
            "received": total(self._families["received"]),
            "backfilled": total(self._families["backfilled"]),
            "evaluated": total(self._families["evaluated"]),
        }
        for reason in DROP_REASONS:
            terms[reason] = total(self._families["dropped"], reason=reason)
        terms["bad_frames"] = total(self._families["bad_frames"])
        terms["in_flight"] = total(self._families["in_flight"])
        taken_in = ("received", "backfilled")
        accounted = sum(value for key, value in terms.items() if key not in taken_in)
        terms["unaccounted"] = terms["received"] + terms["backfilled"] - accounted
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
