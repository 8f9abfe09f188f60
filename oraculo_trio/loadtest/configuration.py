"""A load test's configuration: the run's options, checked before anything starts; the
service's configuration (built with the test harness's :mod:`oraculo_trio.testing.config`),
and a fresh store for every run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
import trio

from oraculo_trio.errors import ConfigError, OraculoError
from oraculo_trio.loadtest.errors import LoadTestError
from oraculo_trio.loadtest.shape import GeneratorSpec, LoadShape, build_source
from oraculo_trio.mockexchange.markets.load import SPIKE_LEVEL, WIDE_SPREAD_BPS
from oraculo_trio.mockexchange.markets.payloads import synthetic_symbols
from oraculo_trio.pipeline.rules_source import load_rule_file
from oraculo_trio.pipeline.service import build_sinks
from oraculo_trio.settings import Settings, load_settings
from oraculo_trio.settings.secrets import mask_url
from oraculo_trio.testing.config import Sections, merge_sections, service_sections
from oraculo_trio.testing.postgres import admin_sql, database_url, fresh_database_name

LOGGER = logging.getLogger("oraculo_trio.loadtest.configuration")


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
        """The configuration as one flat mapping (the shape's fields, then the run's), the
        database URL's password masked: artifacts get shared."""
        run = attrs.asdict(self, filter=lambda attribute, _value: attribute.name != "shape")
        if run["database_url"]:
            run["database_url"] = mask_url(run["database_url"])
        return {**attrs.asdict(self.shape), **run}

    def check(self) -> None:
        """Check everything before anything starts: the load's shape, the rule file, every
        ``--set`` (the service's own validation, on the configuration a run would write) and
        the webhook sink.

        Raises:
            ConfigError: naming the option and what is allowed.
            LoadTestError: ``--webhook`` and a service that cannot build a webhook sink.
        """
        if self.webhook is not None and self.webhook not in WEBHOOK_MODES:
            raise ConfigError(f"--webhook {self.webhook!r}: expected one of {WEBHOOK_MODES}")
        try:
            self.shape.schedule()
            build_source(self.shape)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.database_url is not None and not self.database_url.startswith(
            ("postgresql://", "postgres://")
        ):
            raise ConfigError(f"--database-url {self.database_url!r}: expected a postgresql:// URL")
        for item in self.settings:
            parse_setting(item)
        if self.rules is not None:
            _check_rule_file(self.rules)
        settings = self.service_settings()
        if settings.service.log_level.upper() not in ("DEBUG", "INFO"):
            raise ConfigError(
                f"--set service.log_level={settings.service.log_level}: the runner reads the "
                "port the service bound from its INFO log; use INFO or DEBUG"
            )
        if self.webhook is not None:
            check_webhook_sink(settings)

    def service_settings(self) -> Settings:
        """The service's settings for this run, with stand-ins for what only a run knows
        (the exchange's address, the store, the webhook receiver's URL).

        Raises:
            ConfigError: a ``--set`` the service refuses (named).
        """
        source = build_source(self.shape)
        sections = service_config(
            self,
            exchange_url="ws://127.0.0.1:9",
            rest_url="http://127.0.0.1:9",
            symbols=list(source.symbols) or synthetic_symbols(self.shape.symbols),
            depth_kinds=source.depth_kinds,
            trade_kinds=source.trade_kinds,
            database_url="sqlite:///oraculo-loadtest-check.db",
            rules_file=self.rules or "rules.toml",
            webhook_url="http://127.0.0.1:9/alerts" if self.webhook else None,
            scratch=Path(tempfile.gettempdir()),
            source_settings=getattr(source, "service_settings", None),
        )
        try:
            return load_settings(None, environ={}, overrides=sections)
        except ConfigError as exc:
            raise ConfigError(f"--set: {exc}") from None


def _check_rule_file(path: str) -> None:
    """Raises ConfigError when ``--rules`` is missing or does not validate."""
    try:
        load_rule_file(path)
    except ConfigError as exc:
        raise ConfigError(f"--rules: {exc}") from None


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


@contextlib.asynccontextmanager
async def fresh_store(server_url: str | None, run_dir: Path) -> AsyncIterator[tuple[str, str]]:
    """A fresh, empty store for one run.

    Args:
        server_url: a PostgreSQL URL (its database is only used to connect: a new database
            ``oraculo_loadtest_<hex>`` is created beside it and dropped afterwards), or None
            for a new SQLite file in ``run_dir``.
        run_dir: the run's scratch directory.

    Yields:
        ``(url, kind)``: the service's ``database.url`` and ``sqlite`` / ``postgresql``.

    Raises:
        LoadTestError: the PostgreSQL server cannot be reached or refuses.

    Cancellation: the database is dropped all the same (shielded, within 15 s).
    """
    if server_url is None:
        yield f"sqlite:///{run_dir / 'oraculo.db'}", "sqlite"
        return
    name = fresh_database_name("oraculo_loadtest")
    parts = urlsplit(server_url)
    # An identifier cannot be a parameter; this one is built by fresh_database_name.
    try:
        await trio.to_thread.run_sync(admin_sql, server_url, f'CREATE DATABASE "{name}"')
    except Exception as exc:  # asyncpg's errors and OSError: all mean "cannot create"
        raise LoadTestError(
            f"cannot create a database on {parts.hostname}:{parts.port}: {exc}"
        ) from None
    try:
        yield database_url(server_url, name), "postgresql"
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(15):
            try:
                await trio.to_thread.run_sync(
                    admin_sql, server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
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


def service_config(
    config: RunConfig,
    *,
    exchange_url: str,
    symbols: Sequence[str],
    depth_kinds: Sequence[str],
    trade_kinds: Sequence[str],
    database_url: str,
    rules_file: str,
    webhook_url: str | None,
    scratch: Path,
    rest_url: str = "",
    source_settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> Sections:
    """The service's configuration for one run: the product's defaults, what the runner
    decides, what the source needs (a diff book's snapshot depth), then ``--set``.

    The HTTP endpoint listens on 127.0.0.1 at a port the system picks (port 0): the runner
    reads the one the service bound from its log.
    """
    runner = {
        "service": {"log_level": "INFO"},
        "feed": {
            "depth_streams": list(depth_kinds),
            "trade_streams": list(trade_kinds),
            "reconnect_initial": 0.2,
            "reconnect_max": 2.0,
            **({"rest_url": rest_url} if rest_url else {}),
        },
        "rules": {"file": rules_file, "source": "file"},
        "dispatch": {
            "sinks": ["webhook"] if webhook_url else ["log"],
            **({"webhook_url": webhook_url} if webhook_url else {}),
        },
        "http": {"host": "127.0.0.1", "port": 0},
    }
    settings: Sections = {}
    for item in config.settings:
        section, key, value = parse_setting(item)
        settings.setdefault(section, {})[key] = value
    return service_sections(
        exchange_url=exchange_url,
        symbols=symbols,
        database_url=database_url,
        dump_dir=scratch / "dumps",
        overrides=merge_sections(runner, source_settings, settings),
        defaults={},
    )


def check_webhook_sink(settings: Settings) -> None:
    """Fail clearly when this service cannot deliver to a webhook.

    Raises:
        LoadTestError: ``dispatch.sinks = ["webhook"]`` builds no sink named ``webhook``.
    """
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
