"""``python -m oraculo_trio.mockexchange``: arguments, and a real process serving until SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
import trio

from oraculo_trio.mockexchange import RandomWalkMarket, ScriptedMarket
from oraculo_trio.mockexchange.__main__ import build_market, build_parser


def test_build_market() -> None:
    parser = build_parser()
    assert isinstance(build_market(parser.parse_args([])), ScriptedMarket)
    walk = build_market(parser.parse_args(["--market", "random", "--symbols", "3", "--rate", "9"]))
    assert isinstance(walk, RandomWalkMarket)
    assert walk.symbols == ("SYM000USDT", "SYM001USDT", "SYM002USDT")
    with pytest.raises(SystemExit, match="--replay-file"):
        build_market(parser.parse_args(["--market", "replay"]))


async def test_standalone_exchange_prints_its_url_and_stops_on_sigterm(connect, tmp_path) -> None:
    recorded = tmp_path / "trades.jsonl"
    frame = {"stream": "btcusdt@trade", "data": {"e": "trade", "E": 1, "s": "BTCUSDT"}}
    recorded.write_text(json.dumps(frame) + "\n")
    command = [
        sys.executable,
        "-m",
        "oraculo_trio.mockexchange",
        "--port",
        "0",
        "--market",
        "replay",
        "--replay-file",
        str(recorded),
        "--rate",
        "50",
        "--tick",
        "0.02",
    ]
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            process = await trio.lowlevel.open_process(
                command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
            )
            assert process.stdout is not None
            try:
                output = b""
                while b"\n" not in output:
                    chunk = await process.stdout.receive_some()
                    assert chunk, "the exchange exited before printing its URL"
                    output += chunk
                url = output.decode().splitlines()[0]
                assert url.startswith("ws://127.0.0.1:")
                async with connect(nursery, f"{url}/stream?streams=btcusdt@trade") as ws:
                    assert json.loads(await ws.get_message()) == frame
                process.send_signal(signal.SIGTERM)
                assert await process.wait() == 0
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
                await process.stdout.aclose()
