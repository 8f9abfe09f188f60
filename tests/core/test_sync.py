"""Book sync: Binance's procedure as a table, one case per branch, then a long random run."""

from __future__ import annotations

import random

import pytest

from oraculo_trio.core.events import DepthDiff
from oraculo_trio.core.sync import (
    APPLY,
    BUFFER,
    BUFFER_RESTART,
    CROSSED,
    GAP,
    LIVE,
    OLD,
    SHED,
    SNAPSHOT_APPLIED,
    SNAPSHOT_IGNORED,
    SNAPSHOT_STALE,
    SYNCING,
    BookSync,
    PendingDiff,
    merge_depth,
)

BIDS = ((100.0, 1.0), (99.0, 2.0))
ASKS = ((101.0, 1.0), (102.0, 2.0))


def diff(first: int, last: int, bids=(), asks=(), at: float = 0.0) -> DepthDiff:
    return DepthDiff("X", first, last, tuple(bids), tuple(asks), None, at, 0.0)


def snap(last_update_id: int, request_id: int | None = None, bids=BIDS, asks=ASKS) -> tuple:
    return ("snap", last_update_id, request_id, bids, asks)


def feed(sync: BookSync, inputs: list, now: float = 0.0):
    """Feed diffs and snapshots (a snapshot answers the latest request unless told)."""
    step = None
    for item in inputs:
        if isinstance(item, DepthDiff):
            step = sync.on_diff(item, now)
        elif item == "shed":
            step = sync.shed(now)
        else:
            _, last_update_id, request_id, bids, asks = item
            request_id = sync.request_id if request_id is None else request_id
            step = sync.on_snapshot(request_id, last_update_id, bids, asks, now)
    return step


LIVE_AT_15 = [diff(10, 12), diff(13, 15), snap(15)]  # live, local id 15, book BIDS/ASKS

