"""The pieces around the book sync: request weights and the weight ledger, the request queue,
the shard's books and their accounting, settings, and connections rotating one at a time."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import trio

from oraculo_trio.core.engine import ShardEngine
from oraculo_trio.core.events import DepthDiff
from oraculo_trio.core.sync import LIVE, SYNCING, BookSnapshot
from oraculo_trio.errors import ConfigError
from oraculo_trio.feeds.binance_rest import rest_base_url, snapshot_weight
from oraculo_trio.mockexchange import DiffBookMarket
from oraculo_trio.observe.health import Readiness
from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.pipeline.diffbooks import BookLiveWatch, ShardBooks
from oraculo_trio.pipeline.feed import RotationGate
from oraculo_trio.pipeline.rest import WeightLedger
from oraculo_trio.pipeline.snapshots import SnapshotRequest, SnapshotRequests
from oraculo_trio.settings import load_settings
from tests.pipeline.diffbook_testing import diffbook_service, wait_for


@pytest.mark.parametrize(
    ("limit", "weight"),
    [(1, 5), (100, 5), (101, 25), (500, 25), (501, 50), (1000, 50), (1001, 250), (5000, 250)],
)
def test_snapshot_weight_is_binances(limit: int, weight: int) -> None:
    assert snapshot_weight(limit) == weight


@pytest.mark.parametrize("limit", [0, 5001])
def test_snapshot_weight_refuses_limits_binance_refuses(limit: int) -> None:
    with pytest.raises(ValueError, match="limit"):
        snapshot_weight(limit)


@pytest.mark.parametrize(
    ("budget", "window", "weight"), [(3000, 60.0, 50), (100, 1.0, 5), (100, 1.0, 50)]
)
def test_a_greedy_client_bursts_the_budget_and_never_spends_more_in_any_window(
    budget: float, window: float, weight: float
) -> None:
    ledger = WeightLedger(budget, window)
    now = 0.0
    sent = []
    while now < 5 * window:
        wait = ledger.wait_time(weight, now)
        now += wait
        ledger.take(weight, now)
        sent.append(now)
    start = 0
    for end, at in enumerate(sent):
        while at - sent[start] >= window:
            start += 1
        assert (end - start + 1) * weight <= budget + 1e-9
    # The whole budget goes at once (a cold start), and so does each window's.
    burst = int(budget // weight)
    assert sent[:burst] == [0.0] * burst
    assert len(sent) >= 5 * burst


def test_a_request_heavier_than_the_budget_never_fits() -> None:
    assert WeightLedger(99, 60.0).wait_time(100, 0.0) == math.inf


@pytest.mark.parametrize(
    ("rest_url", "ws_url", "expected"),
    [
        ("", "wss://stream.binance.com:9443", "https://api.binance.com"),
        ("", "wss://stream.binance.us:9443", "https://api.binance.us"),
        ("", "ws://127.0.0.1:8765", "http://127.0.0.1:8765"),
        ("http://127.0.0.1:9/", "ws://127.0.0.1:8765", "http://127.0.0.1:9"),
        ("", "", "https://api.binance.com"),
    ],
)
def test_rest_base_url(rest_url: str, ws_url: str, expected: str) -> None:
    assert rest_base_url(rest_url, ws_url) == expected


@pytest.mark.parametrize(
    ("market", "ws_url", "expected"),
    [
        ("usdm", "", "https://fapi.binance.com"),
        ("coinm", "wss://dstream.binance.com", "https://dapi.binance.com"),
        ("usdm", "ws://127.0.0.1:8765", "http://127.0.0.1:8765"),
    ],
)
def test_rest_base_url_of_a_market(market: str, ws_url: str, expected: str) -> None:
    assert rest_base_url("", ws_url, market) == expected


async def test_requests_are_one_per_symbol_oldest_first_and_survive_a_restart() -> None:
    requests = SnapshotRequests()
    requests.put(SnapshotRequest("A", 0, 1))
    requests.put(SnapshotRequest("B", 1, 1))
    requests.put(SnapshotRequest("A", 0, 2))  # replaces A's, keeps its place
    assert len(requests) == 2
    with trio.fail_after(1):
        first = await requests.get()
        assert first == SnapshotRequest("A", 0, 2)
        second = await requests.get()
        requests.done(second)
        requests.restore()  # a restarted fetcher takes up what was in hand
        assert await requests.get() == first
        assert len(requests) == 0


async def test_rotation_turns_are_spaced(autojump_clock: trio.testing.MockClock) -> None:
    gate = RotationGate(spacing=30.0)
    turns: list[float] = []

    async def rotate() -> None:
        await gate.turn()
        turns.append(trio.current_time())

    with trio.fail_after(1000):
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(rotate)
    assert [b - a for a, b in itertools.pairwise(turns)] == [30.0] * 3


# --------------------------------------------------------------------------------------
# A shard's books, driven by hand


def diff(symbol: str, first: int, last: int, bids=(), asks=()) -> DepthDiff:
    return DepthDiff(symbol, first, last, tuple(bids), tuple(asks), None, 0.0, 0.0)


def test_shard_books_count_each_diff_once_and_pause_the_syncing_symbol() -> None:
    metrics = ServiceMetrics(shards=1)
    requests = SnapshotRequests()
    engine = ShardEngine([])
    books = ShardBooks(0, engine, requests, metrics, stale_after=5.0)
    books.process(diff("A", 10, 12), 0.0, 0.0, 0.0)
    books.process(diff("A", 13, 15), 0.0, 0.0, 0.0)
    books.process(diff("B", 1, 1), 0.0, 0.0, 0.0)
    assert metrics.book_symbols[SYNCING]._value.get() == 2
    snapshot = BookSnapshot("A", 1, 12, ((100.0, 1.0),), ((101.0, 1.0),))
    books.apply_snapshot(snapshot, 0.0, 0.0)
    books.process(diff("A", 16, 16, asks=[(101.0, 0.0)]), 0.0, 0.0, 1e9)
    books.process(diff("A", 16, 16), 0.0, 0.0, 0.0)  # a duplicate
    books.close()  # B never synced: its buffered diff is unsynced
    terms = metrics.accounting()
    assert (terms["evaluated"], terms["stale_drop"], terms["superseded"]) == (1, 1, 2)
    assert terms["unsynced"] == 1
    assert books.syncs["A"].state == LIVE
    assert engine.market("A").best_ask is None
    assert engine.market("A").book is books.syncs["A"].book
    assert metrics.book_symbols[LIVE]._value.get() == 1


def test_a_book_is_late_from_its_first_request_sent_until_it_is_live() -> None:
    requests = SnapshotRequests()
    books = ShardBooks(0, ShardEngine([]), requests, ServiceMetrics(shards=1), stale_after=5.0)
    watch = BookLiveWatch([books], requests, Readiness(), {"spot": 30.0})
    books.process(diff("A", 10, 12), 0.0, 0.0, 0.0)  # asks for a snapshot
    assert watch.late(100.0) == []  # waiting for the weight budget: not late
    requests.sending(SnapshotRequest("A", 0, 1), 100.0)
    requests.sending(SnapshotRequest("A", 0, 1), 125.0)  # a retry: the timer runs on
    assert watch.late(130.0) == []
    assert watch.late(130.5) == ["A"]
    snapshot = BookSnapshot("A", 1, 12, ((100.0, 1.0),), ((101.0, 1.0),))
    books.apply_snapshot(snapshot, 131.0, 0.0)
    assert books.syncs["A"].state == LIVE
    assert watch.late(1000.0) == []
    assert requests.sent_since == {}
    # A request of a live book (its snapshot will be ignored) does not make it late.
    requests.sending(SnapshotRequest("A", 0, 1), 1000.0)
    assert watch.late(2000.0) == []
    # A gap: out of live again, late once the new request has been out for 30 s.
    books.process(diff("A", 20, 21), 2000.0, 0.0, 0.0)
    assert books.syncs["A"].state == SYNCING
    requests.sending(SnapshotRequest("A", 0, 2), 2010.0)
    assert watch.late(2040.0) == []
    assert watch.late(2041.0) == ["A"]


@pytest.mark.parametrize(
    ("feed", "match"),
    [
        ({"depth_streams": ["depth", "depth20"]}, "goes alone"),
        ({"depth_streams": ["depth"], "rest_weight_budget": 99}, "rest_weight_budget"),
        ({"depth_update_ms": 250}, "depth_update_ms"),
        ({"snapshot_limit": 5001}, "snapshot_limit"),
    ],
)
def test_settings_refuse_what_cannot_work(feed: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_settings(None, environ={}, overrides={"feed": feed})


# --------------------------------------------------------------------------------------
# Connections rotating at their lifetime


async def test_connections_rotate_one_at_a_time(tmp_path: Path) -> None:
    names = [f"SYM{index:03d}USDT" for index in range(3)]
    market = DiffBookMarket(names, rate_per_s=150, seed=6)
    feed = {
        "max_streams_per_connection": 1,  # three connections started together
        "connection_lifetime": 0.8,
        "rotation_spacing": 0.3,
    }
    with trio.fail_after(20):
        async with diffbook_service(tmp_path, market, feed=feed) as (exchange, handle):
            closed: list[float] = []
            while len(closed) < 6:
                count = exchange.connections_closed
                await exchange.wait_until(lambda ex, count=count: ex.connections_closed > count)
                closed.append(trio.current_time())
            reconnects = handle.metrics.inner.get_sample_value(
                "oraculo_feed_reconnects_total", {"stream": "depth", "reason": "lifetime"}
            )
            await wait_for(handle, lambda: all(c.connected for c in handle.connections))
    assert reconnects >= 6
    spacing = [b - a for a, b in itertools.pairwise(closed)]
    assert min(spacing) >= 0.3 - 0.05, spacing
    assert not math.isnan(sum(spacing))
