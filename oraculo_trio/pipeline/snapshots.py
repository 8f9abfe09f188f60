"""The REST snapshot fetcher: diff books ask, it fetches within the weight budget, in its own task.

A syncing book (core/sync.py) asks for ``GET /api/v3/depth?symbol=X&limit=N`` through a
:class:`SnapshotRequests` queue (one waiting entry per symbol, so it is bounded by the symbol
count). One fetcher task serves every shard. It is never the WebSocket read loop nor a
consumer: a slow or refused snapshot delays only the book that asked. Each answer goes back to
the shard's depth channel as a :class:`~oraculo_trio.core.sync.BookSnapshot`, behind the
diffs already queued there (the sync does not care about that order: it goes by update ids).

The budget. Binance weighs a depth request by its ``limit`` (5, 25, 50, 250 up to 100, 500,
1000, 5000 levels) and allows an IP 6000 per minute for everything. One token bucket shared
by every symbol holds the fetcher to ``budget`` per ``window`` (sliding, any window): its
capacity is a twelfth of the budget (at least one request) and it refills at the rest over the
window. On top, two requests are ``stagger`` seconds apart at least, and at most
``max_in_flight`` are out at once, so a reconnect that resyncs every book spreads its
requests out instead of stampeding. A 429 (too many requests) or 418 (IP banned) stops every
request until its ``Retry-After`` has passed; the refused symbol asks again then.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import attrs
import httpx
import trio

from oraculo_trio.core.sync import BookSnapshot
from oraculo_trio.feeds.binance import BadSnapshot, decode_rest_snapshot
from oraculo_trio.feeds.binance_rest import (
    DEFAULT_RETRY_AFTER,
    DEPTH_PATH,
    rest_base_url,
    snapshot_weight,
)
from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.observe.ratelimit import RateLimitedLog
from oraculo_trio.pipeline.channels import Room, send_when_room
from oraculo_trio.settings import Settings

LOGGER = logging.getLogger("oraculo_trio.pipeline.snapshots")


@attrs.define(eq=False)
class WeightBucket:
    """A token bucket of request weight; pure: every call takes ``now`` (seconds).

    Starts full. ``capacity + rate * T`` bounds what any ``T`` seconds may spend.
    """

    capacity: float
    rate: float
    tokens: float = attrs.field(default=attrs.Factory(lambda self: self.capacity, takes_self=True))
    updated: float | None = None

    @classmethod
    def for_budget(cls, budget: float, window: float, request_weight: float) -> WeightBucket:
        """A bucket that never spends more than ``budget`` in any ``window`` seconds.

        Raises:
            ValueError: ``budget`` below two requests' weight (the bucket must hold one and
                still refill) or a non-positive ``window``.
        """
        if budget < 2 * request_weight or window <= 0:
            raise ValueError(
                f"budget={budget!r} per window={window!r}: expected budget >= two requests' "
                f"weight ({2 * request_weight!r}) and window > 0"
            )
        capacity = min(max(float(request_weight), budget / 12.0), budget / 2.0)
        return cls(capacity, (budget - capacity) / window)

    def _refill(self, now: float) -> None:
        if self.updated is not None and now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def wait_time(self, weight: float, now: float) -> float:
        """Seconds from ``now`` until ``weight`` can be taken (0 if it can now)."""
        self._refill(now)
        missing = weight - self.tokens
        if missing <= 0:
            return 0.0
        return missing / self.rate if self.rate > 0 else math.inf

    def take(self, weight: float, now: float) -> None:
        """Spend ``weight`` (call when :meth:`wait_time` is 0)."""
        self._refill(now)
        self.tokens -= weight


@attrs.frozen(slots=True)
class SnapshotRequest:
    """A sync's wish for a snapshot: its symbol, the shard to answer and the request id."""

    symbol: str
    shard: int
    request_id: int


