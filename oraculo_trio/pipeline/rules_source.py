"""Where the rules come from (``rules.source``), and how they are reloaded while running.

- ``file``: the rule file (``rules.file``). Its modification time, size and inode are
  checked every ``rules.reload_interval`` seconds; a change reloads it.
- ``db``: the ``rules`` table (same schema as the file, shared by every instance), read
  every ``rules.reload_interval`` seconds; a change reloads it.

SIGHUP (or :meth:`RuleReloader.request_reload`) reloads at once. A reload swaps the rules
of every shard engine with :meth:`~oraculo_trio.core.engine.ShardEngine.replace_rules`:
(rule, symbol) pairs whose rule is unchanged keep their state (windows, timers, firing
alerts); a rule removed, changed, disabled or expired while firing resolves. A rule set
that fails validation is refused, logged and counted; the previous rules stay in force.

Code of custom kinds (``module:Class``) is imported once: changing it needs a restart.

The rule file is also read here before the service starts (:func:`load_rule_file`, for
``oraculo-trio run`` and ``rules check``), relative to the configuration file's folder
(:func:`rules_path`).
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import signal
import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from oraculo_trio.core.engine import ShardEngine
from oraculo_trio.core.rules import CompiledRule, parse_rules
from oraculo_trio.errors import ConfigError, StoreError, StoreUnavailable
from oraculo_trio.observe.health import Readiness
from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.observe.ratelimit import RateLimitedLog
from oraculo_trio.observe.supervise import next_tick
from oraculo_trio.settings import Settings
from oraculo_trio.store.base import Store

LOGGER = logging.getLogger("oraculo_trio.pipeline.rules_source")


def rules_path(settings: Settings) -> Path:
    """The rule file, relative paths taken from the configuration file's folder."""
    path = Path(settings.rules.file)
    if not path.is_absolute() and settings.source not in ("defaults",):
        path = Path(settings.source).parent / path
    return path


def resolve_rule_class(reference: str) -> type:
    """Import ``module:Class`` for a custom rule kind."""
    module_name, _, class_name = reference.partition(":")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, class_name)
    except AttributeError:
        raise ImportError(f"module {module_name!r} has no {class_name!r}") from None


def load_rule_file(path: str | os.PathLike[str]) -> list[CompiledRule]:
    """Read and validate a rule file.

    Returns:
        The compiled rules.

    Raises:
        ConfigError: the file is missing or not TOML, or a rule is invalid (the message
            names the rule id and the key).
    """
    return parse_rule_text(read_rule_file(path), str(path))


def read_rule_file(path: str | os.PathLike[str]) -> str:
    """The text of a rule file.

    Raises:
        ConfigError: it is missing, a directory, unreadable or not UTF-8 (what to do named).
    """
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"rule file {path} does not exist: give the path of a TOML file"
        ) from None
    except IsADirectoryError:
        raise ConfigError(
            f"rule file {path} is a directory: give the path of a TOML file in it "
            f"(such as {Path(path) / 'rules.toml'})"
        ) from None
    except PermissionError:
        raise ConfigError(f"rule file {path} cannot be read: permission denied") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"rule file {path} is not UTF-8 text: {exc.reason}") from None
    except OSError as exc:
        raise ConfigError(f"rule file {path} cannot be read: {exc.strerror}") from None


