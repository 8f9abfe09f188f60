"""Binance adapter: every recorded frame, a table of bad frames, stream names and URLs."""

from __future__ import annotations

import itertools
import json
import math
import zlib

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oraculo_trio.core.events import BookTicker, DepthDiff, DepthSnapshot, Trade
from oraculo_trio.feeds.binance import (
    CONTROL_KINDS,
    DEFAULT_BASE_URL,
    KIND_STREAM,
    KINDS,
    BadFrame,
    BadSnapshot,
    BinanceDecoder,
    Control,
    combined_urls,
    decode_rest_snapshot,
    parse_stream_name,
    raw_url,
    stream_name,
)
from oraculo_trio.feeds.binance_markets import BINANCE_MARKETS
from oraculo_trio.observe.metrics import BAD_FRAME_REASONS
from tests.data import BINANCE_DATA

DATA = BINANCE_DATA

AT, WALL = 123.5, 1_700_000_000.25


def lines(name: str) -> list[bytes]:
    """The file's frames byte for byte (only the line break removed)."""
    return (DATA / name).read_bytes().splitlines()


def decode(frame: str | bytes, decoder: BinanceDecoder | None = None):
    return (decoder or BinanceDecoder()).decode(frame, AT, WALL)


def levels(rows: list[list[str]]) -> tuple[tuple[float, float], ...]:
    return tuple((float(p), float(q)) for p, q in rows)


# --------------------------------------------------------------------------------------
# Every recorded market-data frame decodes, with every field where it belongs.

MARKET_FILES = {
    "spot_trade.jsonl": Trade,
    "spot_aggtrade.jsonl": Trade,
    "spot_bookticker.jsonl": BookTicker,
    "spot_depth_partial.jsonl": DepthSnapshot,
    "spot_depth_diff.jsonl": DepthDiff,
    "us_depth_diff.jsonl": DepthDiff,
}


def expected_event(frame: bytes):
    """The event a frame must give, built from ``json`` (slow, obviously right)."""
    envelope = json.loads(frame)
    stream, data = envelope["stream"], envelope["data"]
    symbol, kind = stream.split("@")[0].upper(), stream.split("@")[1]
    if kind in ("trade", "aggTrade"):
        return Trade(
            symbol=data["s"],
            price=float(data["p"]),
            quantity=float(data["q"]),
            buyer_is_maker=data["m"],
            trade_id=data["t" if kind == "trade" else "a"],
            trade_time_ms=data["T"],
            event_time_ms=data["E"],
            received_at=AT,
            received_wall=WALL,
            kind=kind,
        )
    if kind == "bookTicker":
        return BookTicker(
            symbol=data["s"],
            bid_price=float(data["b"]),
            bid_quantity=float(data["B"]),
            ask_price=float(data["a"]),
            ask_quantity=float(data["A"]),
            update_id=data["u"],
            received_at=AT,
            received_wall=WALL,
        )
    if kind == "depth":
        return DepthDiff(
            symbol=data["s"],
            first_update_id=data["U"],
            final_update_id=data["u"],
            bids=levels(data["b"]),
            asks=levels(data["a"]),
            event_time_ms=data["E"],
            received_at=AT,
            received_wall=WALL,
        )
    return DepthSnapshot(
        symbol=symbol,
        bids=levels(data["bids"]),
        asks=levels(data["asks"]),
        last_update_id=data["lastUpdateId"],
        event_time_ms=data.get("E"),
        received_at=AT,
        received_wall=WALL,
    )


@pytest.mark.parametrize(("name", "event_type"), MARKET_FILES.items())
def test_every_recorded_market_frame_decodes(name: str, event_type: type) -> None:
    decoder = BinanceDecoder()
    frames = lines(name)
    assert frames
    for number, frame in enumerate(frames, 1):
        for given_frame in (frame, frame.decode()):
            event = decoder.decode(given_frame, AT, WALL)
            assert type(event) is event_type, (name, number, event)
            assert event == expected_event(frame), (name, number)
            if isinstance(event, DepthDiff | DepthSnapshot):
                assert type(event.bids) is type(event.asks) is tuple


