"""``oraculo-trio loadtest STREAM RATE``, ``loadtest bench``, ``loadtest calibrate`` and
``oraculo-trio compare A B``: argument parsing and the verdict's exit code.

Exit codes (k6's convention): 0 every threshold holds, 99 a threshold failed, 2 a bad option
(nothing was started), 1 the test could not run (a process that would not start or died),
130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from oraculo_trio.errors import ConfigError, OraculoError
from oraculo_trio.loadtest.artifacts import conclude, keep_failed, partial_dir, publish, write_json
from oraculo_trio.loadtest.bench import bench_main
from oraculo_trio.loadtest.compare import compare, config_differences, load_runs, regressions
from oraculo_trio.loadtest.configuration import WEBHOOK_MODES, RunConfig
from oraculo_trio.loadtest.console import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_PASS,
    EXIT_THRESHOLD,
    EXIT_USAGE,
    Console,
    default_out,
    run_trio,
)
from oraculo_trio.loadtest.options import (
    add_load_options,
    non_negative_float,
    positive_float,
    positive_int,
    shape_from,
)
from oraculo_trio.loadtest.run import calibrate, run_load_test
from oraculo_trio.loadtest.shape import SOURCES, LoadShape
from oraculo_trio.loadtest.thresholds import thresholds_for


def build_parser() -> argparse.ArgumentParser:
    """``oraculo-trio loadtest STREAM RATE [options]``."""
    parser = argparse.ArgumentParser(
        prog="oraculo-trio loadtest",
        description="Open-loop load test of the service against the mock exchange, with a "
        "KPI verdict. Starts the generator (mock exchange), the service as a subprocess with a "
        "fresh store, waits for /readyz, warms up, measures, drains, stops everything and "
        "writes artifacts/loadtest/<UTC timestamp>/ (metrics.json, summary.txt, report.html). "
        "Also: `oraculo-trio loadtest bench` (saturation search) and `oraculo-trio loadtest "
        "calibrate RATE` (the generator alone).",
        epilog="Exit codes: 0 every threshold holds, 99 a threshold failed, 2 a bad option "
        "(checked before anything starts), 1 the run failed (its logs stay in <out>.failed), "
        "130 interrupted. Thresholds are NAME OP VALUE[UNIT] (us ms s %), e.g. "
        "'queue_time_p99 < 10ms'; a --threshold replaces the defaults of its KPI. Latency "
        "percentiles read from the service's histogram buckets show their bucket; a "
        "percentile of too few samples (p99 of fewer than 100) is n/a. Artifacts: "
        "metrics.json, summary.txt, summary.json (for CI), report.html.",
    )
    parser.add_argument(
        "stream",
        choices=sorted(SOURCES),
        metavar="STREAM",
        help=f"what to send: {', '.join(sorted(SOURCES))}",
    )
    parser.add_argument("rate", type=positive_float, metavar="RATE", help="messages per second")
    add_load_options(parser)
    verdict = parser.add_argument_group("verdict")
    verdict.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="EXPR",
        help="an extra threshold (repeatable), e.g. 'queue_time_p99 < 10ms'",
    )
    verdict.add_argument(
        "--strict",
        action="store_true",
        help="add the strict targets: queue time p99 < 10 ms, lag p99 < 10 ms, service CPU "
        "< 10%% of a core at 1,500 msg/s (scaled to RATE), DB upsert p50 < 2 ms, p95 < 5 ms",
    )
    extra = parser.add_argument_group("extras")
    extra.add_argument(
        "--prometheus",
        action="store_true",
        help="also run a real Prometheus scraping the service every second and query it",
    )
    extra.add_argument(
        "--webhook",
        choices=WEBHOOK_MODES,
        help="a local webhook receiver answering 200 (ok), 500 (fail) or never (hang), wired "
        "as the service's webhook sink",
    )
    extra.add_argument(
        "--profile",
        type=non_negative_float,
        default=0.0,
        metavar="S",
        help="py-spy the service for S seconds of the measured phase (profile.txt)",
    )
    extra.add_argument("--quiet", action="store_true", help="no live progress line")
    verdict.add_argument(
        "--junit",
        metavar="FILE",
        help="also write the thresholds as a JUnit XML file (one test case per threshold)",
    )
    return parser  # fmt: skip


def config_from(args: argparse.Namespace) -> RunConfig:
    """The :class:`RunConfig` of parsed ``loadtest`` arguments."""
    shape = shape_from(
        args,
        stream=args.stream,
        rate=args.rate,
        duration=args.duration,
        warmup=args.warmup,
        ramp=args.ramp,
    )
    return RunConfig(
        shape,
        database_url=args.database_url,
        prometheus=args.prometheus,
        webhook=args.webhook,
        thresholds=tuple(args.threshold),
        strict=args.strict,
        out=args.out,
        settings=tuple(args.settings),
        rules=args.rules,
        profile=args.profile,
        progress=not args.quiet,
    )


def loadtest_main(argv: Sequence[str]) -> int:
    """``oraculo-trio loadtest STREAM RATE [options]``; returns the exit code.

    Everything is checked before anything starts (options, thresholds, every ``--set`` by
    the service's own validation, the rule file, where the artifacts and the JUnit file go);
    the artifact folder appears only once it is complete.
    """
    args = build_parser().parse_args(argv)
    config = config_from(args)
    console = Console()
    out = Path(args.out).absolute() if args.out else default_out()
    junit = Path(args.junit).absolute() if args.junit else None
    try:
        config.check()
        thresholds_for(config.shape.rate, config.strict, config.thresholds)
        check_destinations(out, junit)
    except OraculoError as exc:
        print(f"oraculo-trio loadtest: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        output, interrupted = run_trio(
            lambda: run_load_test(
                config,
                partial_dir(out),
                on_sample=console.on_sample if config.progress else None,
                say=console.say,
            )
        )
    except OraculoError as exc:
        console.end_line()
        failed = keep_failed(out)
        where = f"\n(logs: {failed})" if failed else ""
        print(f"oraculo-trio loadtest: error: {exc}{where}", file=sys.stderr)
        return EXIT_ERROR
    console.end_line()
    if interrupted is not None:
        keep_failed(out)
        print("oraculo-trio loadtest: interrupted; every process was stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    conclusion = conclude(output, config, partial_dir(out), junit=junit)
    publish(out)
    print(conclusion.summary, end="")
    return conclusion.exit_code


def check_destinations(out: Path, junit: Path | None) -> None:
    """Raises ConfigError when the artifact folder exists already or a file cannot go where
    it is asked to."""
    if out.exists():
        raise ConfigError(f"--out {out}: exists already; name a new folder")
    if junit is not None and not junit.parent.is_dir():
        raise ConfigError(f"--junit {junit}: its folder {junit.parent} does not exist")


def calibrate_main(argv: Sequence[str]) -> int:
    """``oraculo-trio loadtest calibrate RATE``: the generator alone, against a discarding
    client; says whether it keeps the rate (within 1 %) and what it costs."""
    parser = argparse.ArgumentParser(
        prog="oraculo-trio loadtest calibrate",
        description="Run only the generator (mock exchange) at RATE against a client that "
        "discards everything: checks the rate is kept to 1 % over the measured window and "
        "measures the generator's CPU and lateness.",
    )
    parser.add_argument("rate", type=positive_float, metavar="RATE")
    parser.add_argument("--stream", choices=sorted(SOURCES), default="depth")
    parser.add_argument("--duration", type=positive_float, default=10.0)
    parser.add_argument("--warmup", type=non_negative_float, default=2.0)
    parser.add_argument("--symbols", type=positive_int, default=50)
    parser.add_argument("--tick-ms", type=positive_float, default=100.0)
    parser.add_argument("--batch", type=positive_int)
    parser.add_argument("--levels", type=int, choices=(5, 10, 20), default=20)
    parser.add_argument("--out", metavar="DIR")
    args = parser.parse_args(argv)
    shape = LoadShape(
        stream=args.stream,
        rate=args.rate,
        duration=args.duration,
        warmup=args.warmup,
        symbols=args.symbols,
        tick=args.tick_ms / 1000.0,
        batch=args.batch,
        levels=args.levels,
    )
    config = RunConfig(shape)
    out = Path(args.out).absolute() if args.out else default_out("calibrate")
    console = Console()
    try:
        config.check()
    except OraculoError as exc:
        print(f"oraculo-trio loadtest calibrate: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result, interrupted = run_trio(lambda: calibrate(config.generator_spec(), out, console.say))
    except OraculoError as exc:
        print(f"oraculo-trio loadtest calibrate: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if interrupted is not None:
        return EXIT_INTERRUPTED
    lateness = result["lateness"]["measure"]
    ok = result["rate_error"] <= 0.01
    print(
        f"generator alone, {args.stream} {args.rate:,.0f} msg/s for {args.duration:g} s: "
        f"sent {result['window_sent']:,} of {result['expected']:,} in the window "
        f"(error {result['rate_error'] * 100:.3f}%, {'within' if ok else 'NOT within'} 1 %); "
        f"CPU {result['measure_cpu_cores'] or 0:.3f} cores; lateness p50 "
        f"{(lateness['p50'] or 0) * 1000:.2f} ms p99 {(lateness['p99'] or 0) * 1000:.2f} ms "
        f"max {(lateness['max'] or 0) * 1000:.2f} ms; {result['bytes'] / 1e6:,.1f} MB read"
    )
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "calibrate.json", {"config": config.as_dict(), **result})
    return EXIT_PASS if ok else EXIT_THRESHOLD


def compare_main(argv: Sequence[str]) -> int:
    """``oraculo-trio compare A B``: a before/after table of two artifacts; 99 with
    ``--fail-on-regression PCT`` when a KPI worsened by more than PCT %."""
    parser = argparse.ArgumentParser(
        prog="oraculo-trio compare",
        description="A before/after table of two load-test artifacts: every KPI with its "
        "change, a noise estimate where a side holds repeated runs, then the accounting. "
        "Warns when the two runs were configured differently (rate, symbols, store, stream).",
        epilog="A or B is a metrics.json, a run's artifact folder, or a folder of repeated "
        "runs (each sub-folder with its own metrics.json): the median is compared and the "
        "runs' spread is the noise. Exit codes: 0, 99 a KPI regressed beyond "
        "--fail-on-regression, 2 an artifact cannot be read.",
    )
    parser.add_argument("a", metavar="A", help="the 'before' artifact")
    parser.add_argument("b", metavar="B", help="the 'after' artifact")
    parser.add_argument(
        "--fail-on-regression",
        type=non_negative_float,
        metavar="PCT",
        help="exit 99 when a KPI is worse in B than in A by more than PCT %% (and than the noise)",
    )
    parser.add_argument("--json", action="store_true", help="print both KPI sets as JSON")
    args = parser.parse_args(argv)
    try:
        a, b = load_runs(args.a), load_runs(args.b)
    except OraculoError as exc:
        print(f"oraculo-trio compare: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    names = (Path(args.a).name or "A", Path(args.b).name or "B")
    for warning in config_differences(a, b, names):
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps({"a": a.values, "b": b.values}, indent=2))
    else:
        print(compare(a, b, names), end="")
    if args.fail_on_regression is None:
        return EXIT_PASS
    worse = regressions(a, b, args.fail_on_regression)
    for line in worse:
        print(f"regression: {line}", file=sys.stderr)
    return EXIT_THRESHOLD if worse else EXIT_PASS


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``oraculo-trio loadtest ...``: STREAM RATE, ``bench`` or
    ``calibrate``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # The harness logs a child's output when its block ends early; our errors already quote
    # the log's tail, so a terminal is spared the repeat.
    logging.getLogger("oraculo_trio.testing.processes").setLevel(logging.ERROR)
    if argv and argv[0] == "bench":
        return bench_main(argv[1:])
    if argv and argv[0] == "calibrate":
        return calibrate_main(argv[1:])
    return loadtest_main(argv)


if __name__ == "__main__":
    sys.exit(main())