def parse_rule_text(text: str, origin: str) -> list[CompiledRule]:
    """Validate the TOML text of a rule file.

    Raises:
        ConfigError: not TOML, or a rule is invalid (naming the rule id and the key).
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"rule file {origin} is not valid TOML: {exc}") from None
    return parse_rules(document, resolve_rule_class)


async def load_db_rules(store: Store) -> list[CompiledRule]:
    """The rules of the ``rules`` table, validated like a rule file.

    Raises:
        ConfigError: a rule is invalid. StoreUnavailable, StoreError: the table cannot be read.

    Cancellation: abandons the query.
    """
    return parse_rules({"rule": await store.fetch_rules()}, resolve_rule_class)


@attrs.define(eq=False)
class RuleReloader:
    """Keeps every shard engine on the current rules of ``rules.source``.

    Attributes:
        rules: the rules in force.
        generation: successful loads so far (the initial one included).
    """

    settings: Settings
    engines: Sequence[ShardEngine]
    metrics: ServiceMetrics
    readiness: Readiness
    store: Store | None = None
    clock: Callable[[], float] = time.time
    rules: list[CompiledRule] = attrs.field(factory=list)
    generation: int = 0
    _version: Any = None
    _watching: bool = True
    _wake: trio.Event = attrs.field(factory=trio.Event)
    _changed: trio.Event = attrs.field(factory=trio.Event)
    _failures: RateLimitedLog = attrs.field(factory=lambda: RateLimitedLog(LOGGER, 60.0))

    async def start(self, rules: Sequence[CompiledRule] | None) -> list[CompiledRule]:
        """Take the initial rules: ``rules`` as given, or (when None, or with
        ``rules.source = "db"``) read from the source. Records the source's version, so
        only a later change reloads.

        Raises:
            ConfigError: the source's rules are invalid, or the rule file is missing.
            StoreUnavailable, StoreError: the rules table cannot be read.

        Cancellation: abandons the read.
        """
        if self.settings.rules.source == "db":
            entries = await self._store().fetch_rules()
            self._version = entries
            rules = parse_rules({"rule": entries}, resolve_rule_class)
        else:
            path = trio.Path(rules_path(self.settings))
            try:
                self._version = _file_version(await path.stat())
            except OSError:
                if rules is None:
                    raise ConfigError(f"rules.file: {path} does not exist") from None
                # The rules were given, not read from this file: there is nothing to watch.
                self._watching = False
            if rules is None:
                rules = parse_rule_text(await path.read_text(encoding="utf-8"), str(path))
        self._installed(list(rules), first=True)
        return self.rules

    def request_reload(self) -> None:
        """Reload from the source now, changed or not (what SIGHUP does)."""
        self._wake.set()

    async def wait_generation(self, generation: int) -> None:
        """Wait until ``generation`` successful loads have happened.

        Cancellation: stops waiting.
        """
        while self.generation < generation:
            await self._changed.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Check the source every ``rules.reload_interval`` (never when 0) and on request.

        Cancellation: stops between checks.
        """
        interval = self.settings.rules.reload_interval or math.inf
        task_status.started()
        while True:
            with trio.move_on_at(next_tick(trio.current_time(), interval)):
                await self._wake.wait()
            forced = self._wake.is_set()
            self._wake = trio.Event()
            if forced or self._watching:
                await self.check(force=forced)

    async def watch_sighup(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Reload on every SIGHUP (main thread only).

        Cancellation: stops listening.
        """
        with trio.open_signal_receiver(signal.SIGHUP) as signals:
            task_status.started()
            async for _ in signals:
                LOGGER.info("SIGHUP received: reloading the rules")
                self.request_reload()

    async def check(self, *, force: bool = False) -> bool:
        """Reload if the source changed (or ``force``); True when new rules were installed.

        Failures (invalid rules, missing file, store down) keep the rules in force.

        Cancellation: abandons the read; nothing is half-installed.
        """
        source = self.settings.rules.source
        try:
            if source == "db":
                entries = await self._store().fetch_rules()
                if not force and entries == self._version:
                    return False
                self._version = entries
                rules = parse_rules({"rule": entries}, resolve_rule_class)
            else:
                path = trio.Path(rules_path(self.settings))
                version = _file_version(await path.stat())
                if not force and version == self._version:
                    return False
                self._version = version
                rules = parse_rule_text(await path.read_text(encoding="utf-8"), str(path))
        except ConfigError as exc:
            self.metrics.rules_reloads.labels("error").inc()
            LOGGER.error("rules not reloaded, the %d in force stay: %s", len(self.rules), exc)
            return False
        except (OSError, StoreUnavailable, StoreError) as exc:
            self._failures.warning(
                "read", "cannot read the rules (%s), the %d in force stay: %s",
                source, len(self.rules), exc,
            )  # fmt: skip
            return False
        self._watching = True
        self._installed(rules, first=False)
        return True

    def _installed(self, rules: list[CompiledRule], *, first: bool) -> None:
        now = None if first else self.clock()
        for engine in self.engines:
            engine.replace_rules(rules, now)
        if not first:
            old = {r.spec.id: r.spec for r in self.rules}
            new = {r.spec.id: r.spec for r in rules}
            changed = sum(1 for rid, spec in new.items() if rid in old and old[rid] != spec)
            LOGGER.info(
                "rules reloaded: %d rules (%d added, %d removed, %d changed)",
                len(rules),
                len(new.keys() - old.keys()),
                len(old.keys() - new.keys()),
                changed,
            )
            self.metrics.rules_reloads.labels("ok").inc()
        self.rules = rules
        self.generation += 1
        self.metrics.rules_loaded.set(len(rules))
        for compiled in rules:
            # Every rule's series exists (at 0 until it fires), so a dashboard lists them all.
            self.metrics.alerts_firing.labels(compiled.spec.id, compiled.spec.severity)
        self.readiness.set("rules", bool(rules), f"{len(rules)} rules loaded")
        self._changed.set()
        self._changed = trio.Event()

    def _store(self) -> Store:
        if self.store is None:
            raise ConfigError('rules.source = "db" needs the store')
        return self.store


def _file_version(stat: Any) -> tuple[int, int, int]:
    return stat.st_mtime_ns, stat.st_size, stat.st_ino
