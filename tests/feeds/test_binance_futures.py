"""Markets other than spot: stream names, market-qualified events, futures payloads.

The recorded USD-M and COIN-M frames (tests/data/binance-futures) decode byte for byte;
mark prices and liquidations follow Binance's documented examples.
"""

from __future__ import annotations

import json

import pytest

from oraculo_trio.core.events import DepthDiff, DepthSnapshot, Liquidation, MarkPrice, Trade
from oraculo_trio.feeds.binance import BadFrame, BinanceDecoder, stream_name
from oraculo_trio.feeds.binance_markets import BINANCE_MARKETS, binance_market
from tests.data import BINANCE_FUTURES_DATA

AT, WALL = 5.0, 1_700_000_000.0


def recorded(name: str) -> list[dict]:
    path = BINANCE_FUTURES_DATA / name
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def envelope(stream: str, data: dict) -> bytes:
    return json.dumps({"stream": stream, "data": data}).encode()


@pytest.mark.parametrize(("market", "file"), [("usdm", "usdm"), ("coinm", "coinm")])
def test_recorded_futures_diffs_decode_with_pu_under_market_names(market: str, file: str) -> None:
    decoder = BinanceDecoder(market=market)
    lines = (BINANCE_FUTURES_DATA / f"{file}_depth_diff.jsonl").read_bytes().splitlines()
    assert lines
    for line in lines:
        event = decoder.decode(line, AT, WALL)
        data = json.loads(line)["data"]
        assert isinstance(event, DepthDiff), event
        assert event.symbol == f"{market}:{data['s']}"
        assert (event.first_update_id, event.final_update_id) == (data["U"], data["u"])
        assert event.previous_update_id == data["pu"]
        assert event.event_time_ms == data["E"]
        assert event.bids == tuple((float(p), float(q)) for p, q in data["b"])


@pytest.mark.parametrize("market", ["usdm", "coinm"])
def test_recorded_futures_agg_trades_decode(market: str) -> None:
    decoder = BinanceDecoder(market=market)
    for record in recorded(f"{market}_aggtrade.jsonl"):
        event = decoder.decode(json.dumps(record), AT, WALL)
        data = record["data"]
        assert isinstance(event, Trade), event
        assert (event.symbol, event.trade_id, event.kind) == (
            f"{market}:{data['s']}",
            data["a"],
            "aggTrade",
        )


def test_the_spot_decoder_does_not_know_futures_streams() -> None:
    line = (BINANCE_FUTURES_DATA / "coinm_depth_diff.jsonl").read_bytes().splitlines()[0]
    result = BinanceDecoder().decode(line, AT, WALL)
    assert isinstance(result, BadFrame) and result.reason == "unknown_stream"


def test_futures_partial_books_are_diff_shaped() -> None:
    data = {
        "e": "depthUpdate", "E": 1571889248277, "T": 1571889248276, "s": "BTCUSDT",
        "U": 390497796, "u": 390497878, "pu": 390497794,
        "b": [["7403.89", "0.002"], ["7403.90", "3.906"]], "a": [["7405.96", "3.340"]],
    }  # fmt: skip
    event = BinanceDecoder(market="usdm").decode(envelope("btcusdt@depth20@500ms", data), AT, WALL)
    assert event == DepthSnapshot(
        "usdm:BTCUSDT",
        ((7403.89, 0.002), (7403.90, 3.906)),
        ((7405.96, 3.340),),
        390497878,
        1571889248277,
        AT,
        WALL,
    )
    missing = BinanceDecoder(market="usdm").decode(
        envelope("btcusdt@depth5", {k: v for k, v in data.items() if k != "pu"}), AT, WALL
    )
    assert isinstance(missing, BadFrame) and missing.reason == "invalid_payload"


def test_mark_price_of_a_perpetual_and_of_a_delivery_contract() -> None:
    perpetual = {
        "e": "markPriceUpdate", "E": 1562305380000, "s": "BTCUSDT", "p": "11794.15000000",
        "i": "11784.62659091", "P": "11784.25641265", "r": "0.00038167", "T": 1562306400000,
    }  # fmt: skip
    event = BinanceDecoder(market="usdm").decode(
        envelope("btcusdt@markPrice@1s", perpetual), AT, WALL
    )
    assert isinstance(event, MarkPrice)
    assert (event.symbol, event.funding_rate, event.next_funding_time_ms) == (
        "usdm:BTCUSDT",
        0.00038167,
        1562306400000,
    )
    assert event.basis_bps == pytest.approx((11794.15 - 11784.62659091) / 11784.62659091 * 1e4)
    delivery = {
        "e": "markPriceUpdate", "E": 1596095725000, "s": "BTCUSD_201225",
        "p": "10934.62615417", "P": "10962.17178236", "i": "10933.62615417", "r": "", "T": 0,
    }  # fmt: skip
    event = BinanceDecoder(market="coinm").decode(
        envelope("btcusd_201225@markPrice@1s", delivery), AT, WALL
    )
    assert isinstance(event, MarkPrice)
    assert (event.funding_rate, event.next_funding_time_ms) == (None, None)
    bad = BinanceDecoder(market="usdm").decode(
        envelope("btcusdt@markPrice@1s", {**perpetual, "r": "lots"}), AT, WALL
    )
    assert isinstance(bad, BadFrame) and bad.reason == "invalid_value"


