"""A run's artifacts: ``metrics.json``, ``summary.txt``, ``summary.json`` and ``report.html``
(and a JUnit XML with ``--junit``), and the verdict they record (k6's exit codes: 0 every
threshold holds, 99 one fails).

A run writes into ``<out>.partial``, which becomes ``<out>`` only once every artifact is
written (:func:`publish`): an artifact folder is complete or absent. A run that fails keeps
its logs in ``<out>.failed``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import attrs

from oraculo_trio.loadtest.ci_files import junit_xml, summary_document
from oraculo_trio.loadtest.configuration import RunConfig
from oraculo_trio.loadtest.console import EXIT_PASS, EXIT_THRESHOLD
from oraculo_trio.loadtest.html_report import render_html
from oraculo_trio.loadtest.measure import KPIS, Measured, derive_series, measure
from oraculo_trio.loadtest.run import RunOutput
from oraculo_trio.loadtest.summary import render_summary
from oraculo_trio.loadtest.thresholds import Check, Threshold, check_thresholds, thresholds_for


def environment() -> dict[str, Any]:
    """Where the test ran: CPU, cores, Python, package versions, load, commit."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    for package in (
        "oraculo-trio",
        "trio",
        "trio-websocket",
        "msgspec",
        "prometheus-client",
        "httpx",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    commit = None
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            timeout=5,
            cwd=Path(__file__).resolve().parents[1],
        )
        commit = result.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "versions": versions,
        "commit": commit,
    }


# --------------------------------------------------------------------------------------------
# Artifacts


