"""The configuration schema: every section, and every key with its type, default, allowed
values and help text.

Each key is declared once, here. The same declarations validate the file and the
environment (:mod:`oraculo_trio.settings.loading`), print the configuration reference, and
give the pipeline its settings objects: nothing else writes a default.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs

from oraculo_trio.core.markets import MARKETS, qualified, split

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")
DEPTH_STREAM_KINDS = ("depth5", "depth10", "depth20", "bookTicker", "depth")
TRADE_STREAM_KINDS = ("trade", "aggTrade")
FUTURES_STREAM_KINDS = ("markPrice", "forceOrder")
DEPTH_SPEEDS = (100, 250, 500, 1000)


def _key(
    help: str,
    check: Callable[[Any], str | None] | None = None,
    *,
    path: bool = False,
    duration: bool = False,
    **kwargs: Any,
) -> Any:
    """An attrs field carrying its help text and a check returning an error or None.

    ``path``: a relative value is taken from the configuration file's folder. ``duration``:
    seconds, or a string such as ``"90d"``, ``"30m"``.
    """
    metadata = {"help": help, "check": check, "path": path, "duration": duration}
    return attrs.field(metadata=metadata, **kwargs)


def _positive(value: Any) -> str | None:
    return None if value > 0 and math.isfinite(value) else "a positive number"


def _non_negative(value: Any) -> str | None:
    return None if value >= 0 and math.isfinite(value) else "a number >= 0"


def _one_of(*allowed: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in allowed else "one of " + ", ".join(map(repr, allowed))

    return check


def _subset_of(*allowed: str) -> Callable[[Any], str | None]:
    def check(values: Any) -> str | None:
        bad = [v for v in values if v not in allowed]
        return None if not bad else "a list of " + ", ".join(map(repr, allowed))

    return check


def _integer(low: int, high: int | None = None) -> Callable[[Any], str | None]:
    allowed = f"an integer >= {low}" if high is None else f"an integer {low}..{high}"

    def check(value: Any) -> str | None:
        return None if low <= value and (high is None or value <= high) else allowed

    return check


def _port(value: Any) -> str | None:
    return None if 0 <= value <= 65535 else "a TCP port 0..65535 (0 picks a free one)"


def _symbols(values: Any) -> str | None:
    if not values:
        return 'a non-empty list of symbols such as ["BTCUSDT"]'
    bad = [v for v in values if not (isinstance(v, str) and v.replace("_", "").isalnum())]
    if not bad:
        return None
    if ":" in str(bad[0]):
        return (
            f"the exchange's names (bad: {bad[0]!r}): the market is feed.market, and a "
            "[[feed]] table per market lists its symbols"
        )
    return f"letters, digits and '_' only (bad: {bad[0]!r})"


def _ws_url(value: Any) -> str | None:
    ok = value == "" or value.startswith(("ws://", "wss://"))
    return None if ok else "a ws:// or wss:// URL, or empty (the market's)"


def _http_url(value: Any) -> str | None:
    # Only http and https: file://, ftp://, gopher://... never reach httpx.
    ok = value == "" or (value.startswith(("http://", "https://")) and _has_host(value))
    return None if ok else "an http:// or https:// URL with a host, or empty (see the key)"


def _has_host(url: str) -> bool:
    try:
        return bool(urlsplit(url).hostname)
    except ValueError:
        return False


def _database_url(value: Any) -> str | None:
    schemes = ("sqlite:///", "postgresql://", "postgres://")
    return None if value.startswith(schemes) else "a sqlite:///PATH or postgresql:// URL"


@attrs.frozen
class ServiceSettings:
    name: str = _key("Value of the `service` label on every metric.", default="alerts")
    shutdown_grace: float = _key(
        "Seconds a SIGINT/SIGTERM shutdown may take to drain queues and flush the store "
        "before everything is cancelled.",
        _positive,
        default=10.0,
    )
    log_level: str = _key("Log level.", _one_of(*LOG_LEVELS), default="INFO")
    log_format: str = _key(
        "Format of the service's own log lines on stderr: `text` (time, level, logger: "
        "message) or `json` (one object a line, ISO-8601 UTC times). Alerts go to the sinks.",
        _one_of(*LOG_FORMATS),
        default="text",
    )


@attrs.frozen
class FeedSettings:
    exchange: str = _key("Exchange adapter.", _one_of("binance"), default="binance")
    market: str = _key(
        "Binance market of this feed: `spot` (binance.com), `us` (Binance.US), `usdm` (USD-M "
        "futures) or `coinm` (COIN-M futures). It decides the stream and REST bases, the "
        "symbols' spelling, the streams and speeds offered, the request weights and the "
        "book sync; symbols of a market other than spot are named `<market>:<SYMBOL>` in "
        "rules, the store and metrics (`usdm:BTCUSDT`). Several markets: one [[feed]] table "
        "each.",
        _one_of(*MARKETS),
        default="spot",
    )
    url: str = _key(
        "WebSocket base URL; combined streams are read from URL/stream?streams=...; empty: "
        "the market's (wss://stream.binance.com:9443, wss://stream.binance.us:9443, "
        "wss://fstream.binance.com, wss://dstream.binance.com).",
        _ws_url,
        default="",
    )
    rest_url: str = _key(
        "REST base URL (depth snapshots, exchangeInfo, time); empty: the market's "
        "(https://api.binance.com...) when feed.url is, else derived from feed.url's host.",
        _http_url,
        default="",
    )
    symbols: tuple[str, ...] = _key(
        "Symbols to watch (upper case, as the exchange names them).",
        _symbols,
        default=("BTCUSDT", "ETHUSDT"),
        converter=lambda v: tuple(s.upper() for s in v),
    )
    depth_streams: tuple[str, ...] = _key(
        "Depth stream kinds per symbol, read on their own connection(s). `depth` is the diff "
        "stream: a full book per symbol, synced from REST snapshots (alone: one book a symbol).",
        _subset_of(*DEPTH_STREAM_KINDS),
        default=("depth20",),
        converter=tuple,
    )
    trade_streams: tuple[str, ...] = _key(
        "Trade stream kinds per symbol, read on their own connection(s). Futures markets "
        "offer `aggTrade` only.",
        _subset_of(*TRADE_STREAM_KINDS),
        default=("trade",),
        converter=tuple,
    )
    futures_streams: tuple[str, ...] = _key(
        "Futures streams per symbol (usdm, coinm), read with the trades (each counted, never "
        "conflated): `markPrice` (mark and index price, funding rate; every second) and "
        "`forceOrder` (liquidations).",
        _subset_of(*FUTURES_STREAM_KINDS),
        default=(),
        converter=tuple,
    )
    max_streams_per_connection: int = _key(
        "Streams per WebSocket connection (Binance allows at most 1024).",
        _integer(1, 1024),
        default=1024,
    )
    reconnect_initial: float = _key(
        "First reconnect delay, seconds; doubles (with jitter) up to reconnect_max.",
        _positive,
        default=0.5,
    )
    reconnect_max: float = _key("Longest reconnect delay, seconds.", _positive, default=30.0)
    connection_lifetime: float = _key(
        "Seconds after which a connection is replaced on purpose, before the exchange's 24 h cut.",
        _positive,
        default=23.5 * 3600,
    )
    stall_timeout: float = _key(
        "Seconds without any frame after which the connection is considered dead and replaced.",
        _positive,
        default=30.0,
    )
    backfill_max_trades: int = _key(
        "Most trades of one symbol fetched over REST to fill a gap in its trade ids (after a "
        "reconnect, or within the stream), before the trade after the gap goes on; beyond "
        "it, the rest of the gap is counted in oraculo_feed_trades_missed_total. 0: never "
        "backfill.",
        _integer(0),
        default=10_000,
    )
    receive_buffer_size: int = _key(
        "Bytes one socket read may take: the read-ahead. The reader takes what the socket "
        "holds in one read, so a backlog moves out of the kernel into the service, where the "
        "overload policy applies to it. A read that fills it means the service is behind its "
        "feed: then, of a partial-book or bookTicker stream, only the newest frame of the "
        "read is decoded (the older ones count as conflated), and depth diffs merge per "
        "symbol before they are applied (later levels win, no level is lost). Trades are "
        "never merged nor dropped.",
        _positive,
        default=4 * 1024 * 1024,
    )
    max_message_size: int = _key(
        "Largest frame accepted, bytes; a larger one closes the connection and is counted.",
        _positive,
        default=1024 * 1024,
    )
    client: str = _key(
        "WebSocket client: `native` parses a whole socket read in the feed task (one "
        "checkpoint per read); `trio-websocket` is the library (a reader task, a checkpoint "
        "per message). See pipeline/transport.py.",
        _one_of("native", "trio-websocket"),
        default="native",
    )
    depth_update_ms: int = _key(
        "Update speed of the depth streams, ms: 100 (`@100ms`) on every market; spot and us "
        "also 1000 (`@depth`), futures 250 (`@depth`) and 500 (`@500ms`).",
        lambda v: None if v in DEPTH_SPEEDS else "100, 250, 500 or 1000",
        default=100,
    )
    snapshot_limit: int = _key(
        "Levels per side of the REST snapshot a diff book starts from (spot 1..5000; futures "
        "5, 10, 20, 50, 100, 500 or 1000). Its request weight grows with it (spot 5/25/50/250 "
        "up to 100/500/1000/5000; futures 2/5/10/20 up to 50/100/500/1000); the book cannot "
        "see levels beyond it until a diff touches them.",
        _integer(1, 5000),
        default=1000,
    )
    rest_weight_budget: int = _key(
        "REST request weight this service may spend in any rest_weight_window (snapshots, "
        "exchangeInfo, time); 0: half of what Binance allows an IP per minute on the market "
        "(spot 6000, us 1200, usdm and coinm 2400). Workers of one host share it. Snapshots "
        "burst up to what is left of it, then pace.",
        _integer(0),
        default=0,
    )
    rest_weight_window: float = _key(
        "Seconds rest_weight_budget applies to; Binance counts per minute (shorter in tests).",
        _positive,
        default=60.0,
    )
    snapshot_stagger: float = _key(
        "Least seconds between two REST snapshot requests once the budget has run out (the "
        "burst before that is not staggered), so that the rest are spread out rather than "
        "stampeded when the window frees up.",
        _non_negative,
        default=0.1,
    )
    snapshot_timeout: float = _key(
        "Seconds a REST snapshot request may take before it is asked again.",
        _positive,
        default=10.0,
    )
    book_live_timeout: float = _key(
        "Seconds a diff book may stay out of live, counted from when its snapshot request "
        "could be sent (a book waiting for the weight budget is not late), before /readyz "
        "answers 503 with the reason book_not_live naming it and a warning is logged.",
        _positive,
        default=30.0,
    )
    rotation_spacing: float = _key(
        "Least seconds between two connections replaced at connection_lifetime: they rotate "
        "one at a time, never all at once (the first lifetimes are staggered by it).",
        _non_negative,
        default=60.0,
    )
    clock_check_interval: float = _key(
        "Seconds between measurements of the exchange's clock against ours (GET .../time; "
        "also at start-up); ages (now - E) are corrected by the offset found. 0: never.",
        _non_negative,
        default=300.0,
    )
    clock_offset_warning: float = _key(
        "Seconds of clock offset to the exchange past which a warning is logged (ages are "
        "corrected in any case).",
        _positive,
        default=1.0,
    )


@attrs.frozen
class PipelineSettings:
    shards: int = _key(
        "Shards per stream: each has a depth and a trade consumer with its own state.",
        _integer(1, 256),
        default=4,
    )
    channel_capacity: int = _key(
        "Capacity of each shard channel, messages.",
        _integer(1, 1_000_000),
        default=1024,
    )
    batch_max: int = _key(
        "Most messages a consumer takes before it yields to the scheduler.",
        _integer(1),
        default=256,
    )
    batch_budget_ms: float = _key(
        "Most milliseconds of work per micro-batch before yielding; also, while a feed "
        "connection is behind, how long its reader reads between two turns of the consumers "
        "(larger merges of diffs, fewer book updates).",
        _positive,
        default=20.0,
    )
    stale_after: float = _key(
        "Seconds after which a message is stale: rules skipped, state still updated, "
        "counted as stale_drop.",
        _positive,
        default=5.0,
    )
    shed_after: float = _key(
        "Seconds a diff may be behind its exchange event time before its book is shed: its "
        "buffered diffs dropped (counted as overflow) and a fresh REST snapshot taken, within "
        "the weight budget, instead of catching up diff by diff. The diffs still on their way "
        "that the snapshot holds are skipped without being decoded (superseded).",
        _positive,
        default=10.0,
    )
    max_feed_lag: float = _key(
        "Seconds behind the exchange (now minus the event time of what is evaluated) past "
        "which /readyz answers 503 with the reason feed_behind, until it is back under.",
        _positive,
        default=5.0,
    )
    debug_batch_delay_ms: float = _key(
        "TESTING ONLY: sleep this long after each batch, to slow the service on purpose.",
        _non_negative,
        default=0.0,
    )


@attrs.frozen
class RulesSettings:
    file: str = _key(
        "Rule file (TOML, [[rule]] entries); relative to the configuration file's folder.",
        default="rules.toml",
        path=True,
    )
    source: str = _key(
        "Where rules live: `file`, or `db` (the rules table, shared by instances).",
        _one_of("file", "db"),
        default="file",
    )
    reload_interval: float = _key(
        "Seconds between checks of the rule file's modification time (or of the rules "
        "table); a change reloads the rules, keeping the state of unchanged ones. SIGHUP "
        "reloads at once. 0 disables the checks.",
        _non_negative,
        default=1.0,
    )
    tick_interval: float = _key(
        "Seconds between time-driven rule evaluations (no_data, windows that empty, for / "
        "keep_firing_for / repeat_interval of quiet symbols) and batches of CPU-heavy rules.",
        _positive,
        default=0.5,
    )
    offload_threads: int = _key(
        "Worker threads (limiter `rules`) and processes (limiter `rules_process`) for "
        "CPU-heavy rules such as zscore.",
        _integer(1, 64),
        default=2,
    )


@attrs.frozen
class DatabaseSettings:
    url: str = _key(
        "Alert store: sqlite:///PATH (embedded default; a relative PATH is taken from the "
        "configuration file's folder) or postgresql://USER@HOST:PORT/DB.",
        _database_url,
        default="sqlite:///var/oraculo.db",
        path=True,
    )
    statement_timeout: float = _key(
        "Seconds before a store statement counts as a timeout and is retried.",
        _positive,
        default=5.0,
    )
    batch_max: int = _key(
        "Most rows per store write.",
        _integer(1),
        default=500,
    )
    batch_window_ms: float = _key(
        "Milliseconds the writer waits at most to fill a batch once it has a row (it writes "
        "sooner, as soon as the rest of the service is idle).",
        _non_negative,
        default=50.0,
    )
    commit_interval_ms: float = _key(
        "Milliseconds between the starts of two store writes at least, unless a batch is "
        "full: a steady flow of alerts is committed once per interval, not once per burst of "
        "messages (a commit costs far more CPU than its rows). A first alert after a quiet "
        "interval is written at once, the last rows of a flow that stops within two intervals, "
        "and notifications never wait for any; what a crash (kill -9) can lose is the rows of "
        "the last interval. 0 writes each burst as soon as the service is idle.",
        _non_negative,
        default=500.0,
    )
    channel_capacity: int = _key(
        "Rows that may wait for the writer; when full, the rule evaluators wait "
        "(backpressure, counted), nothing is dropped.",
        _integer(1),
        default=10_000,
    )
    retention: float = _key(
        "How long alert_events and dispatch_logs keep a row (seconds or a duration such as "
        '"90d"); older rows are pruned in small batches off the hot path. rule_alerts keeps '
        "every alert's latest state whatever its age. 0 keeps everything.",
        _non_negative,
        default=90 * 86400.0,
        duration=True,
    )
    prune_interval: float = _key(
        "Seconds between two rounds of retention pruning.", _positive, default=300.0
    )
    prune_batch: int = _key(
        "Rows deleted per statement when pruning (short transactions, so writes never wait long).",
        _integer(1),
        default=1000,
    )


@attrs.frozen
class DispatchSettings:
    sinks: tuple[str, ...] = _key(
        "Notification sinks: stdout (one line per notification: time, state, severity, rule, "
        "symbol, value, message; coloured on a terminal), log (a JSON line on the "
        "oraculo_trio.alerts logger), webhook (Alertmanager payload).",
        _subset_of("stdout", "log", "webhook"),
        default=("stdout",),
        converter=tuple,
    )
    channel_capacity: int = _key(
        "Notifications that may wait for delivery; beyond it they are dropped and counted "
        "(the alert state is still stored).",
        _integer(1),
        default=1000,
    )
    webhook_url: str = _key(
        "Webhook receiver URL (Alertmanager payload shape), http:// or https:// only.",
        _http_url,
        default="",
    )
    webhook_block_private: bool = _key(
        "Refuse a webhook URL whose host is, or resolves to, a loopback, private, link-local "
        "or otherwise non-public address (checked at start-up, and at each delivery once the "
        "name is resolved): a webhook pointed at internal services cannot reach them. Off by "
        "default, since local receivers are common.",
        default=False,
    )
    webhook_timeout: float = _key("Seconds per webhook attempt.", _positive, default=5.0)
    webhook_retries: int = _key(
        "Extra attempts after a failed webhook delivery.",
        _integer(0),
        default=3,
    )
    webhook_backoff: float = _key(
        "Seconds before the first webhook retry; doubles (with jitter) up to 30 s.",
        _positive,
        default=0.5,
    )
    webhook_concurrency: int = _key(
        "Webhook deliveries in flight at once.",
        _integer(1, 256),
        default=4,
    )
    webhook_breaker_failures: int = _key(
        "Consecutive failed webhook attempts that open its circuit breaker (notifications "
        "are then dropped and counted until a trial succeeds); 0 never opens it.",
        _integer(0),
        default=5,
    )
    webhook_breaker_cooldown: float = _key(
        "Seconds an open webhook circuit waits before one trial attempt.",
        _positive,
        default=30.0,
    )
    silence_refresh: float = _key(
        "Seconds between reads of the silences table (`oraculo-trio silence add`).",
        _positive,
        default=2.0,
    )


@attrs.frozen
class HttpSettings:
    host: str = _key(
        "Address of /metrics, /healthz, /readyz and the /api/v1 API. Anything but a loopback "
        "address makes the API's writes (silences) require http.api_token.",
        default="127.0.0.1",
    )
    port: int = _key("Port of the HTTP endpoint (0 picks a free one).", _port, default=9108)
    api_token: str = _key(
        "Bearer token the API's writes (POST and DELETE /api/v1/silences) require; empty: "
        "writes are accepted from loopback only when http.host is a loopback address, and "
        "refused otherwise. Pass it as ORACULO_HTTP_API_TOKEN rather than in a shared file.",
        default="",
    )


@attrs.frozen
class ObserveSettings:
    lag_interval: float = _key(
        "Seconds per scheduler-lag interval (the heartbeat period).", _positive, default=1.0
    )
    slow_step_threshold: float = _key(
        "A task step longer than this many seconds is counted as slow.", _positive, default=0.05
    )
    dump_after: float = _key(
        "Seconds the loop may be blocked before the watchdog dumps every stack.",
        _positive,
        default=2.0,
    )
    dump_dir: str = _key(
        "Where stack dumps are written (relative to the configuration file's folder).",
        default="var/dumps",
        path=True,
    )
    instrument: bool = _key(
        "Install the Trio Instrument (scheduler delay, slow task steps). false keeps only "
        "the heartbeat's oversleep as the lag; for measuring the instrument's overhead.",
        default=True,
    )
    store_check_interval: float = _key(
        "Seconds between store pings; a failed ping makes /readyz report the store not ready.",
        _positive,
        default=5.0,
    )


def _instance_id(value: Any) -> str | None:
    ok = len(value) <= 40 and all(c.isalnum() or c in "-_.:" for c in value)
    return None if ok else "at most 40 letters, digits, '-', '_', '.' or ':' (empty: host-pid)"


@attrs.frozen
class ClusterSettings:
    mode: str = _key(
        "`single`: this process owns every partition (with `run --workers N`, each worker a "
        "fixed share). `postgres`: instances (and workers) claim fair shares of the "
        "partitions through PostgreSQL advisory locks; needs a postgresql:// database.url.",
        _one_of("single", "postgres"),
        default="single",
    )
    partitions: int = _key(
        "Partitions symbols are spread over (partition = crc32(symbol) % partitions); the "
        "same value on every instance.",
        _integer(1, 64),
        default=64,
    )
    claim_interval: float = _key(
        "Seconds between claim rounds (postgres mode): how fast survivors take over the "
        "partitions of an instance that died, and how fast a joining instance gets its share.",
        _positive,
        default=2.0,
    )
    instance_id: str = _key(
        "This instance's name among live instances (postgres mode); empty means "
        "<hostname>-<pid>. Workers add -w<i>.",
        _instance_id,
        default="",
    )


SECTIONS: Mapping[str, type] = {
    "service": ServiceSettings,
    "feed": FeedSettings,
    "pipeline": PipelineSettings,
    "rules": RulesSettings,
    "database": DatabaseSettings,
    "dispatch": DispatchSettings,
    "http": HttpSettings,
    "observe": ObserveSettings,
    "cluster": ClusterSettings,
}


def _feeds(value: Any) -> tuple[FeedSettings, ...]:
    return (value,) if isinstance(value, FeedSettings) else tuple(value)


@attrs.frozen
class Settings:
    """The whole configuration, validated. Build it with :func:`load_settings`.

    ``feeds`` holds one :class:`FeedSettings` per ``[[feed]]`` table (one for a ``[feed]``
    table): a feed per market.
    """

    service: ServiceSettings = attrs.field(factory=ServiceSettings)
    feeds: tuple[FeedSettings, ...] = attrs.field(
        factory=lambda: (FeedSettings(),), converter=_feeds
    )
    pipeline: PipelineSettings = attrs.field(factory=PipelineSettings)
    rules: RulesSettings = attrs.field(factory=RulesSettings)
    database: DatabaseSettings = attrs.field(factory=DatabaseSettings)
    dispatch: DispatchSettings = attrs.field(factory=DispatchSettings)
    http: HttpSettings = attrs.field(factory=HttpSettings)
    observe: ObserveSettings = attrs.field(factory=ObserveSettings)
    cluster: ClusterSettings = attrs.field(factory=ClusterSettings)
    source: str = "defaults"

    @property
    def feed(self) -> FeedSettings:
        """The first feed: the only one unless several ``[[feed]]`` tables are given."""
        return self.feeds[0]

    @property
    def symbols(self) -> tuple[str, ...]:
        """Every symbol the service follows, by its service name (``BTCUSDT`` for spot,
        ``usdm:BTCUSDT``...), feed by feed."""
        return tuple(qualified(f.market, symbol) for f in self.feeds for symbol in f.symbols)

    def feed_of(self, symbol: str) -> FeedSettings:
        """The feed following the service symbol ``symbol``.

        Raises:
            KeyError: no feed follows it.
        """
        market, name = split(symbol)
        for feed in self.feeds:
            if feed.market == market and name in feed.symbols:
                return feed
        raise KeyError(symbol)
