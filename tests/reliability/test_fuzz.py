"""Property and fuzz tests (hypothesis) on the decoder and the books: no input crashes them,
and every case is counted. In the report, ``faults`` is the number of cases (examples) and
``messages`` what they held (frames, book operations, diffs).

Cases: 100,000 in the full suite, 5,000 in the quick one (:data:`CASES`). The decoder must
turn anything into an event, a control message or a :class:`BadFrame` with one of the
accounted reasons (never raise), and an event it returns holds only finite, positive prices
and non-negative quantities. The order book must match a plain model after any sequence of
snapshots and diffs; a shard's diff books must account for every diff fed to them (evaluated,
stale, superseded, or still buffered) whatever the order, gaps and duplicates.
"""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from oraculo_trio.core.book import OrderBook
from oraculo_trio.core.engine import ShardEngine
from oraculo_trio.core.events import DEPTH, BookTicker, DepthDiff, DepthSnapshot, Trade
from oraculo_trio.core.sync import BookSnapshot
from oraculo_trio.feeds.binance import BadFrame, BinanceDecoder, Control
from oraculo_trio.observe.metrics import BAD_FRAME_REASONS, ServiceMetrics
from oraculo_trio.pipeline.diffbooks import ShardBooks
from oraculo_trio.pipeline.snapshots import SnapshotRequests
from tests.reliability.conftest import Mode

# Examples per property: (quick, full); 5,000 and 100,000 in all.
CASES = {
    "decoder-bytes": (2_000, 30_000),
    "decoder-payloads": (1_500, 40_000),
    "order-book": (750, 15_000),
    "diff-books": (750, 15_000),
}

STREAMS = (
    "btcusdt@trade",
    "btcusdt@aggTrade",
    "btcusdt@bookTicker",
    "btcusdt@depth20@100ms",
    "btcusdt@depth5",
    "btcusdt@depth@100ms",
    "!serverShutdown",
)

VALID: dict[str, dict[str, Any]] = {
    "btcusdt@trade": {"e": "trade", "E": 1, "s": "BTCUSDT", "t": 1, "p": "20.0", "q": "1.0",
                      "T": 1, "m": False, "M": True},
    "btcusdt@aggTrade": {"e": "aggTrade", "E": 1, "s": "BTCUSDT", "a": 1, "p": "20.0",
                         "q": "1.0", "f": 1, "l": 1, "T": 1, "m": True, "M": True},
    "btcusdt@bookTicker": {"u": 1, "s": "BTCUSDT", "b": "20.0", "B": "1.0", "a": "20.1",
                           "A": "2.0"},
    "btcusdt@depth20@100ms": {"lastUpdateId": 1, "bids": [["20.0", "1.0"]],
                              "asks": [["20.1", "1.0"]]},
    "btcusdt@depth5": {"lastUpdateId": 1, "bids": [], "asks": []},
    "btcusdt@depth@100ms": {"e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": 1, "u": 2,
                            "b": [["20.0", "0.0"]], "a": [["20.1", "3.0"]]},
    "!serverShutdown": {"e": "serverShutdown", "E": 1},
}  # fmt: skip

EVENTS = (Trade, DepthSnapshot, DepthDiff, BookTicker)

QUIRKS = st.sampled_from(
    ["NaN", "nan", "inf", "-inf", "Infinity", "-0", "0", "-1", "1e309", "1e-400", "", " 1",
     "0x10", "1_000", "20.0", "9" * 400]
)  # fmt: skip

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | QUIRKS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=3), children, max_size=4)
    ),
    max_leaves=12,
)


