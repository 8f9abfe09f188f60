"""The service run in this process for a test: started on a mock exchange, subscribed,
then shut down gracefully; and what the ``alert_service`` fixture gives a test."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from oraculo_trio.core.alerts import AlertTransition
from oraculo_trio.core.rules import CompiledRule
from oraculo_trio.mockexchange import MockExchange
from oraculo_trio.pipeline.service import ServiceHandle, run_service
from oraculo_trio.settings import Settings
from oraculo_trio.store.base import Store

__all__ = [
    "SUBSCRIBED_STREAMS",
    "AlertService",
    "RecordingSink",
    "running_service",
    "start_service",
    "stop_service",
    "wait_subscribed",
]

POLL_INTERVAL = 0.02
"""Seconds between reads of the store while waiting for an alert."""

SUBSCRIBED_STREAMS = ("trade", "depth20@100ms")
"""The streams a test service reads of each symbol (``feed`` of
:data:`~oraculo_trio.testing.config.TEST_DEFAULTS`)."""

SHUTDOWN_MARGIN = 10.0
"""Seconds beyond ``service.shutdown_grace`` that a graceful stop may take in a test."""


async def wait_subscribed(
    exchange: MockExchange, symbols: Iterable[str], streams: Iterable[str] = SUBSCRIBED_STREAMS
) -> None:
    """Wait until ``exchange`` has a subscriber to each of ``streams`` of each symbol.

    Cancellation: stops waiting.
    """
    streams = tuple(streams)
    for symbol in symbols:
        for stream in streams:
            await exchange.wait_for_subscribers(f"{symbol.lower()}@{stream}")


async def start_service(
    nursery: trio.Nursery,
    settings: Settings,
    rules: Sequence[CompiledRule] | None,
    *,
    sinks: Sequence[Any] | None = None,
    exchange: MockExchange | None = None,
    streams: Iterable[str] = SUBSCRIBED_STREAMS,
) -> ServiceHandle:
    """Start the service in ``nursery`` (signals left to the test runner).

    Args:
        nursery: where the service runs.
        settings: its configuration (see :func:`~oraculo_trio.testing.config.service_settings`).
        rules: its rules (None: from ``rules.source``).
        sinks: its notification sinks (None: those of ``dispatch.sinks``).
        exchange: when given, return only once every feed is connected and ``exchange``
            has a subscriber to each of ``streams`` of each of ``feed.symbols``.
        streams: see ``exchange``.

    Returns:
        The running service's handle.

    Cancellation: stops waiting; the service runs on in ``nursery``.
    """
    handle: ServiceHandle = await nursery.start(
        functools.partial(
            run_service,
            settings,
            None if rules is None else list(rules),
            sinks=None if sinks is None else list(sinks),
            handle_signals=False,
        )
    )
    if exchange is not None:
        await handle.wait_connected()
        await wait_subscribed(exchange, settings.feed.symbols, streams)
    return handle


async def stop_service(handle: ServiceHandle) -> None:
    """Shut the service down as SIGTERM would (drain, final flush) and wait until it
    stopped, for at most its ``shutdown_grace`` and a margin.

    Cancellation: stops waiting (the shutdown goes on).
    """
    handle.request_shutdown()
    with trio.move_on_after(handle.settings.service.shutdown_grace + SHUTDOWN_MARGIN):
        await handle.stopped.wait()


@asynccontextmanager
async def running_service(
    settings: Settings,
    rules: Sequence[CompiledRule] | None,
    *,
    sinks: Sequence[Any] | None = None,
    exchange: MockExchange | None = None,
    streams: Iterable[str] = SUBSCRIBED_STREAMS,
) -> AsyncIterator[ServiceHandle]:
    """:func:`start_service` for the block, then :func:`stop_service`; its metrics stay
    readable afterwards.

    Cancellation: cancels the service (its store writer still flushes, shielded).
    """
    async with trio.open_nursery() as nursery:
        handle = await start_service(
            nursery, settings, rules, sinks=sinks, exchange=exchange, streams=streams
        )
        try:
            yield handle
        finally:
            await stop_service(handle)
            nursery.cancel_scope.cancel()


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
