"""The load market: frames with ``seq`` (and ``E``), exact trade ratios, popularity, alert
frames, and tick-based markets adapted to frame sources."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

import msgspec

from oraculo_trio.core.events import DepthSnapshot, Trade
from oraculo_trio.feeds.binance import BinanceDecoder
from oraculo_trio.mockexchange import (
    SPIKE_LEVEL,
    WIDE_SPREAD_BPS,
    Frame,
    LoadMarket,
    MarketSource,
    RandomWalkMarket,
    synthetic_symbols,
)

WALL = 1_700_000_000.0


def decode_all(frames: Iterable[Frame]) -> list[object]:
    decoder = BinanceDecoder()
    events = []
    for stream, payload in frames:
        envelope = msgspec.json.encode({"stream": stream, "data": payload})
        events.append(decoder.decode(envelope, 0.0, WALL))
    return events


def test_depth_frames_carry_seq_per_stream_and_e_unless_faithful() -> None:
    market = LoadMarket(synthetic_symbols(5), levels=10, alert_period=None)
    frames = [f for tick in range(20) for f in market.frames(12, int(WALL * 1000) + tick * 100)]
    seqs: dict[str, list[int]] = defaultdict(list)
    for stream, payload in frames:
        assert stream.endswith("@depth10@100ms")
        assert len(payload["bids"]) == len(payload["asks"]) == 10
        assert payload["E"] >= int(WALL * 1000)
        seqs[stream].append(payload["seq"])
    for numbers in seqs.values():
        assert numbers == list(range(1, len(numbers) + 1))
    # The service decodes them: E becomes the event time, seq is ignored.
    events = decode_all(frames[:5])
    assert all(isinstance(e, DepthSnapshot) and e.event_time_ms is not None for e in events)
    faithful = LoadMarket(synthetic_symbols(2), faithful=True, alert_period=None)
    assert all("E" not in payload for _, payload in faithful.frames(4, 0))
    assert all(e.event_time_ms is None for e in decode_all(faithful.frames(4, 0)))


def test_mixed_frames_keep_the_trade_ratio_exactly_and_decode() -> None:
    market = LoadMarket(synthetic_symbols(10), trade_ratio=0.2, alert_period=None)
    frames = [f for tick in range(50) for f in market.frames(37, tick * 100)]
    trades = [payload for stream, payload in frames if stream.endswith("@trade")]
    assert abs(len(trades) - 0.2 * len(frames)) <= 1
    assert market.depth_kinds == ("depth20",)
    assert market.trade_kinds == ("trade",)
    events = decode_all(frames)
    assert not [e for e in events if not isinstance(e, DepthSnapshot | Trade)]
    by_symbol: dict[str, list[int]] = defaultdict(list)
    for payload in trades:
        by_symbol[payload["s"]].append(payload["seq"])
    assert all(seq == list(range(1, len(seq) + 1)) for seq in by_symbol.values())


def test_distributions() -> None:
    uniform = LoadMarket(synthetic_symbols(4), alert_period=None)
    counts = Counter(stream for stream, _ in uniform.frames(400, 0))
    assert set(counts.values()) == {100}
    zipf = LoadMarket(synthetic_symbols(20), distribution="zipf:1.2", alert_period=None, seed=3)
    counts = Counter(stream for stream, _ in zipf.frames(20_000, 0))
    first, last = counts["sym000usdt@depth20@100ms"], counts["sym019usdt@depth20@100ms"]
    assert first > 10 * last > 0


def spread_bps(payload: dict) -> float:
    bid, ask = float(payload["bids"][0][0]), float(payload["asks"][0][0])
    return (ask - bid) / ((ask + bid) / 2) * 10_000


def test_alert_frames_come_once_per_period_whatever_the_rate() -> None:
    for rate_per_burst in (5, 500):
        market = LoadMarket(synthetic_symbols(10), alert_period=0.5)
        wide = 0
        for tick in range(30):  # 3 s of 100 ms bursts
            for _, payload in market.frames(rate_per_burst, tick * 100):
                if spread_bps(payload) > WIDE_SPREAD_BPS:
                    wide += 1
                else:
                    assert spread_bps(payload) < WIDE_SPREAD_BPS / 2
        assert wide == market.alerts_sent == 5
    trades = LoadMarket(synthetic_symbols(3), trade_ratio=1.0, alert_period=0.5)
    prices = [float(p["p"]) for tick in range(10) for _, p in trades.frames(10, tick * 100)]
    assert sum(price > SPIKE_LEVEL for price in prices) == 1
    assert max(price for price in prices if price < SPIKE_LEVEL) < SPIKE_LEVEL / 10


def test_a_tick_based_market_plugs_in_through_market_source() -> None:
    inner = RandomWalkMarket(synthetic_symbols(3), 100.0, trade_ratio=0.5)
    source = MarketSource(inner, depth_kinds=("depth20",), trade_kinds=("trade",))
    frames = source.frames(7, 123_000) + source.frames(25, 123_100)
    assert len(frames) == 32
    seqs: dict[str, list[int]] = defaultdict(list)
    for stream, payload in frames:
        seqs[stream].append(payload["seq"])
        assert "E" in payload
    assert all(seq == list(range(1, len(seq) + 1)) for seq in seqs.values())
    assert source.symbols == inner.symbols
