"""``oraculo-trio compare A B``: a before/after table of two load-test artifacts.

A side is one run (its ``metrics.json`` or artifact folder) or a folder of repeated runs
(every sub-folder holding a ``metrics.json``): then each KPI is the runs' median and their
spread, half the range over the median, is the noise. A change is a regression when the KPI
got worse (higher, or lower for a throughput) by more than the threshold and by more than the
noise of either side.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from oraculo_trio.errors import ConfigError
from oraculo_trio.loadtest.measure import KPIS
from oraculo_trio.loadtest.summary import format_value

HIGHER_IS_BETTER = frozenset({"processed_rate", "sent_rate"})
"""KPIs that get worse as they fall; every other compared KPI gets worse as it rises."""

NOT_COMPARED = frozenset(
    {
        "alert_transitions",
        "reconnects",
        "exchange_queued_max",
        "generator_lateness_p50",
        "generator_lateness_p99",
        "generator_lateness_max",
        "generator_cpu_cores",
        "sent_rate",
        "sent_rate_error",
    }
)
"""KPIs that describe the generator or the run rather than the service: shown, never a
regression."""

CONFIG_KEYS = (
    ("stream", "stream"),
    ("rate", "rate (msg/s)"),
    ("symbols", "symbols"),
    ("database_url", "store"),
    ("settings", "--set"),
    ("levels", "levels"),
    ("faithful", "--faithful"),
)
"""Configuration that makes two runs measure different things when it differs."""


@attrs.frozen
class Runs:
    """One side of a comparison: its runs, each KPI's median and each KPI's noise."""

    documents: tuple[dict[str, Any], ...]
    values: dict[str, float | None]
    noise: dict[str, float]
    """Half the range of a KPI over the runs, relative to its median (repeated runs only)."""

    @property
    def first(self) -> dict[str, Any]:
        return self.documents[0]


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else f"not JSON: {exc}"
        raise ConfigError(f"cannot read {path}: {reason}") from None


def load_runs(path: str | Path) -> Runs:
    """One side: a ``metrics.json``, a run's folder, or a folder of repeated runs.

    Raises:
        ConfigError: nothing readable there.
    """
    path = Path(path)
    if path.is_file():
        files = [path]
    elif (path / "metrics.json").is_file():
        files = [path / "metrics.json"]
    else:
        files = sorted(path.glob("*/metrics.json"))
        if not files:
            raise ConfigError(
                f"cannot read {path}: no metrics.json there (a run's artifact folder, or a "
                "folder of runs, each with its metrics.json)"
            )
    documents = tuple(_read(file) for file in files)
    values: dict[str, float | None] = {}
    noise: dict[str, float] = {}
    for name in KPIS:
        found = [v for v in (_values(d).get(name) for d in documents) if v is not None]
        if not found:
            values[name] = None
            continue
        median = statistics.median(found)
        values[name] = median
        if len(found) > 1 and median:
            noise[name] = (max(found) - min(found)) / 2 / abs(median)
    return Runs(documents, values, noise)


def _values(document: dict[str, Any]) -> dict[str, Any]:
    return document.get("values") or {k["name"]: k["value"] for k in document.get("kpis", [])}


def config_differences(a: Runs, b: Runs, names: Sequence[str] = ("A", "B")) -> list[str]:
    """What makes the two sides measure different things (rate, symbols, store, stream...)."""
    warnings = []
    for side, runs in zip(names, (a, b), strict=True):
        configs = {json.dumps(_config(d), sort_keys=True) for d in runs.documents}
        if len(configs) > 1:
            warnings.append(f"the runs of {side} were not configured alike")
    config_a, config_b = _config(a.first), _config(b.first)
    for key, text in CONFIG_KEYS:
        if config_a.get(key) != config_b.get(key):
            warnings.append(
                f"{text} differs: {_shown(config_a.get(key))} in {names[0]}, "
                f"{_shown(config_b.get(key))} in {names[1]}; the comparison may mislead"
            )
    return warnings


def _config(document: dict[str, Any]) -> dict[str, Any]:
    config = dict(document.get("config", {}))
    # The store is what matters, not the fresh database's name.
    url = config.get("database_url")
    config["database_url"] = "postgresql" if url else "sqlite"
    config["settings"] = sorted(config.get("settings") or [])
    return config


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() else f"{value:g}"
    return str(value)


def change(name: str, a: float | None, b: float | None) -> float | None:
    """How much worse B is than A, in percent (negative: better); None when not comparable.
    From 0 to something is infinitely worse (or better for a throughput)."""
    if a is None or b is None:
        return None
    if a == 0:
        if b == 0:
            return 0.0
        worse = b < 0 if name in HIGHER_IS_BETTER else b > 0
        return float("inf") if worse else float("-inf")
    delta = (b - a) / abs(a) * 100.0
    return -delta if name in HIGHER_IS_BETTER else delta


RATE_BOUND = frozenset({"processed_rate", "service_cpu_cores"})
"""KPIs that follow the offered rate: no regression between runs at different rates."""


def regressions(a: Runs, b: Runs, percent: float) -> list[str]:
    """Each KPI worse in B by more than ``percent`` and than the noise, as a line."""
    found = []
    same_rate = a.first.get("config", {}).get("rate") == b.first.get("config", {}).get("rate")
    for name in KPIS:
        if name in NOT_COMPARED or (name in RATE_BOUND and not same_rate):
            continue
        worse = change(name, a.values.get(name), b.values.get(name))
        noise = 100.0 * max(a.noise.get(name, 0.0), b.noise.get(name, 0.0))
        if worse is not None and worse > max(percent, noise):
            unit = KPIS[name][0]
            found.append(
                f"{name}: {format_value(a.values[name], unit)} -> "
                f"{format_value(b.values[name], unit)} ({_percent(worse)} worse, limit "
                f"{percent:g}%{f', noise {noise:.1f}%' if noise else ''})"
            )
    return found


def _percent(value: float | None) -> str:
    if value is None:
        return ""
    if value in (float("inf"), float("-inf")):
        return "from 0"
    return f"{value:+.1f}%"


def compare(a: Runs, b: Runs, names: Sequence[str] = ("A", "B")) -> str:
    """The before/after table: every KPI of either side, its values, the change (positive:
    worse) and the noise where a side holds repeated runs; then each side's accounting."""
    verdict_a = _verdicts(a.first)
    verdict_b = _verdicts(b.first)
    width = 28
    has_noise = bool(a.noise or b.noise)
    head = f"{'KPI':<{width}} {names[0][:18]:>18} {names[1][:18]:>18} {'worse by':>10}"
    lines = [head + (f" {'noise':>8}" if has_noise else ""), "-" * (len(head) + 9 * has_noise)]
    for name in KPIS:
        va, vb = a.values.get(name), b.values.get(name)
        if va is None and vb is None:
            continue
        unit = KPIS[name][0]
        mark_a = {True: " ✓", False: " ✗"}.get(verdict_a.get(name), "  ")
        mark_b = {True: " ✓", False: " ✗"}.get(verdict_b.get(name), "  ")
        shown = "" if name in NOT_COMPARED else _percent(change(name, va, vb))
        line = (
            f"{name:<{width}} {format_value(va, unit) + mark_a:>18} "
            f"{format_value(vb, unit) + mark_b:>18} {shown:>10}"
        )
        if has_noise:
            noise = max(a.noise.get(name, 0.0), b.noise.get(name, 0.0))
            line += f" {f'±{noise * 100:.1f}%' if noise else '':>8}"
        lines.append(line)
    lines.append("")
    for side, runs in zip(names, (a, b), strict=True):
        document = runs.first
        acc = document.get("accounting", {})
        config = document.get("config", {})
        dropped = " ".join(f"{k}={v}" for k, v in (acc.get("dropped") or {}).items())
        repeated = f" ({len(runs.documents)} runs, medians)" if len(runs.documents) > 1 else ""
        lines.append(
            f"{side}{repeated}: {config.get('stream', '?')} {_shown(config.get('rate', '?'))} "
            f"msg/s {_shown(config.get('duration', '?'))} s, verdict "
            f"{document.get('verdict', '?')}; sent={acc.get('sent')} "
            f"evaluated={acc.get('evaluated')} {dropped} unaccounted={acc.get('unaccounted')}"
        )
    return "\n".join(lines) + "\n"


def _verdicts(document: dict[str, Any]) -> dict[str, bool]:
    return {k["name"]: k["pass"] for k in document.get("kpis", []) if k.get("pass") is not None}
