"""A standalone mock exchange: ``python -m oraculo_trio.mockexchange --port 9443 --market demo``.

Prints the exchange's base URL (``ws://127.0.0.1:PORT``) on stdout, then its REST base URL
(``http://127.0.0.1:PORT2``) on the next line, then serves until SIGINT (Ctrl-C) or SIGTERM.
Connect to ``<url>/stream?streams=btcusdt@trade/...`` or ``<url>/ws/...``; the REST side
answers ``<prefix>/exchangeInfo``, ``/time``, ``/depth``, ``/aggTrades`` as the Binance market
of ``--binance-market`` does (weights, per-IP limit, 429s).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence

import trio

from oraculo_trio.core.markets import MARKETS
from oraculo_trio.mockexchange.config import ExchangeSettings
from oraculo_trio.mockexchange.exchange import MockExchange
from oraculo_trio.mockexchange.markets.payloads import Market, synthetic_symbols
from oraculo_trio.mockexchange.markets.replay import ReplayMarket
from oraculo_trio.mockexchange.markets.scripted import ScriptedMarket
from oraculo_trio.mockexchange.markets.walk import RandomWalkMarket

LOGGER = logging.getLogger("oraculo_trio.mockexchange.main")


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m oraculo_trio.mockexchange``."""
    parser = argparse.ArgumentParser(
        prog="python -m oraculo_trio.mockexchange", description="Binance-compatible mock exchange."
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="TCP port (default 0: any free)")
    parser.add_argument(
        "--market",
        choices=("demo", "random", "replay"),
        default="demo",
        help="demo: scripted 20 s cycle; random: random walks; replay: recorded frames",
    )
    parser.add_argument(
        "--symbols", type=int, default=50, help="random: number of synthetic symbols"
    )
    parser.add_argument(
        "--rate", type=float, default=1_500.0, help="random/replay: frames per second"
    )
    parser.add_argument("--trade-ratio", type=float, default=0.2, help="random: share of trades")
    parser.add_argument(
        "--replay-file",
        action="append",
        default=[],
        metavar="PATH",
        help="replay: a recorded .jsonl file of {stream, data} lines (repeat for more)",
    )
    parser.add_argument("--retime", action="store_true", help="replay: set E/T to the tick time")
    parser.add_argument("--seed", type=int, default=0, help="seed of the market's noise")
    parser.add_argument("--tick", type=float, default=0.1, help="publishing period, seconds")
    parser.add_argument(
        "--ping-interval", type=float, default=20.0, help="server ping period, 0 disables"
    )
    parser.add_argument(
        "--overflow",
        choices=("block", "drop"),
        default="block",
        help="full connection queue: block the publisher (default) or drop the frame",
    )
    parser.add_argument("--queue-size", type=int, default=16384, help="frames per connection")
    parser.add_argument(
        "--binance-market",
        choices=MARKETS,
        default="spot",
        help="which Binance market the REST side plays: paths (/api/v3, /fapi/v1, /dapi/v1), "
        "weights and per-IP limit (default spot)",
    )
    parser.add_argument(
        "--clock-offset",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="run the exchange's clock this far ahead of this host's (negative: behind): "
        "every E and the /time answer are shifted (default 0)",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return parser


def build_market(args: argparse.Namespace) -> Market:
    """The market the arguments ask for.

    Args:
        args: parsed ``build_parser()`` arguments.

    Returns:
        A ``ScriptedMarket`` (demo), ``RandomWalkMarket`` or ``ReplayMarket``.

    Raises:
        SystemExit: replay without ``--replay-file``.
    """
    if args.market == "demo":
        return ScriptedMarket(seed=args.seed)
    if args.market == "random":
        return RandomWalkMarket(
            synthetic_symbols(args.symbols),
            args.rate,
            trade_ratio=args.trade_ratio,
            seed=args.seed,
        )
    if not args.replay_file:
        raise SystemExit("--market replay needs at least one --replay-file PATH")
    return ReplayMarket(args.replay_file, args.rate, retime=args.retime)


async def _run(exchange: MockExchange, host: str, port: int) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(exchange.serve, host, port)
        print(exchange.ws_url, flush=True)
        print(exchange.rest_url, flush=True)
        # SIGINT and SIGTERM end the exchange cleanly (also when started in the background,
        # where the shell leaves SIGINT ignored).
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                LOGGER.info("received %s: stopping", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m oraculo_trio.mockexchange``.

    Args:
        argv: arguments (default ``sys.argv[1:]``).

    Returns:
        The process exit code.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    settings = ExchangeSettings(
        tick=args.tick,
        ping_interval=args.ping_interval or None,
        overflow=args.overflow,
        queue_size=args.queue_size,
        market=args.binance_market,
        clock_offset=args.clock_offset,
    )
    exchange = MockExchange(build_market(args), settings)
    try:
        trio.run(_run, exchange, args.host, args.port)
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
