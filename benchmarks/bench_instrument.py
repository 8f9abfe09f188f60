"""Overhead of :class:`LagInstrument` on a memory-channel pipeline at a fixed message rate.

Runs the same paced pipeline (source -> decode -> shard consumers) for ``--seconds`` with and
without the instrument (installed by a running :class:`LagMonitor`, as in the service),
alternating runs, and prints the process CPU time per message and the overhead.

Two shapes of pipeline:

* ``per-message``: every hop is an ``await send`` and every consumer an ``async for``, so each
  message costs several task steps (the worst case for an instrument, which pays per step);
* ``batched``: the service's shape: the source hands a whole burst over with
  ``send_nowait`` and consumers drain micro-batches with ``receive_nowait``.

Usage::

    python benchmarks/bench_instrument.py [--rate 15000] [--seconds 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import msgspec
import trio

from oraculo_trio.observe.instrument import LagInstrument, LagMonitor
from oraculo_trio.observe.metrics import ServiceMetrics

SYMBOLS = [f"SYM{i}USDT" for i in range(50)]
SHARDS = 4
TICK = 0.005  # the source sends a burst every 5 ms: 75 messages at 15,000/s


class Depth(msgspec.Struct):
    s: str
    E: int
    b: list[tuple[float, float]]
    a: list[tuple[float, float]]


DECODER = msgspec.json.Decoder(Depth, strict=False)


def make_frames(count: int) -> list[bytes]:
    frames = []
    for i in range(count):
        symbol = SYMBOLS[i % len(SYMBOLS)]
        bids = [[f"{100 - j * 0.01:.2f}", f"{1 + j}"] for j in range(5)]
        asks = [[f"{100 + j * 0.01:.2f}", f"{1 + j}"] for j in range(5)]
        frames.append(msgspec.json.encode({"s": symbol, "E": i, "b": bids, "a": asks}))
    return frames


def apply(books: dict[str, dict[float, float]], depth: Depth) -> None:
    book = books.setdefault(depth.s, {})
    for price, qty in depth.b:
        book[price] = qty
    for price, qty in depth.a:
        book[price] = qty


async def source(
    send: trio.MemorySendChannel[bytes],
    frames: list[bytes],
    rate: float,
    seconds: float,
    batched: bool,
) -> int:
    per_tick = max(1, round(rate * TICK))
    ticks = round(seconds / TICK)
    sent = 0
    async with send:
        deadline = trio.current_time()
        for _ in range(ticks):
            for _ in range(per_tick):
                frame = frames[sent % len(frames)]
                if batched:
                    try:
                        send.send_nowait(frame)
                    except trio.WouldBlock:
                        await send.send(frame)
                else:
                    await send.send(frame)
                sent += 1
            deadline += TICK
            await trio.sleep_until(deadline)
    return sent


async def decode_stage(
    receive: trio.MemoryReceiveChannel[bytes],
    shards: list[trio.MemorySendChannel[Depth]],
    batched: bool,
) -> None:
    async with receive:
        try:
            if batched:
                async for frame in receive:
                    batch = [frame]
                    while True:
                        try:
                            batch.append(receive.receive_nowait())
                        except trio.WouldBlock:
                            break
                    for raw in batch:
                        depth = DECODER.decode(raw)
                        out = shards[hash(depth.s) % SHARDS]
                        try:
                            out.send_nowait(depth)
                        except trio.WouldBlock:
                            await out.send(depth)
            else:
                async for frame in receive:
                    depth = DECODER.decode(frame)
                    await shards[hash(depth.s) % SHARDS].send(depth)
        finally:
            for shard in shards:
                await shard.aclose()


async def consumer(
    receive: trio.MemoryReceiveChannel[Depth], counter: list[int], batched: bool
) -> None:
    books: dict[str, dict[float, float]] = {}
    async with receive:
        async for depth in receive:
            apply(books, depth)
            counter[0] += 1
            if batched:
                while True:
                    try:
                        depth = receive.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    apply(books, depth)
                    counter[0] += 1


async def pipeline(
    rate: float, seconds: float, batched: bool, instrumented: bool
) -> tuple[int, float]:
    frames = make_frames(1000)
    counter = [0]
    async with trio.open_nursery() as nursery:
        if instrumented:
            metrics = ServiceMetrics()
            await nursery.start(LagMonitor(LagInstrument()).run, metrics)
        cpu0 = time.process_time()
        async with trio.open_nursery() as stages:
            send, receive = trio.open_memory_channel[bytes](1024)
            shard_ends = [trio.open_memory_channel[Depth](1024) for _ in range(SHARDS)]
            stages.start_soon(decode_stage, receive, [s for s, _ in shard_ends], batched)
            for _, shard_receive in shard_ends:
                stages.start_soon(consumer, shard_receive, counter, batched)
            await source(send, frames, rate, seconds, batched)
        cpu = time.process_time() - cpu0
        nursery.cancel_scope.cancel()
    return counter[0], cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=15_000.0, help="messages per second")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each variant")
    args = parser.parse_args()
    for shape, batched in (("per-message", False), ("batched", True)):
        cost: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.rounds):
            for instrumented in (False, True):
                messages, cpu = trio.run(pipeline, args.rate, args.seconds, batched, instrumented)
                cost[instrumented].append(cpu / messages)
        base = statistics.median(cost[False])
        with_instrument = statistics.median(cost[True])
        overhead = (with_instrument - base) / base
        core = (with_instrument - base) * args.rate
        print(
            f"{shape:12s} {args.rate:,.0f} msg/s: without {base * 1e6:6.2f} µs/msg, "
            f"with instrument {with_instrument * 1e6:6.2f} µs/msg, "
            f"overhead {overhead:+.1%} (+{(with_instrument - base) * 1e6:.2f} µs/msg, "
            f"{core:.1%} of a core)"
        )


if __name__ == "__main__":
    main()
