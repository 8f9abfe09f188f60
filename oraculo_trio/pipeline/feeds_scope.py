"""The pipeline's feeds scope: the feed connections and what serves them.

One scope per pipeline generation (pipeline/service.py cancels it first at shutdown, so the
consumers drain what the feeds left). It holds:

- one supervised read task per feed connection, each with its :class:`ShardRouter`;
- with diff books, the snapshot fetcher and the watch that names books not live in time;
- the trade backfills, handed to the trade connections of their market.

The shards' books (:func:`open_books`) are made here too, before the consumers start.
"""

from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING

import attrs
import trio

from oraculo_trio.core.events import DEPTH, TRADE
from oraculo_trio.feeds.binance import KIND_DEPTH_DIFF
from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.observe.supervise import RestartPolicy, start, supervised
from oraculo_trio.pipeline.backfill import trade_backfills
from oraculo_trio.pipeline.channels import InFlight, Room
from oraculo_trio.pipeline.diffbooks import BookChanges, BookLiveWatch, ShardBooks
from oraculo_trio.pipeline.feed import (
    ConnectionStatus,
    FeedConnectionSettings,
    RotationGate,
    run_feed_connection,
)
from oraculo_trio.pipeline.rest import rest_endpoints
from oraculo_trio.pipeline.shards import ConflationBuffer, ShardRouter
from oraculo_trio.pipeline.snapshots import SnapshotFetcher, SnapshotRequests

if TYPE_CHECKING:
    from oraculo_trio.pipeline.service import ServiceHandle


@attrs.define(eq=False)
class ShardChannels:
    """Each shard's channels, per stream: the send ends (for the feed to clone), the receive
    ends (owned by the consumers; read here only for their statistics) and their rooms."""

    senders: dict[str, list[trio.MemorySendChannel]] = attrs.field(
        factory=lambda: {DEPTH: [], TRADE: []}
    )
    receivers: dict[str, list[trio.MemoryReceiveChannel]] = attrs.field(
        factory=lambda: {DEPTH: [], TRADE: []}
    )
    rooms: dict[str, list[Room]] = attrs.field(factory=lambda: {DEPTH: [], TRADE: []})


def open_books(handle: ServiceHandle) -> SnapshotRequests | None:
    # With diff books (depth_streams = ["depth"] in some feed): each shard's books, and the
    # queue where they ask the fetcher for snapshots; None without.
    settings = handle.settings
    if not any(KIND_DEPTH_DIFF in feed.depth_streams for feed in settings.feeds):
        return None
    requests = SnapshotRequests()
    changes = BookChanges()
    pipeline = settings.pipeline
    handle.books = [
        ShardBooks(
            shard,
            engine,
            requests,
            handle.metrics,
            pipeline.stale_after,
            pipeline.shed_after,
            changes=changes,
            caught_up_to=handle.caught_up_to,
            pressure=handle.feed_pressure,
        )
        for shard, engine in enumerate(handle.engines)
    ]
    return requests


async def run_feeds(
    handle: ServiceHandle,
    scope: trio.CancelScope,
    channels: ShardChannels,
    buffers: list[ConflationBuffer],
    requests: SnapshotRequests | None,
    in_flight: InFlight,
) -> None:
    metrics = handle.metrics
    settings = handle.settings
    connection_settings = {
        feed.market: FeedConnectionSettings.from_feed(feed, settings.pipeline)
        for feed in settings.feeds
    }
    rotation = RotationGate(min(feed.rotation_spacing for feed in settings.feeds))
    # The fetcher's channel clones are closed with the feeds, so the consumers can drain.
    senders = channels.senders
    fetcher_senders = [send.clone() for send in senders[DEPTH]] if requests is not None else []
    with scope, contextlib.ExitStack() as closing:
        for send in fetcher_senders:
            closing.enter_context(send)
        async with trio.open_nursery() as nursery:
            if requests is not None:
                # Snapshots are fetched in their own task, never in a read loop or a consumer.
                endpoints = rest_endpoints(settings, KIND_DEPTH_DIFF)
                fetcher = SnapshotFetcher(
                    endpoints,
                    handle.rest_budgets,
                    requests,
                    fetcher_senders,
                    metrics,
                    channels.rooms[DEPTH],
                )
                await start(
                    nursery,
                    "snapshot_fetcher",
                    fetcher.run,
                    metrics=metrics,
                    restart=RestartPolicy(),
                )
                timeouts = {f.market: f.book_live_timeout for f in settings.feeds}
                watch = BookLiveWatch(
                    handle.books, requests, handle.readiness, {m: timeouts[m] for m in endpoints}
                )
                restart = RestartPolicy()
                await start(nursery, "book_live", watch.run, metrics=metrics, restart=restart)
            backfills = trade_backfills(settings, handle.rest_budgets, metrics)
            for index, status in enumerate(handle.connections):
                router = ShardRouter(
                    status.stream,
                    [send.clone() for send in senders[status.stream]],
                    buffers if status.stream == DEPTH else None,
                    metrics,
                    channels.rooms[status.stream],
                    handle.caught_up_to if status.stream == DEPTH else {},
                    handle.feed_pressure,
                )
                in_flight.readers.append((status.stream, router.held))
                nursery.start_soon(
                    _own_router_and_read,
                    router,
                    status,
                    metrics,
                    connection_settings[status.market],
                    handle,
                    functools.partial(
                        run_feed_connection,
                        on_change=handle.update_feed_readiness,
                        rotation=rotation,
                        lifetime_offset=index * rotation.spacing,
                        backfill=backfills.get(status.market) if status.stream == TRADE else None,
                    ),
                )
            # The originals are closed once every connection holds its clones.
            for stream_senders in senders.values():
                for send in stream_senders:
                    send.close()


async def _own_router_and_read(
    router: ShardRouter,
    status: ConnectionStatus,
    metrics: ServiceMetrics,
    connection_settings: FeedConnectionSettings,
    handle: ServiceHandle,
    run_connection: functools.partial,
) -> None:
    # The router's channel clones outlive restarts of the connection task: they are closed
    # here, once, when the feed stops for good, which lets the consumers drain and finish.
    with router:
        await supervised(
            "feed",
            run_connection,
            status,
            router,
            metrics,
            connection_settings,
            metrics=metrics,
            restart=RestartPolicy(),
        )
