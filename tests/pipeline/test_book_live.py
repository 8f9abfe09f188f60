"""Honest book health: a diff book kept from going live (its snapshots fail) makes ``/readyz``
answer 503 and ``oraculo-trio health`` UNHEALTHY, naming it, once it has been out of live for
``feed.book_live_timeout``; it recovers once its snapshots succeed. A book that only waits for
the weight budget is not late. Under ``--workers``, the worker holding the book names it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import trio

from oraculo_trio.mockexchange import DiffBookMarket, MockExchange
from oraculo_trio.pipeline.service import ServiceHandle
from oraculo_trio.testing.config import write_service_config
from oraculo_trio.testing.net import Response, fetch
from oraculo_trio.testing.processes import ServiceProcess, service_process
from tests.observe.test_live_service import health
from tests.pipeline.diffbook_testing import (
    FAST,
    BookRecorder,
    all_live,
    diffbook_sections,
    diffbook_service,
    wait_for,
)
from tests.pipeline.test_diffbook_e2e import symbols
from tests.scaleout.cluster import poll

SYMBOLS = ["AAAUSDT", "BBBUSDT", "CCCUSDT"]
BOOKS_LOGGER = "oraculo_trio.pipeline.diffbooks"
# Rules loaded (else not ready for that), none of them firing.
QUIET_RULE = """
[[rule]]
id = "never"
kind = "crossing"
symbols = ["*"]
params = { level = 1e12 }
"""


async def readyz(handle: ServiceHandle) -> Response:
    host, port = handle.http_address
    return await trio.to_thread.run_sync(fetch, f"http://{host}:{port}/readyz")


async def wait_books_ready(handle: ServiceHandle, ready: bool) -> None:
    # Looked at after every batch through the books: the other books' diffs keep coming.
    await wait_for(handle, lambda: handle.readiness.snapshot()[1]["books"]["ok"] == ready)


async def test_a_book_whose_snapshots_fail_is_not_live_until_they_succeed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=BOOKS_LOGGER)
    victim = "BBBUSDT"
    timeout = 1.0
    market = DiffBookMarket(SYMBOLS, rate_per_s=300, seed=13)
    with trio.fail_after(40):
        async with diffbook_service(
            tmp_path,
            market,
            [BookRecorder().rule()],  # rules loaded: only the book keeps it from ready
            feed={"book_live_timeout": timeout},
            failing_depth=[victim],
        ) as (exchange, handle):
            rest = exchange.rest
            await rest.wait_for(lambda server: any(r.symbol == victim for r in server.requests))
            first_request = min(r.at for r in rest.requests if r.symbol == victim)
            others = [symbol for symbol in SYMBOLS if symbol != victim]
            await wait_for(handle, lambda: all_live(handle, others))
            await wait_books_ready(handle, False)
            named_after = trio.current_time() - first_request
            not_ready = await readyz(handle)
            down_code, down = await health(handle)

            rest.heal_depth(victim)
            await wait_for(handle, lambda: all_live(handle, SYMBOLS))
            await wait_books_ready(handle, True)
            ready = await readyz(handle)
            up_code, up = await health(handle)
            failed = [r for r in rest.requests if r.symbol == victim and r.status == 500]

    # Named once it had been out of live for the timeout, counted from its first request.
    assert timeout - 0.1 <= named_after <= timeout + 2.0, named_after
    assert failed
    assert not_ready.status == 503
    reasons = [r for r in json.loads(not_ready.body)["reasons"] if r["component"] == "books"]
    assert reasons == [
        {
            "reason": "book_not_live",
            "component": "books",
            "detail": "1 diff book(s) out of live for more than 1 s (feed.book_live_timeout): "
            "BBBUSDT",
            "count": 1,
            "symbols": [victim],
        }
    ]
    assert down_code == 1, down
    assert down.startswith("UNHEALTHY")
    assert "    not ready: book_not_live: 1 diff book(s) out of live" in down
    assert "symbols=['BBBUSDT']" in down

    assert ready.status == 200, ready.body
    assert up_code == 0, up
    assert up.startswith("HEALTHY")
    warnings = [r for r in caplog.records if r.name == BOOKS_LOGGER and r.levelname == "WARNING"]
    assert len(warnings) == 1 and victim in warnings[0].getMessage()
    assert "every diff book is live again" in caplog.text


async def test_books_waiting_for_the_weight_budget_are_not_late(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=BOOKS_LOGGER)
    timeout = 1.0
    names = symbols(6)
    market = DiffBookMarket(names, rate_per_s=300, seed=14)
    # Two snapshots (weight 5 each) per window: the last books wait two windows for the
    # budget, longer than the timeout, and go live as soon as their requests are sent.
    feed = {
        "book_live_timeout": timeout,
        "snapshot_limit": 100,
        "rest_weight_budget": 10,
        "rest_weight_window": 1.0,
        "clock_check_interval": 0.0,
    }
    with trio.fail_after(40):
        async with diffbook_service(tmp_path, market, feed=feed) as (exchange, handle):
            await wait_for(handle, lambda: all_live(handle, names))
            depth = [r.at for r in exchange.rest.requests if r.symbol in names]
            reasons = handle.readiness.reasons()

    assert len(depth) == len(names)
    assert max(depth) - min(depth) > timeout
    assert not [r for r in reasons if r["component"] == "books"]
    assert not [r for r in caplog.records if r.name == BOOKS_LOGGER and r.levelname == "WARNING"]


async def test_under_workers_the_worker_holding_the_book_names_it(tmp_path: Path) -> None:
    names = symbols(8)
    victim = names[3]
    market = DiffBookMarket(names, rate_per_s=400, seed=15)
    async with trio.open_nursery() as nursery:
        exchange = MockExchange(market, FAST)
        await nursery.start(exchange.serve)
        exchange.rest.fail_depth(victim)
        sections = diffbook_sections(tmp_path, exchange, names, book_live_timeout=1.0)
        (tmp_path / "rules.toml").write_text(QUIET_RULE)
        sections["rules"] = {"file": str(tmp_path / "rules.toml")}
        config = write_service_config(tmp_path, sections)
        with trio.fail_after(60):
            async with service_process(config, workers=2) as service:

                async def books_reasons() -> list[dict]:
                    response = await service.get("/readyz")
                    reasons = json.loads(response.body)["reasons"]
                    return [r for r in reasons if r.get("reason") == "book_not_live"]

                await poll(books_reasons)
                named = await books_reasons()
                exchange.rest.heal_depth(victim)
                await poll(lambda: _ready(service))
                assert await service.stop() == 0
        nursery.cancel_scope.cancel()
    assert len(named) == 1
    assert named[0]["symbols"] == [victim]
    assert named[0]["worker"] in (0, 1)


async def _ready(service: ServiceProcess) -> bool:
    return (await service.get("/readyz")).status == 200
