"""The read-ahead's overload policy, frame by frame: what a reader behind its feed skips,
merges or lets through, and how each frame is counted."""

from __future__ import annotations

import json
import logging
import math

import trio

from oraculo_trio.core.events import DEPTH, TRADE, DepthDiff, DepthSnapshot
from oraculo_trio.feeds.binance import BinanceDecoder
from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.observe.ratelimit import RateLimitedLog
from oraculo_trio.pipeline.feed import _BatchReader
from oraculo_trio.pipeline.shards import ConflationBuffer, ShardRouter

BTC_BOOK = "btcusdt@depth20@100ms"
ETH_BOOK = "ethusdt@depth20@100ms"
BTC_DIFF = "btcusdt@depth@100ms"


def frame(stream: str, data: object) -> bytes:
    return json.dumps({"stream": stream, "data": data}, separators=(",", ":")).encode()


def book(update_id: int, bid: float = 100.0) -> dict:
    return {
        "lastUpdateId": update_id,
        "bids": [[f"{bid:.2f}", "1.0"]],
        "asks": [[f"{bid + 1:.2f}", "1.0"]],
        "E": 1_700_000_000_000 + update_id,
    }


def diff(first: int, last: int, price: float) -> dict:
    return {
        "e": "depthUpdate", "E": 1_700_000_000_000 + last, "s": "BTCUSDT", "U": first, "u": last,
        "b": [[f"{price:.2f}", "1.0"]], "a": [],
    }  # fmt: skip


class Reader:
    """A reader of ``streams`` routing into one shard's channel (and its conflation buffer)."""

    def __init__(self, streams: list[str], stream: str = DEPTH, capacity: int = 100) -> None:
        self.metrics = ServiceMetrics(shards=1)
        self.send, self.receive = trio.open_memory_channel(capacity)
        self.buffer = ConflationBuffer(merge_diffs=True)
        buffers = [self.buffer] if stream == DEPTH else None
        self.router = ShardRouter(stream, [self.send], buffers, self.metrics)
        self.reader = _BatchReader(
            BinanceDecoder(streams), self.router, self.metrics,
            RateLimitedLog(logging.getLogger("test")), chunk=256,
        )  # fmt: skip

    def routed(self) -> list[object]:
        events = []
        while True:
            try:
                events.append(self.receive.receive_nowait())
            except trio.WouldBlock:
                return events + self.buffer.take()

    def terms(self) -> dict[str, int]:
        return self.metrics.accounting()


async def test_behind_a_superseded_book_is_never_decoded() -> None:
    # The broken ETH book would be a bad frame if it were decoded: behind, a newer ETH book
    # follows it in the same read, so it is skipped (conflated) before anyone reads it.
    broken = b'{"stream":"' + ETH_BOOK.encode() + b'","data":{"lastUpdateId":'
    frames = [broken, frame(BTC_BOOK, book(1)), frame(ETH_BOOK, book(2)), frame(BTC_BOOK, book(3))]
    reader = Reader([BTC_BOOK, ETH_BOOK])
    await reader.reader.handle(frames, behind=True)
    routed = reader.routed()
    assert [(e.symbol, e.last_update_id) for e in routed] == [("ETHUSDT", 2), ("BTCUSDT", 3)]
    terms = reader.terms()
    assert terms["received"] == 4
    assert terms["conflated"] == 2
    assert terms["bad_frames"] == 0
    assert terms["in_flight"] == 0  # nothing attached: what is routed counts as evaluated later
    assert terms["received"] - terms["conflated"] == len(routed)


async def test_not_behind_every_book_is_decoded_and_kept() -> None:
    broken = b'{"stream":"' + ETH_BOOK.encode() + b'","data":{"lastUpdateId":'
    frames = [broken, frame(BTC_BOOK, book(1)), frame(ETH_BOOK, book(2)), frame(BTC_BOOK, book(3))]
    reader = Reader([BTC_BOOK, ETH_BOOK])
    await reader.reader.handle(frames, behind=False)
    routed = reader.routed()
    assert [e.last_update_id for e in routed] == [1, 2, 3]
    assert all(type(e) is DepthSnapshot for e in routed)
    terms = reader.terms()
    assert (terms["received"], terms["conflated"], terms["bad_frames"]) == (4, 0, 1)


