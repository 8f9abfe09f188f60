"""The verdict: thresholds on KPIs, ``NAME OP VALUE[UNIT]``.

Thresholds read ``queue_time_p99 < 10ms`` or ``sent_rate_error <= 1%`` (units ``us ms s %``).
A ``--threshold`` for a KPI replaces the default ones for that KPI.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import attrs

from oraculo_trio.errors import ConfigError
from oraculo_trio.loadtest.measure import KPIS, PERCENTILE_BOUND, Measured

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
"""The service's acceptance targets (and the load test's own sanity: nothing unaccounted for,
the generator kept its rate)."""

#: CPU budget of --strict: 10 % of a core at 1,500 msg/s, scaled to the rate tested.
STRICT_CPU_AT_1500 = 0.10


def strict_thresholds(rate: float) -> tuple[str, ...]:
    """The strict targets ``--strict`` adds (the DB ones replace the defaults): queue time and
    scheduler lag p99 under 10 ms, 10 % of a core at 1,500 msg/s, DB upserts p50 under 2 ms
    and p95 under 5 ms."""
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


@attrs.frozen
class Check:
    """One threshold's outcome."""

    threshold: Threshold
    value: float | None
    passed: bool
    note: str = ""


def check_thresholds(thresholds: Sequence[Threshold], measured: Measured) -> list[Check]:
    """Apply each threshold to its KPI.

    A KPI without data fails, with two exceptions that pass with a note: the DB upsert
    latencies when no alert was raised (the store had nothing to write), and a percentile
    with too few samples whose upper bound (the maximum) already satisfies an upper limit
    (``lag_p95 < 0.5s`` with 15 samples, all under 0.5 s).
    """
    checks = []
    transitions = measured.values.get("alert_transitions") or 0
    for threshold in thresholds:
        value = measured.values.get(threshold.metric)
        db = threshold.metric.startswith("db_upsert")
        if value is not None:
            checks.append(Check(threshold, value, threshold.holds(value)))
        elif db and measured.values.get("db_upsert_max") is None and not transitions:
            checks.append(Check(threshold, None, True, "no samples: no alert was raised"))
        elif db and measured.values.get("db_upsert_max") is None:
            note = f"no samples although {transitions:.0f} alert transitions were raised"
            checks.append(Check(threshold, None, False, note))
        else:
            checks.append(_without_value(threshold, measured))
    return checks


def _without_value(threshold: Threshold, measured: Measured) -> Check:
    """A threshold on a KPI that is n/a: its upper bound may still decide an upper limit."""
    bound_name = PERCENTILE_BOUND.get(threshold.metric)
    bound = measured.values.get(bound_name) if bound_name else None
    if bound is not None and threshold.op in ("<", "<=") and threshold.holds(bound):
        note = f"too few samples for a percentile; {bound_name} holds it"
        return Check(threshold, None, True, note)
    if bound_name is not None:
        return Check(threshold, None, False, "too few samples for a percentile (run longer)")
    return Check(threshold, None, False, "no data")
