"""Market models as pure functions of ``now``: the demo's phases, exact rates, replay."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from oraculo_trio.mockexchange import (
    DEMO_PERIOD,
    Instrument,
    Phase,
    RandomWalkMarket,
    ReplayMarket,
    Script,
    ScriptedMarket,
    demo_phases,
    demo_script,
    format_units,
    synthetic_symbols,
)

START = 1_700_000_000.0
DT = 0.1
CYCLES = 2


def run_demo(seed: int = 0) -> list[tuple[float, list[tuple[str, dict[str, Any]]]]]:
    """Two demo cycles at 100 ms ticks: (cycle offset, frames) per tick."""
    market = ScriptedMarket(demo_script(), seed=seed, start=START)
    ticks = []
    for index in range(int(CYCLES * DEMO_PERIOD / DT)):
        now = START + index * DT
        ticks.append((round(index * DT % DEMO_PERIOD, 6), market.tick(now, DT)))
    return ticks


@pytest.fixture(scope="module")
def demo() -> list[tuple[float, list[tuple[str, dict[str, Any]]]]]:
    return run_demo()


def payloads(ticks, stream: str, lo: float, hi: float) -> list[dict[str, Any]]:
    """Payloads of ``stream`` in ticks whose offset is in [lo, hi)."""
    return [p for offset, frames in ticks if lo <= offset < hi for s, p in frames if s == stream]


def spread_bps(book: dict[str, Any]) -> float:
    bid, ask = float(book["bids"][0][0]), float(book["asks"][0][0])
    return (ask - bid) / ((ask + bid) / 2) * 1e4


def test_btc_trades_cross_50000_up_then_down_every_tick(demo) -> None:
    for cycle in range(CYCLES):
        ticks = demo[cycle * 200 : (cycle + 1) * 200]
        assert all(any(s == "btcusdt@trade" for s, _ in frames) for _, frames in ticks)
        prices = [(o, float(p["p"])) for o, f in ticks for s, p in f if s == "btcusdt@trade"]
        assert max(price for offset, price in prices if offset < 2.5) < 50_000
        first_above = min(offset for offset, price in prices if price > 50_000)
        assert 2.7 <= first_above <= 3.3
        assert max(price for offset, price in prices if 5.8 <= offset < 6.2) > 50_150
        last_above = max(offset for offset, price in prices if price > 50_000)
        assert 8.7 <= last_above <= 9.3
        assert max(price for offset, price in prices if offset >= 9.5) < 50_000


def test_eth_spread_widens_between_3_and_7_seconds(demo) -> None:
    wide = payloads(demo, "ethusdt@depth20@100ms", 3.05, 6.95)
    assert wide
    assert all(28 <= spread_bps(book) <= 32 for book in wide)
    calm = payloads(demo, "ethusdt@depth20@100ms", 0, 2.95) + payloads(
        demo, "ethusdt@depth20@100ms", 7.05, 20
    )
    assert all(spread_bps(book) < 2 for book in calm)


def test_sol_block_trade_once_per_cycle_and_3_percent_rise(demo) -> None:
    big = [
        (offset, p)
        for offset, frames in demo
        for s, p in frames
        if s == "solusdt@trade" and float(p["p"]) * float(p["q"]) > 1_000_000
    ]
    assert len(big) == CYCLES
    assert all(4.0 <= offset < 4.2 for offset, _ in big)
    aggs = [
        p
        for _, f in demo
        for s, p in f
        if s == "solusdt@aggTrade" and float(p["p"]) * float(p["q"]) > 1_000_000
    ]
    assert len(aggs) == CYCLES

    def mid(offset: float) -> float:
        (ticker,) = payloads(demo[:200], "solusdt@bookTicker", offset, offset + DT / 2)
        return (float(ticker["b"]) + float(ticker["a"])) / 2

    assert mid(1.5) == pytest.approx(150, rel=0.002)
    assert mid(5.9) / mid(1.5) == pytest.approx(1.03, abs=0.003)
    assert mid(11.0) == pytest.approx(150, rel=0.002)


def test_bnb_book_imbalance_between_5_and_9_seconds(demo) -> None:
    def ratio(book: dict[str, Any]) -> float:
        bids = sum(float(q) for _, q in book["bids"][:10])
        asks = sum(float(q) for _, q in book["asks"][:10])
        return bids / asks

    imbalanced = payloads(demo, "bnbusdt@depth10@100ms", 5.05, 8.95)
    assert imbalanced
    assert all(ratio(book) == pytest.approx(5.0, rel=1e-6) for book in imbalanced)
    balanced = payloads(demo, "bnbusdt@depth20@100ms", 0, 4.95)
    assert all(ratio(book) == pytest.approx(1.0, rel=1e-6) for book in balanced)


def test_xrp_is_silent_between_10_and_16_seconds(demo) -> None:
    for offset, frames in demo:
        xrp = [s for s, _ in frames if s.startswith("xrpusdt@")]
        if 10.05 <= offset < 15.95:
            assert xrp == [], offset
        elif offset < 9.95 or offset >= 16.05:
            assert "xrpusdt@trade" in xrp, offset
            assert "xrpusdt@depth20@100ms" in xrp, offset


def test_every_stream_kind_and_slow_views_once_a_second(demo) -> None:
    counts = Counter(s for _, frames in demo[:200] for s, _ in frames)
    for kind in ("trade", "aggTrade", "bookTicker", "depth5@100ms", "depth10@100ms"):
        assert counts[f"btcusdt@{kind}"] == 200
    assert counts["btcusdt@depth20@100ms"] == 200
    assert counts["btcusdt@depth20"] == 20  # the 1000 ms view
    assert counts["xrpusdt@depth20@100ms"] == 140  # silent 6 s of 20


def test_scripted_market_is_deterministic_per_seed(demo) -> None:
    assert run_demo(seed=0) == demo
    assert run_demo(seed=1) != demo


def test_ids_increase_per_symbol(demo) -> None:
    last: dict[str, int] = defaultdict(int)
    for _, frames in demo:
        for stream, payload in frames:
            if stream.endswith("@trade"):
                assert payload["t"] > last[stream]
                last[stream] = payload["t"]
            elif stream.endswith("@depth20@100ms"):
                assert payload["lastUpdateId"] > last[stream]
                last[stream] = payload["lastUpdateId"]


def test_phase_table_is_data() -> None:
    phases = demo_phases()
    assert all(isinstance(phase, Phase) for phase in phases)
    assert {phase.symbol for phase in phases} == {
        "BTCUSDT",
        "ETHUSDT",
        "SOLUSDT",
        "BNBUSDT",
        "XRPUSDT",
    }
    extended = Script(
        demo_script().instruments,
        [*phases, Phase("BTCUSDT", 12.0, 14.0, trades_per_tick=0, note="no BTC trades")],
        period=DEMO_PERIOD,
    )
    market = ScriptedMarket(extended, start=0.0)
    frames = [market.tick(round(i * DT, 6), DT) for i in range(140)]
    assert not any(s == "btcusdt@trade" for s, _ in frames[130])
    assert any(s == "btcusdt@depth20@100ms" for s, _ in frames[130])


def test_script_validation() -> None:
    with pytest.raises(ValueError, match="end"):
        Phase("BTCUSDT", 5.0, 5.0)
    instrument = Instrument("BTCUSDT", mid=1.0, tick_size=0.01)
    with pytest.raises(ValueError, match="not an instrument"):
        Script([instrument], [Phase("ETHUSDT", 0.0, 1.0)], period=10.0)
    with pytest.raises(ValueError, match="after the period"):
        Script([instrument], [Phase("BTCUSDT", 0.0, 11.0)], period=10.0)


def test_format_units() -> None:
    assert format_units(5_000_001_000_000) == "50000.01000000"
    assert format_units(1) == "0.00000001"
    assert format_units(0) == "0.00000000"


@pytest.mark.parametrize(
    ("rate", "trade_ratio"), [(1_500.0, 0.2), (7.0, 0.2), (333.3, 0.5), (4_500.0, 0.0)]
)
def test_random_walk_rate_is_exact_over_100_ticks(rate: float, trade_ratio: float) -> None:
    market = RandomWalkMarket(synthetic_symbols(50), rate, trade_ratio=trade_ratio, seed=3)
    counts = []
    kinds: Counter[str] = Counter()
    for index in range(100):
        streams = [stream for stream, _ in market.tick(START + index * DT, DT)]
        counts.append(len(streams))
        kinds.update(stream.split("@", 1)[1] for stream in streams)
    assert sum(counts) == round(rate * 10)
    assert max(counts) - min(counts) <= 1  # spread evenly, not bunched
    assert set(kinds) <= {"depth20@100ms", "trade"}
    assert kinds["trade"] == round(rate * 10 * trade_ratio)


def test_random_walk_snapshots() -> None:
    market = RandomWalkMarket(["BTCUSDT", "ETHUSDT"], 100.0, levels=5, trade_ratio=0.2)
    frames = [f for i in range(10) for f in market.tick(START + i * DT, DT)]
    books = [p for s, p in frames if s.endswith("@depth5@100ms")]
    assert books
    for book in books:
        assert list(book) == ["lastUpdateId", "bids", "asks"]
        assert len(book["bids"]) == len(book["asks"]) == 5
        bids = [float(p) for p, _ in book["bids"]]
        asks = [float(p) for p, _ in book["asks"]]
        assert bids == sorted(bids, reverse=True)
        assert asks == sorted(asks)
        assert bids[0] < asks[0]
    assert {s for s, _ in frames} == {
        "btcusdt@depth5@100ms",
        "ethusdt@depth5@100ms",
        "btcusdt@trade",
        "ethusdt@trade",
    }


def test_replay_yields_recorded_frames_in_order_and_loops(binance_data: Path) -> None:
    path = binance_data / "spot_trade.jsonl"
    recorded = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    market = ReplayMarket([path], rate_per_s=250.0)
    assert market.symbols == ["BTCUSDT"]
    frames = [f for i in range(10) for f in market.tick(START + i * DT, DT)]
    assert len(frames) == 250
    expected = [(r["stream"], r["data"]) for r in recorded]
    assert frames[:150] == expected
    assert frames[150:] == expected[:100]  # looped


def test_replay_retime_and_non_envelope_lines(binance_data: Path) -> None:
    market = ReplayMarket(
        [binance_data / "rest_depth_snapshot.jsonl", binance_data / "spot_aggtrade.jsonl"],
        rate_per_s=10.0,
        retime=True,
    )
    (stream, data), *_ = market.tick(START, 0.1)
    assert stream == "btcusdt@aggTrade"
    assert data["E"] == data["T"] == int(START * 1000)
    assert market.frames[0][1]["E"] != data["E"]  # the recording is untouched
    with pytest.raises(ValueError, match="no"):
        ReplayMarket([binance_data / "rest_depth_snapshot.jsonl"], rate_per_s=1.0)