def _settings(mode: Mode, name: str) -> settings:
    quick, full = CASES[name]
    return settings(
        max_examples=full if mode.full else quick,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def _counted_as(result: object) -> str:
    """How the feed counts a decode result; fails on anything it could not count."""
    if isinstance(result, Control):
        return "control"
    if isinstance(result, BadFrame):
        assert result.reason in BAD_FRAME_REASONS, result
        return result.reason
    assert isinstance(result, EVENTS), f"decode returned {result!r}"
    return "event"


def _check_event(event: object) -> None:
    if isinstance(event, Trade):
        values = [(event.price, event.quantity)]
    elif isinstance(event, BookTicker):
        values = [
            (event.bid_price, event.bid_quantity),
            (event.ask_price, event.ask_quantity),
        ]
    else:
        values = [*event.bids, *event.asks]
    for price, quantity in values:
        assert math.isfinite(price) and price > 0, event
        assert math.isfinite(quantity) and quantity >= 0, event
    assert event.symbol == "BTCUSDT"


def test_the_decoder_counts_any_bytes(mode: Mode, scenario) -> None:
    figures = scenario("fuzz/decoder-bytes")
    decoder = BinanceDecoder(STREAMS, max_frame_bytes=4096)
    counts: dict[str, int] = {}

    frames = (
        st.binary(max_size=300)
        | st.text(max_size=300)
        | st.builds(
            lambda s, d: json.dumps({"stream": s, "data": d}),
            st.sampled_from(STREAMS) | st.text(max_size=20),
            JSON,
        )
        | st.builds(lambda d: json.dumps(d), JSON)
    )

    @_settings(mode, "decoder-bytes")
    @given(frames)
    def decode_anything(frame: str | bytes) -> None:
        kind = _counted_as(decoder.decode(frame, 1.0, 1.0))
        counts[kind] = counts.get(kind, 0) + 1

    decode_anything()
    figures.faults = figures.messages = sum(counts.values())
    figures.counts = "cases"
    figures.detail["counted"] = counts
    assert figures.messages >= CASES["decoder-bytes"][mode.full] * 0.9


def _mutate(data: Any, draw: st.DrawFn) -> Any:
    """A valid payload with some fields replaced, removed, or made quirky."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    for key in list(data):
        choice = draw(st.integers(0, 9))
        if choice == 0:
            del data[key]
        elif choice == 1:
            data[key] = draw(JSON)
        elif choice == 2:
            data[key] = draw(QUIRKS)
        elif choice == 3 and isinstance(data[key], list):
            data[key] = [[draw(QUIRKS), draw(QUIRKS)] for _ in range(draw(st.integers(0, 3)))]
    if draw(st.booleans()):
        data[draw(st.text(max_size=3))] = draw(JSON)
    return data


@st.composite
def payload_frames(draw: st.DrawFn) -> bytes:
    stream = draw(st.sampled_from(STREAMS))
    data = _mutate(VALID[stream], draw)
    raw = msgspec.json.encode({"stream": stream, "data": data})
    cut = draw(st.integers(0, 20))
    if cut == 0:  # truncated
        raw = raw[: draw(st.integers(0, len(raw)))]
    return raw


def test_the_decoder_checks_every_field_of_every_stream(mode: Mode, scenario) -> None:
    figures = scenario("fuzz/decoder-payloads")
    decoder = BinanceDecoder(STREAMS)
    counts: dict[str, int] = {}

    @_settings(mode, "decoder-payloads")
    @given(payload_frames())
    def decode_payload(frame: bytes) -> None:
        result = decoder.decode(frame, 1.0, 1.0)
        kind = _counted_as(result)
        if kind == "event":
            _check_event(result)
        counts[kind] = counts.get(kind, 0) + 1

    decode_payload()
    figures.faults = figures.messages = sum(counts.values())
    figures.counts = "cases"
    figures.detail["counted"] = counts
    assert counts.get("event", 0) > 0
    assert counts.get("invalid_value", 0) > 0
    assert counts.get("invalid_payload", 0) > 0


PRICES = st.sampled_from([19.5, 19.9, 19.99, 20.0, 20.01, 20.1, 20.5, 21.0, 1e-8, 1e9])
LEVELS = st.lists(st.tuples(PRICES, st.sampled_from([0.0, 0.0, 1.0, 2.5, 1e-8, 1e12])), max_size=6)
BOOK_OPS = st.lists(
    st.tuples(st.sampled_from(["snapshot", "diff", "clear"]), LEVELS, LEVELS), max_size=12
)


def test_the_order_book_matches_a_plain_model(mode: Mode, scenario) -> None:
    figures = scenario("fuzz/order-book")
    operations = examples = 0

    @_settings(mode, "order-book")
    @given(BOOK_OPS)
    def apply_ops(ops: list[tuple[str, list, list]]) -> None:
        nonlocal operations, examples
        examples += 1
        book = OrderBook("BTCUSDT")
        model: dict[str, dict[float, float]] = {"bid": {}, "ask": {}}
        for kind, bids, asks in ops:
            operations += 1
            if kind == "clear":
                book.clear()
                model = {"bid": {}, "ask": {}}
                continue
            if kind == "snapshot":
                book.apply_snapshot(bids, asks, 1)
                model = {"bid": {}, "ask": {}}
            else:
                book.apply_diff(bids, asks, 2)
            for side, levels in (("bid", bids), ("ask", asks)):
                for price, qty in levels:
                    if qty:
                        model[side][price] = qty
                    else:
                        model[side].pop(price, None)
            for side, best in (("bid", max), ("ask", min)):
                levels = book.levels(side)
                prices = [p for p, _ in levels]
                assert len(prices) == len(set(prices))
                assert dict(levels) == model[side]
                assert all(q > 0 for _, q in levels)
                top = book.best_bid if side == "bid" else book.best_ask
                if model[side]:
                    assert top == (best(model[side]), model[side][best(model[side])])
                else:
                    assert top is None
            assert book.spread_bps is None or math.isfinite(book.spread_bps)
            book.imbalance(10)
            book.notional_within_bps(50.0)

    apply_ops()
    figures.faults = examples
    figures.messages = operations
    figures.counts = "operations"
    assert operations > 0


DIFFS = st.lists(
    st.one_of(
        st.tuples(
            st.just("diff"),
            st.sampled_from(["AAAUSDT", "BBBUSDT"]),
            st.integers(1, 40),
            st.integers(0, 3),
            LEVELS,
            st.booleans(),
        ),
        st.tuples(
            st.just("snapshot"),
            st.sampled_from(["AAAUSDT", "BBBUSDT"]),
            st.integers(0, 45),
            st.integers(-1, 1),
            LEVELS,
            st.booleans(),
        ),
    ),
    max_size=20,
)


def test_diff_books_account_for_every_diff(mode: Mode, scenario) -> None:
    figures = scenario("fuzz/diff-books")
    metrics = ServiceMetrics(shards=1)
    diffs_fed = examples = 0

    # The counters a diff can end in (read directly: collecting the whole registry per
    # example would cost more than the example).
    counters = [
        metrics.evaluated[DEPTH],
        metrics.dropped[DEPTH, "stale_drop"],
        metrics.dropped[DEPTH, "superseded"],
        metrics.dropped[DEPTH, "overflow"],
        metrics.dropped[DEPTH, "unsynced"],
    ]

    def counted() -> int:
        return int(sum(counter.value for counter in counters))

    @_settings(mode, "diff-books")
    @given(DIFFS)
    # A syncing book past its bound (8 here): the oldest diffs go, as overflow.
    @example([("diff", "AAAUSDT", first, 0, [], True) for first in range(1, 13)])
    def feed(ops: list[tuple]) -> None:
        nonlocal diffs_fed, examples
        examples += 1
        books = ShardBooks(0, ShardEngine(), SnapshotRequests(), metrics, 5.0, max_buffered=8)
        before = counted()
        fed = 0
        now = 0.0
        for kind, symbol, first, span, levels, fresh in ops:
            now += 0.01
            if kind == "diff":
                diff = DepthDiff(
                    symbol, first, first + span, tuple(levels), tuple(reversed(levels)),
                    None, now if fresh else now - 10.0, 1_000.0,
                )  # fmt: skip
                books.process(diff, now, 1_000.0, 0.0 if fresh else 10.0)
                fed += 1
            else:
                sync = books.syncs.get(symbol)
                request = (sync.request_id if sync is not None else 0) + span
                snapshot = BookSnapshot(symbol, request, first, tuple(levels), ())
                books.apply_snapshot(snapshot, now, 1_000.0)
        books.flush()
        # Every diff is decided (evaluated, stale, superseded, unsynced) or waits in a
        # syncing book...
        assert counted() - before + books.buffered() == fed
        # ... and once the consumer stops, the ones waiting are unsynced.
        books.close()
        assert counted() - before == fed
        diffs_fed += fed

    feed()
    figures.faults = examples
    figures.messages = diffs_fed
    figures.counts = "diffs"
    terms = metrics.accounting()
    figures.detail["counted"] = {k: terms[k] for k in ("superseded", "overflow", "unsynced")}
    assert diffs_fed > 0
    assert terms["superseded"] > 0
    # A syncing book past its bound dropped its oldest diffs as overflow, and every example
    # balanced all the same.
    assert terms["overflow"] > 0
