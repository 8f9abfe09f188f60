"""The feed connections a service opens: one per market, stream family and group of streams.

A connection reads one market (its events are named by it, its frames stamped on its clock)
and one stream family (depth or trade: trade backpressure never stalls depth), at most
``feed.max_streams_per_connection`` streams each (Binance allows 1024).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from oraculo_trio.core.events import DEPTH, TRADE
from oraculo_trio.core.markets import SPOT, qualified
from oraculo_trio.feeds.binance import DEPTH_KINDS, combined_urls, stream_name
from oraculo_trio.feeds.binance_rest import ws_base_url
from oraculo_trio.pipeline.exchange_clock import ExchangeClock
from oraculo_trio.pipeline.feed import ConnectionStatus
from oraculo_trio.settings import Settings


def feed_connections(
    settings: Settings,
    symbols: Sequence[str] | None = None,
    clocks: Mapping[str, ExchangeClock] | None = None,
) -> list[ConnectionStatus]:
    """One connection per feed, stream family and group of <= max_streams_per_connection,
    for ``symbols`` (service names; default: every symbol of every feed).

    Connections of spot are ``depth-0``, ``trade-0``...; those of another market carry its
    name (``usdm-depth-0``). Futures streams (``feed.futures_streams``) ride the trade
    connections. ``clocks`` gives each connection its market's clock offset.
    """
    wanted = None if symbols is None else set(symbols)
    connections = []
    for feed in settings.feeds:
        market = feed.market
        clock = (clocks or {}).get(market) or ExchangeClock(market)
        prefix = "" if market == SPOT else f"{market}-"
        names = [s for s in feed.symbols if wanted is None or qualified(market, s) in wanted]
        families = (
            (DEPTH, feed.depth_streams),
            (TRADE, (*feed.trade_streams, *feed.futures_streams)),
        )
        for stream, kinds in families:
            streams = [
                stream_name(
                    symbol,
                    kind,
                    update_ms=feed.depth_update_ms if kind in DEPTH_KINDS else None,
                    market=market,
                )
                for symbol in names
                for kind in kinds
            ]
            if not streams:
                continue
            urls = combined_urls(
                ws_base_url(feed.url, market),
                streams,
                max_streams=feed.max_streams_per_connection,
                market=market,
            )
            for index, url in enumerate(urls):
                connections.append(
                    ConnectionStatus(
                        f"{prefix}{stream}-{index}", stream, url, market=market, clock=clock
                    )
                )
    return connections
