"""The exchange clock watch against a server that has no clock (a local replay, a benchmark's
feed): one INFO line, no warning, no more requests, and ages left uncorrected."""

from __future__ import annotations

import functools
import logging

import pytest
import trio

from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.pipeline.exchange_clock import ClockWatch, ExchangeClock
from oraculo_trio.pipeline.rest import rest_budgets, rest_endpoints
from oraculo_trio.testing.config import service_settings


async def test_a_server_without_a_clock_is_asked_once(
    tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="oraculo_trio.pipeline.exchange_clock")
    requests: list[bytes] = []

    async def not_found(stream: trio.SocketStream) -> None:
        # A real HTTP server that knows no path at all.
        request = await stream.receive_some(65536)
        requests.append(request.split(b"\r\n", 1)[0])
        body = b'{"code":-1,"msg":"not found"}'
        await stream.send_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )
        await stream.aclose()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            serve = functools.partial(trio.serve_tcp, host="127.0.0.1")
            (listener,) = await nursery.start(serve, not_found, 0)
            port = listener.socket.getsockname()[1]
            settings = service_settings(
                f"sqlite:///{tmp_path / 'a.db'}",
                f"ws://127.0.0.1:{port}",
                ["BTCUSDT"],
                {"feed": {"rest_url": f"http://127.0.0.1:{port}", "clock_check_interval": 1.0}},
            )
            metrics = ServiceMetrics()
            clock = ExchangeClock("spot")
            watch = ClockWatch(
                clock,
                rest_endpoints(settings)["spot"],
                rest_budgets(settings, metrics)["spot"],
                metrics,
                interval=0.05,
                warn_after=1.0,
            )
            await nursery.start(watch.run)
            # A watch that meant to retry would have, ten times over (every 0.05 s).
            await trio.sleep(0.5)
            nursery.cancel_scope.cancel()
    assert watch.absent
    assert clock.offset == 0.0
    assert requests == [b"GET /api/v3/time HTTP/1.1"]
    assert "ages are not corrected" in caplog.text
    assert "WARNING" not in caplog.text
