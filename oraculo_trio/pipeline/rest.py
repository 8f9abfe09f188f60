"""REST request weight: one budget per Binance market, shared by everything that asks.

Binance weighs every REST request and allows an IP so much weight per minute, per market
(spot 6000, Binance.US 1200, USD-M and COIN-M 2400: ``BinanceMarket.ip_weight_limit``).
Snapshot fetches, the clock measurements and backfills of one market spend from one
:class:`RestBudget`: ``feed.rest_weight_budget`` (half the IP's limit by default) over
``feed.rest_weight_window``. The workers of one host share an IP, so under
``run --workers N`` the supervisor hands each worker ``1/N`` of it (its partitions hold
``1/N`` of the symbols): together they never spend more than the budget.

Spending is burst, then pace. :class:`WeightLedger` keeps what was spent in the last window
(a sliding window, so no window Binance counts, fixed or not, ever sees more than the budget)
and lets a request go as long as it fits: a cold start fetches as many snapshots at once as
the budget holds. Once the budget has run out, requests also keep ``snapshot_stagger`` apart
for a window, so those waiting for the window to free up go one by one rather than in a new
stampede. A 429 or 418 stops every request of the market for its ``Retry-After``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping

import attrs
import trio

from oraculo_trio.feeds.binance_markets import BinanceMarket, binance_market
from oraculo_trio.feeds.binance_rest import rest_base_url
from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.settings import FeedSettings, Settings, rest_weight_budget

WINDOW_MARGIN = 0.05
"""How much longer the ledger's window is than the exchange's: 5 % (3 s of a minute)..."""

LEAST_MARGIN = 0.25
"""...and at least this many seconds (windows shrunk for tests)."""


@attrs.define(eq=False)
class WeightLedger:
    """Weight spent in the last ``window`` seconds, never above ``budget``; pure: every call
    takes ``now`` (seconds)."""

    budget: float
    window: float
    _spent: deque[tuple[float, float]] = attrs.field(factory=deque)
    _total: float = 0.0

    def _expire(self, now: float) -> None:
        spent = self._spent
        cutoff = now - self.window
        while spent and spent[0][0] <= cutoff:
            self._total -= spent.popleft()[1]
        if not spent:
            self._total = 0.0

    def left(self, now: float) -> float:
        """Weight that may still be spent now."""
        self._expire(now)
        return self.budget - self._total

    def wait_time(self, weight: float, now: float) -> float:
        """Seconds from ``now`` until ``weight`` fits (0 if it fits now)."""
        self._expire(now)
        excess = self._total + weight - self.budget
        if excess <= 0:
            return 0.0
        freed = 0.0
        for at, spent in self._spent:
            freed += spent
            if freed >= excess:
                return at + self.window - now
        return math.inf  # more than the whole budget: never

    def take(self, weight: float, now: float) -> None:
        """Spend ``weight`` (call when :meth:`wait_time` is 0)."""
        self._expire(now)
        self._spent.append((now, weight))
        self._total += weight


@attrs.define(eq=False)
class RestBudget:
    """One market's REST weight: what may be spent, and when the exchange said to stop.

    Attributes:
        market: the Binance market.
        ledger: the sliding window of weight spent (this process's share of the budget).
        stagger: least seconds between two requests while pacing (after the budget ran out).
        metrics: ``oraculo_rest_weight_used_total``, ``oraculo_rest_weight_reported``.
        blocked_until: ``trio.current_time()`` before which nothing is sent (Retry-After).
    """

    market: BinanceMarket
    ledger: WeightLedger
    stagger: float
    metrics: ServiceMetrics
    blocked_until: float = -math.inf
    _last_sent: float = -math.inf
    _pacing_until: float = -math.inf

    async def spend(self, weight: float) -> None:
        """Wait until ``weight`` may be spent, and spend it.

        Cancellation: nothing is spent when cancelled.
        """
        while True:
            now = trio.current_time()
            budget_wait = self.ledger.wait_time(weight, now)
            if budget_wait > 0:
                # The burst is over: from now on, one request at a time for a window.
                self._pacing_until = now + budget_wait + self.ledger.window
            stagger_wait = self._last_sent + self.stagger - now if now < self._pacing_until else 0
            wait = max(budget_wait, self.blocked_until - now, stagger_wait)
            if wait <= 0:
                break
            await trio.sleep(wait)
        self.ledger.take(weight, now)
        self._last_sent = now
        self.metrics.rest_weight_used.inc(weight)

    def refuse_until(self, seconds: float) -> None:
        """The exchange answered 429/418: no request of this market for ``seconds``."""
        self.blocked_until = max(self.blocked_until, trio.current_time() + seconds)

    def reported(self, used: str | None) -> None:
        """Keep the exchange's count of this IP's weight (``X-MBX-USED-WEIGHT-1M``)."""
        if used is not None and used.isdigit():
            self.metrics.rest_weight_reported.set(int(used))


@attrs.frozen
class RestEndpoint:
    """Where and how one feed's market is asked over REST.

    Attributes:
        market: the Binance market.
        base_url: REST base URL.
        snapshot_limit: ``feed.snapshot_limit``; ``snapshot_weight`` its request weight.
        timeout: seconds a request may take (``feed.snapshot_timeout``).
    """

    market: BinanceMarket
    base_url: str
    snapshot_limit: int
    snapshot_weight: int
    timeout: float

    @classmethod
    def of(cls, feed: FeedSettings) -> RestEndpoint:
        market = binance_market(feed.market)
        return cls(
            market,
            rest_base_url(feed.rest_url, feed.url, feed.market),
            feed.snapshot_limit,
            market.depth_weight(feed.snapshot_limit),
            feed.snapshot_timeout,
        )


def rest_endpoints(settings: Settings, depth_kind: str | None = None) -> dict[str, RestEndpoint]:
    """Each feed's REST endpoint, by market (those reading ``depth_kind`` when given)."""
    return {
        feed.market: RestEndpoint.of(feed)
        for feed in settings.feeds
        if depth_kind is None or depth_kind in feed.depth_streams
    }


def rest_budgets(
    settings: Settings, metrics: ServiceMetrics, share: float = 1.0
) -> Mapping[str, RestBudget]:
    """One budget per market, ``share`` of each feed's ``rest_weight_budget``; sets the
    ``oraculo_rest_weight_budget`` gauge (per minute, summed over the markets)."""
    budgets = {}
    per_minute = 0.0
    for feed in settings.feeds:
        budget = rest_weight_budget(feed) * share
        window = feed.rest_weight_window
        budgets[feed.market] = RestBudget(
            binance_market(feed.market),
            # A little longer than the exchange's window: a request that reaches it later
            # than another (network, a busy loop) never lands in a window the other filled.
            WeightLedger(budget, window + max(window * WINDOW_MARGIN, LEAST_MARGIN)),
            feed.snapshot_stagger,
            metrics,
        )
        per_minute += budget * 60.0 / window
    metrics.rest_weight_budget.set(per_minute)
    return budgets


def retry_after(headers: Mapping[str, str], default: float) -> float:
    """Seconds of a ``Retry-After`` header, or ``default`` when absent or unusable."""
    value = headers.get("retry-after")
    try:
        seconds = float(value) if value is not None else default
    except ValueError:
        return default
    return seconds if math.isfinite(seconds) and seconds >= 0 else default
