"""Decode cost per stream kind, on the recorded Binance frames (µs per frame).

Run: ``python benchmarks/bench_decode.py [--rounds N]``

For each kind: the full ``BinanceDecoder.decode`` (envelope + typed payload + value checks
+ event construction), from ``str`` and from ``bytes``, and the one-pass path the feed reader
takes for a frame whose stream name it read from the raw bytes (``stream_key`` +
``decode_keyed``); then, for the depth diff, the parts: envelope only, payload only, and the
attrs event construction alone.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from oraculo_trio.core.events import DepthDiff
from oraculo_trio.feeds.binance import BadFrame, BinanceDecoder
from oraculo_trio.feeds.binance_wire import Frame

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "binance"

CASES = {
    "trade": ("spot_trade.jsonl", None),
    "aggTrade": ("spot_aggtrade.jsonl", None),
    "bookTicker": ("spot_bookticker.jsonl", None),
    "depth20 (partial, 20+20 levels)": ("spot_depth_partial.jsonl", None),
    "depth diff (spot)": ("spot_depth_diff.jsonl", None),
    "depth diff (US)": ("us_depth_diff.jsonl", None),
    "control/error frames": ("control_and_errors.jsonl", None),
}


def _frames(name: str) -> list[bytes]:
    return [line for line in (DATA / name).read_bytes().splitlines() if line.strip()]


def _per_op(fn: Callable[[], object], ops: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best / ops * 1e6


def _repeat(frames: list, target: int = 20_000) -> list:
    return frames * max(1, target // len(frames))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    decoder = BinanceDecoder()
    print(
        f"{'stream kind':34} {'frames':>6} {'bytes/fr':>8} {'str µs':>7} {'bytes µs':>8}"
        f" {'keyed µs':>8}"
    )
    for label, (name, _) in CASES.items():
        raw = _frames(name)
        texts = [frame.decode() for frame in raw]
        for frame in raw:
            assert not isinstance(decoder.decode(frame, 0.0, 0.0), BadFrame), frame[:80]
        many_raw, many_text = _repeat(raw), _repeat(texts)
        decode = decoder.decode

        def run(frames: list = many_text, decode=decode) -> None:
            for frame in frames:
                decode(frame, 1.0, 2.0)

        def run_bytes(frames: list = many_raw, decode=decode) -> None:
            for frame in frames:
                decode(frame, 1.0, 2.0)

        def run_keyed(frames: list = many_raw, decoder=decoder) -> None:
            stream_key, decode_keyed = decoder.stream_key, decoder.decode_keyed
            for frame in frames:
                key = stream_key(frame)
                if key is None:
                    decoder.decode(frame, 1.0, 2.0)
                else:
                    decode_keyed(key, frame, 1.0, 2.0)

        us_text = _per_op(run, len(many_text), args.rounds)
        us_bytes = _per_op(run_bytes, len(many_raw), args.rounds)
        us_keyed = _per_op(run_keyed, len(many_raw), args.rounds)
        size = sum(map(len, raw)) / len(raw)
        print(
            f"{label:34} {len(raw):6d} {size:8.0f} {us_text:7.2f} {us_bytes:8.2f} {us_keyed:8.2f}"
        )

    # Parts of the depth-diff path.
    raw = _repeat(_frames("spot_depth_diff.jsonl"))
    envelope = msgspec.json.Decoder(Frame)
    datas = [envelope.decode(frame).data for frame in raw]
    payload_decoder = decoder._specs["nknusdt@depth@100ms"][2]
    sample = decoder.decode(raw[0], 1.0, 2.0)
    assert isinstance(sample, DepthDiff)

    def envelope_only() -> None:
        for frame in raw:
            envelope.decode(frame)

    def payload_only() -> None:
        for data in datas:
            payload_decoder.decode(data)

    def event_only(n: int = len(raw), s: DepthDiff = sample) -> None:
        for _ in range(n):
            DepthDiff(s.symbol, 1, 2, s.bids, s.asks, None, 1.0, 2.0)

    def stdlib_json() -> None:
        for frame in raw:
            data = json.loads(frame)["data"]
            [(float(p), float(q)) for p, q in data["b"]]
            [(float(p), float(q)) for p, q in data["a"]]

    print("depth diff (spot), parts:")
    print(f"  envelope only            {_per_op(envelope_only, len(raw), args.rounds):6.2f} µs")
    print(f"  payload only (checked)   {_per_op(payload_only, len(raw), args.rounds):6.2f} µs")
    print(f"  DepthDiff(...) only      {_per_op(event_only, len(raw), args.rounds):6.2f} µs")
    print(f"  json.loads + float()     {_per_op(stdlib_json, len(raw), args.rounds):6.2f} µs")


if __name__ == "__main__":
    main()