def test_event_field_order_is_what_the_decoder_builds() -> None:
    # The decoder builds events positionally (faster); this pins the order it assumes.
    assert [f.name for f in attrs.fields(Trade)] == [
        "symbol", "price", "quantity", "buyer_is_maker", "trade_id", "trade_time_ms",
        "event_time_ms", "received_at", "received_wall", "kind",
    ]  # fmt: skip
    assert [f.name for f in attrs.fields(DepthSnapshot)] == [
        "symbol", "bids", "asks", "last_update_id", "event_time_ms", "received_at",
        "received_wall",
    ]  # fmt: skip
    assert [f.name for f in attrs.fields(DepthDiff)] == [
        "symbol", "first_update_id", "final_update_id", "bids", "asks", "event_time_ms",
        "received_at", "received_wall", "previous_update_id",
    ]  # fmt: skip
    assert [f.name for f in attrs.fields(BookTicker)] == [
        "symbol", "bid_price", "bid_quantity", "ask_price", "ask_quantity", "update_id",
        "received_at", "received_wall",
    ]  # fmt: skip


def test_partial_book_symbol_comes_from_the_stream_name() -> None:
    event = decode(lines("spot_depth_partial.jsonl")[0])
    assert isinstance(event, DepthSnapshot)
    assert event.symbol == "BTCUSDT"
    assert event.event_time_ms is None
    assert len(event.bids) == len(event.asks) == 20
    assert event.bids[0] == (102571.17, 0.3898)


# --------------------------------------------------------------------------------------
# Control frames

