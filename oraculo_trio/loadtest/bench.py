"""``oraculo-trio loadtest bench``: the saturation search (``just bench``).

Runs short load tests at rising rates (x1.25 a step, a fresh service each time) until a step
fails: queue-time p99 above 100 ms, a message unaccounted for, or the generator unable to
send its rate within 1 % (the service's socket reads fell behind and TCP pushed back).
The saturation throughput is the processed rate of the last step that held; the service's
CPU per message comes from /proc over that step's measured phase. Every step also reports
the age of what is evaluated (p99 of ``now - E``) per stream. Then one more run at 80 % of
saturation with py-spy attached says where the time goes, and with ``--overload`` a stage at
twice the saturation for 60 s reports that age, the feed lag and ``/readyz`` while the service
cannot keep up (:mod:`~oraculo_trio.loadtest.overload`).

Artifacts go to ``artifacts/bench/<UTC timestamp>/`` once complete: ``bench.json``,
``summary.txt``, ``report.html``, one directory per step (each with its own ``metrics.json``),
``profile/`` (py-spy's raw stacks and the summary) and ``overload/``.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

import oraculo_trio
from oraculo_trio.core.events import STREAMS
from oraculo_trio.errors import OraculoError
from oraculo_trio.loadtest.artifacts import (
    conclude,
    environment,
    keep_failed,
    partial_dir,
    publish,
    write_json,
)
from oraculo_trio.loadtest.configuration import RunConfig
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
from oraculo_trio.loadtest.html_report import Axes, render_html, svg_chart
from oraculo_trio.loadtest.options import add_load_options, positive_float, shape_from
from oraculo_trio.loadtest.overload import (
    GENERATOR_BOUND_CORES,
    OVERLOAD_FACTOR,
    OVERLOAD_THRESHOLDS,
    overload_result,
    render_overload,
)
from oraculo_trio.loadtest.run import run_load_test
from oraculo_trio.loadtest.shape import LoadShape
from oraculo_trio.loadtest.summary import format_value
from oraculo_trio.loadtest.thresholds import parse_threshold

BENCH_THRESHOLDS = ("queue_time_p99 <= 100ms", "unaccounted == 0", "sent_rate_error <= 1%")
"""What a step must hold to count as sustained."""

ROOT = Path(oraculo_trio.__file__).resolve().parents[1]
"""Where the package is imported from: profile paths are shown relative to it."""


@attrs.frozen
class BenchConfig:
    """The saturation search.

    Attributes:
        shape: the first step's load: its ``rate`` is where the search starts, its
            ``duration`` and ``warmup`` are every step's.
        factor: rate multiplier per step.
        max_rate: stop stepping above this rate.
        database_url: PostgreSQL server for fresh databases (default SQLite).
        settings: service ``section.key=value`` overrides.
        profile_seconds: seconds of py-spy at 80 % of saturation (0: no profile run).
        overload: after the search, hold twice the saturation for ``overload_seconds``.
        overload_seconds: the overload stage's measured seconds.
        saturation: a saturation throughput already known: no search (the overload stage
            and the profile use it).
    """

    shape: LoadShape = attrs.field(
        factory=lambda: LoadShape(rate=5000.0, duration=10.0, warmup=3.0)
    )
    factor: float = 1.25
    max_rate: float = 200_000.0
    database_url: str | None = None
    settings: tuple[str, ...] = ()
    profile_seconds: float = 10.0
    overload: bool = False
    overload_seconds: float = 60.0
    saturation: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The search as one flat mapping (the first step's shape, then the search's own)."""
        search = attrs.asdict(self, filter=lambda attribute, _value: attribute.name != "shape")
        return {**attrs.asdict(self.shape), **search}

    def step(
        self,
        rate: float,
        *,
        duration: float | None = None,
        profile: float = 0.0,
        thresholds: tuple[str, ...] = BENCH_THRESHOLDS,
    ) -> RunConfig:
        """The load test of one step."""
        shape = attrs.evolve(self.shape, rate=rate, duration=duration or self.shape.duration)
        return RunConfig(
            shape,
            database_url=self.database_url,
            settings=self.settings,
            thresholds=thresholds,
            profile=profile,
            # An overloaded service drains a backlog: give it the time the stage took.
            drain_timeout=max(30.0, shape.duration),
            progress=False,
        )


