"""The trade backfill: a gap in a symbol's trade ids is fetched over REST, in order.

A feed connection keeps the last trade id it handed on per symbol (``core/trade_ids.py``).
A trade beyond the next id means trades were sent while no connection read them (a cut, a
refused reconnect) or lost within the stream. Before that trade goes on, the missing ones
are asked for by id: ``GET <prefix>/aggTrades?fromId=`` (every market) for ``@aggTrade``,
``GET /api/v3/historicalTrades?fromId=`` for raw ``@trade`` on spot, the one market that
serves it without an API key (Binance.US and futures want one: there the gap is counted in
``oraculo_feed_trades_missed_total{reason="no_keyless_history"}`` and logged).

Requests spend from the market's REST weight budget (``pipeline/rest.py``), shared with the
snapshots and the clock, and the whole backfill of one gap takes at most
``feed.snapshot_timeout``: the connection's other symbols wait for it, so it must not wait
for a window to free up. Whatever was not fetched in time, or not served, is counted
missed by reason, never in silence.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

import attrs
import httpx
import trio

from oraculo_trio.core.events import Trade
from oraculo_trio.core.markets import split
from oraculo_trio.feeds.binance_rest import (
    DEFAULT_RETRY_AFTER,
    BadTrades,
    backfills_without_key,
    decode_rest_trades,
    trades_path,
    trades_weight,
)
from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.observe.ratelimit import RateLimitedLog
from oraculo_trio.pipeline.rest import RestBudget, RestEndpoint, rest_endpoints, retry_after
from oraculo_trio.settings import Settings

LOGGER = logging.getLogger("oraculo_trio.pipeline.backfill")

PAGE = 1000
"""Trades per request: Binance's largest ``limit`` for both endpoints."""

Deliver = Callable[[Sequence[Trade]], Awaitable[None]]


@attrs.define(eq=False)
class TradeBackfill:
    """Fills gaps in trade ids of one market from its REST endpoint.

    Attributes:
        endpoint: the market's REST base (its ``timeout`` bounds one gap's backfill).
        budget: the market's weight budget (shared with snapshots and the clock).
        metrics: ``oraculo_feed_trades_missed_total`` (the backfilled ones are counted by
            whoever hands them on).
        max_trades: ``feed.backfill_max_trades``; 0 never backfills.
    """

    endpoint: RestEndpoint
    budget: RestBudget
    metrics: ServiceMetrics
    max_trades: int
    _log: RateLimitedLog = attrs.field(init=False, factory=lambda: RateLimitedLog(LOGGER))

    async def fill(
        self, kind: str, symbol: str, first: int, last: int, offset: float, deliver: Deliver
    ) -> int:
        """Fetch trades ``first``..``last`` of ``symbol`` (the service's name) and hand each
        page to ``deliver`` in id order; count and log those not fetched. ``offset``: the
        exchange's clock minus ours (the trades' read stamps are on the exchange's clock).

        Returns:
            How many trades were delivered.

        Cancellation: a page already fetched is delivered whole before a cancellation is
        seen (``deliver`` must not be interrupted either); the caller shields the call to
        finish the gap first.
        """
        market = self.endpoint.market.name
        wanted = last - first + 1
        if not backfills_without_key(kind, market):
            self._missed("no_keyless_history", wanted, symbol, first, last)
            return 0
        reachable = min(wanted, self.max_trades)
        delivered = 0
        next_id = first
        deadline = trio.current_time() + self.endpoint.timeout
        failure = "not_served"
        async with httpx.AsyncClient(
            base_url=self.endpoint.base_url,
            timeout=self.endpoint.timeout,
            headers={"Accept": "application/json"},
        ) as client:
            while delivered < reachable:
                limit = min(PAGE, reachable - delivered)
                # What the deadline leaves (the budget or the exchange too slow for it).
                page: list[Trade] | str = "rest_failed"
                with trio.move_on_at(deadline):
                    page = await self._page(client, kind, symbol, next_id, limit, offset)
                if isinstance(page, str):
                    failure = page
                    break
                # In id order, within the gap, each once (a history may skip ids of its own).
                trades = [t for t in page if next_id <= t.trade_id <= last]
                if not trades:
                    break
                await deliver(trades)
                delivered += len(trades)
                next_id = trades[-1].trade_id + 1
                if next_id > last:
                    break
        if delivered < reachable:
            self._missed(failure, reachable - delivered, symbol, next_id, last)
        if wanted > reachable:
            self._missed("over_limit", wanted - reachable, symbol, first + reachable, last)
        return delivered

    async def _page(
        self,
        client: httpx.AsyncClient,
        kind: str,
        symbol: str,
        from_id: int,
        limit: int,
        offset: float,
    ) -> list[Trade] | str:
        """One request's trades, or why there are none (a ``missed`` reason)."""
        market = self.endpoint.market.name
        await self.budget.spend(trades_weight(kind, market))
        try:
            response = await client.get(
                trades_path(kind, market),
                params={"symbol": split(symbol)[1], "fromId": from_id, "limit": limit},
            )
        except httpx.HTTPError as exc:
            self._log.warning("error", "trade backfill of %s failed: %r", symbol, exc)
            return "rest_failed"
        self.budget.reported(response.headers.get("x-mbx-used-weight-1m"))
        status = response.status_code
        if status in (429, 418):
            self.budget.refuse_until(retry_after(response.headers, DEFAULT_RETRY_AFTER[status]))
        if status != 200:
            self._log.warning(
                "status",
                "trade backfill of %s refused with HTTP %d: %s",
                symbol,
                status,
                response.text[:160],
            )
            return "rest_failed"
        try:
            return decode_rest_trades(
                response.content, kind, symbol, trio.current_time(), time.time() + offset
            )
        except BadTrades as exc:
            self._log.warning("bad", "trade backfill of %s: %s", symbol, exc)
            return "rest_failed"

    def _missed(self, reason: str, count: int, symbol: str, first: int, last: int) -> None:
        self.metrics.trades_missed[reason].inc(count)
        self._log.warning(
            reason,
            "%d trades of %s missed (ids %d..%d): %s",
            count,
            symbol,
            first,
            last,
            reason.replace("_", " "),
        )


def trade_backfills(
    settings: Settings, budgets: Mapping[str, RestBudget], metrics: ServiceMetrics
) -> dict[str, TradeBackfill]:
    """Each feed's backfill, by market, spending from that market's budget."""
    endpoints = rest_endpoints(settings)
    return {
        feed.market: TradeBackfill(
            endpoints[feed.market], budgets[feed.market], metrics, feed.backfill_max_trades
        )
        for feed in settings.feeds
        if feed.market in budgets
    }