# (name, max_buffered, inputs, expected step fields, expected sync fields)
CASES = [
    (
        "first diff is buffered and asks for a snapshot",
        1000,
        [diff(10, 12)],
        {"signal": BUFFER, "state": SYNCING, "request": 1, "superseded": 0},
        {"buffer": [10], "first_update_id": 10, "depth": (0, 0)},
    ),
    (
        "a following diff is buffered without asking again",
        1000,
        [diff(10, 12), diff(13, 15)],
        {"signal": BUFFER, "state": SYNCING, "request": None},
        {"buffer": [10, 13], "first_update_id": 10},
    ),
    (
        "syncing: a diff the buffer holds already is superseded",
        1000,
        [diff(10, 12), diff(11, 12)],
        {"signal": OLD, "state": SYNCING, "superseded": 1},
        {"buffer": [10]},
    ),
    (
        "syncing: a gap restarts the buffer at the later diff",
        1000,
        [diff(10, 12), diff(13, 15), diff(20, 22)],
        {"signal": BUFFER_RESTART, "state": SYNCING, "unsynced": 2, "superseded": 0},
        {"buffer": [20], "first_update_id": 20},
    ),
    (
        "a full buffer drops its oldest diff: overflow, load shed on purpose",
        2,
        [diff(1, 1), diff(2, 2), diff(3, 3)],
        {"signal": BUFFER, "overflow": 1, "superseded": 0},
        {"buffer": [2, 3], "first_update_id": 2},
    ),
    (
        "shed while live: the book is dropped, a fresh snapshot asked at once",
        1000,
        [*LIVE_AT_15, "shed"],
        {"signal": SHED, "state": SYNCING, "resync": SHED, "request": 2, "overflow": 0},
        {"buffer": [], "depth": (0, 0), "resyncs": 1},
    ),
    (
        "snapshot older than the first buffered U: fetch it again",
        1000,
        [diff(10, 12), snap(8)],
        {"signal": SNAPSHOT_STALE, "state": SYNCING, "resync": SNAPSHOT_STALE, "request": 2},
        {"buffer": [10], "depth": (0, 0), "resyncs": 1},
    ),
    (
        "snapshot ending right before the first buffered U joins it exactly",
        1000,
        [diff(10, 12, asks=[(101.0, 5.0)]), snap(9)],
        {"signal": SNAPSHOT_APPLIED, "state": LIVE, "superseded": 0, "applied": [10]},
        {"buffer": [], "local": 12, "resyncs": 0},
    ),
    (
        "snapshot: buffered u <= lastUpdateId superseded, the rest applied, live",
        1000,
        [diff(10, 12), diff(13, 15), diff(16, 18, bids=[(99.0, 0.0)]), snap(15)],
        {"signal": SNAPSHOT_APPLIED, "state": LIVE, "superseded": 2, "applied": [16]},
        {"buffer": [], "local": 18, "bids": ((100.0, 1.0),), "asks": ASKS},
    ),
    (
        "snapshot inside the first buffered diff: that diff applies",
        1000,
        [diff(10, 12, asks=[(101.0, 5.0)]), snap(11)],
        {"signal": SNAPSHOT_APPLIED, "state": LIVE, "superseded": 0, "applied": [10]},
        {"local": 12, "asks": ((101.0, 5.0), (102.0, 2.0))},
    ),
    (
        "a snapshot for another request is ignored",
        1000,
        [diff(10, 12), snap(15, request_id=7)],
        {"signal": SNAPSHOT_IGNORED, "state": SYNCING},
        {"buffer": [10], "requested": True},
    ),
    (
        "a snapshot while live is ignored",
        1000,
        [*LIVE_AT_15, snap(30, request_id=1)],
        {"signal": SNAPSHOT_IGNORED, "state": LIVE},
        {"local": 15},
    ),
    (
        "a snapshot that is crossed resyncs at once, keeping the buffer",
        1000,
        [diff(10, 12), diff(13, 15), snap(12, bids=((101.0, 1.0),))],
        {"signal": SNAPSHOT_APPLIED, "state": SYNCING, "resync": CROSSED, "request": 2},
        {"buffer": [13], "depth": (0, 0)},
    ),
    (
        "a replayed diff that crosses resyncs; the diffs replayed before it are superseded",
        1000,
        [diff(10, 12), diff(13, 15), diff(16, 16, bids=[(101.5, 1.0)]), snap(12)],
        {"signal": SNAPSHOT_APPLIED, "state": SYNCING, "resync": CROSSED, "superseded": 3},
        {"buffer": [], "depth": (0, 0), "requested": False},
    ),
    (
        "live: u <= local id is ignored",
        1000,
        [*LIVE_AT_15, diff(14, 15)],
        {"signal": OLD, "state": LIVE, "superseded": 1},
        {"local": 15},
    ),
    (
        "live: the next diff applies; quantity 0 removes the level",
        1000,
        [*LIVE_AT_15, diff(16, 17, bids=[(100.0, 0.0)], asks=[(101.0, 3.0)])],
        {"signal": APPLY, "state": LIVE},
        {"local": 17, "bids": ((99.0, 2.0),), "asks": ((101.0, 3.0), (102.0, 2.0))},
    ),
    (
        "live: a diff straddling the local id applies",
        1000,
        [*LIVE_AT_15, diff(14, 17, asks=[(103.0, 1.0)])],
        {"signal": APPLY, "state": LIVE},
        {"local": 17, "asks": (*ASKS, (103.0, 1.0))},
    ),
    (
        "live: U > local id + 1 resyncs the symbol and buffers the diff",
        1000,
        [*LIVE_AT_15, diff(18, 19)],
        {"signal": GAP, "state": SYNCING, "resync": GAP, "request": 2},
        {"buffer": [18], "first_update_id": 18, "depth": (0, 0), "resyncs": 1},
    ),
    (
        "live: a diff that crosses the book resyncs it; the next diff asks",
        1000,
        [*LIVE_AT_15, diff(16, 16, bids=[(101.0, 1.0)])],
        {"signal": CROSSED, "state": SYNCING, "resync": CROSSED, "superseded": 1},
        {"buffer": [], "depth": (0, 0), "requested": False},
    ),
]


