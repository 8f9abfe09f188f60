"""Shared pieces of the pipeline tests: a market the test feeds by hand, sinks that record,
and a service reading it from a mock exchange (built with oraculo_trio.testing)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar

import attrs
import trio

from oraculo_trio.core.events import TRADE
from oraculo_trio.core.rules import CompiledRule, RuleSpec, Signal
from oraculo_trio.mockexchange import ExchangeSettings, Frame, MockExchange, trade_payload
from oraculo_trio.pipeline.service import ServiceHandle
from oraculo_trio.settings import Settings
from oraculo_trio.testing import RecordingSink  # noqa: F401 (the pipeline tests import it here)
from oraculo_trio.testing.config import merge_sections, service_settings
from oraculo_trio.testing.service import running_service as serving

FAST_EXCHANGE = ExchangeSettings(tick=0.02, ping_interval=None)
"""The mock exchange of these tests: a tick every 20 ms, no pings."""


@attrs.define(eq=False)
class ManualMarket:
    """A market that publishes, on the next tick, exactly the frames a test queued."""

    symbols: Sequence[str]
    queued: list[Frame] = attrs.field(factory=list)

    def push(self, frames: Iterable[Frame]) -> None:
        self.queued.extend(frames)

    def tick(self, now: float, dt: float) -> list[Frame]:
        frames, self.queued = self.queued, []
        return frames


def trade_frame(symbol: str, trade_id: int, price: float, event_ms: int, qty: float = 1.0) -> Frame:
    payload = trade_payload(
        symbol, trade_id, f"{price:.8f}", f"{qty:.8f}", event_ms, buyer_is_maker=False
    )
    return f"{symbol.lower()}@trade", payload


def depth_frame(symbol: str, update_id: int, bid: float, ask: float, levels: int = 5) -> Frame:
    step = (ask - bid) / 10 or 0.01
    bids = [[f"{bid - i * step:.8f}", "1.00000000"] for i in range(levels)]
    asks = [[f"{ask + i * step:.8f}", "1.00000000"] for i in range(levels)]
    return (
        f"{symbol.lower()}@depth20@100ms",
        {"lastUpdateId": update_id, "bids": bids, "asks": asks},
    )


class TradeRecorder:
    """A rule that never fires and records the order trades reach it, per symbol."""

    kind: ClassVar[str] = "test_trade_recorder"
    streams: ClassVar[frozenset[str]] = frozenset({TRADE})

    def __init__(self) -> None:
        self.seen: dict[str, list[int]] = {}

    def initial_data(self) -> Any:
        return None

    def evaluate(self, event: Any, state: Any, now: float) -> Signal | None:
        self.seen.setdefault(event.symbol, []).append(event.trade_id)
        return Signal(False, math.nan)


def recorder_rule(recorder: TradeRecorder) -> CompiledRule:
    spec = RuleSpec(id="recorder", kind=TradeRecorder.kind, symbols=("*",), params={})
    return CompiledRule(spec, recorder)


def pipeline_settings(
    tmp_path: Path, ws_url: str, symbols: Sequence[str], **sections: dict[str, Any]
) -> Settings:
    """Settings of a test service (the harness's defaults, reconnects capped at 0.2 s) with
    a SQLite store in ``tmp_path``, reading ``symbols`` from ``ws_url``."""
    return service_settings(
        f"sqlite:///{tmp_path / 'alerts.db'}",
        ws_url,
        symbols,
        merge_sections({"feed": {"reconnect_max": 0.2}}, sections),
        dump_dir=tmp_path / "dumps",
    )


@asynccontextmanager
async def running_service(
    tmp_path: Path,
    market: ManualMarket,
    rules: Sequence[CompiledRule],
    *,
    sinks: Sequence[Any] = (),
    **sections: dict[str, Any],
) -> AsyncIterator[tuple[MockExchange, ServiceHandle]]:
    """A mock exchange and a service reading every stream of ``market``, both running.

    On exit the service shuts down gracefully (drain, flush) and the exchange stops.
    """
    async with trio.open_nursery() as nursery:
        exchange = await nursery.start(MockExchange(market, FAST_EXCHANGE).serve)
        settings = pipeline_settings(tmp_path, exchange.ws_url, market.symbols, **sections)
        async with serving(settings, rules, sinks=sinks, exchange=exchange) as handle:
            yield exchange, handle
        nursery.cancel_scope.cancel()


async def wait_accounted(handle: ServiceHandle, received: int) -> dict[str, int]:
    """Wait until ``received`` messages were read and every one is decided (evaluated or
    dropped, none left in flight); the terms balance all along."""
    while True:
        terms = handle.metrics.accounting()
        assert terms["unaccounted"] == 0, terms
        if terms["received"] >= received and terms["in_flight"] == 0:
            return terms
        # Counters have no wake-up event; poll them (the test's fail_after bounds it).
        await trio.sleep(0.01)
