"""A running service as an operator sees it: the metric contract on /metrics, each metric
moving the way the load drives it, and ``oraculo-trio health`` answering 0 while the service
is healthy and non-zero once the feed or the store is down."""

from __future__ import annotations

import functools
import itertools
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from oraculo_trio.core.events import STREAMS
from oraculo_trio.core.rules import parse_rules
from oraculo_trio.core.sharding import shard_of
from oraculo_trio.mockexchange import (
    ExchangeSettings,
    MockExchange,
    RandomWalkMarket,
    synthetic_symbols,
)
from oraculo_trio.observe.metric_labels import (
    DB_WRITE_OPS,
    DEPTH_ONLY_DROP_REASONS,
    TRADE_ONLY_DROP_REASONS,
)
from oraculo_trio.observe.metrics import DB_OPS, DROP_REASONS, LAG_SPIKE_THRESHOLDS
from oraculo_trio.pipeline.rules_source import resolve_rule_class
from oraculo_trio.pipeline.service import TASK_NAMES, ServiceHandle, run_service
from oraculo_trio.testing import RecordingSink
from oraculo_trio.testing.config import service_environ
from oraculo_trio.testing.net import fetch
from oraculo_trio.testing.postgres import admin_sql
from oraculo_trio.testing.processes import cli_argv
from tests.e2e.flappy import every_tenth_book_rule, every_tenth_trade_rule
from tests.pipeline.helpers import pipeline_settings, running_service