def test_liquidations_carry_their_notional() -> None:
    usdm = {
        "e": "forceOrder", "E": 1568014460893,
        "o": {"s": "BTCUSDT", "S": "SELL", "o": "LIMIT", "f": "IOC", "q": "0.014", "p": "9910",
              "ap": "9910", "X": "FILLED", "l": "0.014", "z": "0.014", "T": 1568014460893},
    }  # fmt: skip
    event = BinanceDecoder(market="usdm").decode(envelope("btcusdt@forceOrder", usdm), AT, WALL)
    assert isinstance(event, Liquidation)
    assert (event.symbol, event.side, event.quantity) == ("usdm:BTCUSDT", "SELL", 0.014)
    assert event.notional == pytest.approx(9910 * 0.014)
    coinm = {
        "e": "forceOrder", "E": 1591154240950,
        "o": {"s": "BTCUSD_200925", "ps": "BTCUSD", "S": "SELL", "o": "LIMIT", "f": "IOC",
              "q": "1", "p": "9425.5", "ap": "9496.5", "X": "FILLED", "l": "1", "z": "1",
              "T": 1591154240949},
    }  # fmt: skip
    event = BinanceDecoder(market="coinm").decode(
        envelope("btcusd_200925@forceOrder", coinm), AT, WALL
    )
    assert isinstance(event, Liquidation)
    assert event.notional == 100.0  # one BTC contract is 100 USD


def test_a_payload_of_another_symbol_is_invalid() -> None:
    line = (BINANCE_FUTURES_DATA / "usdm_depth_diff.jsonl").read_bytes().splitlines()[0]
    data = json.loads(line)["data"]
    stream = json.loads(line)["stream"].replace(data["s"].lower(), "ethusdt")
    result = BinanceDecoder(market="usdm").decode(envelope(stream, data), AT, WALL)
    assert isinstance(result, BadFrame) and result.reason == "invalid_payload"


def test_binance_us_events_are_named_by_market() -> None:
    data = {"e": "trade", "E": 1, "s": "BTCUSD", "t": 7, "p": "50000.1", "q": "0.5", "T": 1,
            "m": True}  # fmt: skip
    event = BinanceDecoder(market="us").decode(envelope("btcusd@trade", data), AT, WALL)
    assert isinstance(event, Trade) and event.symbol == "us:BTCUSD"


STREAM_NAMES = [
    ("coinm", "BTCUSD_PERP", "depth", None, "btcusd_perp@depth@100ms"),
    ("coinm", "btcusd_251226", "aggTrade", None, "btcusd_251226@aggTrade"),
    ("usdm", "BTCUSDT", "depth", 250, "btcusdt@depth"),
    ("usdm", "BTCUSDT", "depth20", 500, "btcusdt@depth20@500ms"),
    ("usdm", "BTCUSDT_250328", "markPrice", None, "btcusdt_250328@markPrice@1s"),
    ("usdm", "BTCUSDT", "forceOrder", None, "btcusdt@forceOrder"),
    ("spot", "BTCUSDT", "depth", 1000, "btcusdt@depth"),
    ("us", "BTCUSD", "bookTicker", None, "btcusd@bookTicker"),
]


@pytest.mark.parametrize(("market", "symbol", "kind", "update_ms", "name"), STREAM_NAMES)
def test_stream_names_per_market(
    market: str, symbol: str, kind: str, update_ms: int | None, name: str
) -> None:
    assert stream_name(symbol, kind, update_ms=update_ms, market=market) == name


@pytest.mark.parametrize(
    ("market", "symbol", "kind", "update_ms", "named"),
    [
        ("coinm", "BTCUSD", "depth", None, "COIN-M futures symbol"),
        ("spot", "BTCUSD_PERP", "trade", None, "spot symbol"),
        ("usdm", "BTCUSDT", "depth", 1000, "1000"),
        ("usdm", "BTCUSDT", "trade", None, "offers aggTrade"),
        ("spot", "BTCUSDT", "markPrice", None, "offers trade"),
    ],
)
def test_stream_names_a_market_does_not_offer(
    market: str, symbol: str, kind: str, update_ms: int | None, named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        stream_name(symbol, kind, update_ms=update_ms, market=market)


@pytest.mark.parametrize(
    ("market", "limit", "weight"),
    [("spot", 1000, 50), ("spot", 5000, 250), ("us", 5000, 50), ("usdm", 1000, 20),
     ("usdm", 50, 2), ("coinm", 500, 10)],
)  # fmt: skip
def test_depth_weights_per_market(market: str, limit: int, weight: int) -> None:
    assert binance_market(market).depth_weight(limit) == weight


def test_futures_refuse_a_depth_limit_they_do_not_serve() -> None:
    with pytest.raises(ValueError, match="5, 10, 20, 50, 100, 500, 1000"):
        binance_market("coinm").depth_weight(200)


def test_every_market_has_its_rest_paths() -> None:
    paths = {name: market.path("depth") for name, market in BINANCE_MARKETS.items()}
    assert paths == {
        "spot": "/api/v3/depth",
        "us": "/api/v3/depth",
        "usdm": "/fapi/v1/depth",
        "coinm": "/dapi/v1/depth",
    }
    assert binance_market("coinm").path("time") == "/dapi/v1/time"
