"""Latency distributions of a run: HDR histograms, and percentiles that say how exact they are.

The service measures its latencies (queue time, the age of what it evaluates) per message
into Prometheus histograms; the load tool takes the observations of a window (the difference
of two scrapes' buckets) into an HDR histogram (``hdrhistogram``, 3 significant digits), and
values it measures itself (per-second lag samples) go in as they are. Two rules keep the
numbers honest:

- **A percentile carries its error.** A value from a bucket is that bucket's upper bound: the
  true value lies between the bucket's lower bound and it (``Percentile.low``). The service's
  bounds are at most 20 % apart between 1 and 10 ms (``observe.metric_spec.LATENCY_BUCKETS``),
  so a p99 of 2.5 ms reads "in (2.0, 2.5] ms". Values recorded as they are carry HDR's 0.1 %.
- **Too few samples is n/a.** The q-quantile of fewer than ``1 / (1 - q)`` samples is the
  maximum or close to it, not a percentile: p95 needs 20 samples, p99 100, p99.9 1,000
  (:func:`min_samples`). Below that :meth:`Distribution.percentile` answers None, shown as
  ``n/a``.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Sequence

import attrs
from hdrh.histogram import HdrHistogram

UNIT = 1e-6
"""Seconds per recorded unit: values are recorded in microseconds."""
HIGHEST = 3600 * 10**6
"""The largest value recorded (one hour, in microseconds); larger ones are clamped to it."""
DIGITS = 3
"""Significant digits HDR keeps: 0.1 % resolution."""

QUANTILES = (0.5, 0.9, 0.99, 0.999)
"""The percentiles a report states."""


def min_samples(quantile: float) -> int:
    """How many samples the ``quantile`` needs before it differs from the maximum: 2 for
    p50, 20 for p95, 100 for p99, 1,000 for p99.9."""
    return math.ceil(1.0 / (1.0 - quantile) - 1e-9)


def label(quantile: float) -> str:
    """``p50``, ``p99``, ``p99.9``."""
    return "p" + f"{quantile * 100:.4g}"


@attrs.frozen
class Percentile:
    """A percentile and its error: the true value lies in ``(low, value]`` (``low == value``
    for a value recorded as it is, to HDR's 0.1 %); ``value`` is ``inf`` past the last
    bucket bound (then ``low`` is that bound)."""

    quantile: float
    value: float
    low: float
    count: int

    @property
    def relative_error(self) -> float:
        """How far below ``value`` the true value may lie, as a share of ``value``."""
        if not math.isfinite(self.value) or self.value <= 0:
            return 0.0
        return (self.value - self.low) / self.value


class Distribution:
    """One latency distribution (seconds), held in an HDR histogram.

    Build one with :meth:`from_buckets` (a Prometheus histogram's observations in a window)
    or :meth:`from_values` (samples measured by the load tool itself).
    """

    def __init__(self, bounds: Sequence[float] = ()) -> None:
        self._hdr = HdrHistogram(1, HIGHEST, DIGITS)
        self._bounds = tuple(sorted(bounds))
        self._overflow = 0

    @classmethod
    def from_buckets(cls, buckets: Iterable[tuple[float, float]]) -> Distribution:
        """The observations of cumulative ``(le, count)`` buckets (``+Inf`` last), each at
        its bucket's upper bound."""
        pairs = sorted(buckets)
        finite = [bound for bound, _ in pairs if math.isfinite(bound)]
        distribution = cls(finite)
        previous = 0.0
        for bound, cumulative in pairs:
            count = round(cumulative - previous)
            previous = cumulative
            if count <= 0:
                continue
            if math.isfinite(bound):
                distribution._record(bound, count)
            else:
                distribution._overflow += count
                distribution._record(HIGHEST * UNIT, count)
        return distribution

    @classmethod
    def from_values(cls, values: Iterable[float]) -> Distribution:
        """``values`` (seconds) recorded as they are."""
        distribution = cls()
        for value in values:
            distribution._record(value, 1)
        return distribution

    @classmethod
    def decode(cls, text: str, bounds: Sequence[float] = ()) -> Distribution:
        """A distribution :meth:`encode` wrote (``bounds``: the buckets it came from)."""
        distribution = cls(bounds)
        distribution._hdr = HdrHistogram.decode(base64.b64decode(text))
        return distribution

    def _record(self, seconds: float, count: int) -> None:
        units = min(max(round(seconds / UNIT), 1), HIGHEST)
        self._hdr.record_value(units, count)

    @property
    def count(self) -> int:
        """Observations recorded."""
        return int(self._hdr.get_total_count())

    @property
    def bounds(self) -> tuple[float, ...]:
        """The bucket bounds the observations came from (empty: recorded as they are)."""
        return self._bounds

    def merge(self, other: Distribution) -> Distribution:
        """This distribution and ``other`` together (same bucket bounds, or none)."""
        merged = Distribution(self._bounds or other._bounds)
        merged._hdr.add(self._hdr)
        merged._hdr.add(other._hdr)
        merged._overflow = self._overflow + other._overflow
        return merged

    def percentile(self, quantile: float) -> Percentile | None:
        """The ``quantile`` (0.99 for p99) with its error; None when there are fewer than
        :func:`min_samples` observations."""
        count = self.count
        if count < min_samples(quantile):
            return None
        return self._snap(quantile, self._hdr.get_value_at_percentile(quantile * 100.0))

    def maximum(self) -> Percentile | None:
        """The largest observation (its bucket's upper bound), None when empty."""
        if not self.count:
            return None
        return self._snap(1.0, self._hdr.get_max_value())

    def _snap(self, quantile: float, units: int) -> Percentile:
        raw = units * UNIT
        if not self._bounds:
            return Percentile(quantile, raw, raw, self.count)
        # The bucket the HDR value stands for (HDR may add its 0.1 % to a recorded bound).
        for index, bound in enumerate(self._bounds):
            if raw <= bound * (1 + 2 * 10**-DIGITS):
                low = self._bounds[index - 1] if index else 0.0
                return Percentile(quantile, bound, low, self.count)
        return Percentile(quantile, math.inf, self._bounds[-1], self.count)

    def curve(self) -> list[tuple[float, float]]:
        """``(quantile, seconds)`` points for a percentile plot, as far as the samples go:
        p0 to p99.99 in steps that halve the remaining tail, each only with enough samples."""
        points = []
        quantile = 0.0
        while quantile < 0.99995:
            found = self.percentile(quantile)
            if found is None:
                break
            if math.isfinite(found.value):
                points.append((quantile, found.value))
            quantile = 1.0 - (1.0 - quantile) / 2
        return points

    def encode(self) -> str:
        """The HDR histogram, compressed and base64 (HDR's own interchange form)."""
        return base64.b64encode(self._hdr.encode()).decode("ascii")


def summarize(distribution: Distribution) -> dict[str, object]:
    """A distribution for ``summary.json``: its count, each stated percentile with its
    bucket (None when too few samples), and the encoded histogram."""
    percentiles: dict[str, object] = {}
    for quantile in QUANTILES:
        found = distribution.percentile(quantile)
        percentiles[label(quantile)] = (
            None
            if found is None
            else {"value": _finite(found.value), "low": found.low, "samples": found.count}
        )
    return {
        "count": distribution.count,
        "percentiles": percentiles,
        "hdr": distribution.encode(),
        "bucket_bounds": list(distribution.bounds),
    }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