CONTROL_EXPECTED = [
    ("subscribe_ack", None, 1),
    ("error", {"code": 2, "msg": "Invalid request: invalid stream"}, 2),
    ("error", {"code": 3, "msg": "Invalid json"}, None),
    ("error", {"code": 2, "msg": "Invalid request: invalid stream"}, None),
    ("subscribe_ack", None, 1),
    ("subscribe_ack", None, 312),
    ("list_subscriptions", ["btcusdt@aggTrade"], 3),
    ("subscribe_ack", None, 5),
    ("property", True, 2),
    ("error", {"code": 1, "msg": "Invalid value type: expected Boolean"}, None),
    ("error", {"code": 2, "msg": "Invalid request: property name must be a string"}, None),
    ("error", {"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"}, None),
    ("error", {"code": 2, "msg": "Invalid request: too many parameters"}, None),
    ("error", {"code": 2, "msg": "Invalid request: missing field `method` at line 1 column 73"},
     None),
    ("server_shutdown", {"e": "serverShutdown", "E": 1770123456789}, None),
    ("server_shutdown", {"e": "serverShutdown", "E": 1770123456789}, None),
    ("error", {"code": -1121, "msg": "Invalid symbol."}, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("number", "expected"), list(enumerate(CONTROL_EXPECTED, 1)), ids=lambda v: str(v)[:30]
)
def test_control_and_error_frames(number: int, expected: tuple) -> None:
    frame = lines("control_and_errors.jsonl")[number - 1]
    kind, payload, request_id = expected
    assert kind in CONTROL_KINDS
    assert decode(frame) == Control(kind, payload, request_id)
    assert decode(frame.decode()) == Control(kind, payload, request_id)


def test_control_file_is_fully_covered() -> None:
    assert len(lines("control_and_errors.jsonl")) == len(CONTROL_EXPECTED)


@pytest.mark.parametrize("number", range(1, len(CONTROL_EXPECTED) + 1))
def test_control_frames_on_a_raw_stream(number: int) -> None:
    frame = lines("control_and_errors.jsonl")[number - 1]
    expected = decode(frame)
    for stream in ("btcusdt@trade", "btcusdt@depth20@100ms", "btcusdt@bookTicker"):
        assert BinanceDecoder().decode_raw(stream, frame, AT, WALL) == expected


# --------------------------------------------------------------------------------------
# Raw streams (/ws/<stream>) and the documentation's examples

DOCS_STREAMS = ["bnbbtc@aggTrade", "bnbbtc@trade", "bnbusdt@bookTicker", None, "bnbbtc@depth"]


def test_docs_examples_decode_as_raw_payloads() -> None:
    frames = lines("docs_examples.jsonl")
    assert len(frames) == len(DOCS_STREAMS)
    decoder = BinanceDecoder()
    events = {}
    for stream, frame in zip(DOCS_STREAMS, frames, strict=True):
        if stream is None:
            assert decode_rest_snapshot(frame) == (160, ((0.0024, 10.0),), ((0.0026, 100.0),))
            continue
        events[stream] = decoder.decode_raw(stream, frame, AT, WALL)
    assert events["bnbbtc@aggTrade"] == Trade(
        "BNBBTC", 0.001, 100.0, True, 12345, 1672515782136, 1672515782136, AT, WALL, "aggTrade"
    )
    assert events["bnbbtc@trade"] == Trade(
        "BNBBTC", 0.001, 100.0, True, 12345, 1672515782136, 1672515782136, AT, WALL, "trade"
    )
    assert events["bnbusdt@bookTicker"] == BookTicker(
        "BNBUSDT", 25.3519, 31.21, 25.3652, 40.66, 400900217, AT, WALL
    )
    assert events["bnbbtc@depth"] == DepthDiff(
        "BNBBTC", 157, 160, ((0.0024, 10.0),), ((0.0026, 100.0),), 1672515782136, AT, WALL
    )


@pytest.mark.parametrize("name", ["spot_trade.jsonl", "spot_depth_diff.jsonl"])
def test_raw_mode_matches_combined_mode(name: str) -> None:
    decoder = BinanceDecoder()
    for frame in lines(name)[:50]:
        envelope = json.loads(frame)
        data = json.dumps(envelope["data"])
        raw = decoder.decode_raw(envelope["stream"], data, AT, WALL)
        assert raw == decoder.decode(frame, AT, WALL)


RAW_BAD = [
    ("btcusdt@kline_1m", '{"e":"kline"}', "unknown_stream"),
    ("BTCUSDT@trade", '{"e":"trade"}', "unknown_stream"),
    ("btcusdt@trade", '{"e":"trade","s":"BTCUSDT"', "malformed_json"),
    ("btcusdt@trade", b"\xff\xfe\x00garbage", "binary_frame"),
    ("btcusdt@trade", '{"e":"trade","s":"BTCUSDT"}', "invalid_payload"),
    ("btcusdt@trade", "[]", "invalid_payload"),
    ("btcusdt@trade", '{"s":"BTCUSDT","p":"NaN","q":"1","m":true,"t":1,"T":1}', "invalid_value"),
    ("btcusdt@trade", '{"s":"ETHUSDT","p":"1","q":"1","m":true,"t":1,"T":1}', "invalid_payload"),
    ("btcusdt@depth20@100ms", '{"result": 5}', "property"),
]


@pytest.mark.parametrize(("stream", "frame", "expected"), RAW_BAD)
def test_raw_mode_bad_frames(stream: str, frame: str | bytes, expected: str) -> None:
    result = BinanceDecoder().decode_raw(stream, frame, AT, WALL)
    if expected in CONTROL_KINDS:
        assert isinstance(result, Control)
        assert result.kind == expected
    else:
        assert isinstance(result, BadFrame)
        assert result.reason == expected


# --------------------------------------------------------------------------------------
# Bad frames: each lands on the right reason, and nothing raises.

TRADE = '{"e":"trade","E":1,"s":"BTCUSDT","t":7,"p":"%s","q":"%s","T":1,"m":true,"M":true}'
BOOK = '{"u":1,"s":"BTCUSDT","b":"%s","B":"%s","a":"%s","A":"%s"}'
DIFF = '{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":%s,"u":%s,"b":%s,"a":%s}'
PARTIAL = '{"lastUpdateId":5,"bids":%s,"asks":%s}'


def wrap(stream: str, data: str) -> str:
    return f'{{"stream":"{stream}","data":{data}}}'


TRUNCATED = lines("spot_depth_diff.jsonl")[0][:100]

BAD_FRAMES = [
    # malformed
    ("empty", "", "malformed_json"),
    ("not json", "hello", "malformed_json"),
    ("truncated envelope", '{"stream":"btcusdt@trade","data":{', "malformed_json"),
    ("truncated recording", TRUNCATED, "malformed_json"),
    ("truncated recording, str", TRUNCATED.decode(), "malformed_json"),
    ("trailing garbage", wrap("btcusdt@trade", TRADE % ("1", "1")) + "}", "malformed_json"),
    ("single quotes", "{'stream': 'btcusdt@trade'}", "malformed_json"),
    # binary
    ("png header", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary_frame"),
    ("zlib frame", zlib.compress(lines("spot_trade.jsonl")[0]), "binary_frame"),
    ("control bytes", b"\x00\x01\x02\x03", "binary_frame"),
    ("invalid utf-8", b'{"stream":"\xff"}', "binary_frame"),
    ("invalid utf-8 in data", b'{"stream":"btcusdt@trade","data":{"s":"\xff"}}', "binary_frame"),
    ("deep nesting", '{"stream":"btcusdt@trade","data":' + "[" * 100_000, "invalid_payload"),
    ("deep nesting in data", wrap("btcusdt@trade", "[" * 5000 + "]" * 5000), "invalid_payload"),
    # unknown streams, including wrong case
    ("kline", wrap("btcusdt@kline_1m", "{}"), "unknown_stream"),
    ("miniTicker arr", wrap("!miniTicker@arr", "[]"), "unknown_stream"),
    ("250ms diff", wrap("btcusdt@depth@250ms", DIFF % (1, 2, "[]", "[]")), "unknown_stream"),
    ("depth15", wrap("btcusdt@depth15", PARTIAL % ("[]", "[]")), "unknown_stream"),
    ("no symbol", wrap("@trade", TRADE % ("1", "1")), "unknown_stream"),
    ("no kind", wrap("btcusdt", TRADE % ("1", "1")), "unknown_stream"),
    ("upper symbol", wrap("BTCUSDT@trade", TRADE % ("1", "1")), "unknown_stream"),
    ("lower aggtrade", wrap("btcusdt@aggtrade", TRADE % ("1", "1")), "unknown_stream"),
    ("lower bookticker", wrap("btcusdt@bookticker", BOOK % ("1", "1", "2", "1")), "unknown_stream"),
    ("upper Depth", wrap("btcusdt@Depth20@100ms", PARTIAL % ("[]", "[]")), "unknown_stream"),
    ("upper 100MS", wrap("btcusdt@depth@100MS", DIFF % (1, 2, "[]", "[]")), "unknown_stream"),
    # missing fields / wrong shapes
    ("empty object", "{}", "invalid_payload"),
    ("top-level array", "[1, 2]", "invalid_payload"),
    ("top-level string", '"btcusdt@trade"', "invalid_payload"),
    ("top-level null", "null", "invalid_payload"),
    ("stream not a string", '{"stream":5,"data":{}}', "invalid_payload"),
    ("no data", '{"stream":"btcusdt@trade"}', "invalid_payload"),
    ("null data", wrap("btcusdt@trade", "null"), "invalid_payload"),
    ("data is a list", wrap("btcusdt@trade", "[]"), "invalid_payload"),
    ("trade without price", wrap("btcusdt@trade", '{"s":"BTCUSDT","q":"1","t":1,"T":1,"m":true}'),
     "invalid_payload"),
    ("aggTrade payload on trade stream",
     wrap("btcusdt@trade", lines("spot_aggtrade.jsonl")[0].decode().split('"data":')[1][:-1]),
     "invalid_payload"),
    ("diff without U", wrap("btcusdt@depth", '{"s":"BTCUSDT","u":1,"b":[],"a":[]}'),
     "invalid_payload"),
    ("partial without bids", wrap("btcusdt@depth5", '{"lastUpdateId":1,"asks":[]}'),
     "invalid_payload"),
    ("partial without id", wrap("btcusdt@depth5", '{"bids":[],"asks":[]}'), "invalid_payload"),
    ("bookTicker without A",
     wrap("btcusdt@bookTicker", '{"u":1,"s":"BTCUSDT","b":"1","B":"1","a":"2"}'),
     "invalid_payload"),
    # wrong types
    ("price is bool", wrap("btcusdt@trade", TRADE.replace('"%s"', "true", 1) % "1"),
     "invalid_payload"),
    ("price is text", wrap("btcusdt@trade", TRADE % ("abc", "1")), "invalid_payload"),
    ("price is empty", wrap("btcusdt@trade", TRADE % ("", "1")), "invalid_payload"),
    ("trade id is text", wrap("btcusdt@trade", TRADE.replace('"t":7', '"t":"x"') % ("1", "1")),
     "invalid_payload"),
    ("levels not a list", wrap("btcusdt@depth@100ms", DIFF % (1, 2, '"x"', "[]")),
     "invalid_payload"),
    ("level of 3", wrap("btcusdt@depth@100ms", DIFF % (1, 2, '[["1","2","3"]]', "[]")),
     "invalid_payload"),
    ("level of 1", wrap("btcusdt@depth@100ms", DIFF % (1, 2, '[["1"]]', "[]")), "invalid_payload"),
    ("level is object", wrap("btcusdt@depth5", PARTIAL % ('[{"p":"1"}]', "[]")), "invalid_payload"),
    ("U after u", wrap("btcusdt@depth@100ms", DIFF % (5, 4, "[]", "[]")), "invalid_payload"),
    ("fractional id", wrap("btcusdt@depth@100ms", DIFF % (1.5, 2, "[]", "[]")), "invalid_payload"),
    # invalid values
    ("price NaN", wrap("btcusdt@trade", TRADE % ("NaN", "1")), "invalid_value"),
    ("price nan", wrap("btcusdt@trade", TRADE % ("nan", "1")), "invalid_value"),
    ("price inf", wrap("btcusdt@trade", TRADE % ("inf", "1")), "invalid_value"),
    ("price Infinity", wrap("btcusdt@trade", TRADE % ("Infinity", "1")), "invalid_value"),
    ("price overflows", wrap("btcusdt@trade", TRADE % ("1e400", "1")), "invalid_value"),
    ("price negative", wrap("btcusdt@trade", TRADE % ("-1.5", "1")), "invalid_value"),
    ("price zero", wrap("btcusdt@trade", TRADE % ("0.00000000", "1")), "invalid_value"),
    ("quantity negative", wrap("btcusdt@trade", TRADE % ("1", "-0.1")), "invalid_value"),
    ("quantity NaN", wrap("btcusdt@aggTrade", TRADE.replace('"t"', '"a"') % ("1", "NaN")),
     "invalid_value"),
    ("ticker bid NaN", wrap("btcusdt@bookTicker", BOOK % ("NaN", "1", "2", "1")), "invalid_value"),
    ("ticker ask zero", wrap("btcusdt@bookTicker", BOOK % ("1", "1", "0", "1")), "invalid_value"),
    ("ticker qty -1", wrap("btcusdt@bookTicker", BOOK % ("1", "1", "2", "-1")), "invalid_value"),
    ("level price zero", wrap("btcusdt@depth@100ms", DIFF % (1, 2, '[["0","1"]]', "[]")),
     "invalid_value"),
    ("level price NaN", wrap("btcusdt@depth@100ms", DIFF % (1, 2, "[]", '[["NaN","1"]]')),
     "invalid_value"),
    ("level qty negative", wrap("btcusdt@depth20@100ms", PARTIAL % ('[["1","-2"]]', "[]")),
     "invalid_value"),
    ("level qty inf", wrap("btcusdt@depth20@100ms", PARTIAL % ("[]", '[["1","inf"]]')),
     "invalid_value"),
    # symbol checks
    ("trade symbol mismatch",
     wrap("btcusdt@trade", TRADE.replace("BTCUSDT", "ETHUSDT") % ("1", "1")), "invalid_payload"),
    ("diff symbol mismatch",
     wrap("ethusdt@depth@100ms", DIFF % (1, 2, "[]", "[]")), "invalid_payload"),
    ("ticker symbol mismatch",
     wrap("ethusdt@bookTicker", BOOK % ("1", "1", "2", "1")), "invalid_payload"),
    ("futures partial symbol mismatch",
     wrap("ethusdt@depth5", '{"s":"BTCUSDT","u":3,"b":[],"a":[]}'), "invalid_payload"),
    # control look-alikes
    ("shutdown stream, other event", wrap("!serverShutdown", '{"e":"other"}'), "invalid_payload"),
    ("bare unknown event", '{"e":"somethingNew","E":1}', "invalid_payload"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("frame", "reason"), [c[1:] for c in BAD_FRAMES], ids=[c[0] for c in BAD_FRAMES]
)
def test_bad_frames(frame: str | bytes, reason: str) -> None:
    assert reason in BAD_FRAME_REASONS
    result = decode(frame)
    assert isinstance(result, BadFrame), result
    assert result.reason == reason, result
    assert len(result.detail) <= 160


def test_too_large() -> None:
    frame = lines("spot_depth_partial.jsonl")[0]
    small = BinanceDecoder(max_frame_bytes=len(frame) - 1)
    assert decode(frame, small).reason == "too_large"
    assert isinstance(decode(frame, BinanceDecoder(max_frame_bytes=len(frame))), DepthSnapshot)
    assert small.decode_raw("btcusdt@trade", "x" * len(frame), AT, WALL).reason == "too_large"


def test_zero_quantity_levels_are_legal_in_diffs_and_partials() -> None:
    diff = decode(wrap("btcusdt@depth@100ms", DIFF % (1, 2, '[["1.5","0.00000000"]]', "[]")))
    assert isinstance(diff, DepthDiff)
    assert diff.bids == ((1.5, 0.0),)
    partial = decode(wrap("btcusdt@depth5", PARTIAL % ("[]", '[["2","0"]]')))
    assert isinstance(partial, DepthSnapshot)
    assert partial.asks == ((2.0, 0.0),)
    assert partial.bids == ()


def test_zero_quantity_trade_is_not_rejected() -> None:
    # Only negative quantities are invalid; a zero trade is odd but harmless.
    assert isinstance(decode(wrap("btcusdt@trade", TRADE % ("1", "0"))), Trade)


@settings(database=None, max_examples=500, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300),
        st.binary(max_size=40).map(lambda b: b'{"stream":"btcusdt@trade","data":{"s":"' + b),
        st.binary(max_size=40).map(lambda b: b'{"result":"' + b + b'","id":1}'),
    )
)
def test_never_raises_on_garbage(frame: str | bytes) -> None:
    result = decode(frame)
    assert isinstance(result, BadFrame | Control)
    if isinstance(result, BadFrame):
        assert result.reason in BAD_FRAME_REASONS


@pytest.mark.parametrize("name", MARKET_FILES)
def test_never_raises_on_any_truncation(name: str) -> None:
    decoder = BinanceDecoder()
    frame = lines(name)[0]
    for end in range(len(frame)):
        result = decoder.decode(frame[:end], AT, WALL)
        assert isinstance(result, BadFrame)
        assert result.reason == "malformed_json", (end, result)


# --------------------------------------------------------------------------------------
# Evolving payloads: unknown fields, E on partial books, futures-style partials


def test_unknown_fields_are_ignored() -> None:
    data = json.loads(lines("spot_depth_diff.jsonl")[3])
    expected = decode(lines("spot_depth_diff.jsonl")[3])
    data["data"]["newField"] = {"nested": [1, 2, {"x": None}]}
    data["data"]["pu"] = 12
    data["extra"] = "envelope field"
    assert decode(json.dumps(data)) == expected


def test_partial_book_event_time_is_used_when_present() -> None:
    frame = wrap(
        "btcusdt@depth10@100ms",
        '{"E":1700000000123,"lastUpdateId":9,"bids":[["2","1"]],"asks":[["3","1"]]}',
    )
    event = decode(frame)
    assert isinstance(event, DepthSnapshot)
    assert event.event_time_ms == 1700000000123
    assert event.last_update_id == 9


def test_futures_style_partial_book() -> None:
    frame = wrap(
        "btcusdt@depth5",
        '{"e":"depthUpdate","E":1571889248277,"T":1571889248276,"s":"BTCUSDT","U":390497796,'
        '"u":390497878,"pu":390497794,"b":[["7403.89","0.002"]],"a":[["7405.96","3.340"]]}',
    )
    assert decode(frame) == DepthSnapshot(
        "BTCUSDT", ((7403.89, 0.002),), ((7405.96, 3.34),), 390497878, 1571889248277, AT, WALL
    )


def test_lower_case_payload_symbol_is_accepted_and_normalised() -> None:
    event = decode(wrap("btcusdt@trade", TRADE.replace("BTCUSDT", "btcusdt") % ("1", "2")))
    assert isinstance(event, Trade)
    assert event.symbol == "BTCUSDT"


def test_missing_event_time_is_none() -> None:
    event = decode(wrap("btcusdt@trade", TRADE.replace('"E":1,', "") % ("1", "2")))
    assert isinstance(event, Trade)
    assert event.event_time_ms is None


def test_closed_stream_list() -> None:
    decoder = BinanceDecoder(streams=["btcusdt@trade"])
    assert isinstance(decode(wrap("btcusdt@trade", TRADE % ("1", "1")), decoder), Trade)
    other = decode(wrap("btcusdt@aggTrade", TRADE.replace('"t"', '"a"') % ("1", "1")), decoder)
    assert other == BadFrame("unknown_stream", "btcusdt@aggTrade")
    shutdown = decode(lines("control_and_errors.jsonl")[15], decoder)
    assert isinstance(shutdown, Control)
    assert shutdown.kind == "server_shutdown"
    with pytest.raises(ValueError, match="BTCUSDT@trade"):
        BinanceDecoder(streams=["BTCUSDT@trade"])


# --------------------------------------------------------------------------------------
# REST depth snapshots


@pytest.mark.parametrize("name", ["rest_depth_snapshot.jsonl", "us_rest_depth_snapshot.jsonl"])
def test_rest_snapshots_decode(name: str) -> None:
    bodies = lines(name)
    assert bodies
    for body in bodies:
        raw = json.loads(body)
        last_update_id, bids, asks = decode_rest_snapshot(body)
        assert last_update_id == raw["lastUpdateId"]
        assert bids == levels(raw["bids"])
        assert asks == levels(raw["asks"])
        assert type(bids) is tuple
        assert all(a[0] > b[0] for a, b in itertools.pairwise(bids))
        assert all(a[0] < b[0] for a, b in itertools.pairwise(asks))
        assert decode_rest_snapshot(body.decode()) == (last_update_id, bids, asks)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ('{"code":-1121,"msg":"Invalid symbol."}', "exchange error.*-1121.*Invalid symbol"),
        ('{"lastUpdateId":1,"bids":[["1","1"]],"asks":[["NaN","1"]]}', "invalid_value"),
        ('{"lastUpdateId":1,"bids":[["1","-1"]],"asks":[]}', "invalid_value"),
        ('{"lastUpdateId":1,"bids":[]}', "invalid_payload"),
        ('{"lastUpdateId":"x","bids":[],"asks":[]}', "invalid_payload"),
        ('{"lastUpdateId":1,"bids":[],"asks":[]', "malformed"),
        (b"\xff\x00", "binary_frame"),
        ("[]", "invalid_payload"),
        (b'{"lastUpdateId":1,"bids":[["\xff","1"]],"asks":[]}', "invalid_payload"),
        ("[" * 100_000, "invalid_payload|nested"),
    ],
)
def test_bad_rest_snapshots(body: str | bytes, match: str) -> None:
    with pytest.raises(BadSnapshot, match=match):
        decode_rest_snapshot(body)


