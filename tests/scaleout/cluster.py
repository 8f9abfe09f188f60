"""Running several oraculo-trio instances (real subprocesses) against one PostgreSQL and one
mock exchange, and watching what each of them owns and processes."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import attrs
import trio

from oraculo_trio.core.sharding import PARTITIONS, partition_of
from oraculo_trio.mockexchange import ExchangeSettings, MockExchange
from oraculo_trio.store import open_store
from oraculo_trio.store.coordination import APPLICATION_PREFIX, namespace
from oraculo_trio.testing.config import service_sections, write_service_config
from oraculo_trio.testing.postgres import admin_sql
from oraculo_trio.testing.processes import ServiceProcess, service_process
from tests.pipeline.helpers import ManualMarket, trade_frame
from tests.reliability.expected import marker_rule

RULE_ID = "tenth"
"""Fires on every trade id that is a multiple of ten (the id its value), resolves on the
next: the trades the exchange wrote say which firings the store must hold."""

CLAIM_INTERVAL = 0.3

# Only in the test's own database: other test runs may share the server.
TERMINATE_CLAIMS = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
    " WHERE datname = current_database() AND application_name = $1"
)
GRACE = 4.0


def one_symbol_per_partition(partitions: int = PARTITIONS) -> list[str]:
    """Symbols covering every partition once, so any share of them has symbols to process."""
    found: dict[int, str] = {}
    index = 0
    while len(found) < partitions:
        symbol = f"S{index}USDT"
        found.setdefault(partition_of(symbol, partitions), symbol)
        index += 1
    return [found[p] for p in range(partitions)]


def instance_config(
    directory: Path,
    *,
    ws_url: str,
    database_url: str,
    symbols: Sequence[str],
    instance_id: str = "",
    mode: str = "postgres",
) -> Path:
    """``oraculo.toml`` of one instance reading trades only, printing its alerts on stdout."""
    sections = service_sections(
        exchange_url=ws_url,
        symbols=symbols,
        database_url=database_url,
        dump_dir=directory / "dumps",
        overrides={
            "service": {"shutdown_grace": GRACE},
            "feed": {"depth_streams": [], "trade_streams": ["trade"]},
            "database": {"statement_timeout": 2.0},
            "dispatch": {"sinks": ["stdout"]},
            "cluster": {
                "mode": mode,
                "claim_interval": CLAIM_INTERVAL,
                "instance_id": instance_id,
            },
        },
    )
    return write_service_config(directory, sections, [marker_rule(RULE_ID)])


@attrs.define(eq=False)
class Instance:
    """One ``oraculo-trio run`` subprocess of a cluster."""

    name: str
    service: ServiceProcess

    def log_tail(self) -> str:
        return self.service.log_tail()


def query(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    """The rows of ``sql`` (blocking: call it from a thread)."""
    return admin_sql(url, sql, args=args, timeout=5.0)


async def claims(database_url: str, cluster: str = "alerts") -> dict[str, set[int]]:
    """Partitions held per instance, as PostgreSQL's pg_locks shows them to an outsider."""
    rows = await trio.to_thread.run_sync(
        query,
        database_url,
        """
        SELECT a.application_name AS holder, l.objid::int8 AS partition
        FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
          AND l.classid::int8 = $1
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        """,
        namespace(cluster, "partitions"),
    )
    held: dict[str, set[int]] = {}
    for row in rows:
        held.setdefault(row["holder"].removeprefix(APPLICATION_PREFIX), set()).add(row["partition"])
    return held


def settled(held: dict[str, set[int]], names: Iterable[str], partitions: int = PARTITIONS) -> bool:
    """Exactly ``names`` hold partitions, every partition once, in fair shares."""
    names = set(names)
    if set(held) != names:
        return False
    shares = [len(parts) for parts in held.values()]
    floor = partitions // len(names)
    return sum(shares) == partitions and all(floor - 1 <= s <= floor + 1 for s in shares)


