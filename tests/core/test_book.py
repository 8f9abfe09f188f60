"""Order books: the maths as a table, diffs against an oracle, and a replay of real sessions."""

from __future__ import annotations

import itertools
import json
import math
import random
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oraculo_trio.core.book import (
    UPDATES_IN_C,
    Notional,
    OrderBook,
    PartialBook,
    Wall,
    update_side_in_python,
)
from tests.data import BINANCE_DATA
from tests.services import unavailable

DATA = BINANCE_DATA

Levels = list[tuple[float, float]]

# --------------------------------------------------------------------------------------
# Book maths: one table, checked on both books.
#
# Each case: bids and asks (best first) and the expected value of each query. A query
# key is (method, args); properties take no args.

SIMPLE_BIDS = [(100.0, 2.0), (99.0, 3.0), (98.0, 5.0)]
SIMPLE_ASKS = [(101.0, 1.0), (102.0, 4.0), (103.0, 6.0)]

CASES = [
    (
        "three levels a side",
        SIMPLE_BIDS,
        SIMPLE_ASKS,
        {
            "best_bid": (100.0, 2.0),
            "best_ask": (101.0, 1.0),
            "mid": 100.5,
            "spread_bps": 1.0 / 100.5 * 1e4,
            "depth": (3, 3),
            ("is_crossed",): False,
            ("imbalance", 1): 2 / 3,
            ("imbalance", 2): 0.5,
            ("imbalance", 10): 10 / 21,
            ("bid_ask_ratio", 1): 2.0,
            ("bid_ask_ratio", 2): 1.0,
            ("bid_ask_ratio", 10): 10 / 11,
            # mid 100.5 +- 1.005: 99.495 .. 101.505
            ("notional_within_bps", 100): Notional(200.0, 101.0, 301.0),
            # mid +- 2.01: 98.49 .. 102.51
            ("notional_within_bps", 200): Notional(497.0, 509.0, 1006.0),
            ("notional_within_bps", 0): Notional(0.0, 0.0, 0.0),
            ("notional_within_bps", 10_000): Notional(987.0, 1127.0, 2114.0),
            ("largest_level_within_bps", 200): Wall("ask", 102.0, 4.0, 408.0),
            ("largest_level_within_bps", 200, "bid"): Wall("bid", 99.0, 3.0, 297.0),
            ("largest_level_within_bps", 200, "ask"): Wall("ask", 102.0, 4.0, 408.0),
            ("largest_level_within_bps", 100): Wall("bid", 100.0, 2.0, 200.0),
            ("largest_level_within_bps", 0): None,
            ("levels", "bid", 2): ((100.0, 2.0), (99.0, 3.0)),
            ("levels", "ask", 2): ((101.0, 1.0), (102.0, 4.0)),
            ("levels", "bid"): tuple(SIMPLE_BIDS),
            ("levels", "ask", 0): (),
            ("levels", "ask", 99): tuple(SIMPLE_ASKS),
        },
    ),
    (
        "bounds are inclusive",
        [(99.0, 1.0)],
        [(101.0, 1.0)],
        {
            "mid": 100.0,
            "spread_bps": 200.0,
            ("notional_within_bps", 100): Notional(99.0, 101.0, 200.0),
            ("notional_within_bps", 99): Notional(0.0, 0.0, 0.0),
        },
    ),
    (
        "wall tie goes to the level nearer the mid, bids first",
        [(100.0, 1.0), (50.0, 2.0)],
        [(101.0, 100.0 / 101.0), (200.0, 0.5)],
        {
            ("largest_level_within_bps", 10_000, "bid"): Wall("bid", 100.0, 1.0, 100.0),
            ("largest_level_within_bps", 10_000): Wall("bid", 100.0, 1.0, 100.0),
            ("largest_level_within_bps", 10_000, "ask"): Wall("ask", 101.0, 100.0 / 101.0, 100.0),
        },
    ),
    (
        "only bids",
        [(100.0, 1.0), (99.0, 1.0)],
        [],
        {
            "best_bid": (100.0, 1.0),
            "best_ask": None,
            "mid": None,
            "spread_bps": None,
            "depth": (2, 0),
            ("is_crossed",): False,
            ("imbalance", 5): 1.0,
            ("bid_ask_ratio", 5): None,
            ("notional_within_bps", 100): None,
            ("largest_level_within_bps", 100): None,
            ("levels", "ask"): (),
        },
    ),
    (
        "only asks",
        [],
        [(10.0, 2.0)],
        {
            "best_bid": None,
            "best_ask": (10.0, 2.0),
            "mid": None,
            "spread_bps": None,
            ("imbalance", 5): 0.0,
            ("bid_ask_ratio", 5): 0.0,
            ("notional_within_bps", 100): None,
        },
    ),
    (
        "empty",
        [],
        [],
        {
            "best_bid": None,
            "best_ask": None,
            "mid": None,
            "spread_bps": None,
            "depth": (0, 0),
            ("is_crossed",): False,
            ("imbalance", 1): None,
            ("bid_ask_ratio", 1): None,
            ("notional_within_bps", 50): None,
            ("largest_level_within_bps", 50): None,
            ("levels", "bid", 3): (),
        },
    ),
    (
        "crossed",
        [(101.0, 1.0)],
        [(100.0, 1.0)],
        {("is_crossed",): True, "spread_bps": -1.0 / 100.5 * 1e4, "mid": 100.5},
    ),
    (
        "locked counts as crossed",
        [(100.0, 1.0)],
        [(100.0, 2.0)],
        {("is_crossed",): True, "spread_bps": 0.0},
    ),
    (
        "one tick apart is not crossed",
        [(0.3521, 672.0)],
        [(0.3522, 1.0)],
        {("is_crossed",): False},
    ),
]

