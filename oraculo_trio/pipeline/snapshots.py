"""The REST snapshot fetcher: diff books ask, it fetches within the weight budget, in its own task.

A syncing book (core/sync.py) asks for ``GET <prefix>/depth?symbol=X&limit=N`` (spot
``/api/v3``, USD-M ``/fapi/v1``, COIN-M ``/dapi/v1``) through a :class:`SnapshotRequests`
queue (one waiting entry per symbol, so it is bounded by the symbol count). One fetcher task
serves every shard, one loop per market. It is never the WebSocket read loop nor a consumer:
a slow or refused snapshot delays only the book that asked. Each answer goes back to the
shard's depth channel as a :class:`~oraculo_trio.core.sync.BookSnapshot`, behind the diffs
already queued there (the sync does not care about that order: it goes by update ids).

The budget (:mod:`oraculo_trio.pipeline.rest`). Binance weighs a depth request by its
``limit`` (spot 5, 25, 50, 250 up to 100, 500, 1000, 5000 levels; futures 2, 5, 10, 20 up to
50, 100, 500, 1000) and allows an IP so much per minute for everything. Requests burst up to
what is left of the market's budget (a cold start asks for every book at once, as far as the
budget goes), then pace; at most ``max_in_flight`` are out at once per market. A 429 (too
many requests) or 418 (IP banned) stops every request of the market until its
``Retry-After`` has passed; the refused symbol asks again then.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import attrs
import httpx
import trio

from oraculo_trio.core.markets import split
from oraculo_trio.core.sync import BookSnapshot
from oraculo_trio.feeds.binance import BadSnapshot, decode_rest_snapshot
from oraculo_trio.feeds.binance_markets import DEPTH
from oraculo_trio.feeds.binance_rest import DEFAULT_RETRY_AFTER
from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.observe.ratelimit import RateLimitedLog
from oraculo_trio.pipeline.channels import Room, send_when_room
from oraculo_trio.pipeline.rest import RestBudget, RestEndpoint, retry_after

LOGGER = logging.getLogger("oraculo_trio.pipeline.snapshots")


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
    in one Trio thread. Each market's requests are taken apart (``get(market)``), so a market
    waiting for its budget never holds up another.

    A request taken stays known until :meth:`done` (or put back), so that a fetcher restarted
    after a failure takes up what its previous run had in hand (:meth:`restore`): a sync
    asks only once per snapshot.
    """

    _waiting: dict[str, dict[str, SnapshotRequest]] = attrs.field(factory=dict)
    _taken: dict[str, SnapshotRequest] = attrs.field(factory=dict)
    _arrived: dict[str, trio.Event] = attrs.field(factory=dict)
    in_channels: int = 0
    """Snapshots in the shards' depth channels, not yet taken by their consumer: the
    channels hold them beside frames, and the accounting counts only frames."""
    sent_since: dict[str, float] = attrs.field(factory=dict)
    """Per symbol out of ``live``: when the fetcher sent its first snapshot request since
    (``trio.current_time()``). The ``book_not_live`` timer runs from there, so that a book
    queued behind the weight budget is not late; its state changing forgets it."""

    def put(self, request: SnapshotRequest) -> None:
        """Queue ``request`` (new, or taken and put back) without blocking."""
        market = split(request.symbol)[0]
        self._taken.pop(request.symbol, None)
        # A newer request of a symbol replaces its older one, in its place.
        self._waiting.setdefault(market, {})[request.symbol] = request
        arrived = self._arrived.get(market)
        if arrived is not None:
            arrived.set()

    async def get(self, market: str = "spot") -> SnapshotRequest:
        """Take the oldest waiting request of ``market``.

        Cancellation: nothing is taken when cancelled.
        """
        waiting = self._waiting.setdefault(market, {})
        while not waiting:
            arrived = self._arrived[market] = trio.Event()
            await arrived.wait()
        symbol = next(iter(waiting))
        request = self._taken[symbol] = waiting.pop(symbol)
        return request

    def sending(self, request: SnapshotRequest, now: float) -> None:
        """The budget lets ``request`` go now: its book's timer starts, unless it runs already
        (a refetch or a retry of a book that is still not live)."""
        self.sent_since.setdefault(request.symbol, now)

    def settled(self, symbol: str) -> None:
        """``symbol``'s book changed state (live, or out of it): its timer starts over."""
        self.sent_since.pop(symbol, None)

    def done(self, request: SnapshotRequest) -> None:
        """Forget a taken request: its snapshot went to its shard."""
        if self._taken.get(request.symbol) is request:
            del self._taken[request.symbol]

    def restore(self) -> None:
        """Queue again every request taken and not done."""
        for request in list(self._taken.values()):
            market = split(request.symbol)[0]
            if request.symbol not in self._waiting.get(market, {}):
                self.put(request)
        self._taken.clear()

    def __len__(self) -> int:
        return sum(len(waiting) for waiting in self._waiting.values())


