"""Diff books end to end: the mock exchange's diff streams and REST snapshots, the service's
sync, over real sockets on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import trio

from oraculo_trio.core.book import OrderBook
from oraculo_trio.core.sync import LIVE
from oraculo_trio.mockexchange import DiffBookMarket, FaultPlan, MockExchange, RecordedBooks
from oraculo_trio.pipeline.service import ServiceHandle
from tests.data import BINANCE_DATA
from tests.pipeline.diffbook_testing import (
    BookRecorder,
    all_live,
    diffbook_service,
    syncs,
    wait_for,
)


def sides(book: OrderBook) -> tuple:
    return book.levels("bid"), book.levels("ask")


def symbols(count: int) -> list[str]:
    return [f"SYM{index:03d}USDT" for index in range(count)]


async def calm_then_compare(
    exchange: MockExchange,
    handle: ServiceHandle,
    market: DiffBookMarket,
    names: list[str] | None = None,
) -> None:
    """Stop the faults, let every book take a clean diff, stop the market, and compare each
    book with the true one once it has every update. ``names``: the service's names of the
    market's symbols, in order (default: the same, spot)."""
    symbols = list(market.symbols)
    names = symbols if names is None else names
    pairs = list(zip(symbols, names, strict=True))
    market.calm()
    calmed = {s: market.update_id(s) for s in symbols}
    await wait_for(
        handle,
        lambda: (
            all_live(handle, names)
            and all(syncs(handle)[n].book.last_update_id > calmed[s] for s, n in pairs)
        ),
    )
    exchange.pause()
    await wait_for(
        handle,
        lambda: (
            all_live(handle, names)
            and all(syncs(handle)[n].book.last_update_id == market.update_id(s) for s, n in pairs)
        ),
    )
    books = syncs(handle)
    for symbol, name in pairs:
        assert sides(books[name].book) == market.true_book(symbol), symbol


async def test_a_gap_resyncs_that_symbol_alone_and_no_other_symbol_pauses(tmp_path: Path) -> None:
    names = symbols(6)
    victim = names[2]
    others = [s for s in names if s != victim]
    market = DiffBookMarket(names, rate_per_s=600, seed=1)
    recorder = BookRecorder()
    with trio.fail_after(30):
        async with diffbook_service(tmp_path, market, [recorder.rule()]) as (exchange, handle):
            await wait_for(handle, lambda: all(recorder.seen.get(s) for s in names))
            rest = exchange.rest
            assert rest is not None
            assert sorted(r.symbol for r in rest.requests) == sorted(names)
            # The victim's snapshot is held back until every other symbol's rules have run
            # 20 more times: they cannot, unless they run while the victim resyncs.
            rest.hold = trio.Event()
            market.inject("gaps", victim)
            await rest.wait_for(lambda server: len(server.requests) == len(names) + 1)
            asked = rest.requests[-1]
            assert asked.symbol == victim
            runs = {s: len(recorder.seen[s]) for s in others}
            await wait_for(
                handle, lambda: all(len(recorder.seen[s]) >= runs[s] + 20 for s in others)
            )
            released = trio.current_time()
            rest.hold.set()
            await wait_for(handle, lambda: recorder.seen[victim][-1][0] > released)
            books = syncs(handle)
            metrics = handle.metrics.inner
    assert {s: books[s].resyncs for s in names} == {s: int(s == victim) for s in names}
    assert metrics.get_sample_value("oraculo_book_resyncs_total", {"reason": "gap"}) == 1
    assert [r.symbol for r in rest.requests].count(victim) == 2
    # The rules only ever saw live books.
    assert {state for seen in recorder.seen.values() for _, _, state in seen} == {LIVE}
    # The victim's rules paused for its whole resync...
    assert not [t for t, _, _ in recorder.seen[victim] if asked.at <= t <= released]
    # ...while every other symbol's ran all along.
    for symbol in others:
        during = [t for t, _, _ in recorder.seen[symbol] if asked.at <= t <= released]
        assert len(during) >= 20, symbol


