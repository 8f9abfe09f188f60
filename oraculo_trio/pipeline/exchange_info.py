"""The start-up check of the configured symbols against each market's ``exchangeInfo``.

A symbol the market does not list (a typo, the wrong market) or no longer trades (delisted,
halted, a delivered contract) would be subscribed to and never speak: ``oraculo-trio run``
asks ``GET <prefix>/exchangeInfo`` of every feed's market first and refuses to start, naming
the symbol, its market and what it may have meant (``did you mean 'BTCUSDT'?``).
``run --offline`` skips the check (no REST access, a local mock without it).
"""

from __future__ import annotations

import logging

import httpx
import trio

from oraculo_trio.errors import ConfigError, FeedError
from oraculo_trio.feeds.binance_markets import EXCHANGE_INFO
from oraculo_trio.feeds.binance_rest import ExchangeInfoError, check_symbols, parse_exchange_info
from oraculo_trio.pipeline.rest import RestEndpoint
from oraculo_trio.settings import FeedSettings, Settings

LOGGER = logging.getLogger("oraculo_trio.pipeline.exchange_info")

CHECK_TIMEOUT = 30.0
"""Seconds the whole check may take (spot's exchangeInfo is several megabytes)."""


async def check_feed_symbols(settings: Settings) -> None:
    """Check every feed's symbols against its market's exchangeInfo, markets concurrently.

    Raises:
        ConfigError: a symbol is not listed, or does not trade (every such symbol named).
        FeedError: an exchangeInfo could not be fetched or read.

    Cancellation: the requests are abandoned.
    """
    problems: list[str] = []
    failures: list[str] = []
    async with trio.open_nursery() as nursery:
        for index, feed in enumerate(settings.feeds):
            where = "feed" if len(settings.feeds) == 1 else f"feed[{index}]"
            nursery.start_soon(_check_feed, feed, where, problems, failures)
    if problems:
        raise ConfigError("; ".join(problems))
    if failures:
        raise FeedError(
            "; ".join(failures) + ": start with --offline to skip the check of feed.symbols"
        )


async def _check_feed(
    feed: FeedSettings, where: str, problems: list[str], failures: list[str]
) -> None:
    endpoint = RestEndpoint.of(feed)
    url = endpoint.base_url + endpoint.market.path(EXCHANGE_INFO)
    try:
        with trio.fail_after(CHECK_TIMEOUT):
            async with httpx.AsyncClient(timeout=CHECK_TIMEOUT) as client:
                response = await client.get(url)
        if response.status_code != 200:
            raise ExchangeInfoError(f"HTTP {response.status_code}: {response.text[:120]}")
        listed = parse_exchange_info(response.content, feed.market)
    except (httpx.HTTPError, ExchangeInfoError, trio.TooSlowError) as exc:
        reason = str(exc) or type(exc).__name__
        failures.append(f"{where}: exchangeInfo of {url} could not be read ({reason})")
        return
    for problem in check_symbols(feed.symbols, listed):
        problems.append(f"{where}.symbols: {problem.describe(feed.market)}")
    LOGGER.info(
        "%s: %d symbols checked against %s (%d listed)",
        where,
        len(feed.symbols),
        url,
        len(listed),
    )
