"""Cold start: diff books fetch their snapshots in a burst as large as the REST weight budget,
then pace; the mock exchange answers 429 past Binance's per-IP limit, and never has to."""

from __future__ import annotations

import math
from pathlib import Path

import trio

from oraculo_trio.mockexchange import DiffBookMarket, MockExchange
from oraculo_trio.testing.config import write_service_config
from oraculo_trio.testing.processes import service_process
from tests.pipeline.diffbook_testing import (
    FAST,
    all_live,
    diffbook_sections,
    diffbook_service,
    wait_for,
)
from tests.pipeline.test_diffbook_e2e import symbols


async def test_50_books_are_live_within_3_s_of_connecting(tmp_path: Path) -> None:
    names = symbols(50)
    market = DiffBookMarket(names, rate_per_s=1000, seed=21)
    # The product's defaults: snapshots of 1000 levels (weight 50), 3000 a minute, stagger.
    feed = {"snapshot_stagger": 0.1}
    with trio.fail_after(30):
        async with diffbook_service(tmp_path, market, feed=feed) as (exchange, handle):
            connected = trio.current_time()
            await wait_for(handle, lambda: all_live(handle, names))
            took = trio.current_time() - connected
            rest = exchange.rest
    assert took < 3.0, took
    assert rest is not None
    assert rest.count(429) == rest.count(418) == 0
    assert rest.count(200) == 50


async def test_500_books_go_live_as_fast_as_the_budget_allows(tmp_path: Path) -> None:
    """Binance's minute shrunk to 2 s: 500 snapshots of weight 5 need 2,500 weight, 2.5
    windows of a 1,000 budget; the exchange would refuse beyond 2,000 a window."""
    names = symbols(500)
    market = DiffBookMarket(names, rate_per_s=5000, depth=20, seed=22)
    budget, window, weight = 1000, 2.0, 5
    feed = {
        "snapshot_limit": 100,
        "rest_weight_budget": budget,
        "rest_weight_window": window,
        "snapshot_stagger": 0.001,
    }
    with trio.fail_after(60):
        async with diffbook_service(tmp_path, market, feed=feed) as (exchange, handle):
            rest = exchange.rest
            assert rest is not None
            rest.window, rest.weight_limit = window, 2 * budget
            connected = trio.current_time()
            await wait_for(handle, lambda: all_live(handle, names))
            took = trio.current_time() - connected
    windows = math.ceil(len(names) * weight / budget) - 1
    # Each window the ledger waits out is the exchange's and a margin (0.25 s at least).
    assert windows * window <= took < (windows + 1.5) * (window + 0.25), took
    assert rest.count(429) == rest.count(418) == 0
    assert rest.max_weight_in(window) <= budget


async def test_two_workers_share_the_budget_of_their_ip(tmp_path: Path) -> None:
    """Under run --workers 2 each worker gets half the budget (and about half the books):
    together they spend no more than one process would, and the exchange refuses nothing."""
    names = symbols(300)
    market = DiffBookMarket(names, rate_per_s=3000, depth=20, seed=23)
    budget, window = 600, 2.0
    async with trio.open_nursery() as nursery:
        exchange = MockExchange(market, FAST)
        await nursery.start(exchange.serve)
        rest = exchange.rest
        assert rest is not None
        rest.window, rest.weight_limit = window, budget  # the exchange's own limit: no margin
        sections = diffbook_sections(
            tmp_path,
            exchange,
            names,
            snapshot_limit=100,
            rest_weight_budget=budget,
            rest_weight_window=window,
        )
        config = write_service_config(tmp_path, sections)
        with trio.fail_after(60):
            async with service_process(config, workers=2) as service:
                await service.wait_address()
                # Every book asked once and was answered: both workers synced all of theirs.
                await rest.wait_for(lambda server: server.count(200) >= len(names))
                assert await service.stop() == 0
        nursery.cancel_scope.cancel()
    assert rest.count(429) == rest.count(418) == 0
    assert rest.count(200) == len(names)
    assert rest.max_weight_in(window) <= budget
