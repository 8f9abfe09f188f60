"""A load test's configuration: the run's options, the service's configuration file and
environment, and a fresh store for every run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import attrs
import trio

from oraculo_trio.errors import ConfigError, OraculoError
from oraculo_trio.loadtest.errors import LoadTestError
from oraculo_trio.loadtest.shape import GeneratorSpec, LoadShape, build_source
from oraculo_trio.mockexchange.markets.load import SPIKE_LEVEL, WIDE_SPREAD_BPS
from oraculo_trio.pipeline.service import build_sinks
from oraculo_trio.settings import ENV_NOT_CONFIG, ENV_PREFIX, load_settings

LOGGER = logging.getLogger("oraculo_trio.loadtest.configuration")


#: Settings the runner decides; ``ORACULO_*`` variables for them are not passed to the service.
RUNNER_KEYS = (
    ("feed", "url"),
    ("feed", "symbols"),
    ("feed", "depth_streams"),
    ("feed", "trade_streams"),
    ("database", "url"),
    ("http", "host"),
    ("http", "port"),
    ("rules", "file"),
    ("rules", "source"),
    ("dispatch", "sinks"),
    ("dispatch", "webhook_url"),
    ("observe", "dump_dir"),
)

WEBHOOK_MODES = ("ok", "fail", "hang")


@attrs.frozen
class RunConfig:
    """One load test, as ``oraculo-trio loadtest STREAM RATE`` describes it.

    Attributes:
        shape: what is sent, how fast and for how long.
        database_url: a PostgreSQL server URL to create a fresh database on; None: SQLite.
        prometheus: also run a Prometheus scraping every second.
        webhook: ``ok`` / ``fail`` / ``hang``: a local receiver wired as the webhook sink.
        thresholds: extra ``--threshold`` expressions.
        strict: add the strict targets to the thresholds (``thresholds.strict_thresholds``).
        out: artifact directory (default ``artifacts/loadtest/<UTC timestamp>``).
        settings: ``section.key=value`` overrides for the service.
        rules: a rule file instead of the built-in load rules (made absolute).
        drain_timeout: seconds the drain may take.
        ready_timeout: seconds the service may take to become ready.
        profile: seconds of py-spy on the service during the measured phase (0: none).
        progress: print the live progress line.
    """

    shape: LoadShape = attrs.field(factory=LoadShape)
    database_url: str | None = None
    prometheus: bool = False
    webhook: str | None = None
    thresholds: tuple[str, ...] = ()
    strict: bool = False
    out: str | None = None
    settings: tuple[str, ...] = ()
    rules: str | None = attrs.field(
        default=None, converter=lambda path: os.path.abspath(path) if path else None
    )
    drain_timeout: float = 60.0
    ready_timeout: float = 30.0
    profile: float = 0.0
    progress: bool = True

    def generator_spec(self) -> GeneratorSpec:
        """The generator process's spec."""
        return GeneratorSpec(self.shape)

    def as_dict(self) -> dict[str, Any]:
        """The configuration as one flat mapping (the shape's fields, then the run's)."""
        run = attrs.asdict(self, filter=lambda attribute, _value: attribute.name != "shape")
        return {**attrs.asdict(self.shape), **run}

    def check(self) -> None:
        """Fail early on values the generator or the service would refuse.

        Raises:
            ConfigError: naming the option and what is allowed.
        """
        if self.webhook is not None and self.webhook not in WEBHOOK_MODES:
            raise ConfigError(f"--webhook {self.webhook!r}: expected one of {WEBHOOK_MODES}")
        try:
            self.shape.schedule()
            build_source(self.shape)
        except ValueError as exc:
            raise ConfigError(f"loadtest: {exc}") from None
        for item in self.settings:
            parse_setting(item)


def parse_setting(item: str) -> tuple[str, str, str]:
    """``section.key=value`` -> (section, key, value).

    Raises:
        ConfigError: not of that form.
    """
    name, sep, value = item.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not section or not key:
        raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE")
    return section, key, value.strip()


def admin_sql(url: str, *statements: str, timeout: float = 10.0) -> None:
    """Run ``statements`` on the PostgreSQL server at ``url`` (CREATE/DROP DATABASE...).

    Blocking: asyncpg on its own asyncio loop, so call it from a worker thread (the runner)
    or outside any Trio run (sync test fixtures).

    Raises:
        OSError, asyncpg.PostgresError, asyncpg.InterfaceError: as asyncpg raises them.
    """
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(url, timeout=timeout)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


@contextlib.asynccontextmanager
async def fresh_store(database_url: str | None, run_dir: Path) -> AsyncIterator[tuple[str, str]]:
    """A fresh, empty store for one run.

    Args:
        database_url: a PostgreSQL URL (its database is only used to connect: a new database
            ``oraculo_loadtest_<hex>`` is created beside it and dropped afterwards), or None
            for a new SQLite file in ``run_dir``.
        run_dir: the run's scratch directory.

    Yields:
        ``(url, kind)``: the service's ``database.url`` and ``sqlite`` / ``postgresql``.

    Raises:
        LoadTestError: the PostgreSQL server cannot be reached or refuses.
    """
    if database_url is None:
        yield f"sqlite:///{run_dir / 'oraculo.db'}", "sqlite"
        return
    if not database_url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"--database-url {database_url!r}: expected a postgresql:// URL")
    name = f"oraculo_loadtest_{secrets.token_hex(6)}"
    parts = urlsplit(database_url)
    url = urlunsplit(parts._replace(path=f"/{name}"))
    try:
        await trio.to_thread.run_sync(admin_sql, database_url, f'CREATE DATABASE "{name}"')
    except Exception as exc:  # asyncpg's errors and OSError: all mean "cannot create"
        raise LoadTestError(
            f"cannot create a database on {parts.hostname}:{parts.port}: {exc}"
        ) from None
    try:
        yield url, "postgresql"
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(15):
            try:
                await trio.to_thread.run_sync(
                    admin_sql, database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
                )
            except Exception:
                LOGGER.warning("could not drop database %s", name, exc_info=True)


