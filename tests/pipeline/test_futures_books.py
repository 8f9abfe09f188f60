"""Futures diff books end to end (USD-M, COIN-M): recorded sessions replayed through the mock
exchange's streams and REST, and true books under faults; diffs chain on ``pu``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from oraculo_trio.core.book import OrderBook
from oraculo_trio.mockexchange import DiffBookMarket, FaultPlan, RecordedBooks
from tests.data import BINANCE_FUTURES_DATA
from tests.pipeline.diffbook_testing import all_live, diffbook_service, syncs, wait_for
from tests.pipeline.test_diffbook_e2e import calm_then_compare

# The USD-M snapshot bodies name no symbol: the data's README gives their order.
SNAPSHOT_SYMBOLS = {"usdm": ["KEEPUSDT", "AKROUSDT", "CTKUSDT"], "coinm": []}


def levels(rows: list[list[str]]) -> tuple[tuple[float, float], ...]:
    return tuple((float(price), float(qty)) for price, qty in rows)


@pytest.mark.parametrize("market", ["usdm", "coinm"])
async def test_recorded_sessions_replay_into_books_equal_to_snapshot_plus_diffs(
    tmp_path: Path, market: str
) -> None:
    recorded = RecordedBooks(
        [BINANCE_FUTURES_DATA / f"{market}_depth_diff.jsonl"],
        [BINANCE_FUTURES_DATA / f"{market}_rest_depth_snapshot.jsonl"],
        rate_per_s=1000,
        snapshot_symbols=SNAPSHOT_SYMBOLS[market],
    )
    assert len(recorded.symbols) == 3
    last = recorded.last_diffs()
    names = {symbol: f"{market}:{symbol}" for symbol in recorded.symbols}
    feed = {"rest_weight_budget": 1000, "rest_weight_window": 1.0}
    with trio.fail_after(20):
        async with diffbook_service(tmp_path, recorded, feed=feed, binance_market=market) as (
            _,
            handle,
        ):
            await wait_for(
                handle,
                lambda: (
                    recorded.done
                    and all(
                        syncs(handle).get(name) is not None
                        and syncs(handle)[name].book.last_update_id == last[symbol]["u"]
                        for symbol, name in names.items()
                    )
                ),
            )
            books = syncs(handle)
        terms = handle.metrics.accounting()
    assert {name: books[name].resyncs for name in names.values()} == dict.fromkeys(
        names.values(), 0
    )
    assert terms["unaccounted"] == 0
    assert terms["received"] == len(recorded.frames)
    for (_, symbol), snapshot in recorded.snapshots.items():
        book = books[names[symbol]].book
        expected = OrderBook(symbol)
        expected.apply_snapshot(levels(snapshot["bids"]), levels(snapshot["asks"]), 0)
        for _, (_, data) in recorded.frames:
            # Futures: every diff from the one spanning lastUpdateId on.
            if data["s"] == symbol and data["u"] >= snapshot["lastUpdateId"]:
                expected.apply_diff(levels(data["b"]), levels(data["a"]))
        assert (book.levels("bid"), book.levels("ask")) == (
            expected.levels("bid"),
            expected.levels("ask"),
        ), symbol
        assert not book.is_crossed(), symbol


def test_the_recordings_need_the_futures_procedure() -> None:
    # Within one symbol U is never the previous u + 1: the spot rule would see a gap each time.
    lines = (BINANCE_FUTURES_DATA / "usdm_depth_diff.jsonl").read_text().splitlines()
    previous: dict[str, int] = {}
    spot_gaps = 0
    for line in lines:
        data = json.loads(line)["data"]
        if data["s"] in previous:
            assert data["pu"] == previous[data["s"]]
            spot_gaps += data["U"] != previous[data["s"]] + 1
        previous[data["s"]] = data["u"]
    assert spot_gaps == len(lines) - len(previous)


FUTURES_SYMBOLS = {"usdm": ["AAAUSDT", "BBBUSDT", "CCCUSDT"], "coinm": ["BTCUSD_PERP",
                   "ETHUSD_PERP", "LINKUSD_251226"]}  # fmt: skip


@pytest.mark.parametrize("market", ["usdm", "coinm"])
async def test_a_pu_break_resyncs_that_symbol_alone(tmp_path: Path, market: str) -> None:
    symbols = FUTURES_SYMBOLS[market]
    victim = symbols[1]
    book_market = DiffBookMarket(symbols, rate_per_s=300, seed=8, market=market)
    names = [f"{market}:{symbol}" for symbol in symbols]
    with trio.fail_after(20):
        async with diffbook_service(tmp_path, book_market, binance_market=market) as (
            exchange,
            handle,
        ):
            await wait_for(handle, lambda: all_live(handle, names))
            book_market.inject("gaps", victim)
            await wait_for(
                handle,
                lambda: (
                    syncs(handle)[f"{market}:{victim}"].resyncs == 1 and all_live(handle, names)
                ),
            )
            await calm_then_compare(exchange, handle, book_market, names)
            resyncs = {name: sync.resyncs for name, sync in syncs(handle).items()}
            gaps = handle.metrics.inner.get_sample_value(
                "oraculo_book_resyncs_total", {"reason": "gap"}
            )
    assert resyncs == {name: int(name.endswith(victim)) for name in names}
    assert gaps == 1


async def test_futures_books_equal_the_true_books_after_faults(tmp_path: Path) -> None:
    symbols = FUTURES_SYMBOLS["usdm"]
    plan = FaultPlan.parse("gaps,dups,reorder,crossed,429", per_second=2.0, retry_after=0.2)
    book_market = DiffBookMarket(symbols, rate_per_s=2000, faults=plan, seed=9, market="usdm")
    feed = {"rest_weight_budget": 1000, "rest_weight_window": 1.0}
    with trio.fail_after(30):
        async with diffbook_service(tmp_path, book_market, feed=feed, binance_market="usdm") as (
            exchange,
            handle,
        ):
            await wait_for(handle, lambda: book_market.frames_made >= 4000)
            await calm_then_compare(exchange, handle, book_market, [f"usdm:{s}" for s in symbols])
        terms = handle.metrics.accounting()
    assert terms["unaccounted"] == 0
    assert book_market.faults_made.get("gaps", 0) > 0
