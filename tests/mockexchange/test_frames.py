"""Every frame kind the mock publishes decodes to Binance's exact shapes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import attrs
import trio

from oraculo_trio.mockexchange import (
    ExchangeSettings,
    MockExchange,
    RandomWalkMarket,
    ScriptedMarket,
    demo_script,
    synthetic_symbols,
)

DECIMAL = re.compile(r"^[0-9]+\.[0-9]{8}$")

TRADE_KEYS = ["e", "E", "s", "t", "p", "q", "T", "m", "M"]
AGG_TRADE_KEYS = ["e", "E", "s", "a", "p", "q", "f", "l", "T", "m", "M"]
BOOK_TICKER_KEYS = ["u", "s", "b", "B", "a", "A"]
PARTIAL_DEPTH_KEYS = ["lastUpdateId", "bids", "asks"]

ALL_KINDS = [
    "trade",
    "aggTrade",
    "bookTicker",
    "depth5@100ms",
    "depth10@100ms",
    "depth20@100ms",
    "depth5",
    "depth10",
    "depth20",
]


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_payload(stream: str, payload: Any) -> None:
    """Assert ``payload`` (decoded JSON) has the Binance spot shape of ``stream``'s kind."""
    symbol, kind = stream.split("@", 1)
    assert isinstance(payload, dict), stream
    if kind in ("trade", "aggTrade"):
        assert list(payload) == (TRADE_KEYS if kind == "trade" else AGG_TRADE_KEYS)
        assert payload["e"] == kind
        assert payload["s"] == symbol.upper()
        ids = ("t",) if kind == "trade" else ("a", "f", "l")
        assert all(is_int(payload[key]) for key in (*ids, "E", "T"))
        assert DECIMAL.match(payload["p"])
        assert DECIMAL.match(payload["q"])
        assert isinstance(payload["m"], bool)
        assert payload["M"] is True
    elif kind == "bookTicker":
        assert list(payload) == BOOK_TICKER_KEYS
        assert is_int(payload["u"])
        assert payload["s"] == symbol.upper()
        assert all(DECIMAL.match(payload[key]) for key in "bBaA")
        assert float(payload["b"]) < float(payload["a"])
    else:
        levels = int(re.match(r"depth(\d+)", kind)[1])  # type: ignore[index]
        assert list(payload) == PARTIAL_DEPTH_KEYS  # no E, no symbol, like spot
        assert is_int(payload["lastUpdateId"])
        for side in ("bids", "asks"):
            assert len(payload[side]) == levels
            for level in payload[side]:
                assert isinstance(level, list)
                assert len(level) == 2
                assert DECIMAL.match(level[0])
                assert DECIMAL.match(level[1])
        bids = [float(price) for price, _ in payload["bids"]]
        asks = [float(price) for price, _ in payload["asks"]]
        assert bids == sorted(bids, reverse=True)
        assert asks == sorted(asks)
        assert bids[0] < asks[0]


async def test_every_stream_kind_over_the_wire(connect) -> None:
    settings = ExchangeSettings(tick=0.02, max_requests_per_s=None)
    for batch_writes in (True, False):
        streams = {f"ethusdt@{kind}" for kind in ALL_KINDS}
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                exchange = MockExchange(
                    ScriptedMarket(), attrs.evolve(settings, batch_writes=batch_writes)
                )
                await nursery.start(exchange.serve)
                async with connect(nursery, exchange.stream_url(sorted(streams))) as ws:
                    while streams:
                        message = await ws.get_message()
                        assert isinstance(message, str)
                        frame = json.loads(message)
                        assert list(frame) == ["stream", "data"]
                        check_payload(frame["stream"], frame["data"])
                        streams.discard(frame["stream"])
                nursery.cancel_scope.cancel()


def test_scripted_and_random_frames_have_binance_shapes() -> None:
    market = ScriptedMarket(demo_script(), start=0.0)
    seen = set()
    for index in range(400):
        for stream, payload in market.tick(index * 0.1, 0.1):
            check_payload(stream, json.loads(json.dumps(payload)))
            seen.add(stream.split("@", 1)[1])
    assert seen == set(ALL_KINDS)
    walk = RandomWalkMarket(synthetic_symbols(3), 500.0, levels=10)
    for index in range(10):
        for stream, payload in walk.tick(index * 0.1, 0.1):
            check_payload(stream, json.loads(json.dumps(payload)))


def test_shapes_match_the_recordings(binance_data: Path) -> None:
    recorded = {}
    for name in ("spot_trade", "spot_aggtrade", "spot_bookticker", "spot_depth_partial"):
        line = (binance_data / f"{name}.jsonl").read_text().splitlines()[0]
        frame = json.loads(line)
        check_payload(frame["stream"], frame["data"])  # the checker agrees with Binance
        recorded[frame["stream"].split("@", 1)[1]] = frame["data"]
    ours = {}
    for stream, payload in ScriptedMarket(start=0.0).tick(0.0, 0.1):
        ours.setdefault(stream.split("@", 1)[1], payload)
    for kind, payload in recorded.items():
        assert list(ours[kind]) == list(payload), kind
