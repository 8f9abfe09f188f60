"""The reliability report: one row of figures per scenario, as JSON and as a table.

``artifacts/reliability/<UTC timestamp>/report.json`` holds
``{"scenarios": [{"name", "faults", "messages", "counts", "lost", "duplicates",
"expected_source", "recovery_s", "pass", "detail"}], "quick": bool}``; ``report.txt`` beside
it holds the table printed at the end of the session.

A row that measures loss compares what the store holds with an expectation the service did
not compute, and names it in ``expected_source``:

- ``exchange_sent``: the trades the mock exchange wrote to the service's sockets (it keeps
  every one it wrote, and knows what it dropped or could not write);
- ``script``: the transitions a scripted market must cause, known before the run;
- ``trade_ids``: trade streams with consecutive ids, each id implying its transitions.

The service's own counters (the accounting, transitions raised) stay a second check. A row
that does not measure loss (fuzz, security) has ``lost`` and ``duplicates`` null (``-`` in
the table) and shows its own figure in ``messages`` (``counts`` says what: cases tried,
statements checked).
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

COLUMNS = (
    "scenario",
    "faults",
    "messages",
    "counts",
    "lost",
    "dups",
    "expected",
    "recovery_s",
    "pass",
)

EXPECTED_SOURCES = ("exchange_sent", "script", "trade_ids")
"""Where a row's expected count comes from (see the module doc)."""


@attrs.define(eq=False)
class Figures:
    """What one scenario measured.

    Attributes:
        name: ``area/scenario``, e.g. ``feed/abrupt-close-1006``.
        faults: faults injected.
        messages: what went through the scenario, in the unit ``counts`` names.
        counts: what ``messages`` counts (``frames``, ``trades``, ``cases``,
            ``statements``...).
        lost: transitions the expectation (``expected_source``) implies and the store does
            not hold, plus what the service's own accounting misses; must be 0. None: the
            row does not measure loss.
        duplicates: alert transitions stored more than once, or notifications repeated where
            the scenario forbids it. None with ``lost``.
        expected_source: one of :data:`EXPECTED_SOURCES`; set with :meth:`measured`.
        recovery_s: seconds from the end of the fault to normal service (None: not
            applicable).
        detail: other figures worth keeping (JSON-ready).
        passed: set from the test's outcome.
    """

    name: str
    faults: int = 0
    messages: int = 0
    counts: str = "frames"
    lost: int | None = None
    duplicates: int | None = None
    expected_source: str | None = None
    recovery_s: float | None = None
    detail: dict[str, Any] = attrs.field(factory=dict)
    passed: bool = False

    def measured(self, expected_source: str, lost: int, duplicates: int) -> None:
        """Record the loss figures, and against what expectation they were counted."""
        if expected_source not in EXPECTED_SOURCES:
            raise ValueError(f"expected_source {expected_source!r}: one of {EXPECTED_SOURCES}")
        self.expected_source = expected_source
        self.lost = lost
        self.duplicates = duplicates

    def row(self) -> dict[str, Any]:
        """The report.json row."""
        recovery = self.recovery_s
        if recovery is not None and math.isfinite(recovery):
            recovery = round(recovery, 3)
        return {
            "name": self.name,
            "faults": self.faults,
            "messages": self.messages,
            "counts": self.counts,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "expected_source": self.expected_source,
            "recovery_s": recovery,
            "pass": self.passed and not self.lost and not self.duplicates,
            "detail": self.detail,
        }


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A fixed-width table of report rows, one line per scenario."""
    lines = [
        [
            row["name"],
            str(row["faults"]),
            str(row["messages"]),
            row["counts"],
            _figure(row["lost"]),
            _figure(row["duplicates"]),
            row["expected_source"] or "-",
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


def _figure(value: int | None) -> str:
    return "-" if value is None else str(value)


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