def summarize_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """Where the samples of a py-spy ``--format raw`` file went.

    Returns:
        ``samples``; ``self_by_function`` and ``self_by_file`` (the innermost frame of each
        sample: where the CPU was); ``total_by_function`` (any frame of the stack); each a
        list of ``[name, samples, share]``, largest first.
    """
    self_fn: Counter[str] = Counter()
    self_file: Counter[str] = Counter()
    total_fn: Counter[str] = Counter()
    samples = 0
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {"samples": 0, "error": f"cannot read {path}"}
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        try:
            count = int(count_text)
        except ValueError:
            continue
        frames = [_frame(frame) for frame in stack.split(";") if frame]
        if not frames:
            continue
        samples += count
        function, file = frames[-1]
        self_fn[function] += count
        self_file[file] += count
        for name in {function for function, _ in frames}:
            total_fn[name] += count

    def rows(counter: Counter[str]) -> list[list[Any]]:
        return [[name, n, n / samples if samples else 0.0] for name, n in counter.most_common(top)]

    return {
        "samples": samples,
        "self_by_function": rows(self_fn),
        "self_by_file": rows(self_file),
        "total_by_function": rows(total_fn),
    }


def _frame(frame: str) -> tuple[str, str]:
    # py-spy raw frames: "function (path/to/file.py:123)"; keep the function and a short path.
    name, _, where = frame.partition(" (")
    file = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", f"{ROOT}/", "oraculo_trio/", "loadtest/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    short = file.rsplit("/", 2)
    file = "/".join(short[-2:]) if len(short) > 1 else file
    return f"{name} ({file})", file


def _step_row(rate: float, document: dict[str, Any], passed: bool) -> dict[str, Any]:
    values = document["values"]
    return {
        "target": rate,
        "sent_rate": values.get("sent_rate"),
        "processed_rate": values.get("processed_rate"),
        "queue_time_p99": values.get("queue_time_p99"),
        "lag_max": values.get("lag_max"),
        "service_cpu_cores": values.get("service_cpu_cores"),
        "service_cpu_us_per_msg": values.get("service_cpu_us_per_msg"),
        "generator_cpu_cores": values.get("generator_cpu_cores"),
        "unaccounted": values.get("unaccounted"),
        "sent_rate_error": values.get("sent_rate_error"),
        "conflated": values.get("conflated"),
        "exchange_queued_max": values.get("exchange_queued_max"),
        "generator_lateness_p99": values.get("generator_lateness_p99"),
        **{
            f"evaluated_age_p99_{stream}": values.get(f"evaluated_age_p99_{stream}")
            for stream in STREAMS
        },
        "pass": passed,
        "failed": [k["threshold"] for k in document["kpis"] if k["pass"] is False],
    }


#: Frames waiting in the exchange's queues above which the service is the one falling behind.
BACKLOG_FRAMES = 1000


def limited_by(row: dict[str, Any]) -> str:
    """Who could not keep up in a failed step: the service or the generator.

    When the rate was not sent, a backlog in the exchange's socket queues means TCP pushed
    back (the service read too slowly); no backlog means the generator itself was late (its
    CPU, or the machine's).
    """
    if row["pass"]:
        return "held"
    if "sent_rate_error" not in " ".join(row["failed"]):
        return "the service"
    queued = row.get("exchange_queued_max") or 0
    generator_cores = row.get("generator_cpu_cores") or 0.0
    # A generator whose one thread is busy fills its own queues too (its writers share that
    # thread): a backlog then says nothing about the service.
    if queued > BACKLOG_FRAMES and generator_cores < GENERATOR_BOUND_CORES:
        return f"the service: {queued:,.0f} frames backed up in the exchange"
    late = row.get("generator_lateness_p99")
    late_text = format_value(late, "s")
    return (
        f"the generator, not the service: {queued:,.0f} frames in the exchange's queues, "
        f"generator lateness p99 {late_text}, generator CPU {row['generator_cpu_cores'] or 0:.2f} "
        f"cores, service CPU {row['service_cpu_cores'] or 0:.2f} cores"
    )