# --------------------------------------------------------------------------------------
# Stream names and URLs

NAMES = [
    ("BTCUSDT", "trade", None, "btcusdt@trade"),
    ("btcusdt", "aggTrade", None, "btcusdt@aggTrade"),
    ("EthBtc", "bookTicker", None, "ethbtc@bookTicker"),
    ("BTCUSDT", "depth5", None, "btcusdt@depth5@100ms"),
    ("BTCUSDT", "depth10", 100, "btcusdt@depth10@100ms"),
    ("BTCUSDT", "depth20", None, "btcusdt@depth20@100ms"),
    ("BTCUSDT", "depth20", 1000, "btcusdt@depth20"),
    ("BTCUSDT", "depth", None, "btcusdt@depth@100ms"),
    ("BTCUSDT", "depth", 1000, "btcusdt@depth"),
    ("1000SATSUSDT", "depth", None, "1000satsusdt@depth@100ms"),
]


@pytest.mark.parametrize(("symbol", "kind", "update_ms", "name"), NAMES)
def test_stream_name(symbol: str, kind: str, update_ms: int | None, name: str) -> None:
    assert stream_name(symbol, kind, update_ms=update_ms) == name
    assert parse_stream_name(name) == (symbol.upper(), kind)


def test_every_kind_round_trips_and_has_a_pipeline_stream() -> None:
    assert set(KIND_STREAM) == set(KINDS)
    for market in BINANCE_MARKETS.values():
        symbol = market.symbol_example
        for kind in market.kinds:
            name = stream_name(symbol, kind, market=market.name)
            assert parse_stream_name(name, market.name) == (symbol, kind)
            assert KIND_STREAM[kind] in ("trade", "depth")


