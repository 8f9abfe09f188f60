"""pytest fixtures for testing alert rules end to end, against the real service.

Registered as a pytest plugin (entry point ``pytest11``: ``oraculo_trio``), so installing
oraculo-trio makes these fixtures available to any test suite; without the entry point,
``pytest -p oraculo_trio.testing`` loads it. The fixtures are async: they need pytest-trio
(``trio_mode = true``, or ``@pytest.mark.trio`` on each test). Everything runs on
127.0.0.1 with port 0 and the real clock; nothing leaves the machine.

Fixtures:

- ``market_symbols``: the symbols the market publishes (override it; default BTCUSDT and
  ETHUSDT).
- ``market_script``: a :class:`MarketScript` to send trades and books, published on the
  mock exchange's next tick (every 20 ms).
- ``mock_exchange``: the Binance-compatible mock exchange
  (:class:`~oraculo_trio.mockexchange.MockExchange`) publishing ``market_script``.
- ``alert_rules``: the rules under test, as rule-file entries (override it; ``kind`` may be
  a built-in name, ``"module:Class"`` or the class itself). Default: none.
- ``alert_service_config``: configuration overrides ``{section: {key: value}}``.
- ``alert_service``: an :class:`AlertService`: the whole service wired to the mock exchange
  and a temporary SQLite store, subscribed and ready.
- ``wait_for_alert``: ``await wait_for_alert(rule_id, symbol, state)`` returns the next
  ``alert_events`` row of that (rule, symbol) in that state.

Example::

    @pytest.fixture
    def alert_rules():
        return [{"id": "big", "kind": "large_trade", "params": {"notional": 1e6}}]

    async def test_big_trade(market_script, wait_for_alert):
        market_script.trade("BTCUSDT", 50_000, qty=30)
        event = await wait_for_alert("big", "BTCUSDT", "firing")
        assert event["value"] == 1_500_000
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from oraculo_trio.core.alerts import AlertTransition
from oraculo_trio.core.rules import parse_rules
from oraculo_trio.mockexchange import (
    ExchangeSettings,
    Frame,
    MockExchange,
    format_units,
    to_units,
    trade_payload,
)
from oraculo_trio.pipeline.rules_source import resolve_rule_class
from oraculo_trio.pipeline.service import ServiceHandle, run_service
from oraculo_trio.settings import Settings, load_settings
from oraculo_trio.store.base import Store, open_store

__all__ = [
    "AlertService",
    "MarketScript",
    "RecordingSink",
    "alert_rules",
    "alert_service",
    "alert_service_config",
    "market_script",
    "market_symbols",
    "mock_exchange",
    "wait_for_alert",
]

EXCHANGE_TICK = 0.02
"""Seconds between the mock exchange's publishing ticks in these fixtures."""

POLL_INTERVAL = 0.02
"""Seconds between reads of the store while waiting for an alert."""

Level = tuple[float, float]


def _price(value: float) -> str:
    return format_units(to_units(value))


