"""Command line: ``oraculo-trio run | demo | health | alerts | silence | rules | migrate |
loadtest | compare``.

A user's mistake (a bad option, a bad configuration, a port in use, an unreachable service)
ends with one line naming the problem and what to do, and exit code 2 (1 for a service or
store that fails); ``--debug`` adds the traceback. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import errno
import logging
import socket
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from oraculo_trio import __version__
from oraculo_trio.errors import ConfigError, OraculoError, UsageError
from oraculo_trio.settings import (
    LOG_LEVELS,
    Settings,
    configuration_reference,
    exposed_secrets,
    find_config,
    load_settings,
)

LOGGER = logging.getLogger("oraculo_trio.cli")

DEMO_DATABASE = "var/oraculo-demo.db"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130

# Options whose value may start with "-" (argparse would take "-5m" for an option).
_VALUE_OPTIONS = ("--for", "--duration", "--since", "--limit", "--http-port", "--timeout")


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line: ``oraculo-trio demo: ... (see ... --help)``."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_CONFIG)


class _CliFormatter(logging.Formatter):
    """Before the service configures logging: ``oraculo-trio: warning: ...``."""

    def format(self, record: logging.LogRecord) -> str:
        return f"oraculo-trio: {record.levelname.lower()}: {record.getMessage()}"


def _settings_from(args: argparse.Namespace, extra: dict | None = None) -> Settings:
    overrides: dict[str, dict] = {}
    if getattr(args, "database_url", None):
        overrides.setdefault("database", {})["url"] = args.database_url
    if getattr(args, "http_port", None) is not None:
        overrides.setdefault("http", {})["port"] = args.http_port
    if getattr(args, "log_level", None):
        overrides.setdefault("service", {})["log_level"] = args.log_level
    for section, values in (extra or {}).items():
        overrides.setdefault(section, {}).update(values)
    path = find_config(getattr(args, "config", None))
    settings = load_settings(path, overrides=overrides)
    for key in exposed_secrets(path) if path is not None else ():
        LOGGER.warning(
            "configuration file %s is readable by every user of this machine and %s holds a "
            "secret: make the file private (chmod 600 %s) or set ORACULO_%s instead",
            path,
            key,
            path,
            key.upper().replace(".", "_"),
        )
    return settings


def _configure_service_logging(settings: Settings) -> None:
    from oraculo_trio.observe.logs import configure_logging

    configure_logging(settings.service.log_level, settings.service.log_format)


def _bind_error(exc: BaseException, settings: Settings) -> ConfigError | None:
    """A ConfigError for an HTTP endpoint that could not bind (inside groups too)."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _bind_error(inner, settings)
            if found is not None:
                return found
        return None
    host, port = settings.http.host, settings.http.port
    if isinstance(exc, socket.gaierror):
        return ConfigError(f"http.host {host!r} is not a known address: use 127.0.0.1")
    if not isinstance(exc, OSError):
        return None
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(
            f"http.port {port} is in use (on {host}): stop the other process or pass "
            "--http-port 0 (a free port)"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return ConfigError(f"http.host {host} is not an address of this machine: use 127.0.0.1")
    if exc.errno == errno.EACCES:
        return ConfigError(
            f"http.port {port} needs privileges: use a port above 1023, or --http-port 0"
        )
    return None


def _serving(settings: Settings, run: Callable[[], Any]) -> Any:
    """``run()``, with a failure to bind the HTTP endpoint said in one line."""
    try:
        return run()
    except BaseException as exc:
        error = _bind_error(exc, settings)
        if error is None:
            raise
        raise error from exc


def _cmd_run(args: argparse.Namespace) -> int:
    import trio

    from oraculo_trio.cli_rules import check_file
    from oraculo_trio.core.book import UPDATES_IN_C
    from oraculo_trio.pipeline.rules_source import load_rule_file, rules_path
    from oraculo_trio.pipeline.service import run_service
    from oraculo_trio.pipeline.workers import run_workers_command, worker_count
    from oraculo_trio.store.base import mask_dsn

    settings = _settings_from(args)
    workers = worker_count(args.workers)
    _configure_service_logging(settings)
    rules = []
    if settings.rules.source == "file":
        # With rules.source = "db" the service reads the rules table once the store is open.
        rules = load_rule_file(rules_path(settings))
        for warning in check_file(rules_path(settings), settings.symbols)[2]:
            LOGGER.warning("rules: %s", warning)
    if not args.offline and args.worker_index is None:
        # Once, before any worker starts: its supervisor has checked already.
        from oraculo_trio.pipeline.exchange_info import check_feed_symbols

        trio.run(check_feed_symbols, settings)
    if args.worker_index is None and not UPDATES_IN_C:
        LOGGER.warning(
            "order books update in Python: the C extension oraculo_trio.core._book_levels "
            "was not built (no C compiler at install?); reinstall with gcc and the Python "
            "headers (pip install -e .) for about a fifth less CPU on diff books"
        )
    if workers > 1 or args.worker_index is not None:
        return _serving(settings, lambda: run_workers_command(args, settings, rules, workers))
    LOGGER.info(
        "starting: %d symbols, %d rules, store %s, metrics on http://%s:%d/metrics",
        len(settings.symbols),
        len(rules),
        mask_dsn(settings.database.url),
        settings.http.host,
        settings.http.port,
    )
    _serving(settings, lambda: trio.run(run_service, settings, rules))
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    import trio

    from oraculo_trio.demo import run_demo

    extra: dict[str, dict] = {}
    if args.database_url is None:
        # A fresh demo store each run: alerts restored from an earlier run would otherwise
        # open the demo with stale repeats.
        for suffix in ("", "-wal", "-shm"):
            Path(DEMO_DATABASE + suffix).unlink(missing_ok=True)
        extra["database"] = {"url": f"sqlite:///{DEMO_DATABASE}"}
    if args.http_port is None:
        # A free port: the demo runs beside a service on 9108; it prints the port it got.
        extra["http"] = {"port": 0}
    settings = _settings_from(args, extra)
    _configure_service_logging(settings)
    _serving(settings, lambda: trio.run(run_demo, settings, args.duration))
    return EXIT_OK


def _cmd_migrate(args: argparse.Namespace) -> int:
    from oraculo_trio.cli_rules import cmd_migrate

    return cmd_migrate(args, _settings_from(args))


def _cmd_rules_check(args: argparse.Namespace) -> int:
    from oraculo_trio.cli_rules import cmd_rules_check

    return cmd_rules_check(args, _settings_from(args))


def _cmd_rules_push(args: argparse.Namespace) -> int:
    from oraculo_trio.cli_rules import cmd_rules_push

    return cmd_rules_push(args, _settings_from(args))


def _operator(name: str) -> Callable[[argparse.Namespace], int]:
    """A handler of :mod:`oraculo_trio.cli_commands`, given the configuration."""

    def handler(args: argparse.Namespace) -> int:
        from oraculo_trio import cli_commands

        return getattr(cli_commands, name)(args, _settings_from(args))

    return handler


def _cmd_loadtest(args: argparse.Namespace) -> int:
    from oraculo_trio.loadtest.cli import main as loadtest_main

    return loadtest_main(args.args)


def _cmd_compare(args: argparse.Namespace) -> int:
    from oraculo_trio.loadtest.cli import compare_main

    return compare_main(args.args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from oraculo_trio.cli_parsers import add_commands

    parser = _Parser(
        prog="oraculo-trio",
        description="Market-data alerting on Trio: exchange feeds -> order books -> alert "
        "rules -> store and notifications, with Prometheus metrics and a JSON API.",
        epilog="Start with `oraculo-trio demo`; the README's walk-through goes from there.",
    )
    parser.add_argument("--version", action="version", version=f"oraculo-trio {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="on an error, print the traceback as well"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    handlers = {
        "run": _cmd_run,
        "demo": _cmd_demo,
        "migrate": _cmd_migrate,
        "rules check": _cmd_rules_check,
        "rules push": _cmd_rules_push,
        "loadtest": _cmd_loadtest,
        "compare": _cmd_compare,
        "health": _operator("cmd_health"),
        "alerts list": _operator("cmd_alerts_list"),
        "alerts history": _operator("cmd_alerts_history"),
        "silence add": _operator("cmd_silence_add"),
        "silence list": _operator("cmd_silence_list"),
        "silence query": _operator("cmd_silence_query"),
        "silence expire": _operator("cmd_silence_expire"),
    }
    add_commands(commands, handlers, configuration_reference(), LOG_LEVELS)
    return parser


def _values_may_be_negative(argv: Sequence[str]) -> list[str]:
    """``--for -5m`` as ``--for=-5m``, so that the value gets checked (and named) by us."""
    out: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg in _VALUE_OPTIONS and index + 1 < len(argv) and argv[index + 1].startswith("-"):
            out.append(f"{arg}={argv[index + 1]}")
            index += 2
            continue
        out.append(arg)
        index += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``oraculo-trio`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_CliFormatter())
        logging.getLogger().addHandler(handler)
    parser = build_parser()
    if argv[:1] not in (["loadtest"], ["compare"]):
        argv = _values_may_be_negative(argv)
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except BaseException as exc:
        if _only(exc, KeyboardInterrupt):
            return EXIT_INTERRUPTED
        # Errors of ours, alone or inside a nursery's exception group, end with a message;
        # anything else is a bug and keeps its traceback.
        ours = _our_errors(exc)
        if ours is None:
            raise
        if getattr(args, "debug", False):
            traceback.print_exception(exc)
        for error in ours:
            prefix = "configuration error" if type(error) is ConfigError else "error"
            print(f"oraculo-trio: {prefix}: {error}", file=sys.stderr)
        usage = all(isinstance(e, ConfigError | UsageError) for e in ours)
        return EXIT_CONFIG if usage else EXIT_ERROR


def _only(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``exc`` is ``kind``, or a group made only of ``kind``."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_only(inner, kind) for inner in exc.exceptions)
    return isinstance(exc, kind)


def _our_errors(exc: BaseException) -> list[OraculoError] | None:
    """The OraculoErrors ``exc`` consists of, or None if it holds anything else."""
    if isinstance(exc, OraculoError):
        return [exc]
    if isinstance(exc, BaseExceptionGroup):
        found: list[OraculoError] = []
        for inner in exc.exceptions:
            errors = _our_errors(inner)
            if errors is None:
                return None
            found.extend(errors)
        return found
    return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