@pytest.mark.parametrize(
    ("symbol", "kind", "update_ms"),
    [
        ("BTCUSDT", "kline_1m", None),
        ("BTCUSDT", "Trade", None),
        ("BTCUSDT", "depth", 250),
        ("BTCUSDT", "trade", 100),
        ("BTC/USDT", "trade", None),
        ("", "trade", None),
        ("BTCÜSDT", "trade", None),
    ],
)
def test_stream_name_rejects(symbol: str, kind: str, update_ms: int | None) -> None:
    with pytest.raises(ValueError, match=repr(update_ms) if update_ms else "."):
        stream_name(symbol, kind, update_ms=update_ms)


@pytest.mark.parametrize(
    "name",
    [
        "BTCUSDT@trade",
        "btcusdt@Trade",
        "btcusdt@aggtrade",
        "btcusdt@depth@1000ms",
        "btcusdt@depth@250ms",
        "btcusdt@depth20@",
        "btcusdt@trade@100ms",
        "btcusdt@kline_1m",
        "btcusdt@",
        "@depth",
        "btcusdt",
        "!serverShutdown",
        "!miniTicker@arr",
        "btc-usdt@trade",
        "",
    ],
)
def test_parse_stream_name_unknown(name: str) -> None:
    assert parse_stream_name(name) is None


