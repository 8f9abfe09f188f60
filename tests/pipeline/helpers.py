"""Shared pieces of the pipeline tests: a market the test feeds by hand, sinks that record,
and settings pointing a service at a mock exchange."""

from __future__ import annotations

import functools
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
from oraculo_trio.pipeline.service import ServiceHandle, run_service
from oraculo_trio.settings import Settings, load_settings
from oraculo_trio.testing import RecordingSink  # noqa: F401 (the pipeline tests import it here)


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


def service_settings(
    tmp_path: Path, ws_url: str, symbols: Sequence[str], **sections: dict[str, Any]
) -> Settings:
    """Settings for a service on port 0 with a temporary SQLite store, pointed at ``ws_url``."""
    overrides: dict[str, dict[str, Any]] = {
        "feed": {
            "url": ws_url,
            "symbols": list(symbols),
            "depth_streams": ["depth20"],
            "trade_streams": ["trade"],
            "reconnect_initial": 0.05,
            "reconnect_max": 0.2,
        },
        "database": {"url": f"sqlite:///{tmp_path / 'alerts.db'}"},
        "http": {"port": 0},
        "dispatch": {"sinks": []},
        "observe": {"dump_dir": str(tmp_path / "dumps")},
    }
    for section, values in sections.items():
        overrides.setdefault(section, {}).update(values)
    return load_settings(None, environ={}, overrides=overrides)


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
        exchange_settings = ExchangeSettings(tick=0.02, ping_interval=None)
        exchange = await nursery.start(MockExchange(market, exchange_settings).serve)
        settings = service_settings(tmp_path, exchange.ws_url, market.symbols, **sections)
        handle = await nursery.start(
            functools.partial(run_service, settings, rules, sinks=sinks, handle_signals=False)
        )
        await handle.wait_connected()
        for symbol in market.symbols:
            for kind in ("trade", "depth20@100ms"):
                await exchange.wait_for_subscribers(f"{symbol.lower()}@{kind}")
        yield exchange, handle
        handle.request_shutdown()
        await handle.stopped.wait()
        nursery.cancel_scope.cancel()


async def wait_accounted(handle: ServiceHandle, received: int) -> dict[str, int]:
    """Wait until ``received`` messages were read and every one is accounted for."""
    while True:
        terms = handle.metrics.accounting()
        if terms["received"] >= received and terms["unaccounted"] == 0:
            return terms
        # Counters have no wake-up event; poll them (the test's fail_after bounds it).
        await trio.sleep(0.01)
