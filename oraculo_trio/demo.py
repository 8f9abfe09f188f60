"""``oraculo-trio demo``: the service against the bundled mock exchange, offline.

Two mock exchanges (``oraculo_trio.mockexchange``) play scripted markets on 127.0.0.1: Binance
spot (five symbols) and USD-M futures (``usdm:BTCUSDT``: aggTrades, mark price and funding,
liquidations), whose 20 s cycles make every demo rule (``oraculo_trio/data/demo_rules.toml``)
fire and resolve. The service follows both, one ``[[feed]]`` each.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

import attrs
import trio

from oraculo_trio.mockexchange import ExchangeSettings, MockExchange, ScriptedMarket
from oraculo_trio.mockexchange.markets.futures import FuturesScriptMarket
from oraculo_trio.pipeline.rules_source import load_rule_file
from oraculo_trio.pipeline.service import ServiceHandle, run_service
from oraculo_trio.settings import FeedSettings, Settings
from oraculo_trio.store.base import mask_dsn

LOGGER = logging.getLogger("oraculo_trio.demo")


def demo_rules_path() -> Path:
    """The demo's rule file, shipped inside the package."""
    return Path(str(resources.files("oraculo_trio") / "data" / "demo_rules.toml"))


def demo_settings(
    settings: Settings, spot: MockExchange, futures: MockExchange | None = None
) -> Settings:
    """``settings`` pointed at the mock exchanges: spot's scripted symbols, and USD-M's with
    the futures streams when ``futures`` is given."""
    feeds = [_feed(settings, spot, ("depth20",), ("trade",))]
    if futures is not None:
        feeds.append(_feed(settings, futures, (), ("aggTrade",), ("markPrice", "forceOrder")))
    # The demo's rules are the packaged file: edit it while the demo runs and it reloads.
    rules = attrs.evolve(settings.rules, file=str(demo_rules_path()), source="file")
    return attrs.evolve(settings, feeds=tuple(feeds), rules=rules)


def _feed(
    settings: Settings,
    exchange: MockExchange,
    depth_streams: tuple[str, ...],
    trade_streams: tuple[str, ...],
    futures_streams: tuple[str, ...] = (),
) -> FeedSettings:
    """A feed of ``exchange``'s market and symbols (the other keys the user's first feed's)."""
    return attrs.evolve(
        settings.feed,
        market=exchange.settings.market,
        url=exchange.ws_url,
        rest_url=exchange.rest_url,
        symbols=tuple(exchange.market.symbols),
        depth_streams=depth_streams,
        trade_streams=trade_streams,
        futures_streams=futures_streams,
        reconnect_initial=0.2,
        reconnect_max=2.0,
    )


async def run_demo(settings: Settings, duration: float | None = None) -> None:
    """Run the mock exchanges and the service together until Ctrl-C or ``duration``.

    Cancellation: the service shuts down gracefully (drain, flush) when the duration ends.
    """
    rules = load_rule_file(demo_rules_path())
    async with trio.open_nursery() as nursery:
        spot = await nursery.start(MockExchange(ScriptedMarket()).serve)
        futures = await nursery.start(
            MockExchange(FuturesScriptMarket(), ExchangeSettings(market="usdm")).serve
        )
        exchanges = (spot, futures)
        settings = demo_settings(settings, spot, futures)
        handle: ServiceHandle = await nursery.start(run_service, settings, rules)
        print(
            f"oraculo-trio demo: mock exchanges at {spot.ws_url} (spot: "
            f"{', '.join(spot.market.symbols)}) and {futures.ws_url} (USD-M: "
            f"{', '.join(futures.market.symbols)}), {len(rules)} rules",
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
            await _quiesce(exchanges, handle)
            handle.request_shutdown()
        # The service ends after its graceful shutdown (or a signal); then the exchanges go.
        await handle.stopped.wait()
        print(accounting_line(handle, sum(e.frames_sent for e in exchanges)), flush=True)
        nursery.cancel_scope.cancel()


async def _quiesce(exchanges: tuple[MockExchange, ...], handle: ServiceHandle) -> None:
    # Stop the markets and let the service read what is already on the wire, so the final
    # accounting can compare what the exchanges sent with what the service received.
    for exchange in exchanges:
        exchange.pause()
    sent = sum(exchange.frames_sent for exchange in exchanges)
    with trio.move_on_after(2.0):
        while handle.metrics.accounting()["received"] < sent:  # noqa: ASYNC110 (a counter has no event)
            await trio.sleep(0.01)


def accounting_line(handle: ServiceHandle, sent: int) -> str:
    """The accounting (``docs/architecture.md``), term by term, from the service's own
    counters, plus what the mock exchange sent."""
    totals = handle.metrics.accounting()
    terms = " ".join(f"{key}={value}" for key, value in totals.items())
    return f"ACCOUNTING sent={sent} {terms}"
