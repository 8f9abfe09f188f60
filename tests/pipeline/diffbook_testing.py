"""Shared pieces of the diff-book tests: a service reading diff streams from the mock exchange,
and a depth rule that records when (and on what book) the rules ran."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar

import attrs
import trio

from oraculo_trio.core.events import DEPTH
from oraculo_trio.core.rules import CompiledRule, RuleSpec, Signal
from oraculo_trio.core.sync import LIVE, BookSync
from oraculo_trio.mockexchange import ExchangeSettings, MockExchange
from oraculo_trio.pipeline.service import ServiceHandle
from oraculo_trio.testing.config import service_sections
from oraculo_trio.testing.service import start_service, stop_service, wait_subscribed
from tests.pipeline.helpers import pipeline_settings

FAST = ExchangeSettings(tick=0.02, ping_interval=None, max_requests_per_s=None)


class BookRecorder:
    """A depth rule that never fires and records each evaluation per symbol:
    ``(trio time, the book's last update id, the book's sync state)``."""

    kind: ClassVar[str] = "test_book_recorder"
    streams: ClassVar[frozenset[str]] = frozenset({DEPTH})

    def __init__(self) -> None:
        self.seen: dict[str, list[tuple[float, int | None, str]]] = {}

    def initial_data(self) -> Any:
        return None

    def evaluate(self, event: Any, state: Any, now: float) -> Signal | None:
        market = state.market
        sync = market.book_sync
        self.seen.setdefault(event.symbol, []).append(
            (trio.current_time(), market.book.last_update_id, sync.state if sync else "")
        )
        return None

    def rule(self) -> CompiledRule:
        spec = RuleSpec(id="book-recorder", kind=self.kind, symbols=("*",), params={})
        return CompiledRule(spec, self)


def diffbook_sections(
    tmp_path: Path, exchange: MockExchange, symbols: Sequence[str], **feed: Any
) -> dict[str, Any]:
    """The configuration sections of a service process keeping diff books of ``symbols`` on
    ``exchange`` (WebSocket and REST), no trades; ``feed`` adds or replaces feed keys."""
    return service_sections(
        exchange_url=exchange.ws_url,
        symbols=list(symbols),
        database_url=f"sqlite:///{tmp_path / 'alerts.db'}",
        dump_dir=tmp_path / "dumps",
        overrides={
            "feed": {
                "rest_url": exchange.rest_url,
                "depth_streams": ["depth"],
                "trade_streams": [],
                **feed,
            }
        },
    )


@asynccontextmanager
async def diffbook_service(
    tmp_path: Path,
    market: Any,
    rules: Sequence[CompiledRule] = (),
    *,
    exchange_settings: ExchangeSettings = FAST,
    snapshots: Any = None,
    symbols: Sequence[str] | None = None,
    feed: dict[str, Any] | None = None,
    pipeline: dict[str, Any] | None = None,
    binance_market: str = "spot",
    failing_depth: Sequence[str] = (),
) -> AsyncIterator[tuple[MockExchange, ServiceHandle]]:
    """The mock exchange (WebSocket and REST, playing ``binance_market``) and a service
    keeping diff books of ``symbols`` (the market's by default) on that market; on exit the
    service drains and stops, then the exchange. The depth snapshots of ``failing_depth``
    (exchange names) answer HTTP 500 from the start (``exchange.rest.heal_depth`` ends it)."""
    async with trio.open_nursery() as nursery:
        exchange_settings = attrs.evolve(exchange_settings, market=binance_market)
        exchange = MockExchange(market, exchange_settings, snapshots=snapshots)
        # Nothing is published before the service listens (a replay would lose its start).
        exchange.pause()
        await nursery.start(exchange.serve)
        for symbol in failing_depth:
            exchange.rest.fail_depth(symbol)
        symbols = list(symbols if symbols is not None else market.symbols)
        settings = pipeline_settings(
            tmp_path,
            exchange.ws_url,
            symbols,
            feed={
                "market": binance_market,
                "rest_url": exchange.rest_url,
                "depth_streams": ["depth"],
                "trade_streams": [],
                "snapshot_stagger": 0.0,
                **(feed or {}),
            },
            pipeline=pipeline or {},
        )
        handle = await start_service(nursery, settings, rules, sinks=())
        speed = "" if settings.feed.depth_update_ms == 1000 else "@100ms"
        await wait_subscribed(exchange, symbols, [f"depth{speed}"])
        exchange.resume()
        yield exchange, handle
        await stop_service(handle)
        nursery.cancel_scope.cancel()


def syncs(handle: ServiceHandle) -> dict[str, BookSync]:
    """Every symbol's book sync, over all shards."""
    return {symbol: sync for books in handle.books for symbol, sync in books.syncs.items()}


async def wait_for(handle: ServiceHandle, predicate: Callable[[], bool]) -> None:
    """Wait until ``predicate()`` holds, checked after every batch through the diff books."""
    await handle.books[0].changes.wait_until(predicate)


def all_live(handle: ServiceHandle, symbols: Sequence[str]) -> bool:
    current = syncs(handle)
    return all(symbol in current and current[symbol].state == LIVE for symbol in symbols)