@attrs.define(eq=False)
class SnapshotRequests:
    """Requests waiting for the fetcher, oldest first, one per symbol (a newer one replaces
    it): bounded by the number of symbols. Shared by every shard's books and the fetcher, all
    in one Trio thread.

    A request taken stays known until :meth:`done` (or put back), so that a fetcher restarted
    after a failure takes up what its previous run had in hand (:meth:`restore`): a sync
    asks only once per snapshot.
    """

    _waiting: dict[str, SnapshotRequest] = attrs.field(factory=dict)
    _taken: dict[str, SnapshotRequest] = attrs.field(factory=dict)
    _arrived: trio.Event = attrs.field(factory=trio.Event)
    in_channels: int = 0
    """Snapshots in the shards' depth channels, not yet taken by their consumer: the
    channels hold them beside frames, and the accounting counts only frames."""

    def put(self, request: SnapshotRequest) -> None:
        """Queue ``request`` (new, or taken and put back) without blocking."""
        self._taken.pop(request.symbol, None)
        self._waiting[request.symbol] = request
        self._arrived.set()

    async def get(self) -> SnapshotRequest:
        """Take the oldest waiting request.

        Cancellation: nothing is taken when cancelled.
        """
        while not self._waiting:
            self._arrived = trio.Event()
            await self._arrived.wait()
        symbol = next(iter(self._waiting))
        request = self._taken[symbol] = self._waiting.pop(symbol)
        return request

    def done(self, request: SnapshotRequest) -> None:
        """Forget a taken request: its snapshot went to its shard."""
        if self._taken.get(request.symbol) is request:
            del self._taken[request.symbol]

    def restore(self) -> None:
        """Queue again every request taken and not done."""
        for request in list(self._taken.values()):
            if request.symbol not in self._waiting:
                self.put(request)
        self._taken.clear()

    def __len__(self) -> int:
        return len(self._waiting)


@attrs.frozen
class FetcherSettings:
    """How the fetcher talks to the exchange: ``feed.*`` keys (no defaults of their own),
    then the fetcher's fixed limits, which are not configuration keys."""

    rest_url: str
    limit: int
    weight_budget: float
    weight_window: float
    stagger: float
    timeout: float
    max_in_flight: int = 4
    retry_initial: float = 0.5
    retry_max: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> FetcherSettings:
        feed = settings.feed
        return cls(
            rest_base_url(feed.rest_url, feed.url),
            limit=feed.snapshot_limit,
            weight_budget=feed.rest_weight_budget,
            weight_window=feed.rest_weight_window,
            stagger=feed.snapshot_stagger,
            timeout=feed.snapshot_timeout,
        )