@pytest.mark.parametrize(
    ("max_buffered", "inputs", "step_fields", "sync_fields"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_procedure(max_buffered: int, inputs: list, step_fields: dict, sync_fields: dict) -> None:
    sync = BookSync("X", max_buffered)
    check(sync, feed(sync, inputs), step_fields, sync_fields)


def check(sync: BookSync, step: object, step_fields: dict, sync_fields: dict) -> None:
    """The step's fields and the sync's state are as expected."""
    for field, expected in step_fields.items():
        actual = getattr(step, field)
        if field == "applied":
            actual = [d.first_update_id for d in actual]
        assert actual == expected, (field, step)
    assert sync.state == step.state
    views = {
        "buffer": lambda: [d.first_update_id for d in sync.buffer],
        "first_update_id": lambda: sync.first_update_id,
        "depth": lambda: sync.book.depth,
        "local": lambda: sync.book.last_update_id,
        "bids": lambda: sync.book.levels("bid"),
        "asks": lambda: sync.book.levels("ask"),
        "resyncs": lambda: sync.resyncs,
        "requested": lambda: sync.requested,
    }
    for field, expected in sync_fields.items():
        assert views[field]() == expected, field


def test_a_crossed_book_asks_with_its_next_diff() -> None:
    sync = BookSync("X")
    feed(sync, [*LIVE_AT_15, diff(16, 16, bids=[(101.0, 1.0)])])
    step = sync.on_diff(diff(17, 18), 1.0)
    assert (step.signal, step.request) == (BUFFER, 2)


def test_sync_time_is_reported_for_a_resync_not_the_first_sync() -> None:
    sync = BookSync("X")
    feed(sync, [diff(10, 12)], now=1.0)
    first = feed(sync, [snap(12)], now=1.5)
    assert (first.synced_after, first.initial) == (0.5, True)
    feed(sync, [diff(20, 21)], now=10.0)  # gap
    feed(sync, [diff(22, 22)], now=11.0)
    stale = feed(sync, [snap(18)], now=12.0)  # misses update 19: fetch again, same sync
    assert stale.signal == SNAPSHOT_STALE
    done = feed(sync, [snap(21)], now=13.0)
    assert (done.state, done.synced_after, done.initial) == (LIVE, 3.0, False)
    assert [d.first_update_id for d in done.applied] == [22]


def test_discard_forgets_the_buffer() -> None:
    sync = BookSync("X")
    feed(sync, [diff(1, 1), diff(2, 2)])
    assert sync.discard() == 2
    assert not sync.buffer


# --------------------------------------------------------------------------------------
# Merging diffs that wait while a shard channel is full


def merged(a: DepthDiff, b: DepthDiff) -> DepthDiff:
    result = merge_depth(a, b)
    assert isinstance(result, DepthDiff)
    return result


MERGES = [
    (
        "contiguous: one diff spanning both, the later level wins",
        diff(1, 2, bids=[(10.0, 1.0), (9.0, 1.0)]),
        diff(3, 4, bids=[(10.0, 0.0)], asks=[(11.0, 2.0)]),
        (1, 4, {10.0: 0.0, 9.0: 1.0}, {11.0: 2.0}),
    ),
    (
        "arriving in reverse order: ordered by update id",
        diff(3, 4, bids=[(10.0, 5.0)]),
        diff(1, 2, bids=[(10.0, 1.0), (8.0, 1.0)]),
        (1, 4, {10.0: 5.0, 8.0: 1.0}, {}),
    ),
    (
        "a duplicate changes nothing",
        diff(1, 2, asks=[(11.0, 1.0)]),
        diff(1, 2, asks=[(11.0, 1.0)]),
        (1, 2, {}, {11.0: 1.0}),
    ),
    (
        "a gap between them: the later one alone (its book resyncs)",
        diff(1, 2, bids=[(10.0, 1.0)]),
        diff(5, 6, asks=[(11.0, 1.0)]),
        (5, 6, {}, {11.0: 1.0}),
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "want"), [m[1:] for m in MERGES], ids=[m[0] for m in MERGES]
)
def test_merge_depth(old: DepthDiff, new: DepthDiff, want: tuple) -> None:
    result = merged(old, new)
    first, last, bids, asks = want
    assert (result.first_update_id, result.final_update_id) == (first, last)
    assert dict(result.bids) == bids
    assert dict(result.asks) == asks
    assert len(result.bids) == len(bids)  # each price once


def test_merge_keeps_the_newest_message_of_other_kinds() -> None:
    assert merge_depth("old", "new") == "new"
    assert merge_depth(diff(1, 1), "new") == "new"


def test_a_merged_diff_gives_the_book_the_two_diffs_give() -> None:
    rng = random.Random(5)
    for _ in range(200):
        levels = [(float(p), float(rng.choice([0, 1, 2]))) for p in rng.sample(range(1, 30), 8)]
        a = diff(11, 13, bids=levels[:4])
        b = diff(14, 15, bids=levels[4:] + levels[:1])
        one, two = BookSync("X"), BookSync("X")
        for sync, diffs in ((one, [a, b]), (two, [merged(a, b)])):
            feed(sync, [diffs[0], snap(10, bids=(), asks=((100.0, 1.0),)), *diffs[1:]])
        assert one.book.levels("bid") == two.book.levels("bid")


def test_pending_diffs_merge_as_merge_depth_folds_them() -> None:
    """PendingDiff (levels waiting in dicts) gives the diff that folding merge_depth over the
    same arrivals gives: forward runs, gaps, duplicates and out-of-order diffs alike."""
    rng = random.Random(11)
    for _ in range(300):
        arrivals = []
        update_id = rng.randint(1, 5)
        for _ in range(rng.randint(1, 12)):
            step = rng.choice(["next", "next", "next", "gap", "repeat", "older"])
            if step == "gap":
                update_id += rng.randint(2, 4)
            elif step == "repeat" and arrivals:
                arrivals.append(arrivals[-1])
                continue
            elif step == "older" and arrivals:
                first = max(1, arrivals[-1].first_update_id - rng.randint(1, 3))
                arrivals.append(diff(first, first + 1, bids=[(float(first), 9.0)]))
                continue
            last = update_id + rng.randint(0, 2)
            bids = [(float(rng.randint(1, 20)), float(rng.randint(0, 3))) for _ in range(3)]
            asks = [(float(rng.randint(21, 40)), float(rng.randint(0, 3))) for _ in range(3)]
            arrivals.append(diff(update_id, last, bids=bids, asks=asks))
            update_id = last + 1
        folded: object = arrivals[0]
        pending = PendingDiff(arrivals[0])
        for later in arrivals[1:]:
            folded = merge_depth(folded, later)
            pending.add(later)
        got = pending.event()
        assert (got.first_update_id, got.final_update_id) == (
            folded.first_update_id,
            folded.final_update_id,
        )
        assert dict(got.bids) == dict(folded.bids)
        assert dict(got.asks) == dict(folded.asks)


# --------------------------------------------------------------------------------------
# A long random run against a true book


def test_random_run_with_faults_ends_equal_to_the_true_book() -> None:
    """Drops, duplicates, swaps and delayed snapshots: whenever the sync is live its book is
    the true book as of its local id, and after a clean tail it is the true book."""
    rng = random.Random(7)
    true_bids: dict[float, float] = {float(p): 1.0 for p in range(90, 100)}
    true_asks: dict[float, float] = {float(p): 1.0 for p in range(101, 111)}
    history: dict[int, tuple] = {}
    sync = BookSync("X", max_buffered=50)
    update_id = 0
    pending_snapshot: tuple[int, int] | None = None  # (request id, answer after n diffs)
    held: DepthDiff | None = None
    checked = resynced = 0

    def state() -> tuple:
        return (
            tuple(sorted(true_bids.items(), reverse=True)),
            tuple(sorted(true_asks.items())),
        )

    def handle(step) -> None:
        nonlocal pending_snapshot, resynced
        if step.request is not None:
            pending_snapshot = (step.request, rng.randint(0, 8))
        if step.resync is not None:
            resynced += 1

    for n in range(10_000):
        faults = n < 9_900
        bids: list = []
        asks: list = []
        for _ in range(rng.randint(1, 4)):
            if rng.random() < 0.5:
                price = float(rng.randint(90, 99))
                qty = float(rng.choice([0, 1, 2, 3]))
                bids.append((price, qty))
                true_bids.pop(price, None) if not qty else true_bids.__setitem__(price, qty)
            else:
                price = float(rng.randint(101, 110))
                qty = float(rng.choice([0, 1, 2, 3]))
                asks.append((price, qty))
                true_asks.pop(price, None) if not qty else true_asks.__setitem__(price, qty)
        first = update_id + 1
        update_id += len(bids) + len(asks)
        history[update_id] = state()
        event = diff(first, update_id, bids, asks)
        roll = rng.random() if faults else 1.0
        out: list[DepthDiff] = []
        if roll < 0.01:
            pass  # lost
        elif roll < 0.02:
            out = [event, event]
        elif roll < 0.03 and held is None:
            held = event
        else:
            out = [event]
            if held is not None:
                out.append(held)
                held = None
        for item in out:
            handle(sync.on_diff(item, float(n)))
            if sync.state == LIVE:
                assert (sync.book.levels("bid"), sync.book.levels("ask")) == history[
                    sync.book.last_update_id
                ]
                checked += 1
        if pending_snapshot is not None:
            request_id, wait = pending_snapshot
            if wait == 0:
                pending_snapshot = None
                bids_now, asks_now = state()
                handle(sync.on_snapshot(request_id, update_id, bids_now, asks_now, float(n)))
            else:
                pending_snapshot = (request_id, wait - 1)
    assert sync.state == LIVE
    assert sync.book.last_update_id == update_id
    assert (sync.book.levels("bid"), sync.book.levels("ask")) == state()
    assert resynced > 50
    assert checked > 8_000


# --------------------------------------------------------------------------------------
# Futures: update ids shared by every symbol, diffs chained on pu


def fdiff(first: int, last: int, previous: int, bids=(), asks=()) -> DepthDiff:
    return DepthDiff("X", first, last, tuple(bids), tuple(asks), None, 0.0, 0.0, previous)


# A futures book live at 150: diffs [100, 120] (pu 90), [130, 150] (pu 120), snapshot 140.
FUTURES_LIVE = [fdiff(100, 120, 90), fdiff(130, 150, 120), snap(140)]

FUTURES_CASES = [
    (
        "buffered diffs chain on pu, not on U = u + 1",
        [fdiff(100, 120, 90), fdiff(130, 150, 120)],
        {"signal": BUFFER, "state": SYNCING, "request": None},
        {"buffer": [100, 130], "first_update_id": 100},
    ),
    (
        "syncing: a pu break restarts the buffer (unsynced)",
        [fdiff(100, 120, 90), fdiff(130, 150, 125)],
        {"signal": BUFFER_RESTART, "unsynced": 1},
        {"buffer": [130]},
    ),
    (
        "snapshot: u < lastUpdateId dropped, the diff spanning it applies first",
        [*FUTURES_LIVE],
        {"signal": SNAPSHOT_APPLIED, "state": LIVE, "superseded": 1, "applied": [130]},
        {"local": 150, "buffer": []},
    ),
    (
        "snapshot: a diff ending exactly at lastUpdateId is the first applied",
        [fdiff(100, 120, 90), fdiff(130, 150, 120), snap(120)],
        {"signal": SNAPSHOT_APPLIED, "state": LIVE, "superseded": 0, "applied": [100, 130]},
        {"local": 150},
    ),
    (
        "snapshot ending at the first buffered diff's pu joins it exactly",
        [fdiff(100, 120, 90), snap(90)],
        {"signal": SNAPSHOT_APPLIED, "state": LIVE, "applied": [100]},
        {"local": 120},
    ),
    (
        "snapshot before the first buffered U: fetch it again",
        [fdiff(100, 120, 90), snap(95)],
        {"signal": SNAPSHOT_STALE, "state": SYNCING, "request": 2},
        {"buffer": [100]},
    ),
    (
        "live: the next diff continues when pu is the local id",
        [*FUTURES_LIVE, fdiff(170, 180, 150, asks=[(103.0, 1.0)])],
        {"signal": APPLY, "state": LIVE},
        {"local": 180, "asks": (*ASKS, (103.0, 1.0))},
    ),
    (
        "live: a pu break resyncs the symbol",
        [*FUTURES_LIVE, fdiff(170, 180, 160)],
        {"signal": GAP, "state": SYNCING, "resync": GAP, "request": 2},
        {"buffer": [170], "depth": (0, 0)},
    ),
    (
        "live: a duplicate is superseded",
        [*FUTURES_LIVE, fdiff(130, 150, 120)],
        {"signal": OLD, "state": LIVE, "superseded": 1},
        {"local": 150},
    ),
    (
        "snapshot newer than the whole buffer: the next diff must span it",
        [fdiff(100, 120, 90), snap(125), fdiff(124, 130, 120)],
        {"signal": APPLY, "state": LIVE},
        {"local": 130},
    ),
    (
        "snapshot newer than the whole buffer: a later first diff is a gap",
        [fdiff(100, 120, 90), snap(125), fdiff(126, 130, 120)],
        {"signal": GAP, "state": SYNCING, "resync": GAP},
        {"buffer": [126]},
    ),
]


@pytest.mark.parametrize(
    ("inputs", "step_fields", "sync_fields"),
    [case[1:] for case in FUTURES_CASES],
    ids=[case[0] for case in FUTURES_CASES],
)
def test_futures_procedure(inputs: list, step_fields: dict, sync_fields: dict) -> None:
    sync = BookSync("X", chained=True)
    check(sync, feed(sync, inputs), step_fields, sync_fields)


def test_spot_diffs_after_a_futures_gap_would_not_chain() -> None:
    # The spot rule (U = u + 1) would take these futures diffs for a gap every time.
    spot = BookSync("X")
    feed(spot, FUTURES_LIVE)
    assert spot.on_diff(fdiff(170, 180, 150), 0.0).signal == GAP


FUTURES_MERGES = [
    ("chained on pu: one diff", fdiff(100, 120, 90), fdiff(130, 150, 120), (100, 150, 90)),
    ("a pu break: the later alone", fdiff(100, 120, 90), fdiff(130, 150, 125), (130, 150, 125)),
]


@pytest.mark.parametrize(
    ("old", "new", "want"), [m[1:] for m in FUTURES_MERGES], ids=[m[0] for m in FUTURES_MERGES]
)
def test_merge_futures_diffs(old: DepthDiff, new: DepthDiff, want: tuple) -> None:
    result = merged(old, new)
    assert (result.first_update_id, result.final_update_id, result.previous_update_id) == want


def test_random_futures_run_ends_equal_to_the_true_book() -> None:
    """Ids shared with other symbols (jumps between a symbol's diffs), drops, duplicates and
    late snapshots: whenever live, the book is the true book as of its local id."""
    rng = random.Random(11)
    true_asks: dict[float, float] = {float(p): 1.0 for p in range(101, 111)}
    history: dict[int, tuple] = {}
    sync = BookSync("X", max_buffered=50, chained=True)
    update_id = previous = 0
    pending: tuple[int, int] | None = None
    checked = 0
    for n in range(5_000):
        asks = []
        for _ in range(rng.randint(1, 3)):
            price = float(rng.randint(101, 110))
            qty = float(rng.choice([0, 1, 2]))
            asks.append((price, qty))
            true_asks.pop(price, None) if not qty else true_asks.__setitem__(price, qty)
        first = update_id + rng.randint(1, 40)  # other symbols' updates in between
        update_id = first + rng.randint(0, 30)
        history[update_id] = tuple(sorted(true_asks.items()))
        event = fdiff(first, update_id, previous, asks=asks)
        previous = update_id
        roll = rng.random() if n < 4_900 else 1.0
        for item in [] if roll < 0.01 else [event, event] if roll < 0.02 else [event]:
            step = sync.on_diff(item, float(n))
            if step.request is not None:
                pending = (step.request, rng.randint(0, 6))
            if sync.state == LIVE:
                assert sync.book.levels("ask") == history[sync.book.last_update_id]
                checked += 1
        if pending is not None:
            request_id, wait = pending
            if wait:
                pending = (request_id, wait - 1)
                continue
            pending = None
            asks_now = tuple(sorted(true_asks.items()))
            step = sync.on_snapshot(request_id, update_id, ((100.0, 1.0),), asks_now, float(n))
            if step.request is not None:
                pending = (step.request, rng.randint(0, 6))
    assert sync.state == LIVE
    assert sync.book.levels("ask") == tuple(sorted(true_asks.items()))
    assert checked > 4_000