@contextlib.asynccontextmanager
async def scratch_dir() -> AsyncIterator[Path]:
    """A scratch directory for one run, removed on every path."""
    # The store, Prometheus's data and dumps: bulky, not evidence.
    path = Path(tempfile.mkdtemp(prefix="oraculo-loadtest-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def load_rules_text() -> str:
    """The built-in load rules: alert on the generator's alert frames (wide spread, spike).

    Every alert frame fires an alert that the next normal message resolves, so the store
    writes about ``2 / alert_period`` transitions a second whatever the rate.
    """
    return (
        "# Written by oraculo-trio loadtest: alert on the generator's alert frames.\n"
        "[[rule]]\n"
        'id = "loadtest-wide-spread"\n'
        'kind = "spread_above_bps"\n'
        'symbols = ["*"]\n'
        f"params = {{ bps = {WIDE_SPREAD_BPS} }}\n"
        'trigger = "every_time"\n'
        'message = "{symbol} spread {value:.0f} bps"\n'
        "\n"
        "[[rule]]\n"
        'id = "loadtest-price-spike"\n'
        'kind = "crossing"\n'
        'symbols = ["*"]\n'
        f"params = {{ level = {SPIKE_LEVEL} }}\n"
        'trigger = "every_time"\n'
        'message = "{symbol} traded at {value}"\n'
    )


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def toml_document(sections: dict[str, dict[str, Any]]) -> str:
    """A TOML document of scalar and list values (enough for the service's settings)."""
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)


def service_sections(
    config: RunConfig,
    *,
    exchange_url: str,
    symbols: Sequence[str],
    depth_kinds: Sequence[str],
    trade_kinds: Sequence[str],
    database_url: str,
    http_port: int,
    rules_file: str,
    webhook_url: str | None,
    scratch: Path,
    rest_url: str = "",
    source_settings: dict[str, dict[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """The service's configuration for one run (``--set`` overrides applied last)."""
    sections: dict[str, dict[str, Any]] = {
        "service": {"log_level": "INFO"},
        "feed": {
            "url": exchange_url,
            "symbols": list(symbols),
            "depth_streams": list(depth_kinds),
            "trade_streams": list(trade_kinds),
            "reconnect_initial": 0.2,
            "reconnect_max": 2.0,
            **({"rest_url": rest_url} if rest_url else {}),
        },
        "rules": {"file": rules_file, "source": "file"},
        "database": {"url": database_url},
        "dispatch": {
            "sinks": ["webhook"] if webhook_url else ["log"],
            **({"webhook_url": webhook_url} if webhook_url else {}),
        },
        "http": {"host": "127.0.0.1", "port": http_port},
        "observe": {"dump_dir": str(scratch / "dumps")},
    }
    # What the source needs (a diff book's snapshot depth...); --set still wins.
    for section, values in (source_settings or {}).items():
        sections.setdefault(section, {}).update(values)
    for item in config.settings:
        section, key, value = parse_setting(item)
        sections.setdefault(section, {})[key] = value
    return sections


def service_env(base: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The service's environment: ``base`` without ``ORACULO_*`` variables for keys the
    runner sets. Returns it and the names of the ``ORACULO_*`` overrides passed through."""
    blocked = {f"{ENV_PREFIX}{s.upper()}_{k.upper()}" for s, k in RUNNER_KEYS}
    env = {k: v for k, v in base.items() if k not in blocked}
    passed = sorted(k for k in env if k.startswith(ENV_PREFIX) and not k.startswith(ENV_NOT_CONFIG))
    return env, passed


def check_webhook_sink(config_path: Path) -> None:
    """Fail clearly when this service cannot deliver to a webhook.

    Raises:
        LoadTestError: ``dispatch.sinks = ["webhook"]`` builds no sink named ``webhook``.
    """
    settings = load_settings(config_path, environ={})
    try:
        sinks = build_sinks(settings)
    except (TypeError, ValueError, OraculoError) as exc:
        raise LoadTestError(
            f"--webhook: the service cannot build its webhook sink: {exc}"
        ) from None
    if not any(getattr(sink, "name", None) == "webhook" for sink in sinks):
        raise LoadTestError(
            "--webhook: this service has no webhook sink yet (dispatch.sinks = ['webhook'] "
            "builds none in oraculo_trio.dispatch.sinks.build_sinks); run without --webhook"
        )


def write_text(path: Path, text: str) -> str:
    """Write ``text`` to ``path``; return the path as a string."""
    path.write_text(text)
    return str(path)
