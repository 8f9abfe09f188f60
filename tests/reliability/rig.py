"""The scenarios' test rig: the whole service under load from the load generator's market,
and the two checks every scenario ends with.

:func:`loaded_service` starts a :class:`~oraculo_trio.mockexchange.MockExchange`
publishing a :class:`~oraculo_trio.mockexchange.LoadMarket` (partial books and trades
at ``rate`` messages per second, with the generator's alert frames) and the service, in this
process, reading it with rules that keep the store busy: ``flappy`` (the marker rule of
expected.py: fires on every trade id that is a multiple of ten, resolves on the next) and the
load test's own (wide spread, price spike). The exchange records every trade it writes.
:func:`deploy` starts the same exchange for a service run as a process
(:class:`Deployment`), for the scenarios that signal or kill it, or measure it from outside.

The checks (:func:`check`):

- against what the exchange wrote (expected.py): every marker firing its trades imply is
  stored once, but for a tail in flight at a connection's end;
- the service's own counts, a second check: the accounting, ``received = evaluated +
  dropped (every reason) + bad frames``, i.e. ``ServiceMetrics.accounting()["unaccounted"]
  == 0`` once the service has stopped;
- every alert transition raised is in the store exactly once: as many ``alert_events`` rows
  as transitions raised, each (rule, symbol) history gap-free and in order
  (``firing #1, resolved #1, firing #2, ...`` with ``at`` never going back), no (rule,
  symbol, fire count, state) twice, and ``rule_alerts`` agreeing with the last event.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from oraculo_trio.core.alerts import FIRING, RESOLVED
from oraculo_trio.core.rules import CompiledRule, parse_rules
from oraculo_trio.mockexchange import (
    SPIKE_LEVEL,
    WIDE_SPREAD_BPS,
    ExchangeSettings,
    LoadMarket,
    MockExchange,
)
from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.pipeline.rules_source import resolve_rule_class
from oraculo_trio.pipeline.service import ServiceHandle
from oraculo_trio.settings import Settings
from oraculo_trio.store.opening import open_store
from oraculo_trio.testing.config import (
    merge_sections,
    service_sections,
    service_settings,
    write_service_config,
)
from oraculo_trio.testing.processes import ServiceProcess, service_process
from oraculo_trio.testing.service import (
    SUBSCRIBED_STREAMS,
    start_service,
    stop_service,
    wait_subscribed,
)
from tests.reliability.expected import IN_FLIGHT_S, TradeVerdict, judge_trades, marker_rule
from tests.reliability.report import Figures

SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT")

RULE_ENTRIES: tuple[dict[str, Any], ...] = (
    marker_rule(),
    {
        "id": "wide-spread",
        "kind": "spread_above_bps",
        "params": {"bps": WIDE_SPREAD_BPS},
        "trigger": "every_time",
    },
    {
        "id": "price-spike",
        "kind": "crossing",
        "params": {"level": SPIKE_LEVEL},
        "trigger": "every_time",
    },
)


async def until(predicate: Callable[[], bool], interval: float = 0.01) -> None:
    """Return once ``predicate()`` holds. Metrics counters, the store and the other side of a
    socket have no event to wait on, so they are polled (the caller's fail_after bounds it)."""
    while not predicate():  # noqa: ASYNC110
        await trio.sleep(interval)


async def until_async(predicate: Callable[[], Awaitable[bool]], interval: float = 0.01) -> None:
    """Like :func:`until`, for a predicate that must be awaited (an HTTP request)."""
    while not await predicate():  # noqa: ASYNC110
        await trio.sleep(interval)


def load_rules(entries: Sequence[Mapping[str, Any]] = RULE_ENTRIES) -> list[CompiledRule]:
    """The rules of the rig (none has ``for``, so histories alternate firing/resolved)."""
    return parse_rules({"rule": [dict(e) for e in entries]}, resolve_rule_class)


def sample(metrics: ServiceMetrics, name: str, **labels: str) -> float:
    """One sample of the service's registry (0 when absent)."""
    return metrics.inner.get_sample_value(name, labels) or 0.0


def transitions_raised(metrics: ServiceMetrics) -> int:
    """Alert transitions the service's rules raised (each goes to the store)."""
    return int(
        sum(
            sample(metrics, "oraculo_alert_transitions_total", state=state)
            for state in ("pending", "firing", "resolved", "inactive")
        )
    )


def reconnects(metrics: ServiceMetrics, reason: str) -> int:
    """Feed reconnects for ``reason`` over both streams."""
    return int(
        sum(
            sample(metrics, "oraculo_feed_reconnects_total", stream=stream, reason=reason)
            for stream in ("depth", "trade")
        )
    )


@attrs.define(eq=False)
class Rig:
    """A running exchange and service (see :func:`loaded_service`)."""

    exchange: MockExchange
    market: LoadMarket
    handle: ServiceHandle
    settings: Settings
    database_url: str
    nursery: trio.Nursery
    stopping_at: float = math.inf
    """When the rig began stopping the service (trades written later are not expected)."""

    @property
    def metrics(self) -> ServiceMetrics:
        return self.handle.metrics

    def received(self) -> int:
        return self.metrics.accounting()["received"]

    async def wait_received(self, more: int) -> None:
        """Wait until ``more`` further frames were read (polled: counters have no event)."""
        target = self.received() + more
        await until(lambda: self.received() >= target)

    async def wait_connected(self) -> None:
        """Wait until every feed connection is up and subscribed at the exchange."""
        await self.handle.wait_connected()
        await wait_subscribed(self.exchange, self.market.symbols)

    async def wait_reconnected(self, accepted_before: int) -> None:
        """Wait until both feed connections were accepted again and data flows."""
        await self.exchange.wait_for_accepted(accepted_before + len(self.handle.connections))
        await self.handle.wait_connected()
        await self.wait_received(10)

    async def wait_caught_up(self) -> None:
        """Wait until the service has read every frame the exchange had written when called:
        a backlog a fault built up in the sockets is read before the scenario stops, so what
        the stop leaves in flight is only the last moments' (polled: counters have no event).
        """
        target = self.exchange.frames_sent
        await until(lambda: self.received() >= target)

    async def wait_processed(self) -> None:
        """Wait until every frame the exchange had written when called was evaluated or
        dropped on purpose, not merely read: nothing holds the pipeline up (polled)."""
        target = self.exchange.frames_sent

        def processed() -> bool:
            terms = self.metrics.accounting()
            return terms["received"] - terms["in_flight"] >= target

        await until(processed)

    async def wait_transitions(self, more: int) -> None:
        """Wait until ``more`` further alert transitions were raised."""
        target = transitions_raised(self.metrics) + more
        await until(lambda: transitions_raised(self.metrics) >= target)


@asynccontextmanager
async def loaded_service(
    tmp_path: Path,
    rate: float,
    *,
    database_url: str | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    sinks: Sequence[Any] | None = None,
    rules: Sequence[CompiledRule] | None = None,
    symbols: Sequence[str] = SYMBOLS,
    exchange_settings: ExchangeSettings | None = None,
    feed_url: Any = None,
    on_exchange: Any = None,
    wait_connected: bool = True,
    trade_kind: str = "trade",
) -> AsyncIterator[Rig]:
    """The mock exchange publishing load at ``rate`` msg/s, and the service reading it.

    Args:
        database_url: the store (default: a SQLite file in ``tmp_path``).
        overrides: configuration ``{section: {key: value}}`` on top of the test settings.
        sinks: notification sinks (default: those of ``dispatch.sinks``, none unless set).
        rules: default :func:`load_rules`.
        feed_url: ``feed_url(exchange)`` gives the URL the service reads (a proxy's).
        on_exchange: ``on_exchange(exchange)`` is called before the service starts.
        wait_connected: wait until the feeds are connected and subscribed before yielding.
        trade_kind: the trade stream published and read (``trade`` or ``aggTrade``).

    On exit the service shuts down gracefully (drain, flush) and the exchange stops; the
    service's metrics stay readable for the checks.
    """
    database_url = database_url or f"sqlite:///{tmp_path / 'alerts.db'}"
    async with trio.open_nursery() as nursery:
        exchange = await start_exchange(nursery, rate, symbols, exchange_settings, trade_kind)
        url = feed_url(exchange) if callable(feed_url) else exchange.ws_url
        if on_exchange is not None:
            on_exchange(exchange)
        # The exchange's REST side (snapshots, clock, trade backfill) is on its own port.
        feed: dict[str, Any] = {"rest_url": exchange.rest_url}
        if trade_kind != "trade":
            feed["trade_streams"] = [trade_kind]
        settings = service_settings(
            database_url,
            url,
            symbols,
            merge_sections({"pipeline": {"shards": 2}, "feed": feed}, overrides),
            dump_dir=tmp_path / "dumps",
        )
        handle = await start_service(
            nursery,
            settings,
            load_rules() if rules is None else rules,
            sinks=sinks,
            exchange=exchange if wait_connected else None,
            streams=(trade_kind, SUBSCRIBED_STREAMS[1]),
        )
        rig = Rig(exchange, exchange.market, handle, settings, database_url, nursery)
        try:
            yield rig
        finally:
            rig.stopping_at = trio.current_time()
            await stop_service(handle)
            nursery.cancel_scope.cancel()


async def start_exchange(
    nursery: trio.Nursery,
    rate: float,
    symbols: Sequence[str] = SYMBOLS,
    settings: ExchangeSettings | None = None,
    trade_kind: str = "trade",
) -> MockExchange:
    """The mock exchange on 127.0.0.1 publishing the rig's load at ``rate`` msg/s."""
    market = LoadMarket(
        symbols, trade_ratio=0.5, rate_per_s=rate, alert_period=0.5, trade_kind=trade_kind
    )
    settings = settings or ExchangeSettings(tick=0.05, ping_interval=None, record_written=True)
    return await nursery.start(MockExchange(market, settings).serve)


@attrs.frozen
class Deployment:
    """A mock exchange under load and the configuration of a service process reading it,
    for the scenarios that signal or kill the service, or watch it from outside."""

    exchange: MockExchange
    config: Path

    @asynccontextmanager
    async def service(self) -> AsyncIterator[ServiceProcess]:
        """A service process (``oraculo-trio run``) on this configuration, ready."""
        async with service_process(self.config) as service:
            await service.wait_ready()
            yield service


async def deploy(
    nursery: trio.Nursery,
    directory: Path,
    *,
    rate: float,
    database_url: str,
    rules: Sequence[Mapping[str, Any]] = RULE_ENTRIES,
    extra: Mapping[str, Mapping[str, Any]] | None = None,
) -> Deployment:
    """Start the mock exchange (load at ``rate``) and write the configuration of a service
    reading it (``rules``, then ``extra`` over the harness's defaults) into ``directory``."""
    exchange = await start_exchange(nursery, rate)
    sections = service_sections(
        exchange_url=exchange.ws_url,
        symbols=SYMBOLS,
        database_url=database_url,
        dump_dir=directory / "dumps",
        overrides=extra,
    )
    return Deployment(exchange, write_service_config(directory, sections, rules))


# ------------------------------------------------------------------------------------------
# The checks


@attrs.frozen
class StoreCheck:
    """What the store holds against what was raised.

    Attributes:
        raised: transitions raised (by every process that wrote to the store), None when
            unknown (a process killed before it could say).
        stored: ``alert_events`` rows.
        gaps: transitions missing inside the stored histories (and rows disagreeing with
            their last event).
        duplicates: (rule, symbol, fire count, state) stored more than once.
        out_of_order: events whose ``at`` goes back within their (rule, symbol).
        events: the rows, ordered by id.
        gaps_seen: the first few gaps, ``(rule, symbol, expected, found)`` as ``state #fire
            count`` (found: ``rule_alerts`` when the row disagrees with the last event).
    """

    raised: int | None
    stored: int
    gaps: int
    duplicates: int
    out_of_order: int
    events: list[dict[str, Any]]
    gaps_seen: list[tuple[str, ...]] = attrs.field(factory=list)

    @property
    def lost(self) -> int:
        missing = 0 if self.raised is None else max(0, self.raised - self.stored)
        return missing + self.gaps


def _position(event: Mapping[str, Any]) -> int:
    # firing #1 -> 0, resolved #1 -> 1, firing #2 -> 2, ...
    return 2 * (event["fire_count"] - 1) + (1 if event["state"] == RESOLVED else 0)


def _named(position: int) -> str:
    return f"{RESOLVED if position % 2 else FIRING} #{position // 2 + 1}"


async def check_store(database_url: str, raised: int | None) -> StoreCheck:
    """Read the store and judge its alert histories (see the module doc).

    Args:
        raised: transitions raised, or None when no process can say (one was killed): then
            only the histories are judged, and the count is the expectation's business.

    Cancellation: abandons the reads.
    """
    async with open_store(database_url, statement_timeout=10.0) as store:
        events = await store.fetch_alert_events()
        rows = {(r.rule_id, r.symbol): r for r in await store.load_alert_states()}
    seen: set[tuple[str, str, int, str, bool]] = set()
    duplicates = gaps = out_of_order = 0
    gaps_seen: list[tuple[str, ...]] = []
    last: dict[tuple[str, str], Mapping[str, Any]] = {}
    for event in events:
        key = (event["rule_id"], event["symbol"])
        identity = (*key, event["fire_count"], event["state"], bool(event["repeat"]))
        if identity in seen:
            duplicates += 1
            continue
        seen.add(identity)
        if event["repeat"] or event["state"] not in (FIRING, RESOLVED):
            continue
        previous = last.get(key)
        expected = 0 if previous is None else _position(previous) + 1
        position = _position(event)
        if position > expected:
            gaps += position - expected
            gaps_seen.append((*key, _named(expected), _named(position)))
        if previous is not None and event["at"] < previous["at"]:
            out_of_order += 1
        last[key] = event
    for key, event in last.items():
        row = rows.get(key)
        if row is None or (row.state, row.fire_count) != (event["state"], event["fire_count"]):
            gaps += 1
            found = "none" if row is None else f"rule_alerts {row.state} #{row.fire_count}"
            gaps_seen.append((*key, f"{event['state']} #{event['fire_count']}", found))
    stored = len(events)
    return StoreCheck(
        raised=raised,
        stored=stored,
        gaps=gaps,
        duplicates=duplicates + (0 if raised is None else max(0, stored - raised)),
        out_of_order=out_of_order,
        events=events,
        gaps_seen=gaps_seen[:5],
    )


async def check(
    rig: Rig, figures: Figures, *, faults: int, allowance: float = IN_FLIGHT_S
) -> StoreCheck:
    """The checks of an in-process scenario, after the service stopped; fills ``figures``
    and asserts nothing was lost or repeated (``allowance``: see expected.py)."""
    assert rig.handle.stopped.is_set(), "check() runs after the service has stopped"
    terms = rig.metrics.accounting()
    result = await check_store(rig.database_url, transitions_raised(rig.metrics))
    verdict = judge_trades(
        rig.exchange.written,
        result.events,
        stopping_at=rig.stopping_at,
        allowance=allowance,
        published=rig.exchange.tape.published(),
    )
    return record(figures, terms, result, verdict, rig.exchange, faults=faults)


def record(
    figures: Figures,
    terms: Mapping[str, int],
    result: StoreCheck,
    verdict: TradeVerdict,
    exchange: MockExchange,
    *,
    faults: int,
) -> StoreCheck:
    """Fill ``figures`` from the verdict against what the exchange wrote (the row's
    figures), the accounting ``terms`` and the store check (second checks); assert all."""
    figures.faults = faults
    figures.messages = exchange.frames_sent
    figures.counts = "frames sent"
    figures.measured(
        "exchange_sent",
        lost=verdict.lost + abs(terms["unaccounted"]) + result.lost,
        duplicates=verdict.duplicates + verdict.unexpected + result.duplicates,
    )
    figures.detail.update(
        expectation=verdict.detail(),
        exchange={
            "frames_sent": exchange.frames_sent,
            "frames_dropped": exchange.frames_dropped,
            "frames_unwritten": exchange.frames_unwritten,
        },
        accounting=dict(terms),
        transitions_raised=result.raised,
        transitions_stored=result.stored,
    )
    assert verdict.expected > 0, "the exchange wrote no marker trade: nothing was checked"
    assert verdict.lost == 0, f"firings the trades written imply are not stored: {verdict}"
    assert verdict.duplicates == 0, f"firings stored twice: {verdict}"
    assert verdict.unexpected == 0, f"firings no trade written implies: {verdict}"
    second_check(terms, result)
    return result


def second_check(terms: Mapping[str, int], result: StoreCheck) -> None:
    """The service's own counts: the accounting balances, and the store holds every
    transition raised (when known) once, in order, with no gap in any history."""
    assert terms["unaccounted"] == 0, f"accounting does not balance: {dict(terms)}"
    assert result.raised is None or result.raised > 0, "the scenario raised no transition"
    assert result.lost == 0, (
        f"transitions lost: raised {result.raised}, stored {result.stored}, gaps {result.gaps}"
        f" (first: {result.gaps_seen})"
    )
    assert result.duplicates == 0, f"{result.duplicates} transitions stored twice"
    assert result.out_of_order == 0, f"{result.out_of_order} events stored out of order"


@attrs.define(eq=False)
class Outages:
    """Watches the feed connections (polled every ``interval`` s) and keeps how long each
    was down: ``recovery_s`` is the longest time any connection spent down."""

    handle: ServiceHandle
    interval: float = 0.002
    down_since: dict[str, float] = attrs.field(factory=dict)
    outages: list[float] = attrs.field(factory=list)

    async def run(self, *, task_status: trio.TaskStatus[Outages] = trio.TASK_STATUS_IGNORED):
        task_status.started(self)
        while True:
            now = trio.current_time()
            for status in self.handle.connections:
                if not status.connected:
                    self.down_since.setdefault(status.name, now)
                elif status.name in self.down_since:
                    self.outages.append(now - self.down_since.pop(status.name))
            await trio.sleep(self.interval)

    @property
    def longest(self) -> float:
        return max(self.outages, default=0.0)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by nearest rank; nan when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]
