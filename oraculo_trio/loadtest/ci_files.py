"""What a CI system reads of a run: ``summary.json`` and a JUnit XML of the thresholds.

``summary.json`` is the verdict and its numbers, small and stable: each threshold with its
measured value and outcome, every KPI with its unit (and, for a percentile read from the
service's buckets, the bucket it lies in), the accounting, and each latency distribution
(count, percentiles, the HDR histogram encoded). ``--junit FILE`` writes one test case per
threshold, failed ones with the measured value, so any CI that reads JUnit shows which
threshold broke.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any
from xml.etree import ElementTree

import attrs

from oraculo_trio.loadtest.latency import summarize
from oraculo_trio.loadtest.measure import KPIS, Measured
from oraculo_trio.loadtest.summary import format_value
from oraculo_trio.loadtest.thresholds import Check

SUMMARY_VERSION = 1
"""Bumped when a field of ``summary.json`` changes meaning."""


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def summary_document(
    *,
    title: str,
    config: Mapping[str, Any],
    checks: Sequence[Check],
    measured: Measured,
    duration: float | None = None,
) -> dict[str, Any]:
    """The machine-readable summary of a run (``summary.json``)."""
    kpis = {}
    for name, value in measured.values.items():
        entry: dict[str, Any] = {"value": _finite(value), "unit": KPIS[name][0]}
        if name in measured.precision:
            entry["bucket"] = list(measured.precision[name])
        kpis[name] = entry
    return {
        "version": SUMMARY_VERSION,
        "title": title,
        "verdict": "pass" if all(check.passed for check in checks) else "fail",
        "thresholds": [
            {
                "threshold": check.threshold.text,
                "kpi": check.threshold.metric,
                "measured": _finite(check.value),
                "pass": check.passed,
                **({"note": check.note} if check.note else {}),
            }
            for check in checks
        ],
        "kpis": kpis,
        "accounting": attrs.asdict(measured.accounting),
        "distributions": {
            name: summarize(distribution) for name, distribution in measured.distributions.items()
        },
        "config": {
            **{key: config.get(key) for key in ("stream", "rate", "duration", "symbols")},
            # The store's kind, never its URL (it may hold a password).
            "store": "postgresql" if config.get("database_url") else "sqlite",
            "settings": list(config.get("settings") or []),
        },
        **({"duration": duration} if duration is not None else {}),
        "notes": list(measured.notes),
    }


def junit_xml(checks: Sequence[Check], suite: str, *, seconds: float = 0.0) -> str:
    """A JUnit XML document with one test case per threshold."""
    failures = sum(1 for check in checks if not check.passed)
    root = ElementTree.Element(
        "testsuites", name="oraculo-trio loadtest", tests=str(len(checks)), failures=str(failures)
    )
    suite_element = ElementTree.SubElement(
        root,
        "testsuite",
        name=suite,
        tests=str(len(checks)),
        failures=str(failures),
        errors="0",
        skipped="0",
        time=f"{seconds:.3f}",
    )
    for check in checks:
        case = ElementTree.SubElement(
            suite_element,
            "testcase",
            classname="oraculo_trio.loadtest.thresholds",
            name=check.threshold.text,
            time="0",
        )
        unit = KPIS.get(check.threshold.metric, ("", ""))[0]
        measured = format_value(check.value, unit)
        detail = f"{check.threshold.metric} measured {measured}" + (
            f" ({check.note})" if check.note else ""
        )
        if not check.passed:
            failure = ElementTree.SubElement(
                case, "failure", message=f"{check.threshold.text}: measured {measured}"
            )
            failure.text = detail
        else:
            ElementTree.SubElement(case, "system-out").text = detail
    ElementTree.indent(root)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        + ElementTree.tostring(root, encoding="unicode")
        + "\n"
    )