@attrs.define(eq=False)
class MarketScript:
    """A market a test drives by hand: what it queues goes out on the exchange's next tick.

    Trades are ``@trade`` frames; books are ``@depth20@100ms`` partial books (what the
    fixtures' service subscribes to). Exchange times (``E``, ``T``) are the tick's, so
    every message is fresh.

    Attributes:
        symbols: upper-case symbols, subscribed by the service.
        published: frames handed to the exchange so far.
    """

    symbols: tuple[str, ...] = attrs.field(converter=lambda s: tuple(x.upper() for x in s))
    published: int = 0
    _queued: list[Callable[[int], Frame]] = attrs.field(factory=list)
    _ids: dict[str, int] = attrs.field(factory=dict)
    _changed: trio.Event = attrs.field(factory=trio.Event)

    def trade(self, symbol: str, price: float, qty: float = 1.0, *, side: str = "buy") -> None:
        """Queue one trade; ``side`` is the aggressor's (``buy`` or ``sell``)."""
        if side not in ("buy", "sell"):
            raise ValueError(f"side={side!r}: expected 'buy' or 'sell'")
        symbol = symbol.upper()
        trade_id = self._next_id(symbol)

        def frame(now_ms: int) -> Frame:
            payload = trade_payload(
                symbol, trade_id, _price(price), _price(qty), now_ms, side == "sell"
            )
            return f"{symbol.lower()}@trade", payload

        self._queued.append(frame)

    def book(self, symbol: str, bids: Sequence[Level], asks: Sequence[Level]) -> None:
        """Queue a partial book: ``(price, quantity)`` levels, best first (up to 20 a side)."""
        symbol = symbol.upper()
        update_id = self._next_id(symbol)
        payload = {
            "lastUpdateId": update_id,
            "bids": [[_price(p), _price(q)] for p, q in bids[:20]],
            "asks": [[_price(p), _price(q)] for p, q in asks[:20]],
        }
        self._queued.append(lambda now_ms: (f"{symbol.lower()}@depth20@100ms", payload))

    def quote(
        self,
        symbol: str,
        bid: float,
        ask: float,
        *,
        bid_qty: float = 1.0,
        ask_qty: float = 1.0,
        levels: int = 5,
        step: float | None = None,
    ) -> None:
        """Queue a book of ``levels`` equal levels a side, ``step`` apart (default: a tenth
        of the spread), starting at ``bid`` and ``ask``."""
        step = step if step is not None else (ask - bid) / 10 or 0.01
        self.book(
            symbol,
            [(bid - i * step, bid_qty) for i in range(levels)],
            [(ask + i * step, ask_qty) for i in range(levels)],
        )

    async def sent(self) -> None:
        """Wait until everything queued so far has been handed to the exchange.

        Cancellation: stops waiting (the frames still go out on the next tick).
        """
        while self._queued:
            await self._changed.wait()

    @property
    def pending(self) -> int:
        """Frames queued and not yet published."""
        return len(self._queued)

    def tick(self, now: float, dt: float) -> list[Frame]:
        """The ``Market`` protocol of the mock exchange: every queued frame, stamped now."""
        now_ms = int(now * 1000)
        frames = [build(now_ms) for build in self._queued]
        self._queued = []
        self.published += len(frames)
        self._changed.set()
        self._changed = trio.Event()
        return frames

    def _next_id(self, symbol: str) -> int:
        self._ids[symbol] = self._ids.get(symbol, 0) + 1
        return self._ids[symbol]


@attrs.define(eq=False)
class RecordingSink:
    """A notification sink that keeps every notification delivered to it."""

    name: str = "recording"
    transitions: list[AlertTransition] = attrs.field(factory=list)
    _changed: trio.Event = attrs.field(factory=trio.Event)

    async def deliver(self, transition: AlertTransition) -> None:
        self.transitions.append(transition)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, count: int) -> list[AlertTransition]:
        """Wait until ``count`` notifications arrived; returns them all.

        Cancellation: stops waiting.
        """
        while len(self.transitions) < count:
            await self._changed.wait()
        return self.transitions