def test_combined_urls_chunk_at_1024() -> None:
    symbols = [f"sym{i}usdt" for i in range(2500)]
    streams = [stream_name(s, "depth") for s in symbols]
    urls = combined_urls(DEFAULT_BASE_URL, streams)
    assert len(urls) == 3
    prefix = "wss://stream.binance.com:9443/stream?streams="
    chunks = [url.removeprefix(prefix).split("/") for url in urls]
    assert all(url.startswith(prefix) for url in urls)
    assert [len(c) for c in chunks] == [1024, 1024, 452]
    assert [s for c in chunks for s in c] == streams


@pytest.mark.parametrize(
    ("count", "urls"), [(0, 0), (1, 1), (1023, 1), (1024, 1), (1025, 2), (2048, 2)]
)
def test_combined_urls_count(count: int, urls: int) -> None:
    streams = [stream_name(f"s{i}", "trade") for i in range(count)]
    assert len(combined_urls(DEFAULT_BASE_URL, streams)) == urls


def test_combined_urls_format_and_options() -> None:
    urls = combined_urls(
        "wss://stream.binance.us:9443/",
        ["btcusdt@trade", "ethusdt@trade", "btcusdt@trade", "bnbusdt@depth20@100ms"],
        max_streams=2,
    )
    assert urls == [
        "wss://stream.binance.us:9443/stream?streams=btcusdt@trade/ethusdt@trade",
        "wss://stream.binance.us:9443/stream?streams=bnbusdt@depth20@100ms",
    ]
    with pytest.raises(ValueError, match="BTCUSDT@trade"):
        combined_urls(DEFAULT_BASE_URL, ["BTCUSDT@trade"])
    for bad in (0, 1025):
        with pytest.raises(ValueError, match="max_streams"):
            combined_urls(DEFAULT_BASE_URL, ["btcusdt@trade"], max_streams=bad)
    assert raw_url(DEFAULT_BASE_URL, "btcusdt@depth") == (
        "wss://stream.binance.com:9443/ws/btcusdt@depth"
    )
    with pytest.raises(ValueError, match="kline"):
        raw_url(DEFAULT_BASE_URL, "btcusdt@kline_1m")


def test_event_prices_are_finite_floats() -> None:
    for name in MARKET_FILES:
        for frame in lines(name):
            event = decode(frame)
            values = (
                [event.price, event.quantity]
                if isinstance(event, Trade)
                else [event.bid_price, event.ask_price]
                if isinstance(event, BookTicker)
                else [v for level in event.bids + event.asks for v in level]
            )
            assert all(type(v) is float and math.isfinite(v) for v in values)
