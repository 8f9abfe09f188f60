"""``oraculo-trio compare A B``: a before/after table of two load-test artifacts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from oraculo_trio.errors import ConfigError
from oraculo_trio.loadtest.measure import KPIS
from oraculo_trio.loadtest.summary import format_value


def load_metrics(path: str | Path) -> dict[str, Any]:
    """A ``metrics.json``, given it or its artifact directory.

    Raises:
        ConfigError: nothing readable there.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"compare: cannot read {path}: {exc}") from None


def compare(a: dict[str, Any], b: dict[str, Any], names: Sequence[str] = ("A", "B")) -> str:
    """A before/after table of two ``metrics.json`` documents: every KPI, then accounting."""
    values_a = a.get("values") or {k["name"]: k["value"] for k in a.get("kpis", [])}
    values_b = b.get("values") or {k["name"]: k["value"] for k in b.get("kpis", [])}
    verdict_a = {k["name"]: k["pass"] for k in a.get("kpis", []) if k.get("pass") is not None}
    verdict_b = {k["name"]: k["pass"] for k in b.get("kpis", []) if k.get("pass") is not None}
    width = 26
    lines = [
        f"{'KPI':<{width}} {names[0]:>16} {names[1]:>16} {'change':>10}",
        "-" * (width + 46),
    ]
    for name in [n for n in KPIS if n in values_a or n in values_b]:
        unit = KPIS[name][0]
        va, vb = values_a.get(name), values_b.get(name)
        change = ""
        if va is not None and vb is not None:
            if va:
                change = f"{(vb - va) / abs(va) * 100:+.1f}%"
            elif vb:
                change = "new"
        mark_a = {True: " ✓", False: " ✗"}.get(verdict_a.get(name), "  ")
        mark_b = {True: " ✓", False: " ✗"}.get(verdict_b.get(name), "  ")
        lines.append(
            f"{name:<{width}} {format_value(va, unit) + mark_a:>16} "
            f"{format_value(vb, unit) + mark_b:>16} {change:>10}"
        )
    lines.append("")
    for side, document in zip(names, (a, b), strict=True):
        acc = document.get("accounting", {})
        config = document.get("config", {})
        lines.append(
            f"{side}: {config.get('stream', '?')} {config.get('rate', '?')} msg/s "
            f"{config.get('duration', '?')} s, verdict {document.get('verdict', '?')}; "
            f"sent={acc.get('sent')} evaluated={acc.get('evaluated')} "
            f"dropped={acc.get('dropped')} unaccounted={acc.get('unaccounted')}"
        )
    return "\n".join(lines) + "\n"