async def test_books_equal_the_true_books_after_10000_random_diffs_with_faults(
    tmp_path: Path,
) -> None:
    names = symbols(8)
    plan = FaultPlan.parse(
        "gaps,dups,reorder,crossed,429,slow", per_second=2.0, retry_after=0.2, slow_seconds=0.2
    )
    market = DiffBookMarket(names, rate_per_s=4000, faults=plan, seed=3)
    feed = {"rest_weight_budget": 2000, "rest_weight_window": 1.0, "snapshot_stagger": 0.02}
    with trio.fail_after(30):
        async with diffbook_service(tmp_path, market, feed=feed) as (exchange, handle):
            await wait_for(handle, lambda: market.frames_made >= 10_000)
            await calm_then_compare(exchange, handle, market)
        terms = handle.metrics.accounting()
        samples = handle.metrics.inner
    assert terms["unaccounted"] == 0
    assert terms["superseded"] > 0
    assert set(market.faults_made) == {"gaps", "dups", "reorder", "crossed"}
    for reason in ("gap", "crossed"):
        assert samples.get_sample_value("oraculo_book_resyncs_total", {"reason": reason}) > 0
    outcomes = {
        outcome: samples.get_sample_value(
            "oraculo_book_snapshot_requests_total", {"outcome": outcome}
        )
        for outcome in ("ok", "rate_limited", "banned")
    }
    assert outcomes["rate_limited"] > 0
    assert outcomes["banned"] == 0
    assert exchange.rest is not None
    assert exchange.rest.count(418) == 0


async def test_50_symbols_reconnecting_at_once_stay_within_the_weight_budget(
    tmp_path: Path,
) -> None:
    names = symbols(50)
    market = DiffBookMarket(names, rate_per_s=1000, seed=2)
    # 100 weight a second, 5 a snapshot (limit 100): 50 books need 2.5 s of budget.
    feed = {
        "snapshot_limit": 100,
        "rest_weight_budget": 100,
        "rest_weight_window": 1.0,
        "snapshot_stagger": 0.01,
        # The reconnect waits 0.15-0.3 s: every symbol misses diffs meanwhile.
        "reconnect_initial": 0.3,
        "reconnect_max": 0.3,
    }
    with trio.fail_after(30):
        async with diffbook_service(tmp_path, market, feed=feed) as (exchange, handle):
            rest = exchange.rest
            assert rest is not None
            rest.window = 1.0
            rest.weight_limit = 100
            await wait_for(handle, lambda: all_live(handle, names))
            before = len(rest.requests)
            await exchange.drop_connections()
            await wait_for(
                handle,
                lambda: (
                    sum(sync.resyncs for sync in syncs(handle).values()) == len(names)
                    and all_live(handle, names)
                ),
            )
    after = rest.requests[before:]
    assert sorted(r.symbol for r in after) == sorted(names)
    assert {r.status for r in rest.requests} == {200}
    assert rest.max_weight_in(1.0) <= 100
    # A burst as large as the budget, then paced: 250 weight at 100 a second takes more
    # than two windows, and past the burst requests come at least the stagger apart on
    # average. (Their arrival times, not their send times: on a busy machine two requests
    # sent 10 ms apart may be read by the server together, so no single gap is checked.)
    assert after[-1].at - after[0].at > 2.0
    paced = after[20:]
    assert (paced[-1].at - paced[0].at) / (len(paced) - 1) >= 0.01