SHARDS = 2
CHANNEL_CAPACITY = 8
# A rule that loads but never fires: the store sees no writes, only the health pings.
QUIET_RULES = {
    "rule": [
        {"id": "never", "kind": "crossing", "symbols": ["*"], "params": {"level": 1e9}},
    ]
}
# Rules that fire and resolve on every tenth trade and every tenth book: both streams'
# consumers hand transitions to the store and the dispatcher all along.
BUSY_RULES = {"rule": [*QUIET_RULES["rule"], every_tenth_trade_rule(), every_tenth_book_rule()]}
# The limiters of a service on SQLite: Trio's default, the store's worker thread, the rules'.
SQLITE_LIMITERS = {"default", "store", "rules", "rules_process"}
# The metric contract (docs/architecture.md): type, and the label values every series exists
# for from start-up (None: the values depend on the process, at least one series).
CONTRACT: dict[str, tuple[str, dict[str, set[str] | None]]] = {
    "oraculo_event_loop_lag_seconds": ("gauge", {}),
    "oraculo_event_loop_lag_spikes": ("counter", {"threshold": set(LAG_SPIKE_THRESHOLDS)}),
    "oraculo_alerts_queue_time_seconds": ("histogram", {"stream": set(STREAMS)}),
    "oraculo_alerts_queue_time_latest_seconds": ("gauge", {"stream": set(STREAMS)}),
    "oraculo_alerts_queue_depth": (
        "gauge",
        {"stream": set(STREAMS), "shard": {str(i) for i in range(SHARDS)}},
    ),
    "oraculo_alerts_queue_dropped": ("counter", {"stream": None, "reason": None}),
    "oraculo_db_insert_ms": ("histogram", {"op": set(DB_OPS)}),
    "oraculo_cpu_process_cores": ("gauge", {}),
    "oraculo_threads_total": ("gauge", {}),
    "oraculo_thread_cpu_seconds": ("gauge", {"thread_name": None, "native_id": None}),
    "oraculo_to_thread_executor_queue_depth": ("gauge", {"limiter": SQLITE_LIMITERS}),
    "oraculo_to_thread_executor_threads": ("gauge", {"limiter": SQLITE_LIMITERS}),
    "oraculo_to_thread_executor_max_workers": ("gauge", {"limiter": SQLITE_LIMITERS}),
    "oraculo_task_exceptions": ("counter", {"task": set(TASK_NAMES)}),
    "oraculo_last_exception_timestamp_seconds": ("gauge", {}),
    "oraculo_dumps": ("counter", {"reason": {"event_loop_lag"}}),
}
# A trade is never conflated, superseded, shed or held for a book sync: no such series.
DROP_SERIES = (
    {(stream, reason) for stream in STREAMS for reason in DROP_REASONS}
    - {("trade", reason) for reason in DEPTH_ONLY_DROP_REASONS}
    - {("depth", reason) for reason in TRADE_ONLY_DROP_REASONS}
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def quiet_market(symbols: int = 4, rate_per_s: float = 200) -> RandomWalkMarket:
    return RandomWalkMarket(synthetic_symbols(symbols), rate_per_s=rate_per_s, trade_ratio=0.5)


async def health(handle: ServiceHandle) -> tuple[int, str]:
    """``oraculo-trio health --url`` against ``handle``'s endpoint: (exit code, stdout)."""
    host, port = handle.http_address
    args = cli_argv("health", "--url", f"http://{host}:{port}", "--timeout", "5")
    result = await trio.run_process(args, capture_stdout=True, env=service_environ(), check=False)
    return result.returncode, result.stdout.decode()


async def scrape(handle: ServiceHandle) -> str:
    """What Prometheus reads from ``handle``'s /metrics."""
    return (await trio.to_thread.run_sync(fetch, handle.metrics_url)).body


def samples_of(text: str) -> Samples:
    """Every sample of a scrape by (name, labels without ``service``)."""
    return {
        (s.name, frozenset((k, v) for k, v in s.labels.items() if k != "service")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def value(handle: ServiceHandle, name: str, **labels: str) -> float:
    """A sample of the running service's own registry (0 for a series not created yet)."""
    found = handle.metrics.inner.get_sample_value(name, labels)
    return 0.0 if found is None else found


async def until_moved(
    checks: dict[str, Callable[[], bool]], seconds: float, poll: float = 0.05
) -> None:
    """Wait until every check holds (each one is seen once: a gauge may move back later),
    or fail naming the ones that never did."""
    waiting = dict(checks)
    try:
        with trio.fail_after(seconds):
            while True:
                waiting = {name: check for name, check in waiting.items() if not check()}
                if not waiting:
                    return
                await trio.sleep(poll)  # metrics have no wake-up event
    except trio.TooSlowError:
        raise AssertionError(f"never moved within {seconds} s: {sorted(waiting)}") from None


def block_the_loop(done: Callable[[], bool], at_least: float) -> None:
    """Hold the Trio thread (the fault under test) until ``done()`` holds, and for at
    least ``at_least`` seconds."""
    started = time.monotonic()
    while not done() or time.monotonic() - started < at_least:
        if time.monotonic() - started > 30:
            raise AssertionError("the watchdog never reported the blocked loop")
        time.sleep(0.01)


class DatabaseLock:
    """Another process's write lock on a SQLite file, as a busy neighbour would hold it."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None

    def take(self) -> None:
        self._conn = sqlite3.connect(
            self._path, timeout=10, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        assert self._conn is not None
        self._conn.execute("ROLLBACK")
        self._conn.close()


async def wait_not_ready(handle: ServiceHandle, component: str) -> None:
    while True:
        ready, components = handle.readiness.snapshot()
        if not ready and not components[component]["ok"]:
            return
        await trio.sleep(0.05)  # readiness has no wake-up event


async def serve_until_cancelled(
    scope: trio.CancelScope, exchange: MockExchange, *, task_status: trio.TaskStatus
) -> None:
    with scope:
        await exchange.serve(task_status=task_status)


def check_contract(text: str) -> None:
    """Each contract metric with its type, the ``service`` label, and every series that
    exists from start-up; no ``_created`` series."""
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, (kind, labels) in CONTRACT.items():
        family = families[name]
        assert family.type == kind, name
        samples = [s for s in family.samples if not s.name.endswith("_created")]
        assert samples, name
        assert all(s.labels["service"] == "alerts" for s in samples), name
        present = {tuple(s.labels.get(label) for label in labels) for s in samples}
        fixed = [values for values in labels.values() if values is not None]
        if len(fixed) == len(labels):
            assert present >= set(itertools.product(*fixed)), name
    dropped = families["oraculo_alerts_queue_dropped"].samples
    assert {(s.labels["stream"], s.labels["reason"]) for s in dropped} == DROP_SERIES
    limiters = {s.labels["limiter"] for s in families["oraculo_to_thread_executor_threads"].samples}
    assert limiters == SQLITE_LIMITERS
    # What the process holds and runs, and no prometheus_client _created series.
    for name in (
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "oraculo_build_info",
    ):
        assert families[name].samples, name
    assert "_created" not in text
    thread_names = {s.labels["thread_name"] for s in families["oraculo_thread_cpu_seconds"].samples}
    assert {"MainThread", "oraculo-watchdog", "oraculo-http"} <= thread_names


def increased(before: Samples, after: Samples, names: Iterable[tuple[str, dict[str, str]]]) -> list:
    """The series of ``names`` that did not increase from ``before`` to ``after``."""
    return [
        (name, labels)
        for name, labels in names
        if not (sample(after, name, **labels) or 0) > (sample(before, name, **labels) or 0)
    ]


async def test_every_contract_metric_moves_with_the_load_and_health_follows(
    tmp_path: Path,
) -> None:
    market = quiet_market(symbols=8, rate_per_s=400)
    assert {shard_of(symbol, SHARDS) for symbol in market.symbols} == set(range(SHARDS))
    exchange_scope = trio.CancelScope()
    sink = RecordingSink()
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            exchange = MockExchange(market, ExchangeSettings(tick=0.02, ping_interval=None))
            await nursery.start(serve_until_cancelled, exchange_scope, exchange)
            settings = pipeline_settings(
                tmp_path,
                exchange.ws_url,
                market.symbols,
                # Small channels, so that a store that pushes back fills them in a moment.
                pipeline={
                    "shards": SHARDS,
                    "channel_capacity": CHANNEL_CAPACITY,
                    "stale_after": 60.0,
                },
                database={"channel_capacity": 16, "statement_timeout": 1.5},
                observe={"lag_interval": 0.2, "dump_after": 0.4, "store_check_interval": 0.2},
            )
            handle: ServiceHandle = await nursery.start(
                functools.partial(
                    run_service,
                    settings,
                    parse_rules(BUSY_RULES, resolve_rule_class),
                    sinks=[sink],
                    handle_signals=False,
                )
            )
            await handle.wait_connected()
            start = samples_of(await scrape(handle))
            await healthy_load_moves_the_metrics(handle, settings.rules.offload_threads)
            healthy = await scrape(handle)
            code, health_text = await health(handle)
            await a_blocked_loop_is_seen(handle)
            locked = await a_locked_store_pushes_back(handle, tmp_path / "alerts.db")
            after = samples_of(await scrape(handle))
            assert handle.metrics.accounting()["unaccounted"] == 0

            # The exchange goes away: connections close, reconnects are refused by the OS.
            exchange_scope.cancel()
            await wait_not_ready(handle, "feed")
            down_code, down = await health(handle)
            handle.request_shutdown()

    check_contract(healthy)
    # Counters and histograms: what the load drove, as a scrape shows it.
    moved = [
        *(("oraculo_alerts_queue_time_seconds_count", {"stream": s}) for s in STREAMS),
        *(("oraculo_db_insert_ms_count", {"op": op}) for op in DB_OPS if op != "migrate"),
        ("oraculo_event_loop_lag_spikes_total", {"threshold": "0.5"}),
        ("oraculo_dumps_total", {"reason": "event_loop_lag"}),
        ("oraculo_alerts_queue_dropped_total", {"stream": "depth", "reason": "conflated"}),
    ]
    assert increased(start, after, moved) == []
    # Applied before the first scrape: the store migrated while the service started.
    assert sample(start, "oraculo_db_insert_ms_count", op="migrate") == 1
    assert sample(start, "oraculo_db_rows_total", op="migrate") >= 1
    # Gauges: set by the load, and the backlog of a store that pushes back.
    assert sample(after, "oraculo_event_loop_lag_seconds") > 0
    for stream in STREAMS:
        assert sample(after, "oraculo_alerts_queue_time_latest_seconds", stream=stream) > 0
    depths = {
        (stream, n): sample(locked, "oraculo_alerts_queue_depth", stream=stream, shard=str(n))
        for stream in STREAMS
        for n in range(SHARDS)
    }
    assert all(depths["depth", shard] > 0 for shard in range(SHARDS)), depths
    assert max(depths["trade", shard] for shard in range(SHARDS)) >= CHANNEL_CAPACITY, depths
    assert sample(after, "oraculo_cpu_process_cores") > 0
    assert sample(after, "oraculo_threads_total") >= 3
    # A healthy run raises nothing from its tasks.
    for task in TASK_NAMES:
        assert sample(after, "oraculo_task_exceptions_total", task=task) == 0, task
    assert sample(after, "oraculo_last_exception_timestamp_seconds") == 0

    assert code == 0, health_text
    assert health_text.startswith("HEALTHY")
    for part in ("scheduler lag:", "depth: received", "trade: received", "dropped:", "db insert"):
        assert part in health_text, part
    assert "feed connections: 2/2 connected" in health_text
    assert down_code == 1, down
    assert down.startswith("UNHEALTHY")
    assert "    not ready: feed_disconnected: disconnected: " in down
    assert "feed connections: 0/2 connected" in down


async def healthy_load_moves_the_metrics(handle: ServiceHandle, rule_threads: int) -> None:
    """Rules evaluated on both streams, every store statement written and timed, the
    process sampled: each series the load drives leaves its start-up value."""
    default_tokens = trio.to_thread.current_default_thread_limiter().total_tokens
    checks: dict[str, Callable[[], bool]] = {}
    for stream in STREAMS:
        checks[f"queue_time{{{stream}}}"] = functools.partial(
            lambda s: value(handle, "oraculo_alerts_queue_time_seconds_count", stream=s) > 0,
            stream,
        )
        checks[f"queue_time_latest{{{stream}}}"] = functools.partial(
            lambda s: value(handle, "oraculo_alerts_queue_time_latest_seconds", stream=s) > 0,
            stream,
        )
    for op in DB_OPS:
        checks[f"db_insert_ms{{{op}}}"] = functools.partial(
            lambda o: value(handle, "oraculo_db_insert_ms_count", op=o) > 0, op
        )
    for op in DB_WRITE_OPS:
        checks[f"db_rows{{{op}}}"] = functools.partial(
            lambda o: value(handle, "oraculo_db_rows_total", op=o) > 0, op
        )
    tokens = {"default": default_tokens, "store": 1, "rules": rule_threads}
    tokens["rules_process"] = rule_threads
    for limiter, total in tokens.items():
        checks[f"max_workers{{{limiter}}}"] = functools.partial(
            lambda name, n: (
                value(handle, "oraculo_to_thread_executor_max_workers", limiter=name) == n
            ),
            limiter,
            total,
        )
    checks["cpu_process_cores"] = lambda: value(handle, "oraculo_cpu_process_cores") > 0
    checks["event_loop_lag"] = lambda: value(handle, "oraculo_event_loop_lag_seconds") > 0
    checks["thread_cpu{MainThread}"] = lambda: any(
        s.value > 0
        for family in handle.metrics.inner.collect()
        if family.name == "oraculo_thread_cpu_seconds"
        for s in family.samples
        if s.labels["thread_name"] == "MainThread"
    )
    await until_moved(checks, seconds=30)


async def a_blocked_loop_is_seen(handle: ServiceHandle) -> None:
    """Block the Trio thread until the watchdog dumps the stacks: the next heartbeat is
    late by more than 0.5 s (at least 0.8 s blocked, a heartbeat every 0.2 s)."""
    dumps = functools.partial(value, handle, "oraculo_dumps_total", reason="event_loop_lag")
    block_the_loop(lambda: dumps() >= 1, at_least=0.8)
    spikes = functools.partial(
        value, handle, "oraculo_event_loop_lag_spikes_total", threshold="0.5"
    )
    await until_moved({"lag_spikes{0.5}": lambda: spikes() >= 1}, seconds=10)


async def a_locked_store_pushes_back(handle: ServiceHandle, database: Path) -> Samples:
    """Lock the SQLite file from outside: the writer's statements wait and time out, the
    store channel fills, the consumers wait for it and their channels fill. Returns a scrape
    taken while it lasts; the store is unlocked and has written again on return."""
    capacity = handle.settings.pipeline.channel_capacity
    lock = DatabaseLock(database)
    await trio.to_thread.run_sync(lock.take)
    seen = {"threads": 0.0, "queue": 0.0}

    def store_limiter_busy() -> bool:
        # Sampled once a second: keep the largest values seen.
        for key, name in (
            ("threads", "oraculo_to_thread_executor_threads"),
            ("queue", "oraculo_to_thread_executor_queue_depth"),
        ):
            seen[key] = max(seen[key], value(handle, name, limiter="store"))
        return seen["threads"] >= 1 and seen["queue"] >= 1

    checks: dict[str, Callable[[], bool]] = {
        "backpressure{store}": lambda: (
            value(handle, "oraculo_backpressure_waits_total", channel="store") > 0
        ),
        "backpressure{trade_shard}": lambda: (
            value(handle, "oraculo_backpressure_waits_total", channel="trade_shard") > 0
        ),
        "db_timeouts": lambda: any(
            value(handle, "oraculo_db_timeouts_total", op=op) > 0 for op in DB_OPS
        ),
        "to_thread{store}": store_limiter_busy,
    }
    # Depth never waits: each shard's messages pile up behind its held consumer. One trade
    # reader serves every shard and waits for the first full one, so that one shows its
    # channel full (the others get nothing meanwhile: they show what they hold).
    for shard in range(SHARDS):
        checks[f"queue_depth{{depth,{shard}}}"] = functools.partial(
            lambda n: value(handle, "oraculo_alerts_queue_depth", stream="depth", shard=str(n)) > 0,
            shard,
        )
    checks["queue_depth{trade} full"] = lambda: any(
        value(handle, "oraculo_alerts_queue_depth", stream="trade", shard=str(n)) >= capacity
        for n in range(SHARDS)
    )
    try:
        await until_moved(checks, seconds=30)
        locked = await scrape(handle)
    finally:
        await trio.to_thread.run_sync(lock.release)
    written = value(handle, "oraculo_db_rows_total", op="insert_alert_events")
    await until_moved(
        {
            "db_rows after the lock": lambda: (
                value(handle, "oraculo_db_rows_total", op="insert_alert_events") > written
            )
        },
        seconds=30,
    )
    return samples_of(locked)


async def test_health_cli_cannot_reach_a_service() -> None:
    with trio.fail_after(20):
        result = await trio.run_process(
            cli_argv("health", "--url", "http://127.0.0.1:9", "--timeout", "2"),
            capture_stdout=True,
            env=service_environ(),
            check=False,
        )
    assert result.returncode == 1
    assert result.stdout.decode().startswith("UNHEALTHY: cannot reach http://127.0.0.1:9")


@pytest.mark.postgres
async def test_health_turns_unhealthy_when_the_database_goes_away(
    tmp_path: Path, pg_server: str, pg_database_url: str
) -> None:
    with trio.fail_after(40):
        async with running_service(
            tmp_path,
            quiet_market(),
            parse_rules(QUIET_RULES),
            database={"url": pg_database_url, "statement_timeout": 2.0},
            observe={"store_check_interval": 0.2},
            service={"shutdown_grace": 2.0},
        ) as (_, handle):
            code, healthy = await health(handle)
            scraped = samples_of(await scrape(handle))
            name = pg_database_url.rsplit("/", 1)[1]
            # A real outage: the database is dropped under the running service.
            await trio.to_thread.run_sync(
                admin_sql, pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
            )
            await wait_not_ready(handle, "store")
            down_code, down = await health(handle)

    assert code == 0, healthy
    # PostgreSQL's store runs on the event loop, with no worker thread: no limiter series
    # that could never move.
    limiters = {
        dict(labels)["limiter"]
        for name, labels in scraped
        if name == "oraculo_to_thread_executor_threads"
    }
    assert limiters == SQLITE_LIMITERS - {"store"}
    assert down_code == 1, down
    assert "    not ready: store_down: ping failed: " in down
    assert "ping failed" in down
