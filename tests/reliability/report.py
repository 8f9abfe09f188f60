"""The reliability report: one row of figures per scenario, as JSON and as a table.

``artifacts/reliability/<UTC timestamp>/report.json`` holds
``{"scenarios": [{"name", "faults", "messages", "lost", "duplicates", "recovery_s", "pass",
"detail"}], "quick": bool}``; ``report.txt`` beside it holds the table printed at the end
of the session.
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

COLUMNS = ("scenario", "faults", "messages", "lost", "dups", "recovery_s", "pass")


@attrs.define(eq=False)
class Figures:
    """What one scenario measured.

    Attributes:
        name: ``area/scenario``, e.g. ``feed/abrupt-close-1006``.
        faults: faults injected.
        messages: messages (frames, transitions, cases) that went through the scenario.
        lost: messages the service had taken in and lost: unaccounted frames, transitions
            raised and not stored, gaps in a stored alert history. Must be 0.
        duplicates: alert transitions stored more than once (same rule, symbol, fire count
            and state), or notifications repeated where the scenario forbids it.
        recovery_s: seconds from the end of the fault to normal service (None: not
            applicable).
        detail: other figures worth keeping (JSON-ready).
        expected_source: what ``messages`` and ``lost`` were counted against, when it is not
            the service's own accounting (``trade_ids``: the ids the exchange published).
        passed: set from the test's outcome.
    """

    name: str
    faults: int = 0
    messages: int = 0
    lost: int = 0
    duplicates: int = 0
    recovery_s: float | None = None
    detail: dict[str, Any] = attrs.field(factory=dict)
    expected_source: str | None = None
    passed: bool = False

    def row(self) -> dict[str, Any]:
        """The report.json row."""
        recovery = self.recovery_s
        if recovery is not None and math.isfinite(recovery):
            recovery = round(recovery, 3)
        return {
            "name": self.name,
            "faults": self.faults,
            "messages": self.messages,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "recovery_s": recovery,
            "pass": self.passed and self.lost == 0,
            "detail": self.detail,
            "expected_source": self.expected_source,
        }


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A fixed-width table of report rows, one line per scenario."""
    lines = [
        [
            row["name"],
            str(row["faults"]),
            str(row["messages"]),
            str(row["lost"]),
            str(row["duplicates"]),
            "-" if row["recovery_s"] is None else f"{row['recovery_s']:.3f}",
            "yes" if row["pass"] else "NO",
        ]
        for row in rows
    ]
    widths = [max([len(c)] + [len(line[i]) for line in lines]) for i, c in enumerate(COLUMNS)]

    def render(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join((first, *rest))

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([render(COLUMNS), rule, *(render(line) for line in lines)])


def utc_stamp(now: datetime.datetime | None = None) -> str:
    """``20250101T120000Z``: the run directory's name."""
    moment = now or datetime.datetime.now(datetime.UTC)
    return moment.strftime("%Y%m%dT%H%M%SZ")


def write_report(root: Path, rows: Sequence[dict[str, Any]], *, quick: bool) -> Path:
    """Write ``report.json`` and ``report.txt`` into a new ``root/<UTC timestamp>/``.

    Returns:
        The report.json path.
    """
    directory = root / utc_stamp()
    suffix = 1
    while directory.exists():
        suffix += 1
        directory = root / f"{utc_stamp()}-{suffix}"
    directory.mkdir(parents=True)
    path = directory / "report.json"
    path.write_text(json.dumps({"scenarios": list(rows), "quick": quick}, indent=2) + "\n")
    (directory / "report.txt").write_text(format_table(rows) + "\n")
    return path