@attrs.define(eq=False)
class AlertService:
    """The running service of the ``alert_service`` fixture.

    Attributes:
        handle: the service's :class:`~oraculo_trio.pipeline.service.ServiceHandle`
            (metrics, engines, ``reload_rules()``...).
        store: a reader on the service's SQLite store.
        notifications: every notification the service delivered (its only sink).
        settings: the service's configuration.
    """

    handle: ServiceHandle
    store: Store
    notifications: RecordingSink
    settings: Settings
    _cursors: dict[tuple[str, str], int] = attrs.field(factory=dict)

    # A timeout of its own, so that failing names what was seen instead of TooSlowError.
    async def wait_for_alert(
        self,
        rule_id: str,
        symbol: str,
        state: str,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> dict[str, Any]:
        """The next ``alert_events`` row of (rule_id, symbol) in ``state``.

        "Next" is after the last row this method returned for that (rule, symbol), so
        waiting for firing, then resolved, then firing again follows the alert's history.

        Raises:
            AssertionError: no such row within ``timeout`` seconds (naming what was seen).

        Cancellation: stops waiting.
        """
        key = (rule_id, symbol.upper())
        seen: list[str] = []
        with trio.move_on_after(timeout):
            # The store has no event to wait on: its rows are polled (the writer commits in
            # batches every few milliseconds).
            while True:
                rows = await self.store.fetch_alert_events(
                    rule_id, key[1], after_id=self._cursors.get(key, 0)
                )
                seen = [row["state"] for row in rows]
                for row in rows:
                    if row["state"] == state:
                        self._cursors[key] = row["id"]
                        return row
                await trio.sleep(POLL_INTERVAL)
        raise AssertionError(
            f"no {state!r} alert for rule {rule_id!r} on {key[1]} within {timeout:g}s "
            f"(states seen since the last one returned: {seen or 'none'})"
        )

    async def events(
        self, rule_id: str | None = None, symbol: str | None = None
    ) -> list[dict[str, Any]]:
        """Every ``alert_events`` row so far (optionally of one rule and/or symbol).

        Cancellation: abandons the query.
        """
        return await self.store.fetch_alert_events(rule_id, symbol)


def service_settings(
    database_url: str,
    exchange_url: str,
    symbols: Iterable[str],
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    dump_dir: str | Path = "var/dumps",
) -> Settings:
    """Settings of a test service: the mock exchange, port 0, fast ticks, no sinks."""
    sections: dict[str, dict[str, Any]] = {
        "feed": {
            "url": exchange_url,
            "symbols": list(symbols),
            "depth_streams": ["depth20"],
            "trade_streams": ["trade"],
            "reconnect_initial": 0.05,
            "reconnect_max": 0.5,
        },
        "rules": {"tick_interval": 0.1, "reload_interval": 0.0},
        "database": {"url": database_url, "batch_window_ms": 5.0},
        "dispatch": {"sinks": [], "silence_refresh": 0.1},
        "http": {"host": "127.0.0.1", "port": 0},
        "observe": {"dump_dir": str(dump_dir)},
    }
    for section, values in (overrides or {}).items():
        sections.setdefault(section, {}).update(values)
    return load_settings(None, environ={}, overrides=sections)


@pytest.fixture
def market_symbols() -> Sequence[str]:
    """The symbols of ``market_script`` (override this fixture to change them)."""
    return ("BTCUSDT", "ETHUSDT")


@pytest.fixture
def market_script(market_symbols: Sequence[str]) -> MarketScript:
    """Trades and books to publish; see :class:`MarketScript`."""
    return MarketScript(market_symbols)


@pytest.fixture
async def mock_exchange(nursery: trio.Nursery, market_script: MarketScript) -> MockExchange:
    """The mock exchange on 127.0.0.1 (port 0) publishing ``market_script``."""
    settings = ExchangeSettings(tick=EXCHANGE_TICK, ping_interval=None, strict_symbols=False)
    return await nursery.start(MockExchange(market_script, settings).serve)


@pytest.fixture
def alert_rules() -> Sequence[Mapping[str, Any]]:
    """The rules of ``alert_service``, as rule-file entries (override this fixture)."""
    return ()


@pytest.fixture
def alert_service_config() -> Mapping[str, Mapping[str, Any]]:
    """Configuration overrides for ``alert_service``: ``{section: {key: value}}``."""
    return {}


@pytest.fixture
async def alert_service(
    nursery: trio.Nursery,
    tmp_path: Path,
    mock_exchange: MockExchange,
    market_script: MarketScript,
    alert_rules: Sequence[Mapping[str, Any]],
    alert_service_config: Mapping[str, Mapping[str, Any]],
) -> AsyncIterator[AlertService]:
    """The service on the mock exchange with a temporary SQLite store, subscribed to every
    symbol's trades and books; shut down gracefully after the test."""
    database_url = f"sqlite:///{tmp_path / 'oraculo-test.db'}"
    settings = service_settings(
        database_url,
        mock_exchange.ws_url,
        market_script.symbols,
        alert_service_config,
        dump_dir=tmp_path / "dumps",
    )
    rules = parse_rules({"rule": [dict(rule) for rule in alert_rules]}, resolve_rule_class)
    sink = RecordingSink()
    with trio.fail_after(30):
        handle: ServiceHandle = await nursery.start(
            functools.partial(run_service, settings, rules, sinks=[sink], handle_signals=False)
        )
        await handle.wait_connected()
        for symbol in market_script.symbols:
            lower = symbol.lower()
            await mock_exchange.wait_for_subscribers(f"{lower}@trade")
            await mock_exchange.wait_for_subscribers(f"{lower}@depth20@100ms")
    try:
        async with open_store(database_url, statement_timeout=5.0) as store:
            yield AlertService(handle, store, sink, settings)
    finally:
        handle.request_shutdown()
        with trio.move_on_after(settings.service.shutdown_grace + 5.0):
            await handle.stopped.wait()


@pytest.fixture
def wait_for_alert(
    alert_service: AlertService,
) -> Callable[..., Awaitable[dict[str, Any]]]:
    """``await wait_for_alert(rule_id, symbol, state, timeout=10)``: see
    :meth:`AlertService.wait_for_alert`."""
    return alert_service.wait_for_alert