@attrs.define(eq=False)
class SnapshotFetcher:
    """Fetches the snapshots diff books ask for, within each market's REST weight budget.

    Attributes:
        endpoints: each market's REST base, snapshot limit and weight.
        budgets: each market's weight budget (shared with the clock measurements).
        requests: where the shards' books ask.
        senders: each shard's depth channel (channel clones; their owner closes them).
        metrics: the service's metrics.
        max_in_flight: requests out at once per market.
    """

    endpoints: Mapping[str, RestEndpoint]
    budgets: Mapping[str, RestBudget]
    requests: SnapshotRequests
    senders: Sequence[trio.MemorySendChannel]
    metrics: ServiceMetrics
    rooms: Sequence[Room] = ()
    max_in_flight: int = 8
    retry_initial: float = 0.5
    retry_max: float = 30.0
    _failures: dict[str, int] = attrs.field(init=False, factory=dict)
    _log: RateLimitedLog = attrs.field(init=False, factory=lambda: RateLimitedLog(LOGGER))

    async def run(
        self, *, task_status: trio.TaskStatus[SnapshotFetcher] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve snapshot requests until cancelled.

        Args:
            task_status: receives this fetcher once its HTTP clients are open.

        Cancellation: requests in flight are abandoned (their books stay syncing).
        """
        # Requests a previous run took but never finished (it failed and was restarted).
        self.requests.restore()
        async with trio.open_nursery() as nursery:
            for endpoint in self.endpoints.values():
                await nursery.start(self._serve, endpoint)
            task_status.started(self)

    async def _serve(
        self,
        endpoint: RestEndpoint,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """One market's loop: take a request, wait for the budget, fetch in a task of its own."""
        market = endpoint.market.name
        budget = self.budgets[market]
        slots = trio.Semaphore(self.max_in_flight)
        async with (
            httpx.AsyncClient(
                base_url=endpoint.base_url,
                timeout=endpoint.timeout,
                headers={"Accept": "application/json"},
            ) as client,
            trio.open_nursery() as nursery,
        ):
            task_status.started()
            while True:
                request = await self.requests.get(market)
                await slots.acquire()
                try:
                    await budget.spend(endpoint.snapshot_weight)
                except BaseException:
                    slots.release()
                    raise
                self.requests.sending(request, trio.current_time())
                # The slot passes to the request's task, which gives it back.
                nursery.start_soon(self._fetch, client, endpoint, request, slots, nursery)

    async def _fetch(
        self,
        client: httpx.AsyncClient,
        endpoint: RestEndpoint,
        request: SnapshotRequest,
        slots: trio.Semaphore,
        nursery: trio.Nursery,
    ) -> None:
        metrics = self.metrics
        symbol = split(request.symbol)[1]
        budget = self.budgets[endpoint.market.name]
        try:
            started = trio.current_time()
            try:
                with trio.fail_after(endpoint.timeout):
                    response = await client.get(
                        endpoint.market.path(DEPTH),
                        params={"symbol": symbol, "limit": endpoint.snapshot_limit},
                    )
            except (httpx.HTTPError, trio.TooSlowError) as exc:
                self._failed(request, nursery, f"request failed: {exc!r}")
                return
            latency = trio.current_time() - started
        finally:
            slots.release()
        budget.reported(response.headers.get("x-mbx-used-weight-1m"))
        status = response.status_code
        if status in (429, 418):
            seconds = retry_after(response.headers, DEFAULT_RETRY_AFTER[status])
            budget.refuse_until(seconds)
            outcome = "rate_limited" if status == 429 else "banned"
            metrics.snapshot_requests[outcome].inc()
            self._log.warning(
                outcome,
                "REST snapshot of %s refused with HTTP %d: no %s request for %.1f s (Retry-After)",
                request.symbol,
                status,
                endpoint.market.name,
                seconds,
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
        self._failures.pop(request.symbol, None)
        metrics.snapshot_requests["ok"].inc()
        metrics.snapshot_seconds.observe(latency)
        snapshot = BookSnapshot(
            request.symbol, request.request_id, last_update_id, bids, asks, latency
        )
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
        delay = min(self.retry_max, self.retry_initial * 2 ** (failures - 1))
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