def render_bench(config: BenchConfig, steps: list[dict[str, Any]], result: dict[str, Any]) -> str:
    """The bench summary: one line per step, the saturation, the profile's top entries."""
    shape = config.shape
    lines = [
        f"  oraculo-trio loadtest bench · {shape.stream} · {shape.symbols} symbols · "
        f"{shape.duration:g} s steps (+{shape.warmup:g} s warm-up) · x{config.factor:g} "
        f"from {shape.rate:,.0f} msg/s",
        f"  a step holds when: {', '.join(BENCH_THRESHOLDS)}",
        "",
        f"  {'target/s':>10} {'sent/s':>10} {'processed/s':>12} {'q p99':>9} "
        + "".join(f"{'age p99 ' + stream:>15} " for stream in STREAMS)
        + f"{'lag max':>9} {'svc cores':>9} {'µs/msg':>7} {'gen cores':>9} {'unacc':>6}  verdict",
    ]
    for row in steps:
        verdict = "✓" if row["pass"] else "✗ " + "; ".join(row["failed"])
        ages = "".join(
            f"{format_value(row.get(f'evaluated_age_p99_{stream}'), 's'):>15} "
            for stream in STREAMS
        )
        lines.append(
            f"  {row['target']:>10,.0f} {row['sent_rate'] or 0:>10,.0f} "
            f"{row['processed_rate'] or 0:>12,.0f} {format_value(row['queue_time_p99'], 's'):>9} "
            f"{ages}{format_value(row['lag_max'], 's'):>9} {row['service_cpu_cores'] or 0:>9.3f} "
            f"{row['service_cpu_us_per_msg'] or 0:>7.1f} {row['generator_cpu_cores'] or 0:>9.3f} "
            f"{row['unaccounted'] or 0:>6.0f}  {verdict}"
        )
    lines.append("")
    saturation = result.get("saturation")
    if saturation is None:
        lines.append(f"  saturation: below the first step ({shape.rate:,.0f} msg/s)")
    elif saturation.get("given"):
        lines.append(f"  saturation: {saturation['throughput']:,.0f} msg/s (given: no search)")
    else:
        lines.append(
            f"  saturation: {saturation['throughput']:,.0f} msg/s processed (step target "
            f"{saturation['target']:,.0f}/s); service CPU {saturation['us_per_msg']:.1f} µs per "
            f"message ({saturation['cores']:.2f} cores)"
        )
        if saturation.get("first_failure"):
            lines.append(f"  next step failed: {saturation['first_failure']}")
    profile = result.get("profile")
    if profile:
        lines.append("")
        lines.append(
            f"  profile at 80 % of saturation ({profile['rate']:,.0f} msg/s, "
            f"{profile['summary'].get('samples', 0)} py-spy samples): {profile['path']}"
        )
        for title, key in (
            ("self time by file", "self_by_file"),
            ("self time by function", "self_by_function"),
        ):
            lines.append(f"    {title}:")
            for name, _, share in profile["summary"].get(key, [])[:12]:
                lines.append(f"      {share * 100:5.1f}%  {name}")
    elif result.get("profile_error"):
        lines.append(f"  profile: {result['profile_error']}")
    if result.get("overload"):
        lines.append("")
        lines.extend(render_overload(result["overload"]))
    return "\n".join(lines) + "\n"