async def test_behind_diffs_merge_per_symbol_and_keep_every_level() -> None:
    reader = Reader([BTC_DIFF])
    # The first diff goes to the (empty) channel, so the consumer wakes; the rest merge.
    frames = [frame(BTC_DIFF, diff(n * 2 + 1, n * 2 + 2, 100.0 + n)) for n in range(5)]
    await reader.reader.handle(frames, behind=True)
    first, merged = reader.routed()
    assert (first.first_update_id, first.final_update_id) == (1, 2)
    assert type(merged) is DepthDiff
    assert (merged.first_update_id, merged.final_update_id) == (3, 10)
    assert sorted(price for price, _ in merged.bids) == [101.0, 102.0, 103.0, 104.0]
    assert merged.event_time_ms == 1_700_000_000_010  # the newest diff's E
    terms = reader.terms()
    assert (terms["received"], terms["conflated"]) == (5, 3)


async def test_a_trade_is_never_merged_nor_skipped() -> None:
    trade_stream = "btcusdt@trade"
    reader = Reader([trade_stream], stream=TRADE)
    payload = {"e": "trade", "E": 1, "s": "BTCUSDT", "p": "1.0", "q": "1.0", "T": 1, "m": False}
    trades = [frame(trade_stream, {**payload, "t": n}) for n in range(6)]
    await reader.reader.handle(trades, behind=True)
    assert [e.trade_id for e in reader.routed()] == list(range(6))
    assert reader.terms()["conflated"] == 0


async def test_diffs_a_fresh_snapshot_holds_are_skipped_undecoded() -> None:
    # A book shed and made live again from a snapshot at update 100: older diffs still on
    # their way are superseded without being decoded (the broken one included).
    reader = Reader([BTC_DIFF])
    reader.router.caught_up_to["BTCUSDT"] = 100
    broken_old = b'{"stream":"' + BTC_DIFF.encode() + b'","data":{"U":95,"u":99,"b":[[oops'
    frames = [
        frame(BTC_DIFF, diff(90, 94, 99.0)),
        broken_old,
        frame(BTC_DIFF, diff(100, 103, 98.0)),
    ]
    await reader.reader.handle(frames)
    routed = reader.routed()
    assert [(e.first_update_id, e.final_update_id) for e in routed] == [(100, 103)]
    terms = reader.terms()
    assert (terms["received"], terms["superseded"], terms["bad_frames"]) == (3, 2, 0)
    assert "BTCUSDT" not in reader.router.caught_up_to  # past the snapshot: decoded again


class _StepCounter(trio.abc.Instrument):
    """Counts the task steps of one task: a read-ahead handed on in one step never yielded."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1


async def _turns_given(reader: Reader, frames: list[bytes], behind: bool) -> int:
    """How many times handing on ``frames`` let the other tasks (the consumers) run."""
    counter = _StepCounter(trio.lowlevel.current_task())
    trio.lowlevel.add_instrument(counter)
    try:
        await reader.reader.handle(frames, behind=behind)
    finally:
        trio.lowlevel.remove_instrument(counter)
    return counter.steps


async def test_behind_the_consumers_run_once_per_budget_not_per_chunk() -> None:
    # Merges of more diffs cost fewer book updates per diff: behind, the reader gives the
    # consumers a turn only once its time budget has passed (here: never within the read).
    frames = [frame(BTC_DIFF, diff(n * 2 + 1, n * 2 + 2, 100.0 + n)) for n in range(12)]

    def reader(budget: float) -> Reader:
        made = Reader([BTC_DIFF])
        made.reader.chunk = 4
        made.reader.behind_budget = budget
        return made

    behind = reader(math.inf)
    assert await _turns_given(behind, frames, behind=True) == 0
    assert behind.terms()["received"] == 12
    # Not behind, the budget does not apply: a turn every chunk (after frames 4 and 8).
    assert await _turns_given(reader(math.inf), frames, behind=False) == 2
    # Behind with the budget spent at each boundary: a turn every chunk too.
    assert await _turns_given(reader(0.0), frames, behind=True) == 2
