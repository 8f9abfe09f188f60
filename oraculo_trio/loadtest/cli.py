"""``oraculo-trio loadtest STREAM RATE``, ``loadtest bench``, ``loadtest calibrate`` and
``oraculo-trio compare A B``: argument parsing and the verdict's exit code.

Exit codes (k6's convention): 0 every threshold holds, 99 a threshold failed, 1 the test
could not run (bad option, a process that would not start or died), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from oraculo_trio.errors import OraculoError
from oraculo_trio.loadtest.generator import SOURCES, parse_distribution
from oraculo_trio.loadtest.report import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_PASS,
    EXIT_THRESHOLD,
    Threshold,
    check_thresholds,
    compare,
    environment,
    load_metrics,
    measure,
    metrics_document,
    progress_line,
    render_html,
    render_summary,
    thresholds_for,
    write_json,
)
from oraculo_trio.loadtest.runner import (
    WEBHOOK_MODES,
    RunConfig,
    RunOutput,
    calibrate,
    default_out,
    our_error,
    run_load_test,
    with_signals,
)


def _number(minimum: float, *, inclusive: bool) -> Callable[[str], float]:
    """An argparse type: a float above ``minimum`` (or equal to it when ``inclusive``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (value >= minimum if inclusive else value > minimum):
            relation = ">=" if inclusive else ">"
            raise argparse.ArgumentTypeError(f"{text!r}: expected a number {relation} {minimum:g}")
        return value

    return parse


_positive_float = _number(0.0, inclusive=False)
_non_negative_float = _number(0.0, inclusive=True)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer >= 1")
    return value


def _distribution(text: str) -> str:
    try:
        parse_distribution(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _ratio(text: str) -> float:
    value = _non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a share in [0, 1]")
    return value


def add_load_options(parser: argparse.ArgumentParser, *, single_run: bool = True) -> None:
    """The options shared by a load test and the saturation search."""
    load = parser.add_argument_group("load")
    if single_run:
        load.add_argument(
            "--duration",
            type=_positive_float,
            default=60.0,
            metavar="S",
            help="seconds of the measured phase (default 60)",
        )
        load.add_argument(
            "--warmup",
            type=_non_negative_float,
            default=5.0,
            metavar="S",
            help="seconds at full rate before measuring (default 5)",
        )
        load.add_argument(
            "--ramp",
            type=_non_negative_float,
            default=0.0,
            metavar="S",
            help="seconds of linear rise from 0 to RATE before the warm-up (default 0)",
        )
    load.add_argument(
        "--symbols",
        type=_positive_int,
        default=50,
        metavar="N",
        help="synthetic symbols (default 50)",
    )
    load.add_argument(
        "--distribution",
        type=_distribution,
        default="uniform",
        metavar="uniform|zipf:S",
        help="how messages spread over symbols: round-robin, or Zipf with exponent S "
        "(default uniform)",
    )
    load.add_argument(
        "--tick-ms",
        type=_positive_float,
        default=100.0,
        metavar="MS",
        help="milliseconds between bursts: Binance pushes @100ms streams in 100 ms ticks "
        "(default 100)",
    )
    load.add_argument(
        "--batch",
        type=_positive_int,
        metavar="N",
        help="messages per burst instead of RATE x tick (the tick becomes N / RATE)",
    )
    load.add_argument(
        "--trade-ratio",
        type=_ratio,
        default=0.2,
        metavar="R",
        help="share of trades when STREAM is mixed (default 0.2)",
    )
    load.add_argument(
        "--levels",
        type=int,
        choices=(5, 10, 20),
        default=20,
        help="levels per side of the partial books (default 20)",
    )
    load.add_argument("--seed", type=int, default=0, help="seed of the market (default 0)")
    load.add_argument(
        "--faults",
        default="",
        metavar="LIST",
        help="faults the exchange injects, comma-separated (depthdiff): gaps, dups, reorder, "
        "crossed (diff streams), 429, slow (REST snapshots)",
    )
    load.add_argument(
        "--faithful",
        action="store_true",
        help="leave E out of @depthN payloads, as Binance spot does (ages then run from the "
        "service's read time, about the generator's send time on loopback)",
    )
    load.add_argument(
        "--alert-period",
        type=_non_negative_float,
        default=0.5,
        metavar="S",
        help="seconds between frames that make the load rules alert, so the store is "
        "written (default 0.5; 0: never)",
    )
    service = parser.add_argument_group("service")
    service.add_argument(
        "--database-url",
        metavar="URL",
        help="PostgreSQL server: a fresh database is created on it and dropped afterwards "
        "(default: a fresh SQLite file)",
    )
    service.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="a service setting (repeatable), e.g. --set pipeline.shards=2",
    )
    service.add_argument(
        "--rules",
        metavar="FILE",
        help="rule file instead of the built-in load rules (which alert on the generator's "
        "alert frames)",
    )
    parser.add_argument(
        "--out", metavar="DIR",
        help="artifact directory (default artifacts/loadtest/<UTC timestamp>)",
    )  # fmt: skip


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
        epilog="Exit codes: 0 every threshold holds, 99 a threshold failed, 1 error, "
        "130 interrupted. Thresholds are NAME OP VALUE[UNIT] (us ms s %), e.g. "
        "'queue_time_p99 < 10ms'; a --threshold replaces the defaults of its KPI.",
    )
    parser.add_argument(
        "stream",
        choices=sorted(SOURCES),
        metavar="STREAM",
        help=f"what to send: {', '.join(sorted(SOURCES))}",
    )
    parser.add_argument("rate", type=_positive_float, metavar="RATE", help="messages per second")
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
        help="add DESIGN.md's targets: queue time p99 < 10 ms, lag p99 < 10 ms, service CPU "
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
        type=_non_negative_float,
        default=0.0,
        metavar="S",
        help="py-spy the service for S seconds of the measured phase (profile.txt)",
    )
    extra.add_argument("--quiet", action="store_true", help="no live progress line")
    return parser  # fmt: skip