async def _search(
    config: BenchConfig, out: Path, say: Callable[[str], None]
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Step the rate up until a step fails; return the steps and the saturation found."""
    thresholds = [parse_threshold(text) for text in BENCH_THRESHOLDS]
    steps: list[dict[str, Any]] = []
    saturation = None
    rate = config.shape.rate
    index = 0
    while rate <= config.max_rate:
        index += 1
        say(f"step {index}: {rate:,.0f} msg/s")
        run = config.step(rate)
        step_dir = out / f"step-{index:02d}-{rate:.0f}"
        output = await run_load_test(run, step_dir)
        conclusion = conclude(output, run, step_dir, thresholds)
        passed = conclusion.exit_code == EXIT_PASS
        row = _step_row(rate, conclusion.document, passed)
        steps.append(row)
        say(
            f"step {index}: processed {row['processed_rate'] or 0:,.0f}/s, queue p99 "
            f"{format_value(row['queue_time_p99'], 's')}: {'holds' if passed else 'fails'}"
        )
        if not passed:
            if saturation is not None:
                saturation["first_failure"] = (
                    f"{rate:,.0f}/s: " + "; ".join(row["failed"]) + f" ({limited_by(row)})"
                )
            break
        saturation = {
            "target": rate,
            "throughput": row["processed_rate"],
            "us_per_msg": row["service_cpu_us_per_msg"],
            "cores": row["service_cpu_cores"],
            "step": index,
        }
        rate *= config.factor
    return steps, saturation


async def run_bench(
    config: BenchConfig,
    out: Path,
    *,
    say: Callable[[str], None] = lambda _text: None,
) -> dict[str, Any]:
    """Step the rate up until a step fails (unless the saturation is given), profile at 80 %
    of saturation, and with ``overload`` hold twice the saturation.

    Returns:
        ``{"steps": [...], "saturation": {...} | None, "profile": {...} | None,
        "overload": {...} | None}``; each stage's artifacts are written as it ends.

    Raises:
        LoadTestError: a step could not run.

    Cancellation: stops the running step's processes.
    """
    if config.saturation is not None:
        steps: list[dict[str, Any]] = []
        saturation: dict[str, Any] | None = {
            "target": config.saturation,
            "throughput": config.saturation,
            "given": True,
        }
    else:
        steps, saturation = await _search(config, out, say)
    result: dict[str, Any] = {
        "steps": steps,
        "saturation": saturation,
        "profile": None,
        "overload": None,
    }
    if saturation is not None and config.profile_seconds > 0:
        await _profile(config, saturation["throughput"], out, say, result)
    if saturation is not None and config.overload:
        result["overload"] = await _overload(config, saturation["throughput"], out, say)
    return result


async def _profile(
    config: BenchConfig,
    throughput: float,
    out: Path,
    say: Callable[[str], None],
    result: dict[str, Any],
) -> None:
    """A run at 80 % of saturation with py-spy attached; its summary goes in ``result``."""
    profile_rate = round(0.8 * throughput)
    say(f"profiling the service at 80 % of saturation: {profile_rate:,} msg/s")
    run = config.step(
        profile_rate, duration=config.profile_seconds + 4.0, profile=config.profile_seconds
    )
    profile_dir = out / "profile"
    output = await run_load_test(run, profile_dir)
    conclusion = conclude(output, run, profile_dir, [parse_threshold(t) for t in BENCH_THRESHOLDS])
    if output.profile is not None and output.profile.exists():
        result["profile"] = {
            "rate": profile_rate,
            "path": str(output.profile),
            "summary": summarize_profile(output.profile),
            "values": conclusion.document["values"],
        }
    else:
        result["profile_error"] = "no profile: py-spy is not installed (pip install py-spy)"


async def _overload(
    config: BenchConfig, throughput: float, out: Path, say: Callable[[str], None]
) -> dict[str, Any]:
    """Twice the saturation for ``overload_seconds``: the age, feed lag and readiness."""
    rate = round(OVERLOAD_FACTOR * throughput)
    say(f"overload: {rate:,} msg/s (2 x saturation) for {config.overload_seconds:g} s")
    run = config.step(rate, duration=config.overload_seconds, thresholds=OVERLOAD_THRESHOLDS)
    stage_dir = out / "overload"
    output = await run_load_test(run, stage_dir)
    conclusion = conclude(output, run, stage_dir, [parse_threshold(t) for t in OVERLOAD_THRESHOLDS])
    return overload_result(rate, throughput, output.samples, output.marks, conclusion.document)


def build_bench_parser() -> argparse.ArgumentParser:
    """``oraculo-trio loadtest bench [options]``."""
    parser = argparse.ArgumentParser(
        prog="oraculo-trio loadtest bench",
        description="Saturation search: load tests at rising rates (x1.25 a step) until "
        "queue-time p99 > 100 ms, a message is unaccounted for, or the generator cannot send "
        "the rate within 1 %; reports the saturation throughput, the service's CPU µs per "
        "message and the age of what is evaluated (p99 of now - E) per stream at every step, "
        "a py-spy profile at 80 % of saturation, and with --overload a stage at twice the "
        "saturation (the age, the feed lag and /readyz while the service cannot keep up).",
        epilog="Exit codes: 0 a saturation was found (and the overload stage held: age p99 "
        "< 1 s, nothing unaccounted), 99 the overload stage failed, 2 a bad option, 1 error.",
    )
    parser.add_argument("--stream", default="depth", help="STREAM (default depth)")
    parser.add_argument(
        "--start", type=positive_float, default=5000.0, help="first rate (default 5000)"
    )
    parser.add_argument(
        "--factor", type=positive_float, default=1.25, help="rate step (default 1.25)"
    )
    parser.add_argument("--max-rate", type=positive_float, default=200_000.0)
    parser.add_argument(
        "--step-duration", type=positive_float, default=10.0, help="seconds (default 10)"
    )
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds (default 3)")
    parser.add_argument(
        "--profile-seconds", type=float, default=10.0, help="py-spy seconds (0: no profile)"
    )
    parser.add_argument(
        "--overload",
        action="store_true",
        help="after the search, hold twice the saturation for --overload-seconds and report "
        "the age of what is evaluated, the feed lag and /readyz",
    )
    parser.add_argument(
        "--overload-seconds", type=positive_float, default=60.0, metavar="S",
        help="the overload stage's measured seconds (default 60)",
    )  # fmt: skip
    parser.add_argument(
        "--saturation", type=positive_float, metavar="RATE",
        help="a saturation throughput already measured: skip the search",
    )  # fmt: skip
    add_load_options(parser, single_run=False)
    return parser


def bench_main(argv: Sequence[str]) -> int:
    """``oraculo-trio loadtest bench [options]``; returns the exit code."""
    args = build_bench_parser().parse_args(argv)
    shape = shape_from(
        args, stream=args.stream, rate=args.start, duration=args.step_duration, warmup=args.warmup
    )
    config = BenchConfig(
        shape,
        factor=args.factor,
        max_rate=args.max_rate,
        database_url=args.database_url,
        settings=tuple(args.settings),
        profile_seconds=args.profile_seconds,
        overload=args.overload,
        overload_seconds=args.overload_seconds,
        saturation=args.saturation,
    )
    out = Path(args.out).absolute() if args.out else default_out("bench")
    console = Console()
    try:
        if out.exists():
            raise OraculoError(f"--out {out}: exists already; name a new folder")
        config.step(shape.rate).check()
    except OraculoError as exc:
        print(f"oraculo-trio loadtest bench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result, interrupted = run_trio(lambda: run_bench(config, partial_dir(out), say=console.say))
    except OraculoError as exc:
        failed = keep_failed(out)
        print(f"oraculo-trio loadtest bench: error: {exc} (logs: {failed})", file=sys.stderr)
        return EXIT_ERROR
    if interrupted is not None:
        keep_failed(out)
        return EXIT_INTERRUPTED
    summary = render_bench(config, result["steps"], result)
    write_bench(partial_dir(out), config, result, summary)
    publish(out)
    print(summary, end="")
    if result["saturation"] is None:
        return EXIT_ERROR
    overload = result.get("overload")
    return EXIT_THRESHOLD if overload and overload["verdict"] != "pass" else EXIT_PASS


def write_bench(out: Path, config: BenchConfig, result: dict[str, Any], summary: str) -> None:
    """``bench.json``, ``summary.txt`` and ``report.html`` of a bench."""
    document = {"config": config.as_dict(), "environment": environment(), **result}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "bench.json", document)
    (out / "summary.txt").write_text(summary)
    steps = result["steps"]
    targets = [row["target"] for row in steps]
    x_range = (min(targets, default=0.0), max(targets, default=1.0))
    charts = [
        svg_chart(
            "Throughput by step",
            targets,
            {
                "processed/s": [row["processed_rate"] for row in steps],
                "sent/s": [row["sent_rate"] for row in steps],
            },
            Axes(x_range, "target rate (messages per second)", "messages per second"),
        ),
        svg_chart(
            "Queue time and age of what is evaluated, p99, by step",
            targets,
            {
                "queue time": [row["queue_time_p99"] for row in steps],
                **{
                    f"age {stream}": [row.get(f"evaluated_age_p99_{stream}") for row in steps]
                    for stream in STREAMS
                },
            },
            Axes(x_range, "target rate (messages per second)", "milliseconds"),
            scale=1000.0,
        ),
    ]
    report = {"config": document["config"], "environment": document["environment"]}
    (out / "report.html").write_text(render_html(report, summary, charts))
