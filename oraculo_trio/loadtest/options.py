"""The load tool's shared options: the load's shape and the service's, and the
:class:`~oraculo_trio.loadtest.shape.LoadShape` they describe."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from oraculo_trio.loadtest.shape import LoadShape
from oraculo_trio.mockexchange.markets.load import parse_distribution


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


positive_float = _number(0.0, inclusive=False)
non_negative_float = _number(0.0, inclusive=True)


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
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
    value = non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a share in [0, 1]")
    return value


def add_load_options(parser: argparse.ArgumentParser, *, single_run: bool = True) -> None:
    """The options shared by a load test and the saturation search."""
    load = parser.add_argument_group("load")
    if single_run:
        load.add_argument(
            "--duration",
            type=positive_float,
            default=60.0,
            metavar="S",
            help="seconds of the measured phase (default 60)",
        )
        load.add_argument(
            "--warmup",
            type=non_negative_float,
            default=5.0,
            metavar="S",
            help="seconds at full rate before measuring (default 5)",
        )
        load.add_argument(
            "--ramp",
            type=non_negative_float,
            default=0.0,
            metavar="S",
            help="seconds of linear rise from 0 to RATE before the warm-up (default 0)",
        )
    load.add_argument(
        "--symbols",
        type=positive_int,
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
        type=positive_float,
        default=100.0,
        metavar="MS",
        help="milliseconds between bursts: Binance pushes @100ms streams in 100 ms ticks "
        "(default 100)",
    )
    load.add_argument(
        "--batch",
        type=positive_int,
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
        type=non_negative_float,
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


def shape_from(
    args: argparse.Namespace,
    *,
    stream: str,
    rate: float,
    duration: float,
    warmup: float,
    ramp: float = 0.0,
) -> LoadShape:
    """The :class:`LoadShape` of parsed :func:`add_load_options` arguments.

    Args:
        args: the parsed arguments.
        stream, rate, duration, warmup, ramp: what the command decides itself (a saturation
            search steps the rate, for one).
    """
    return LoadShape(
        stream=stream,
        rate=rate,
        duration=duration,
        warmup=warmup,
        ramp=ramp,
        symbols=args.symbols,
        distribution=args.distribution,
        tick=args.tick_ms / 1000.0,
        batch=args.batch,
        levels=args.levels,
        trade_ratio=args.trade_ratio,
        seed=args.seed,
        faithful=args.faithful,
        alert_period=args.alert_period,
        faults=args.faults,
    )
