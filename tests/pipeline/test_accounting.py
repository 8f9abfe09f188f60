"""The accounting balances at every scrape, not only after the drain:

``received = evaluated + dropped{reason} + bad_frames + in_flight``

Each test overloads a real service (a slow shard, a small read-ahead) and scrapes /metrics
from another thread while messages are everywhere at once: in the read-ahead, the channels,
the conflation buffers, the sync buffers. Every scrape must balance; some must see messages
in flight, or the test proved nothing.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import trio
from prometheus_client.parser import text_string_to_metric_families

from oraculo_trio.core.events import DEPTH
from oraculo_trio.core.rules import CompiledRule, RuleSpec, Signal
from oraculo_trio.mockexchange import DiffBookMarket
from oraculo_trio.pipeline.service import ServiceHandle
from tests.pipeline.diffbook_testing import all_live, diffbook_service
from tests.pipeline.helpers import (
    ManualMarket,
    TradeRecorder,
    depth_frame,
    recorder_rule,
    running_service,
    trade_frame,
)

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]

# One slow shard (at most 4 messages per 5 ms) behind a tiny channel, and a read-ahead of
# 2 KiB: most reads fill it, so the reader is behind and its policy is at work.
SLOW = {"shards": 1, "channel_capacity": 8, "batch_max": 4, "debug_batch_delay_ms": 5.0}
SMALL_READS = {"receive_buffer_size": 2048}


def now_ms() -> int:
    return int(time.time() * 1000)


def terms_of(exposition: bytes) -> dict[str, float]:
    """The accounting's terms from a scrape, each summed over its labels."""
    wanted = {
        "oraculo_feed_messages_received": "received",
        "oraculo_alerts_messages_evaluated": "evaluated",
        "oraculo_alerts_queue_dropped": "dropped",
        "oraculo_feed_bad_frames": "bad_frames",
        "oraculo_alerts_in_flight": "in_flight",
    }
    terms: Counter[str] = Counter()
    drops: Counter[str] = Counter()
    for family in text_string_to_metric_families(exposition.decode()):
        term = wanted.get(family.name)
        if term is None:
            continue
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            terms[term] += sample.value
            if term == "dropped":
                drops[sample.labels["reason"]] += sample.value
    return {**terms, **{f"dropped_{reason}": value for reason, value in drops.items()}}


class Scraper:
    """Scrapes the service's /metrics exposition from a worker thread, as the HTTP server
    does, until cancelled; every scrape is kept."""

    def __init__(self, handle: ServiceHandle) -> None:
        self.handle = handle
        self.scrapes: list[dict[str, float]] = []
        self.saw_messages_in_flight = trio.Event()

    async def run(self) -> None:
        while True:
            text = await trio.to_thread.run_sync(self.handle.metrics.exposition)
            terms = terms_of(text)
            self.scrapes.append(terms)
            if terms["in_flight"] > 0:
                self.saw_messages_in_flight.set()
            await trio.sleep(0.005)

    def check(self) -> None:
        assert self.scrapes, "nothing was scraped"
        for terms in self.scrapes:
            balance = (
                terms["received"]
                - terms["evaluated"]
                - terms["dropped"]
                - terms["bad_frames"]
                - terms["in_flight"]
            )
            assert balance == 0, terms
        busy = [terms for terms in self.scrapes if terms["in_flight"] > 0]
        assert busy, "no scrape saw a message in flight: the test proved nothing"


async def test_every_scrape_balances_with_books_conflated_and_trades_waiting(
    tmp_path: Path,
) -> None:
    market = ManualMarket(SYMBOLS)
    recorder = TradeRecorder()
    updates = 150
    with trio.fail_after(60):
        async with running_service(
            tmp_path, market, [recorder_rule(recorder)], pipeline=SLOW, feed=SMALL_READS
        ) as (_, handle):
            scraper = Scraper(handle)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(scraper.run)
                for index in range(updates):
                    market.push(
                        depth_frame(symbol, index + 1, 100.0 + index, 101.0 + index)
                        for symbol in SYMBOLS
                    )
                    market.push(trade_frame(s, index, 100.0, now_ms()) for s in SYMBOLS)
                    if index % 10 == 9:
                        await trio.sleep(0.02)  # the exchange's next tick: several reads
                total = 2 * updates * len(SYMBOLS)
                while True:
                    terms = handle.metrics.accounting()
                    if terms["received"] >= total and terms["in_flight"] == 0:
                        break
                    await trio.sleep(0.01)  # counters have no event: poll, fail_after bounds it
                nursery.cancel_scope.cancel()
    scraper.check()
    assert terms["received"] == total
    assert terms["conflated"] > 0, "the books were never behind: nothing was exercised"
    # Trades wait, and every one is evaluated in order: never merged, skipped or dropped.
    for symbol in SYMBOLS:
        assert recorder.seen[symbol] == list(range(updates))


class StallOnce:
    """A depth rule that blocks the whole service once, the first time a book is live: the
    feed backs up in the kernel meanwhile, so what the reader finds next is old."""

    kind: ClassVar[str] = "test_stall_once"
    streams: ClassVar[frozenset[str]] = frozenset({DEPTH})

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.stalled = False

    def initial_data(self) -> Any:
        return None

    def evaluate(self, event: Any, state: Any, now: float) -> Signal | None:
        if not self.stalled:
            self.stalled = True
            time.sleep(self.seconds)  # the fault under test: a blocked loop
        return None

    def rule(self) -> CompiledRule:
        spec = RuleSpec(id="stall-once", kind=self.kind, symbols=("*",), params={})
        return CompiledRule(spec, self)


async def test_a_book_shed_by_resync_counts_overflow_and_every_scrape_balances(
    tmp_path: Path,
) -> None:
    # Diff books whose diffs arrive older than shed_after (the loop was blocked while the
    # exchange kept sending): each book drops what waits (overflow) and syncs again from a
    # fresh snapshot (the mock's snapshots follow its books); the diffs that snapshot holds
    # are then skipped undecoded (superseded). Each batch waits 2 ms, so the diffs that keep
    # coming wait in the channels long enough for scrapes to find some in flight.
    symbols = SYMBOLS[:2]
    market = DiffBookMarket(symbols, rate_per_s=400, seed=5)
    with trio.fail_after(60):
        async with diffbook_service(
            tmp_path,
            market,
            [StallOnce(0.6).rule()],
            pipeline={"shed_after": 0.3, "debug_batch_delay_ms": 2.0},
            feed=SMALL_READS,
        ) as (_, handle):
            scraper = Scraper(handle)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(scraper.run)

                def shed_and_live_again() -> bool:
                    shed = handle.metrics.inner.get_sample_value(
                        "oraculo_book_resyncs_total", {"reason": "shed"}
                    )
                    return bool(shed) and all_live(handle, symbols)

                await handle.books[0].changes.wait_until(shed_and_live_again)
                await scraper.saw_messages_in_flight.wait()
                nursery.cancel_scope.cancel()
            terms = handle.metrics.accounting()
    scraper.check()
    assert terms["overflow"] > 0
    assert terms["superseded"] > 0