async def test_recorded_sessions_replay_into_books_that_never_resync(tmp_path: Path) -> None:
    recorded = RecordedBooks(
        [BINANCE_DATA / "spot_depth_diff.jsonl", BINANCE_DATA / "us_depth_diff.jsonl"],
        [BINANCE_DATA / "rest_depth_snapshot.jsonl", BINANCE_DATA / "us_rest_depth_snapshot.jsonl"],
        rate_per_s=1000,
    )
    last = recorded.last_diffs()
    feed = {"rest_weight_budget": 10_000, "rest_weight_window": 1.0}
    with trio.fail_after(20):
        async with diffbook_service(tmp_path, recorded, feed=feed) as (_, handle):
            await wait_for(
                handle,
                lambda: (
                    recorded.done
                    and all(
                        syncs(handle).get(s) is not None
                        and syncs(handle)[s].book.last_update_id == last[s]["u"]
                        for s in recorded.symbols
                    )
                ),
            )
            books = syncs(handle)
            resyncs = {s: sync.resyncs for s, sync in books.items()}
        terms = handle.metrics.accounting()
    assert resyncs == dict.fromkeys(recorded.symbols, 0)
    assert terms["unaccounted"] == 0
    for (_, symbol), snapshot in recorded.snapshots.items():
        book = books[symbol].book
        assert not book.is_crossed(), symbol
        assert book.spread_bps is not None
        assert book.spread_bps > 0
        expected = OrderBook(symbol)
        expected.apply_snapshot(_levels(snapshot["bids"]), _levels(snapshot["asks"]), 0)
        for _, (_, data) in recorded.frames:
            if data["s"] == symbol and data["u"] > snapshot["lastUpdateId"]:
                expected.apply_diff(_levels(data["b"]), _levels(data["a"]))
        assert sides(book) == sides(expected), symbol


def _levels(rows: list[list[str]]) -> tuple[tuple[float, float], ...]:
    return tuple((float(price), float(qty)) for price, qty in rows)


async def test_429_and_418_are_honoured_with_their_retry_after(tmp_path: Path) -> None:
    # One book: one request at a time (several would burst, and be in flight together when
    # the first 429 comes back).
    names = symbols(1)
    market = DiffBookMarket(names, rate_per_s=100, seed=4)
    feed = {"snapshot_stagger": 0.05}
    with trio.fail_after(20):
        async with diffbook_service(tmp_path, market, feed=feed) as (exchange, handle):
            rest = exchange.rest
            assert rest is not None
            rest.fail_next(1, 429, retry_after=0.5)
            rest.fail_next(1, 418, retry_after=0.4)
            await wait_for(handle, lambda: all_live(handle, names))
    statuses = [(r.status, r.at) for r in rest.requests]
    assert [status for status, _ in statuses[:3]] == [429, 418, 200]
    # Nothing was asked while a Retry-After ran (the mock would have banned it: 418 again).
    assert statuses[1][1] - statuses[0][1] >= 0.5 - 1e-3
    assert statuses[2][1] - statuses[1][1] >= 0.4 - 1e-3
    assert rest.count(418) == 1
    assert rest.count(200) == len(names)


async def test_diffs_merged_while_the_channel_is_full_lose_no_level(tmp_path: Path) -> None:
    names = symbols(4)
    market = DiffBookMarket(names, rate_per_s=2000, faults=FaultPlan.parse("gaps,dups"), seed=5)
    pipeline = {"channel_capacity": 4, "debug_batch_delay_ms": 20, "batch_max": 8, "shards": 1}
    with trio.fail_after(30):
        async with diffbook_service(tmp_path, market, pipeline=pipeline) as (exchange, handle):
            await wait_for(handle, lambda: market.frames_made >= 3000)
            await calm_then_compare(exchange, handle, market)
        terms = handle.metrics.accounting()
    assert terms["conflated"] > 0
    assert terms["unaccounted"] == 0


async def test_the_one_second_stream_keeps_books_too(tmp_path: Path) -> None:
    names = symbols(3)
    market = DiffBookMarket(names, rate_per_s=300, slow_stream=True, seed=7)
    recorder = BookRecorder()
    feed = {"depth_update_ms": 1000}
    with trio.fail_after(20):
        async with diffbook_service(tmp_path, market, [recorder.rule()], feed=feed) as (
            exchange,
            handle,
        ):
            # The first @depth frames make the books live, the next ones keep them so.
            await wait_for(handle, lambda: all(len(recorder.seen.get(s, ())) >= 2 for s in names))
            exchange.pause()
            await exchange.publish(market.slow_frames(trio.current_time()))
            await wait_for(
                handle,
                lambda: all(
                    syncs(handle)[s].book.last_update_id == market.update_id(s) for s in names
                ),
            )
            books = syncs(handle)
            for symbol in names:
                assert sides(books[symbol].book) == market.true_book(symbol), symbol
    assert {s: books[s].resyncs for s in names} == dict.fromkeys(names, 0)
    assert exchange.frames_sent_by_stream.keys() == {s.lower() + "@depth" for s in names}
