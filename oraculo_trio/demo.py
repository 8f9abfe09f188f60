"""``oraculo-trio demo``: the service against the bundled mock exchange, offline.

The mock exchange (``oraculo_trio.mockexchange``) plays a scripted market on 127.0.0.1 whose
20 s cycle makes every demo rule (``oraculo_trio/data/demo_rules.toml``) fire and resolve.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

import attrs
import trio

from oraculo_trio.mockexchange import MockExchange, ScriptedMarket
from oraculo_trio.pipeline.rules_source import load_rule_file
from oraculo_trio.pipeline.service import ServiceHandle, run_service
from oraculo_trio.settings import Settings
from oraculo_trio.store.base import mask_dsn

LOGGER = logging.getLogger("oraculo_trio.demo")


def demo_rules_path() -> Path:
    """The demo's rule file, shipped inside the package."""
    return Path(str(resources.files("oraculo_trio") / "data" / "demo_rules.toml"))


def demo_settings(settings: Settings, exchange_url: str, symbols: list[str]) -> Settings:
    """``settings`` pointed at the mock exchange, for the demo's symbols and streams."""
    feed = attrs.evolve(
        settings.feed,
        url=exchange_url,
        symbols=tuple(symbols),
        depth_streams=("depth20",),
        trade_streams=("trade",),
        reconnect_initial=0.2,
        reconnect_max=2.0,
    )
    # The demo's rules are the packaged file: edit it while the demo runs and it reloads.
    rules = attrs.evolve(settings.rules, file=str(demo_rules_path()), source="file")
    return attrs.evolve(settings, feed=feed, rules=rules)


async def run_demo(settings: Settings, duration: float | None = None) -> None:
    """Run the mock exchange and the service together until Ctrl-C or ``duration``.

    Cancellation: the service shuts down gracefully (drain, flush) when the duration ends.
    """
    rules = load_rule_file(demo_rules_path())
    market = ScriptedMarket()
    async with trio.open_nursery() as nursery:
        exchange = await nursery.start(MockExchange(market).serve)
        settings = demo_settings(settings, exchange.ws_url, market.symbols)
        handle: ServiceHandle = await nursery.start(run_service, settings, rules)
        print(
            f"oraculo-trio demo: mock exchange at {exchange.ws_url}, "
            f"{len(rules)} rules on {', '.join(market.symbols)}",
            flush=True,
        )
        print(
            f"oraculo-trio demo: metrics at {handle.metrics_url} "
            f"(also /healthz and /readyz); alerts stored in {mask_dsn(settings.database.url)}",
            flush=True,
        )
        host, port = handle.http_address
        print(
            f"oraculo-trio demo: API at http://{host}:{port}/api/v1; in another terminal: "
            f"oraculo-trio alerts list --url {host}:{port}",
            flush=True,
        )
        if duration is not None:
            await trio.sleep(duration)
            await _quiesce(exchange, handle)
            handle.request_shutdown()
        # The service ends after its graceful shutdown (or a signal); then the exchange goes.
        await handle.stopped.wait()
        print(accounting_line(handle, exchange.frames_sent), flush=True)
        nursery.cancel_scope.cancel()


async def _quiesce(exchange: MockExchange, handle: ServiceHandle) -> None:
    # Stop the market and let the service read what is already on the wire, so the final
    # accounting can compare what the exchange sent with what the service received.
    exchange.pause()
    with trio.move_on_after(2.0):
        while handle.metrics.accounting()["received"] < exchange.frames_sent:  # noqa: ASYNC110 (a counter has no event)
            await trio.sleep(0.01)


def accounting_line(handle: ServiceHandle, sent: int) -> str:
    """The accounting (``docs/architecture.md``), term by term, from the service's own
    counters, plus what the mock exchange sent."""
    totals = handle.metrics.accounting()
    terms = " ".join(f"{key}={value}" for key, value in totals.items())
    return f"ACCOUNTING sent={sent} {terms}"
