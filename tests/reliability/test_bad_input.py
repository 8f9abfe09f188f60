"""Bad input from the exchange, under load: broken frames, bad content, odd ordering and
times. Every frame is counted under its reason, the connection survives (except a frame over
``feed.max_message_size``, which closes it: counted, then reconnected), nothing crashes."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import trio

from oraculo_trio.mockexchange import trade_payload
from oraculo_trio.observe.metrics import BAD_FRAME_REASONS
from tests.reliability.conftest import Mode
from tests.reliability.rig import Rig, check, loaded_service, reconnects, sample, until

MAX_MESSAGE = 65536


def envelope(stream: str, data: object) -> str:
    return json.dumps({"stream": stream, "data": data}, separators=(",", ":"))


def trade(
    trade_id: int,
    *,
    symbol: str = "BTCUSDT",
    price: object = "20.00000000",
    qty: object = "1.00000000",
    event_ms: int | None = None,
    stream: str = "btcusdt@trade",
    drop: Sequence[str] = (),
    **replace: object,
) -> str:
    now_ms = int(time.time() * 1000) if event_ms is None else event_ms
    payload = trade_payload(symbol, trade_id, "0", "0", now_ms, False)
    payload.update(p=price, q=qty, **replace)
    for key in drop:
        del payload[key]
    return envelope(stream, payload)


def book(update_id: int, *, stream: str = "ethusdt@depth20@100ms", **replace: object) -> str:
    payload = {
        "lastUpdateId": update_id,
        "E": int(time.time() * 1000),
        "bids": [["20.00000000", "1.00000000"], ["19.99000000", "2.00000000"]],
        "asks": [["20.01000000", "1.00000000"], ["20.02000000", "2.00000000"]],
    }
    payload.update(replace)
    return envelope(stream, payload)


def bad_counts(rig: Rig) -> dict[str, int]:
    return {
        reason: int(sample(rig.metrics, "oraculo_feed_bad_frames_total", reason=reason))
        for reason in BAD_FRAME_REASONS
    }


def drops(rig: Rig, reason: str) -> int:
    return int(
        sum(
            sample(rig.metrics, "oraculo_alerts_queue_dropped_total", stream=s, reason=reason)
            for s in ("depth", "trade")
        )
    )


async def send_all(rig: Rig, frames: Sequence[str | bytes]) -> None:
    for frame in frames:
        assert await rig.exchange.send_raw(frame) == 2  # the depth and the trade connection


async def wait_counted(rig: Rig, before: Mapping[str, int], expected: Mapping[str, int]) -> None:
    """Wait until the bad-frame counters grew by at least ``expected``."""

    def counted() -> bool:
        now = bad_counts(rig)
        return all(now[reason] - before[reason] >= n for reason, n in expected.items())

    await until(counted)


def grown(rig: Rig, before: Mapping[str, int]) -> dict[str, int]:
    now = bad_counts(rig)
    return {reason: now[reason] - before[reason] for reason in now if now[reason] != before[reason]}


async def test_broken_frames_are_counted_and_an_oversized_one_reconnects(
    tmp_path: Path, mode: Mode, scenario
) -> None:
    figures = scenario("bad-input/frames")
    repeat = mode.count(5, 200)
    valid = trade(10_000_001)
    frames: list[str | bytes] = [
        '{"stream":"btcusdt@trade","data":{',  # malformed JSON
        valid[: len(valid) // 2],  # truncated
        b"\x00\x9f\x92\x96\xff binary garbage",  # a binary frame, not UTF-8
        "",  # empty text frame
    ]
    expected_per_connection = {"malformed_json": 3 * repeat, "binary_frame": repeat}
    with trio.fail_after(mode.pick(30, 240)):
        async with loaded_service(
            tmp_path, mode.rate, overrides={"feed": {"max_message_size": MAX_MESSAGE}}
        ) as rig:
            await rig.wait_transitions(2)
            before = bad_counts(rig)
            for _ in range(repeat):
                await send_all(rig, frames)
            expected = {reason: 2 * n for reason, n in expected_per_connection.items()}
            await wait_counted(rig, before, expected)
            assert grown(rig, before) == expected
            # Larger than feed.max_message_size: the connection closes (1009), counted, and
            # the feed reconnects.
            accepted = rig.exchange.connections_accepted
            sent_at = trio.current_time()
            await send_all(rig, ["x" * (MAX_MESSAGE + 1)])
            await rig.wait_reconnected(accepted)
            figures.recovery_s = trio.current_time() - sent_at
            assert grown(rig, before) == {**expected, "too_large": 2}
            assert reconnects(rig.metrics, "closed_1009") == 2
            await rig.wait_transitions(2)
        await check(rig, figures, faults=2 * (len(frames) * repeat + 1))


# (frame, reason on the trade connection, reason on the depth connection); None: a valid
# message, evaluated. A stream the connection did not subscribe to is unknown_stream.
CONTENT: list[tuple[str, str | None, str | None]] = [
    (envelope("btcusdt@kline_1m", {"e": "kline"}), "unknown_stream", "unknown_stream"),
    (trade(1, stream="BTCUSDT@trade"), "unknown_stream", "unknown_stream"),
    (trade(2, stream="btcusdt@aggtrade"), "unknown_stream", "unknown_stream"),
    (trade(3, drop=["p"]), "invalid_payload", "unknown_stream"),
    (trade(4, drop=["s", "t"]), "invalid_payload", "unknown_stream"),
    (trade(5, t="five"), "invalid_payload", "unknown_stream"),
    (trade(6, price=True), "invalid_payload", "unknown_stream"),
    (trade(7, qty=[1]), "invalid_payload", "unknown_stream"),
    (envelope("btcusdt@trade", "a string"), "invalid_payload", "unknown_stream"),
    (envelope("btcusdt@trade", None), "invalid_payload", "unknown_stream"),
    (trade(8, price="NaN"), "invalid_value", "unknown_stream"),
    (trade(9, price="nan"), "invalid_value", "unknown_stream"),
    (trade(10, price="inf"), "invalid_value", "unknown_stream"),
    (trade(11, qty="-Infinity"), "invalid_value", "unknown_stream"),
    (trade(12, price="-20.0"), "invalid_value", "unknown_stream"),
    (trade(13, price="0"), "invalid_value", "unknown_stream"),
    (trade(14, qty="-1.5"), "invalid_value", "unknown_stream"),
    (trade(15, price="1e400"), "invalid_value", "unknown_stream"),
    (trade(16, symbol="ETHUSDT"), "invalid_payload", "unknown_stream"),  # not this stream's
    (book(1, bids=[["NaN", "1"]]), "unknown_stream", "invalid_value"),
    (book(2, asks=[["20.01", "-1"]]), "unknown_stream", "invalid_value"),
    (book(3, bids="none"), "unknown_stream", "invalid_payload"),
    (json.dumps({"error": {"code": 2, "msg": "Invalid request"}, "id": 7}), "exchange_error",
     "exchange_error"),
    (json.dumps({"result": None, "id": 8}), "control", "control"),  # an ack: not a frame
    (json.dumps({"unexpected": True}), "invalid_payload", "invalid_payload"),
    (json.dumps([1, 2, 3]), "invalid_payload", "invalid_payload"),
    # Valid, though odd: a lower-case symbol in the payload, a quantity of zero.
    (trade(17, symbol="btcusdt"), None, "unknown_stream"),
    (trade(18, qty="0"), None, "unknown_stream"),
    (book(4), "unknown_stream", None),
]  # fmt: skip


async def test_bad_content_is_counted_by_reason(tmp_path: Path, mode: Mode, scenario) -> None:
    figures = scenario("bad-input/content")
    repeat = mode.count(3, 100)
    expected: dict[str, int] = {}
    valid = 0
    for _, on_trade, on_depth in CONTENT:
        for reason in (on_trade, on_depth):
            if reason is None:
                valid += repeat
            elif reason != "control":
                expected[reason] = expected.get(reason, 0) + repeat
    with trio.fail_after(mode.pick(30, 240)):
        async with loaded_service(tmp_path, mode.rate) as rig:
            await rig.wait_transitions(2)
            before = bad_counts(rig)
            for _ in range(repeat):
                await send_all(rig, [frame for frame, _, _ in CONTENT])
            await wait_counted(rig, before, expected)
            assert grown(rig, before) == expected
            await rig.wait_transitions(2)
        await check(rig, figures, faults=2 * repeat * len(CONTENT))
    assert reconnects(rig.metrics, "closed_1006") == 0
    figures.detail["valid_odd_frames"] = valid


async def test_duplicates_disorder_and_odd_times_are_counted(
    tmp_path: Path, mode: Mode, scenario
) -> None:
    figures = scenario("bad-input/order-and-time")
    repeat = mode.count(3, 100)
    now_ms = int(time.time() * 1000)
    day_ms = 86_400_000
    with trio.fail_after(mode.pick(30, 240)):
        async with loaded_service(tmp_path, mode.rate) as rig:
            await rig.wait_transitions(2)
            stale_before = drops(rig, "stale_drop")
            for i in range(repeat):
                base = 20_000_000 + 100 * i
                frames = [
                    trade(base + 1),
                    trade(base + 1),  # a duplicate
                    trade(base + 3),
                    trade(base + 2),  # out of order
                    trade(base + 4, event_ms=now_ms + day_ms),  # from the future
                    trade(base + 5, event_ms=1_000),  # 1970: stale
                    trade(base + 6, event_ms=now_ms - 30 * day_ms),  # a month old: stale
                    book(base + 2),
                    book(base + 1),  # a book older than the last one
                    book(base + 3, E=1_000),  # stale
                ]
                await send_all(rig, frames)
            # Each stale frame once on its own connection (the other calls it unknown).
            await until(lambda: drops(rig, "stale_drop") - stale_before >= 3 * repeat)
            await rig.wait_transitions(2)
        await check(rig, figures, faults=2 * repeat * 10)
    assert drops(rig, "stale_drop") - stale_before == 3 * repeat