def config_from(args: argparse.Namespace) -> RunConfig:
    """The :class:`RunConfig` of parsed ``loadtest`` arguments."""
    return RunConfig(
        stream=args.stream,
        rate=args.rate,
        duration=args.duration,
        warmup=args.warmup,
        ramp=args.ramp,
        symbols=args.symbols,
        distribution=args.distribution,
        tick_ms=args.tick_ms,
        batch=args.batch,
        trade_ratio=args.trade_ratio,
        levels=args.levels,
        seed=args.seed,
        faithful=args.faithful,
        database_url=args.database_url,
        prometheus=args.prometheus,
        webhook=args.webhook,
        thresholds=tuple(args.threshold),
        strict=args.strict,
        out=args.out,
        settings=tuple(args.settings),
        rules=args.rules,
        alert_period=args.alert_period,
        profile=args.profile,
        progress=not args.quiet,
        faults=args.faults,
    )


class Console:
    """The live progress line on stderr: rewritten in place on a terminal, else a line
    every ``every`` seconds."""

    def __init__(self, stream: Any = None, every: float = 5.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = every
        self.previous: dict[str, Any] | None = None
        self.last_printed = -1e9
        self.dirty = False

    def on_sample(self, sample: dict[str, Any], _config: RunConfig) -> None:
        line = progress_line(sample, self.previous)
        self.previous = sample
        if self.tty:
            self.stream.write("\r" + line[:200] + "\x1b[K")
            self.dirty = True
        elif sample["t"] - self.last_printed >= self.every or sample["mark"]:
            self.stream.write(line + "\n")
            self.last_printed = sample["t"]
        self.stream.flush()

    def say(self, text: str) -> None:
        self.end_line()
        self.stream.write(f"loadtest: {text}\n")
        self.stream.flush()

    def end_line(self) -> None:
        if self.dirty:
            self.stream.write("\n")
            self.dirty = False


@attrs.frozen
class Conclusion:
    """A run's verdict and where its artifacts are."""

    exit_code: int
    summary: str
    document: dict[str, Any]
    out: Path


def describe(config: RunConfig) -> tuple[str, list[str]]:
    """The summary's title and context lines for ``config``."""
    shape = f"{config.stream} {config.rate:,.0f} msg/s"
    period = f"batch {config.batch}" if config.batch else f"tick {config.tick_ms:g} ms"
    title = (
        f"oraculo-trio loadtest {shape} · {config.duration:g} s measured "
        f"(+{config.warmup:g} s warm-up, {config.ramp:g} s ramp) · {config.symbols} symbols "
        f"{config.distribution} · {period} · depth{config.levels} · seed {config.seed}"
    )
    return title, []


def conclude(
    output: RunOutput,
    config: RunConfig,
    out: Path,
    thresholds: Sequence[Threshold] | None = None,
) -> Conclusion:
    """Compute the KPIs, check the thresholds, write the artifacts into ``out``.

    Args:
        output: what the run collected.
        config: the run.
        out: the artifact directory.
        thresholds: what to check; default: the defaults, ``--strict``'s and ``--threshold``.

    Raises:
        ConfigError: a threshold expression does not parse.
    """
    if thresholds is None:
        thresholds = thresholds_for(config.rate, config.strict, config.thresholds)
    done = output.generator_done
    sent_final = output.samples[-1]["sent"]
    if done is not None:
        sent_final = max(sent_final, done.get("sent", 0))
    measured = measure(output.samples, output.marks, done, sent_final, config.duration)
    measured.notes.extend(output.notes)
    checks = check_thresholds(thresholds, measured)
    env = environment()
    env["load_average_before"] = list(output.load_before)
    env["load_average_after"] = list(output.load_after)
    title, context = describe(config)
    faithful = "spot-faithful partial books (no E)" if config.faithful else "E on partial books"
    context.append(
        f"store {output.store} · {faithful} · prometheus {'yes' if config.prometheus else 'no'}"
        f" · webhook {config.webhook or 'no'} · strict {'yes' if config.strict else 'no'}"
    )
    context.append(
        f"machine: {env['cores']} x {env['cpu_model']} · python {env['python']} · load average "
        f"{output.load_before[0]:.2f} -> {output.load_after[0]:.2f} (1 min)"
    )
    context.append(f"artifacts: {out}")
    extra_lines = []
    if output.prometheus is not None:
        shown = " ".join(
            f"{name}={value:.4g}" if value is not None else f"{name}=n/a"
            for name, value in output.prometheus.items()
        )
        extra_lines.append(f"prometheus......................: {shown}")
    if output.webhook is not None:
        extra_lines.append(
            f"webhook.........................: mode={output.webhook['mode']} "
            f"requests={output.webhook['requests']} attempts={output.webhook['dispatch']} "
            f"dropped={output.webhook['dispatch_dropped']:.0f}"
        )
    if output.profile is not None:
        extra_lines.append(f"profile.........................: {output.profile}")
    if (book := _book(output)) is not None:
        seconds = book["resync_seconds"]
        shown = " ".join(
            f"{q}={v:.3g}s" if v is not None else f"{q}=n/a" for q, v in seconds.items()
        )
        extra_lines.append(
            f"book............................: resyncs={book['resyncs']} "
            f"{book['resyncs_by_reason']} resync_seconds {shown} "
            f"weight={book['rest_weight_used']} snapshots={book['snapshots']}"
        )
    db = [c for c in checks if c.threshold.metric.startswith("db_upsert")]
    if db and db[0].value is None:
        measured.notes.append(f"DB upsert thresholds: {db[0].note}")
    summary = render_summary(title, context, checks, measured, extra_lines)
    document = metrics_document(
        config={**attrs.asdict(config), "thresholds_checked": [c.threshold.text for c in checks]},
        env=env,
        checks=checks,
        measured=measured,
        series=_series(output),
        extra={
            "generator": {"ready": output.generator_ready, "done": done},
            "prometheus": output.prometheus,
            "webhook": output.webhook,
            "service_exit": output.service_exit,
            # Diff books (depthdiff): resyncs and how long they took.
            **({"book": book} if (book := _book(output)) else {}),
        },
    )
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", document)
    (out / "summary.txt").write_text(summary)
    (out / "report.html").write_text(render_html(document, summary))
    code = EXIT_PASS if all(check.passed for check in checks) else EXIT_THRESHOLD
    return Conclusion(code, summary, document, out)


def _book(output: RunOutput) -> dict[str, Any] | None:
    """The diff books' summary of the last sample, when the service kept diff books."""
    book = output.samples[-1].get("book") if output.samples else None
    return book if book and sum(book["symbols"].values()) else None


def _series(output: RunOutput) -> list[dict[str, Any]]:
    from oraculo_trio.loadtest.report import derive_series

    return derive_series(output.samples)


def _run(work: Callable[[], Any]) -> tuple[Any, int | None]:
    """``trio.run`` the work under :func:`with_signals`; our errors come out unwrapped.

    Raises:
        OraculoError: the work failed for a reason of ours (alone or in a group).
    """
    try:
        return trio.run(with_signals, work)
    except BaseExceptionGroup as group:
        error = our_error(group)
        if error is None:
            raise
        raise error from None


def loadtest_main(argv: Sequence[str]) -> int:
    """``oraculo-trio loadtest STREAM RATE [options]``; returns the exit code."""
    args = build_parser().parse_args(argv)
    config = config_from(args)
    console = Console()
    out = Path(args.out).absolute() if args.out else default_out()
    try:
        config.check()
        thresholds_for(config.rate, config.strict, config.thresholds)  # fail before running
        output, interrupted = _run(
            lambda: run_load_test(
                config,
                out,
                on_sample=console.on_sample if config.progress else None,
                say=console.say,
            )
        )
    except OraculoError as exc:
        console.end_line()
        print(f"oraculo-trio loadtest: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    console.end_line()
    if interrupted is not None:
        print("oraculo-trio loadtest: interrupted; every process was stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    conclusion = conclude(output, config, out)
    print(conclusion.summary, end="")
    return conclusion.exit_code


def calibrate_main(argv: Sequence[str]) -> int:
    """``oraculo-trio loadtest calibrate RATE``: the generator alone, against a discarding
    client; says whether it keeps the rate (within 1 %) and what it costs."""
    parser = argparse.ArgumentParser(
        prog="oraculo-trio loadtest calibrate",
        description="Run only the generator (mock exchange) at RATE against a client that "
        "discards everything: checks the rate is kept to 1 % over the measured window and "
        "measures the generator's CPU and lateness.",
    )
    parser.add_argument("rate", type=_positive_float, metavar="RATE")
    parser.add_argument("--stream", choices=sorted(SOURCES), default="depth")
    parser.add_argument("--duration", type=_positive_float, default=10.0)
    parser.add_argument("--warmup", type=_non_negative_float, default=2.0)
    parser.add_argument("--symbols", type=_positive_int, default=50)
    parser.add_argument("--tick-ms", type=_positive_float, default=100.0)
    parser.add_argument("--batch", type=_positive_int)
    parser.add_argument("--levels", type=int, choices=(5, 10, 20), default=20)
    parser.add_argument("--out", metavar="DIR")
    args = parser.parse_args(argv)
    config = RunConfig(
        stream=args.stream,
        rate=args.rate,
        duration=args.duration,
        warmup=args.warmup,
        symbols=args.symbols,
        tick_ms=args.tick_ms,
        batch=args.batch,
        levels=args.levels,
    )
    out = Path(args.out).absolute() if args.out else default_out("calibrate")
    console = Console()
    try:
        config.check()
        result, interrupted = _run(lambda: calibrate(config.generator_spec(), out, console.say))
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
    write_json(out / "calibrate.json", {"config": attrs.asdict(config), **result})
    return EXIT_PASS if ok else EXIT_THRESHOLD


def compare_main(argv: Sequence[str]) -> int:
    """``oraculo-trio compare A B``: a before/after table of two artifacts."""
    parser = argparse.ArgumentParser(
        prog="oraculo-trio compare",
        description="Print a before/after table of two load-test artifacts (directories or "
        "metrics.json files): every KPI with its change, then the accounting.",
    )
    parser.add_argument("a", metavar="A", help="the 'before' artifact")
    parser.add_argument("b", metavar="B", help="the 'after' artifact")
    parser.add_argument("--json", action="store_true", help="print both KPI sets as JSON")
    args = parser.parse_args(argv)
    try:
        a, b = load_metrics(args.a), load_metrics(args.b)
    except OraculoError as exc:
        print(f"oraculo-trio compare: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print(json.dumps({"a": a.get("values"), "b": b.get("values")}, indent=2))
    else:
        print(compare(a, b, (Path(args.a).name or "A", Path(args.b).name or "B")), end="")
    return EXIT_PASS


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``oraculo-trio loadtest ...``: STREAM RATE, ``bench`` or
    ``calibrate``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        from oraculo_trio.loadtest.bench import bench_main

        return bench_main(argv[1:])
    if argv and argv[0] == "calibrate":
        return calibrate_main(argv[1:])
    return loadtest_main(argv)


if __name__ == "__main__":
    sys.exit(main())