def each_stream_read_once(exchange: MockExchange, symbols: Iterable[str]) -> bool:
    """Every symbol's trade stream has exactly one subscriber (complete and disjoint)."""
    return all(exchange.subscribers(f"{s.lower()}@trade") == 1 for s in symbols)


async def poll(predicate: Callable[[], object], *, interval: float = 0.05) -> None:
    """Wait until ``predicate()`` (sync or async) is true; callers guard with fail_after.

    Lock tables, subscriptions and stored rows have no event to wait on: they are polled.
    """
    while True:
        result = predicate()
        if hasattr(result, "__await__"):
            result = await result
        if result:
            return
        await trio.sleep(interval)


async def wait_settled(
    database_url: str, exchange: MockExchange, names: Iterable[str], symbols: Sequence[str]
) -> dict[str, set[int]]:
    names = set(names)
    held: dict[str, set[int]] = {}

    async def check() -> bool:
        held.clear()
        held.update(await claims(database_url))
        return settled(held, names) and each_stream_read_once(exchange, symbols)

    await poll(check)
    return held


def push_trades(market: ManualMarket, trade_id: int, price: float = 100.0) -> None:
    """One trade with id ``trade_id`` for every symbol, stamped now."""
    now_ms = int(time.time() * 1000)
    market.push(trade_frame(s, trade_id, price, now_ms) for s in market.symbols)


async def stored_events(database_url: str) -> list[dict]:
    async with open_store(database_url, statement_timeout=5.0) as store:
        return await store.fetch_alert_events()


async def wait_events(database_url: str, count: int) -> list[dict]:
    """Wait until at least ``count`` alert events are stored; return them all."""
    events: list[dict] = []

    async def enough() -> bool:
        events[:] = await stored_events(database_url)
        return len(events) >= count

    await poll(enough, interval=0.1)
    return events


@attrs.define(eq=False)
class Cluster:
    """Instances of one test on one database, reading one mock exchange."""

    root: Path
    database_url: str
    market: ManualMarket
    exchange: MockExchange
    nursery: trio.Nursery
    processes: contextlib.AsyncExitStack
    instances: dict[str, Instance] = attrs.field(factory=dict)

    async def start(self, *names: str) -> None:
        """Start instances ``names``, each once it logged its HTTP address."""
        for name in names:
            config = instance_config(
                self.root / name,
                ws_url=self.exchange.ws_url,
                database_url=self.database_url,
                symbols=self.market.symbols,
                instance_id=name,
            )
            service = await self.processes.enter_async_context(service_process(config, name=name))
            await service.wait_address()
            self.instances[name] = Instance(name, service)

    async def settled(self) -> dict[str, set[int]]:
        """Wait until the live instances share the partitions fairly, each symbol read once."""
        return await wait_settled(
            self.database_url, self.exchange, self.instances, self.market.symbols
        )

    async def stop(self) -> None:
        """SIGTERM every instance; each must drain and exit 0."""
        for instance in self.instances.values():
            instance.service.send_signal(signal.SIGTERM)
        for instance in self.instances.values():
            assert await instance.service.wait() == 0, instance.log_tail()


@asynccontextmanager
async def running_cluster(root: Path, database_url: str, *names: str) -> AsyncIterator[Cluster]:
    """A mock exchange publishing one symbol per partition (recording every trade it
    writes), and instances ``names`` settled."""
    market = ManualMarket(one_symbol_per_partition())
    settings = ExchangeSettings(tick=0.02, ping_interval=None, record_written=True)
    async with trio.open_nursery() as nursery, contextlib.AsyncExitStack() as processes:
        exchange = await nursery.start(MockExchange(market, settings).serve)
        cluster = Cluster(root, database_url, market, exchange, nursery, processes)
        await cluster.start(*names)
        await cluster.settled()
        yield cluster
        nursery.cancel_scope.cancel()