def metrics_document(
    *,
    config: dict[str, Any],
    env: dict[str, Any],
    checks: Sequence[Check],
    measured: Measured,
    series: list[dict[str, Any]],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``metrics.json``: config, environment, kpis, accounting, series (+ values, trends)."""
    tested = {check.threshold.metric for check in checks}
    kpis = [
        {
            "name": check.threshold.metric,
            "value": check.value,
            "threshold": check.threshold.text,
            "pass": check.passed,
            **({"note": check.note} if check.note else {}),
        }
        for check in checks
    ]
    kpis.extend(
        {"name": name, "value": value, "threshold": None, "pass": None}
        for name, value in measured.values.items()
        if name not in tested
    )
    return {
        "config": config,
        "environment": env,
        "kpis": kpis,
        "accounting": attrs.asdict(measured.accounting),
        "series": series,
        "values": measured.values,
        "units": {name: unit for name, (unit, _) in KPIS.items()},
        "precision": {name: list(bounds) for name, bounds in measured.precision.items()},
        "trends": measured.trends,
        "latency_curves": {
            name: [list(point) for point in distribution.curve()]
            for name, distribution in measured.distributions.items()
        },
        "notes": measured.notes,
        "verdict": "pass" if all(check.passed for check in checks) else "fail",
        **(extra or {}),
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write ``document`` as indented JSON (NaN and infinities become null)."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    path.write_text(json.dumps(clean(document), indent=2, sort_keys=False) + "\n")


@attrs.frozen
class Conclusion:
    """A run's verdict and where its artifacts are."""

    exit_code: int
    summary: str
    document: dict[str, Any]
    out: Path


def describe(config: RunConfig) -> tuple[str, list[str]]:
    """The summary's title and context lines for ``config``."""
    shape = config.shape
    sent = f"{shape.stream} {shape.rate:,.0f} msg/s"
    period = f"batch {shape.batch}" if shape.batch else f"tick {shape.tick * 1000:g} ms"
    title = (
        f"oraculo-trio loadtest {sent} · {shape.duration:g} s measured "
        f"(+{shape.warmup:g} s warm-up, {shape.ramp:g} s ramp) · {shape.symbols} symbols "
        f"{shape.distribution} · {period} · depth{shape.levels} · seed {shape.seed}"
    )
    return title, []


def partial_dir(out: Path) -> Path:
    """Where a run writes before its artifacts are complete."""
    return out.with_name(out.name + ".partial")


def publish(out: Path) -> None:
    """Turn the complete ``<out>.partial`` into ``<out>``."""
    partial_dir(out).rename(out)


def keep_failed(out: Path) -> Path | None:
    """Move an unfinished ``<out>.partial`` (its logs) to ``<out>.failed``; return it."""
    partial = partial_dir(out)
    if not partial.exists():
        return None
    failed = out.with_name(out.name + ".failed")
    shutil.rmtree(failed, ignore_errors=True)
    partial.rename(failed)
    return failed


def conclude(
    output: RunOutput,
    config: RunConfig,
    out: Path,
    thresholds: Sequence[Threshold] | None = None,
    *,
    junit: Path | None = None,
) -> Conclusion:
    """Compute the KPIs, check the thresholds, write the artifacts into ``out``.

    Args:
        output: what the run collected.
        config: the run.
        out: the artifact directory.
        thresholds: what to check; default: the defaults, ``--strict``'s and ``--threshold``.
        junit: also write a JUnit XML of the thresholds there.

    Raises:
        ConfigError: a threshold expression does not parse.
    """
    shape = config.shape
    if thresholds is None:
        thresholds = thresholds_for(shape.rate, config.strict, config.thresholds)
    done = output.generator_done
    sent_final = output.samples[-1]["sent"]
    if done is not None:
        sent_final = max(sent_final, done.get("sent", 0))
    measured = measure(output.samples, output.marks, done, sent_final, shape.duration)
    measured.notes.extend(output.notes)
    checks = check_thresholds(thresholds, measured)
    env = environment()
    env["load_average_before"] = list(output.load_before)
    env["load_average_after"] = list(output.load_after)
    title, context = describe(config)
    faithful = "spot-faithful partial books (no E)" if shape.faithful else "E on partial books"
    context.append(
        f"store {output.store} · {faithful} · prometheus {'yes' if config.prometheus else 'no'}"
        f" · webhook {config.webhook or 'no'} · strict {'yes' if config.strict else 'no'}"
    )
    context.append(
        f"machine: {env['cores']} x {env['cpu_model']} · python {env['python']} · load average "
        f"{output.load_before[0]:.2f} -> {output.load_after[0]:.2f} (1 min)"
    )
    # A run writes into <out>.partial: name the folder it becomes.
    context.append(f"artifacts: {out.with_name(out.name.removesuffix('.partial'))}")
    book = _book(output)
    db = [c for c in checks if c.threshold.metric.startswith("db_upsert")]
    if db and db[0].value is None:
        measured.notes.append(f"DB upsert thresholds: {db[0].note}")
    summary = render_summary(title, context, checks, measured, _extra_lines(output, book))
    document = metrics_document(
        config={**config.as_dict(), "thresholds_checked": [c.threshold.text for c in checks]},
        env=env,
        checks=checks,
        measured=measured,
        series=derive_series(output.samples),
        extra={
            "generator": {"ready": output.generator_ready, "done": done},
            "prometheus": output.prometheus,
            "webhook": output.webhook,
            "service_exit": output.service_exit,
            # Diff books (depthdiff): resyncs and how long they took, and the cold start
            # (from the first diff until every book was live).
            **({"book": {**book, "cold_start": output.cold_start}} if book else {}),
        },
    )
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", document)
    (out / "summary.txt").write_text(summary)
    write_json(
        out / "summary.json",
        summary_document(title=title, config=config.as_dict(), checks=checks, measured=measured),
    )
    (out / "report.html").write_text(render_html(document, summary))
    if junit is not None:
        junit.write_text(junit_xml(checks, title, seconds=shape.duration))
    code = EXIT_PASS if all(check.passed for check in checks) else EXIT_THRESHOLD
    return Conclusion(code, summary, document, out)


def _extra_lines(output: RunOutput, book: dict[str, Any] | None) -> list[str]:
    """The summary's lines for the run's extras (Prometheus, webhook, profile, diff books)."""
    lines = []
    if output.prometheus is not None:
        shown = " ".join(
            f"{name}={value:.4g}" if value is not None else f"{name}=n/a"
            for name, value in output.prometheus.items()
        )
        lines.append(f"prometheus......................: {shown}")
    if output.webhook is not None:
        lines.append(
            f"webhook.........................: mode={output.webhook['mode']} "
            f"requests={output.webhook['requests']} attempts={output.webhook['dispatch']} "
            f"dropped={output.webhook['dispatch_dropped']:.0f}"
        )
    if output.profile is not None:
        lines.append(f"profile.........................: {output.profile}")
    if book is not None:
        seconds = book["resync_seconds"]
        shown = " ".join(
            f"{q}={v:.3g}s" if v is not None else f"{q}=n/a" for q, v in seconds.items()
        )
        lines.append(
            f"book............................: resyncs={book['resyncs']} "
            f"{book['resyncs_by_reason']} resync_seconds {shown} "
            f"weight={book['rest_weight_used']} snapshots={book['snapshots']}"
        )
    cold = output.cold_start
    if cold is not None:
        took = cold["live_after_seconds"]
        shown = f"{took:.1f}s" if took is not None else "n/a"
        lines.append(
            f"book_cold_start.................: live={cold['live']}/{cold['symbols']} "
            f"after={shown} refused={cold['rate_limited']} weight={cold['rest_weight_used']} "
            f"overflow={cold.get('overflow', 0)}"
        )
    return lines


def _book(output: RunOutput) -> dict[str, Any] | None:
    """The diff books' summary of the last sample, when the service kept diff books."""
    book = output.samples[-1].get("book") if output.samples else None
    return book if book and sum(book["symbols"].values()) else None