@attrs.define(eq=False)
class SnapshotFetcher:
    """Fetches the snapshots diff books ask for, within the REST weight budget.

    Attributes:
        settings: URL, limit, budget, stagger, timeouts.
        requests: where the shards' books ask.
        senders: each shard's depth channel (channel clones; their owner closes them).
        metrics: the service's metrics.
        blocked_until: ``trio.current_time()`` before which nothing is sent (Retry-After).
    """

    settings: FetcherSettings
    requests: SnapshotRequests
    senders: Sequence[trio.MemorySendChannel]
    metrics: ServiceMetrics
    rooms: Sequence[Room] = ()
    weight: int = attrs.field(init=False)
    bucket: WeightBucket = attrs.field(init=False)
    blocked_until: float = attrs.field(init=False, default=-math.inf)
    _last_sent: float = attrs.field(init=False, default=-math.inf)
    _failures: dict[str, int] = attrs.field(init=False, factory=dict)
    _log: RateLimitedLog = attrs.field(init=False, factory=lambda: RateLimitedLog(LOGGER))

    def __attrs_post_init__(self) -> None:
        settings = self.settings
        self.weight = snapshot_weight(settings.limit)
        self.bucket = WeightBucket.for_budget(
            settings.weight_budget, settings.weight_window, self.weight
        )
        # The gauge says "per minute", whatever window the budget was given for.
        self.metrics.rest_weight_budget.set(settings.weight_budget * 60.0 / settings.weight_window)

    async def run(
        self, *, task_status: trio.TaskStatus[SnapshotFetcher] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve snapshot requests until cancelled.

        Args:
            task_status: receives this fetcher once its HTTP client is open.

        Cancellation: requests in flight are abandoned (their books stay syncing).
        """
        settings = self.settings
        slots = trio.Semaphore(settings.max_in_flight)
        # Requests a previous run took but never finished (it failed and was restarted).
        self.requests.restore()
        async with (
            httpx.AsyncClient(
                base_url=settings.rest_url,
                timeout=settings.timeout,
                headers={"Accept": "application/json"},
            ) as client,
            trio.open_nursery() as nursery,
        ):
            task_status.started(self)
            while True:
                request = await self.requests.get()
                await slots.acquire()
                try:
                    await self._pace()
                except BaseException:
                    slots.release()
                    raise
                # The slot passes to the request's task, which gives it back.
                nursery.start_soon(self._fetch, client, request, slots, nursery)

    async def _pace(self) -> None:
        """Wait until the budget, the stagger and any Retry-After allow one more request."""
        weight = self.weight
        stagger = self.settings.stagger
        while True:
            now = trio.current_time()
            wait = max(
                self.bucket.wait_time(weight, now),
                self.blocked_until - now,
                self._last_sent + stagger - now,
            )
            if wait <= 0:
                break
            await trio.sleep(wait)
        self.bucket.take(weight, now)
        self._last_sent = now
        self.metrics.rest_weight_used.inc(weight)

    async def _fetch(
        self,
        client: httpx.AsyncClient,
        request: SnapshotRequest,
        slots: trio.Semaphore,
        nursery: trio.Nursery,
    ) -> None:
        metrics = self.metrics
        symbol = request.symbol
        try:
            started = trio.current_time()
            try:
                with trio.fail_after(self.settings.timeout):
                    response = await client.get(
                        DEPTH_PATH, params={"symbol": symbol, "limit": self.settings.limit}
                    )
            except (httpx.HTTPError, trio.TooSlowError) as exc:
                self._failed(request, nursery, f"request failed: {exc!r}")
                return
            latency = trio.current_time() - started
        finally:
            slots.release()
        used = response.headers.get("x-mbx-used-weight-1m")
        if used is not None and used.isdigit():
            metrics.rest_weight_reported.set(int(used))
        status = response.status_code
        if status in (429, 418):
            retry_after = _retry_after(response.headers, DEFAULT_RETRY_AFTER[status])
            self.blocked_until = max(self.blocked_until, trio.current_time() + retry_after)
            outcome = "rate_limited" if status == 429 else "banned"
            metrics.snapshot_requests[outcome].inc()
            self._log.warning(
                outcome,
                "REST snapshot of %s refused with HTTP %d: no request for %.1f s (Retry-After)",
                symbol,
                status,
                retry_after,
            )
            self.requests.put(request)
            return
        if status != 200:
            self._failed(request, nursery, f"HTTP {status}: {response.text[:160]}")
            return
        try:
            last_update_id, bids, asks = decode_rest_snapshot(response.content)
        except BadSnapshot as exc:
            self._failed(request, nursery, str(exc))
            return
        self._failures.pop(symbol, None)
        metrics.snapshot_requests["ok"].inc()
        metrics.snapshot_seconds.observe(latency)
        snapshot = BookSnapshot(symbol, request.request_id, last_update_id, bids, asks, latency)
        try:
            # Waits while the shard's channel is full: only this snapshot is late for it.
            await self._deliver(request.shard, snapshot)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the consumer is gone: shutting down
        self.requests.done(request)

    async def _deliver(self, shard: int, snapshot: BookSnapshot) -> None:
        sender = self.senders[shard]
        if self.rooms:
            await send_when_room(sender, self.rooms[shard], snapshot)
        else:
            await sender.send(snapshot)
        self.requests.in_channels += 1

    def _failed(self, request: SnapshotRequest, nursery: trio.Nursery, why: str) -> None:
        """Count a failed request and ask again after a backoff of its own."""
        self.metrics.snapshot_requests["error"].inc()
        failures = self._failures[request.symbol] = self._failures.get(request.symbol, 0) + 1
        delay = min(self.settings.retry_max, self.settings.retry_initial * 2 ** (failures - 1))
        self._log.warning(
            "error",
            "REST snapshot of %s failed (%s); asking again in %.1f s",
            request.symbol,
            why,
            delay,
        )
        nursery.start_soon(self._ask_again, request, delay)

    async def _ask_again(self, request: SnapshotRequest, delay: float) -> None:
        await trio.sleep(delay)
        self.requests.put(request)


def _retry_after(headers: Mapping[str, str], default: float) -> float:
    value = headers.get("retry-after")
    try:
        seconds = float(value) if value is not None else default
    except ValueError:
        return default
    return seconds if math.isfinite(seconds) and seconds >= 0 else default