BOOKS = {"OrderBook": OrderBook, "PartialBook": PartialBook}


def query(book: OrderBook | PartialBook, key: str | tuple):
    if isinstance(key, str):
        return getattr(book, key)
    name, *args = key
    return getattr(book, name)(*args)


def same(actual, expected) -> bool:
    if isinstance(expected, float):
        return isinstance(actual, float) and math.isclose(actual, expected, abs_tol=1e-12)
    if isinstance(expected, tuple) and isinstance(actual, tuple) and len(actual) == len(expected):
        return all(same(a, e) for a, e in zip(actual, expected, strict=True))
    return actual == expected


@pytest.mark.parametrize("make", BOOKS.values(), ids=BOOKS.keys())
@pytest.mark.parametrize(
    ("bids", "asks", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_book_maths(make, bids: Levels, asks: Levels, expected: dict) -> None:
    book = make("TEST")
    book.apply_snapshot(tuple(bids), tuple(asks), 7)
    assert book.last_update_id == 7
    for key, value in expected.items():
        assert same(query(book, key), value), (key, query(book, key), value)


@pytest.mark.parametrize(
    ("bids", "asks", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_order_book_takes_levels_in_any_order(bids: Levels, asks: Levels, expected: dict) -> None:
    rng = random.Random(1)
    shuffled_bids, shuffled_asks = bids[:], asks[:]
    rng.shuffle(shuffled_bids)
    rng.shuffle(shuffled_asks)
    book = OrderBook("TEST")
    book.apply_snapshot(iter(shuffled_bids), shuffled_asks, 1)
    for key, value in expected.items():
        assert same(query(book, key), value), key


@pytest.mark.parametrize("make", BOOKS.values(), ids=BOOKS.keys())
def test_bad_arguments(make) -> None:
    book = make("TEST")
    book.apply_snapshot(tuple(SIMPLE_BIDS), tuple(SIMPLE_ASKS), 1)
    for call in (
        lambda: book.levels("bids"),
        lambda: book.levels("bid", -1),
        lambda: book.imbalance(0),
        lambda: book.bid_ask_ratio(-3),
        lambda: book.largest_level_within_bps(10, "both"),
    ):
        with pytest.raises(ValueError, match=r"side=|n="):
            call()


@pytest.mark.parametrize("make", BOOKS.values(), ids=BOOKS.keys())
def test_clear(make) -> None:
    book = make("TEST")
    book.apply_snapshot(tuple(SIMPLE_BIDS), tuple(SIMPLE_ASKS), 3)
    book.clear()
    assert book.depth == (0, 0)
    assert book.last_update_id is None
    assert book.best_bid is None


# --------------------------------------------------------------------------------------
# Snapshots and diffs on OrderBook


def sides(book: OrderBook) -> tuple[tuple, tuple]:
    return book.levels("bid"), book.levels("ask")


def test_snapshot_skips_zero_quantities_and_keeps_the_last_duplicate() -> None:
    book = OrderBook("TEST")
    book.apply_snapshot(
        [(100.0, 1.0), (99.0, 0.0), (98.0, 2.0), (100.0, 5.0)], [(101.0, 0.0), (102.0, 1.0)], 1
    )
    assert sides(book) == (((100.0, 5.0), (98.0, 2.0)), ((102.0, 1.0),))


def test_snapshot_replaces_everything() -> None:
    book = OrderBook("TEST")
    book.apply_snapshot(SIMPLE_BIDS, SIMPLE_ASKS, 1)
    book.apply_snapshot([(50.0, 1.0)], [], 2)
    assert sides(book) == (((50.0, 1.0),), ())
    assert book.last_update_id == 2


DIFFS = [
    (
        "zero removes, new levels insert in order",
        [(99.0, 0.0), (100.5, 3.0), (97.0, 1.0)],
        [(101.0, 0.0), (104.0, 1.0), (101.5, 2.0)],
        ((100.5, 3.0), (100.0, 2.0), (98.0, 5.0), (97.0, 1.0)),
        ((101.5, 2.0), (102.0, 4.0), (103.0, 6.0), (104.0, 1.0)),
    ),
    (
        "quantity replaced, not added",
        [(100.0, 7.0)],
        [(103.0, 0.5)],
        ((100.0, 7.0), (99.0, 3.0), (98.0, 5.0)),
        ((101.0, 1.0), (102.0, 4.0), (103.0, 0.5)),
    ),
    (
        "removing an absent level is fine",
        [(42.0, 0.0), (98.5, 0.0)],
        [(1000.0, 0.0)],
        tuple(SIMPLE_BIDS),
        tuple(SIMPLE_ASKS),
    ),
    (
        "a side can empty out",
        [(100.0, 0.0), (99.0, 0.0), (98.0, 0.0)],
        [],
        (),
        tuple(SIMPLE_ASKS),
    ),
    (
        "set then remove within one diff",
        [(100.25, 1.0), (100.25, 0.0)],
        [(101.0, 9.0), (101.0, 0.0)],
        tuple(SIMPLE_BIDS),
        ((102.0, 4.0), (103.0, 6.0)),
    ),
]


@pytest.mark.parametrize(
    ("bids", "asks", "want_bids", "want_asks"), [d[1:] for d in DIFFS], ids=[d[0] for d in DIFFS]
)
def test_apply_diff(bids: Levels, asks: Levels, want_bids: tuple, want_asks: tuple) -> None:
    book = OrderBook("TEST")
    book.apply_snapshot(SIMPLE_BIDS, SIMPLE_ASKS, 10)
    book.apply_diff(bids, asks, 12)
    assert sides(book) == (want_bids, want_asks)
    assert book.last_update_id == 12
    book.apply_diff([], [])
    assert book.last_update_id == 12


def test_diff_on_an_empty_book_and_crossing_detection() -> None:
    book = OrderBook("TEST")
    book.apply_diff([(100.0, 1.0)], [(101.0, 1.0)])
    assert not book.is_crossed()
    book.apply_diff([(101.0, 1.0)], [])
    assert book.is_crossed()
    book.apply_diff([], [(101.0, 0.0)])
    assert not book.is_crossed()
    assert book.best_ask is None


class DictBook:
    """The obvious book: a dict per side, sorted when asked. The oracle."""

    def __init__(self, bids=(), asks=()) -> None:
        self.bids = {p: q for p, q in bids if q}
        self.asks = {p: q for p, q in asks if q}

    def apply_diff(self, bids, asks) -> None:
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for price, qty in levels:
                if qty:
                    side[price] = qty
                else:
                    side.pop(price, None)

    def levels(self) -> tuple[tuple, tuple]:
        return (
            tuple(sorted(self.bids.items(), reverse=True)),
            tuple(sorted(self.asks.items())),
        )


prices = st.integers(min_value=1, max_value=60).map(lambda tick: tick * 0.25)
quantities = st.sampled_from([0.0, 0.0, 0.5, 1.0, 2.5, 10.0])
level_lists = st.lists(st.tuples(prices, quantities), max_size=12)


@settings(database=None, max_examples=300, deadline=None)
@given(level_lists, level_lists, st.lists(st.tuples(level_lists, level_lists), max_size=20))
def test_diffs_match_the_dict_oracle(start_bids, start_asks, diffs) -> None:
    book = OrderBook("TEST")
    book.apply_snapshot(start_bids, start_asks, 0)
    oracle = DictBook()
    oracle.apply_diff(start_bids, start_asks)
    for bids, asks in diffs:
        book.apply_diff(bids, asks)
        oracle.apply_diff(bids, asks)
        assert sides(book) == oracle.levels()
        assert book.depth == (len(oracle.bids), len(oracle.asks))


@settings(database=None, max_examples=200, deadline=None)
@given(level_lists, level_lists, st.sampled_from([1, 3, 10]), st.sampled_from([0, 5, 150, 5000]))
def test_partial_and_order_book_agree(bids, asks, n, bps) -> None:
    bids, asks = DictBook(bids, asks).levels()
    order, partial = OrderBook("X"), PartialBook("X")
    order.apply_snapshot(bids, asks, 1)
    partial.apply_snapshot(bids, asks, 1)
    for key in (
        "best_bid", "best_ask", "mid", "spread_bps", "depth", ("is_crossed",),
        ("imbalance", n), ("bid_ask_ratio", n), ("levels", "bid", n), ("levels", "ask"),
        ("notional_within_bps", bps), ("largest_level_within_bps", bps),
        ("largest_level_within_bps", bps, "bid"), ("largest_level_within_bps", bps, "ask"),
    ):  # fmt: skip
        assert same(query(order, key), query(partial, key)), key


# --------------------------------------------------------------------------------------
# Replay of the recorded sessions: REST snapshot, then synced diffs, per symbol.

PAIRS = {
    "spot": ("spot_depth_diff.jsonl", "rest_depth_snapshot.jsonl"),
    "us": ("us_depth_diff.jsonl", "us_rest_depth_snapshot.jsonl"),
}
SESSION_GAP_MS = 60_000


def load(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_bytes().splitlines()]


def levels(rows: list[list[str]]) -> tuple[tuple[float, float], ...]:
    return tuple((float(p), float(q)) for p, q in rows)


def streams(name: str) -> dict[tuple[int, str], list[dict]]:
    """Diffs per (session, symbol). A capture session ends where E jumps by over a minute."""
    out: dict[tuple[int, str], list[dict]] = {}
    session, previous = -1, None
    for frame in load(name):
        data = frame["data"]
        if previous is None or abs(data["E"] - previous) > SESSION_GAP_MS:
            session += 1
        previous = data["E"]
        out.setdefault((session, data["s"]), []).append(data)
    return out


def replay_cases() -> list:
    return [
        pytest.param(pair, index, id=f"{pair}-{index}")
        for pair, (_, snapshots) in PAIRS.items()
        for index in range(len(load(snapshots)))
    ]


@pytest.mark.parametrize("pair", PAIRS)
def test_diffs_are_continuous_within_each_session(pair: str) -> None:
    for (session, symbol), diffs in streams(PAIRS[pair][0]).items():
        for before, after in itertools.pairwise(diffs):
            assert after["U"] == before["u"] + 1, (session, symbol, before["u"], after["U"])
            assert after["U"] <= after["u"]


@pytest.mark.parametrize(("pair", "index"), replay_cases())
def test_replay_never_crosses(pair: str, index: int) -> None:
    diff_file, snapshot_file = PAIRS[pair]
    snapshot = load(snapshot_file)[index]
    last_update_id = snapshot["lastUpdateId"]
    # The stream this snapshot belongs to: the one whose diffs span lastUpdateId + 1.
    matches = [
        (key, diffs)
        for key, diffs in streams(diff_file).items()
        if diffs[0]["U"] <= last_update_id + 1 <= diffs[-1]["u"]
    ]
    assert len(matches) == 1, [key for key, _ in matches]
    (_, symbol), diffs = matches[0]

    book = OrderBook(symbol)
    bids, asks = levels(snapshot["bids"]), levels(snapshot["asks"])
    book.apply_snapshot(bids, asks, last_update_id)
    oracle = DictBook(bids, asks)
    assert not book.is_crossed()

    pending = [d for d in diffs if d["u"] > last_update_id]  # the rest are superseded
    assert pending
    first = pending[0]
    assert first["U"] <= last_update_id + 1 <= first["u"]
    for diff in pending:
        assert diff["U"] == book.last_update_id + 1 or diff is first
        book.apply_diff(levels(diff["b"]), levels(diff["a"]), diff["u"])
        oracle.apply_diff(levels(diff["b"]), levels(diff["a"]))
        assert not book.is_crossed(), (symbol, diff["u"], book.best_bid, book.best_ask)
        spread = book.spread_bps
        assert spread is not None
        assert spread > 0
    assert book.last_update_id == pending[-1]["u"]
    assert sides(book) == oracle.levels()


def test_every_snapshot_has_a_stream() -> None:
    for diff_file, snapshot_file in PAIRS.values():
        keys = streams(diff_file)
        owners = set()
        for snapshot in load(snapshot_file):
            lid = snapshot["lastUpdateId"]
            owners.update(key for key, d in keys.items() if d[0]["U"] <= lid + 1 <= d[-1]["u"])
        assert len(owners) == len(load(snapshot_file))


def test_recorded_partial_books_agree_between_books() -> None:
    frames = load("spot_depth_partial.jsonl")
    for frame in frames:
        data = frame["data"]
        bids, asks = levels(data["bids"]), levels(data["asks"])
        order, partial = OrderBook("BTCUSDT"), PartialBook("BTCUSDT")
        order.apply_snapshot(bids, asks, data["lastUpdateId"])
        partial.apply_snapshot(bids, asks, data["lastUpdateId"])
        assert not order.is_crossed()
        assert order.levels("bid") == partial.levels("bid") == bids
        assert order.levels("ask") == partial.levels("ask") == asks
        for bps in (0.5, 1, 5, 50):
            assert same(order.notional_within_bps(bps), partial.notional_within_bps(bps))
            assert order.largest_level_within_bps(bps) == partial.largest_level_within_bps(bps)


# --------------------------------------------------------------------------------------
# The per-level update in C (oraculo_trio/core/_book_levels.c) against the Python loop it
# replaces: the same side, byte for byte, whatever the input.


def compiled_update():
    """The compiled loop; the install builds it wherever a C compiler is (CI has one)."""
    try:
        from oraculo_trio.core._book_levels import update_side
    except ImportError:
        unavailable("oraculo_trio.core._book_levels was not built (no C compiler at install?)")
    assert UPDATES_IN_C
    return update_side


def side_bytes(prices: array, quantities: array) -> tuple[bytes, bytes]:
    # Bytes, not values: NaN equals itself here, and -0.0 differs from 0.0.
    return prices.tobytes(), quantities.tobytes()


def both_loops(start: Levels, levels) -> tuple[tuple, tuple]:
    """The side after ``levels``, by each loop, from the same ``start`` (prices ascending)."""
    results = []
    for update in (compiled_update(), update_side_in_python):
        prices = array("d", [p for p, _ in start])
        quantities = array("d", [q for _, q in start])
        try:
            update(prices, quantities, levels)
        except (TypeError, ValueError) as exc:
            results.append((type(exc), side_bytes(prices, quantities)))
        else:
            results.append((None, side_bytes(prices, quantities)))
    return results[0], results[1]


# Prices on a coarse grid (so that levels meet), the odd ones floats must handle, and the
# quantities Python finds false (0.0, -0.0, 0) next to real ones.
odd_prices = st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 5e-324, 1.7e308])
any_price = st.one_of(prices, prices, prices, odd_prices, st.integers(1, 60))
any_quantity = st.one_of(quantities, st.sampled_from([-0.0, 0, 3, math.nan, math.inf, -1.0]))


@settings(database=None, max_examples=500, deadline=None)
@given(
    st.lists(st.tuples(prices, quantities.filter(bool)), max_size=15, unique_by=lambda x: x[0]),
    st.lists(st.tuples(any_price, any_quantity), max_size=20),
)
def test_c_and_python_loops_leave_the_same_side(start, levels) -> None:
    start.sort()
    in_c, in_python = both_loops(start, levels)
    assert in_c == in_python


@pytest.mark.parametrize(
    "levels",
    [
        [(1.0,)],  # too short
        [(1.0, 2.0), (1.0, 2.0, 3.0)],  # too long, after one good level
        [5],  # not a pair
        [(2.0, 1.0), "ab"],  # a pair of strings
        [(2.0, "1")],  # a quantity that is no number
        iter([(2.0, 1.0), (3.0, 0.0), None]),  # any iterable
    ],
)
def test_c_and_python_loops_fail_alike_on_a_bad_level(levels) -> None:
    (c_error, c_side), (python_error, python_side) = both_loops(
        [(1.0, 1.0), (3.0, 2.0)], list(levels)
    )
    assert c_error is not None
    assert c_error is python_error
    # The C loop converts both numbers before it touches the side, so a bad level leaves
    # the side as the levels before it left it; the Python loop may have inserted a price
    # without its quantity. Where it did not, both sides are the same.
    c_prices, c_quantities = c_side
    assert len(c_prices) == len(c_quantities)
    if len(python_side[0]) == len(python_side[1]):
        assert c_side == python_side


def test_the_c_loop_takes_only_arrays_of_doubles() -> None:
    update_in_c = compiled_update()
    with pytest.raises(TypeError, match="bytes-like object is required"):
        update_in_c([1.0], array("d", [1.0]), [(1.0, 2.0)])
    for prices, quantities in (
        (array("f", [1.0]), array("f", [1.0])),
        (array("d", [1.0]), array("q", [1])),
    ):
        with pytest.raises(TypeError, match=r"array\('d'\)"):
            update_in_c(prices, quantities, [(1.0, 2.0)])
    with pytest.raises(IndexError, match="fewer quantities than prices"):
        update_in_c(array("d", [1.0, 2.0]), array("d", [1.0]), [(2.0, 5.0)])


def ascending_side(rows: list[list[str]]) -> tuple[array, array]:
    """A snapshot side as the book holds it: prices ascending, zero quantities left out."""
    side = sorted((p, q) for p, q in levels(rows) if q)
    return array("d", [p for p, _ in side]), array("d", [q for _, q in side])


@pytest.mark.parametrize("pair", PAIRS)
def test_c_and_python_loops_agree_on_every_recorded_diff(pair: str) -> None:
    """Every recorded snapshot, then every diff of its stream, through both loops."""
    loops = (compiled_update(), update_side_in_python)
    diff_file, snapshot_file = PAIRS[pair]
    sessions = streams(diff_file)
    applied = 0
    for snapshot in load(snapshot_file):
        last_update_id = snapshot["lastUpdateId"]
        (diffs,) = [d for d in sessions.values() if d[0]["U"] <= last_update_id + 1 <= d[-1]["u"]]
        # (bids, asks) per loop, each side (prices, quantities)
        books = [
            (ascending_side(snapshot["bids"]), ascending_side(snapshot["asks"])) for _ in loops
        ]
        for diff in diffs:
            for update, (bids, asks) in zip(loops, books, strict=True):
                update(*bids, levels(diff["b"]))
                update(*asks, levels(diff["a"]))
            (c_bids, c_asks), (python_bids, python_asks) = books
            assert side_bytes(*c_bids) == side_bytes(*python_bids), diff["u"]
            assert side_bytes(*c_asks) == side_bytes(*python_asks), diff["u"]
            applied += 1
    # every diff of every stream a snapshot starts (a stream holds more than one diff)
    assert applied > len(load(snapshot_file))
