"""Command line: ``oraculo-trio run | demo | health | migrate | rules check | rules push |
silence add | silence list | silence expire | loadtest``, ``compare``."""

from __future__ import annotations

import argparse
import datetime
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import trio

from oraculo_trio import __version__
from oraculo_trio.errors import ConfigError, OraculoError
from oraculo_trio.pipeline.rules_source import load_rule_file, rules_path
from oraculo_trio.settings import (
    LOG_LEVELS,
    HttpSettings,
    Settings,
    configuration_reference,
    exposed_secrets,
    load_settings,
)

LOGGER = logging.getLogger("oraculo_trio.cli")

T = TypeVar("T")

DEMO_DATABASE = "var/oraculo-demo.db"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIG = 2


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="configuration file (TOML). Default: ./oraculo.toml if it exists, else the "
        "built-in defaults. ORACULO_<SECTION>_<KEY> environment variables override it.",
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="override database.url (sqlite:///PATH or postgresql://...)",
    )
    parser.add_argument(
        "--http-port", type=int, metavar="PORT", help="override http.port (0 picks a free port)"
    )
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        help="override service.log_level",
    )


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
    path = args.config
    if path is None and Path("oraculo.toml").exists():
        path = "oraculo.toml"
    settings = load_settings(path, overrides=overrides)
    for key in exposed_secrets(path) if path is not None else ():
        # Before logging is configured: Python's last-resort handler prints it to stderr.
        LOGGER.warning(
            "configuration file %s is readable by every user of this machine and %s holds a "
            "secret: make the file private (chmod 600 %s) or set ORACULO_%s instead",
            path,
            key,
            path,
            key.upper().replace(".", "_"),
        )
    return settings


def _cmd_run(args: argparse.Namespace) -> int:
    from oraculo_trio.pipeline.service import run_service

    settings = _settings_from(args)
    _configure_logging(settings.service.log_level)
    # With rules.source = "db" the service reads the rules table once the store is open.
    rules = load_rule_file(rules_path(settings)) if settings.rules.source == "file" else []
    from oraculo_trio.pipeline.workers import run_workers_command, worker_count

    workers = worker_count(args.workers)
    if not args.offline and args.worker_index is None:
        # Once, before any worker starts: its supervisor has checked already.
        from oraculo_trio.pipeline.exchange_info import check_feed_symbols

        trio.run(check_feed_symbols, settings)
    if workers > 1 or args.worker_index is not None:
        return run_workers_command(args, settings, rules, workers)
    LOGGER.info(
        "starting: %d symbols, %d rules, store %s, metrics on http://%s:%d/metrics",
        len(settings.symbols),
        len(rules),
        _masked(settings.database.url),
        settings.http.host,
        settings.http.port,
    )
    trio.run(run_service, settings, rules)
    return EXIT_OK


def _masked(url: str) -> str:
    from oraculo_trio.store.base import mask_dsn

    return mask_dsn(url)


def _cmd_demo(args: argparse.Namespace) -> int:
    from oraculo_trio.demo import run_demo

    extra: dict[str, dict] = {}
    if args.database_url is None:
        # A fresh demo store each run: alerts restored from an earlier run would otherwise
        # open the demo with stale repeats.
        for suffix in ("", "-wal", "-shm"):
            Path(DEMO_DATABASE + suffix).unlink(missing_ok=True)
        extra["database"] = {"url": f"sqlite:///{DEMO_DATABASE}"}
    settings = _settings_from(args, extra)
    _configure_logging(settings.service.log_level)
    trio.run(run_demo, settings, args.duration)
    return EXIT_OK


def _cmd_migrate(args: argparse.Namespace) -> int:
    from oraculo_trio.store.opening import open_store

    settings = _settings_from(args)
    _configure_logging(settings.service.log_level)

    async def migrate() -> list[int]:
        async with open_store(
            settings.database.url,
            statement_timeout=settings.database.statement_timeout,
            apply_migrations=False,
        ) as store:
            return await store.migrate()

    applied = trio.run(migrate)
    newly = f"applied versions {applied}" if applied else "nothing to apply"
    print(f"{_masked(settings.database.url)}: schema up to date ({newly})")
    return EXIT_OK


def _cmd_rules_check(args: argparse.Namespace) -> int:
    rules = load_rule_file(args.file)
    for compiled in rules:
        spec = compiled.spec
        fields = [
            f"kind={spec.kind}",
            f"symbols={list(spec.symbols)}",
            f"params={dict(spec.params)}",
            f"severity={spec.severity}",
            f"for={spec.for_:g}s",
            f"keep_firing_for={spec.keep_firing_for:g}s",
            f"repeat_interval={spec.repeat_interval:g}s",
            f"trigger={spec.trigger}",
            f"enabled={str(spec.enabled).lower()}",
        ]
        if spec.expires_at is not None:
            expires = datetime.datetime.fromtimestamp(spec.expires_at, tz=datetime.UTC)
            fields.append(f"expires_at={expires.isoformat().replace('+00:00', 'Z')}")
        if spec.labels:
            fields.append(f"labels={dict(spec.labels)}")
        if spec.inhibits:
            fields.append(f"inhibits={dict(spec.inhibits)}")
        print(f"{spec.id}: " + " ".join(fields))
    print(f"{args.file}: {len(rules)} rules OK")
    return EXIT_OK


def _with_store(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``await work(store)`` on the configured store, in a fresh Trio run."""
    from oraculo_trio.store.opening import open_store

    async def run() -> T:
        async with open_store(
            settings.database.url, statement_timeout=settings.database.statement_timeout
        ) as store:
            return await work(store)

    return trio.run(run)


def _cmd_rules_push(args: argparse.Namespace) -> int:
    rules = load_rule_file(args.file)
    settings = _settings_from(args)
    _with_store(settings, lambda store: store.replace_rules([r.spec for r in rules]))
    print(f"{args.file}: {len(rules)} rules stored in {_masked(settings.database.url)}")
    return EXIT_OK


def _silence_line(silence: object, now: float) -> str:
    def when(seconds: float) -> str:
        moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
        return moment.isoformat(timespec="seconds").replace("+00:00", "Z")

    status = "active" if silence.active(now) else "ended" if silence.ends_at <= now else "pending"
    return (
        f"{silence.id}\t{status}\trule={silence.rule_id or '*'}\tsymbol={silence.symbol or '*'}"
        f"\t{when(silence.starts_at)} -> {when(silence.ends_at)}"
        f"\tby={silence.created_by or '-'}\t{silence.comment}"
    )


def _cmd_silence_add(args: argparse.Namespace) -> int:
    import getpass
    import time

    from oraculo_trio.core.markets import normalized
    from oraculo_trio.core.rules import parse_duration

    if args.rule is None and args.symbol is None:
        raise ConfigError("silence add: give --rule and/or --symbol (what to silence)")
    try:
        duration = parse_duration(args.duration)
    except ValueError as exc:
        raise ConfigError(f"silence add --for {exc}") from None
    if duration <= 0:
        raise ConfigError(f"silence add --for {args.duration!r}: expected a duration > 0")
    settings = _settings_from(args)
    now = time.time()
    symbol = normalized(args.symbol) if args.symbol else None
    created_by = args.created_by or getpass.getuser()
    silence = _with_store(
        settings,
        lambda store: store.add_silence(
            args.rule, symbol, now, now + duration, args.comment, created_by
        ),
    )
    print(_silence_line(silence, now))
    return EXIT_OK


def _cmd_silence_list(args: argparse.Namespace) -> int:
    import time

    settings = _settings_from(args)
    now = time.time()
    silences = _with_store(settings, lambda store: store.fetch_silences(None if args.all else now))
    for silence in silences:
        print(_silence_line(silence, now))
    if not silences:
        print("no silences" if args.all else "no active or pending silences")
    return EXIT_OK


def _cmd_silence_expire(args: argparse.Namespace) -> int:
    import time

    settings = _settings_from(args)
    expired = _with_store(settings, lambda store: store.expire_silence(args.id, time.time()))
    if not expired:
        print(f"silence {args.id}: no such silence still in effect", file=sys.stderr)
        return EXIT_ERROR
    print(f"silence {args.id}: expired")
    return EXIT_OK


def _cmd_health(args: argparse.Namespace) -> int:
    from oraculo_trio.observe.report import health_report

    ok, report = health_report(args.url, timeout=args.timeout)
    print(report)
    return EXIT_OK if ok else EXIT_ERROR


def _cmd_loadtest(args: argparse.Namespace) -> int:
    from oraculo_trio.loadtest.cli import main as loadtest_main

    return loadtest_main(args.args)


def _cmd_compare(args: argparse.Namespace) -> int:
    from oraculo_trio.loadtest.cli import compare_main

    return compare_main(args.args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="oraculo-trio",
        description="Market-data alerting on Trio: exchange feeds -> order books -> alert "
        "rules -> store and notifications, with Prometheus metrics.",
    )
    parser.add_argument("--version", action="version", version=f"oraculo-trio {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_service_commands(commands)
    _add_rules_commands(commands)
    _add_silence_commands(commands)
    _add_load_test_commands(commands)
    return parser


def _add_service_commands(commands: argparse._SubParsersAction) -> None:
    """``run``, ``demo``, ``health`` and ``migrate``."""
    run = commands.add_parser(
        "run",
        help="run the service against the configured exchange",
        description="Run the service: check feed.symbols against each market's "
        "exchangeInfo (skip with --offline), connect to the exchange streams of "
        "feed.symbols, evaluate the rules of rules.file, store alerts in database.url, serve "
        "/metrics, /healthz and /readyz on http.host:http.port. SIGINT/SIGTERM drain and "
        "stop it (exit 0); a second signal exits at once. Several Binance markets: one "
        "[[feed]] table each (feed.market).",
        epilog="configuration keys (TOML section/key, default, environment variable):\n\n"
        + configuration_reference(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_config_options(run)
    run.add_argument(
        "--workers",
        default="1",
        metavar="N|auto",
        help="worker processes, each processing its share of the partitions (auto: one per "
        "core); a supervisor serves /metrics of all of them with a `worker` label",
    )
    run.add_argument(
        "--offline",
        action="store_true",
        help="start without checking feed.symbols against each market's exchangeInfo "
        "(by default an unknown or delisted symbol stops the start, with 'did you mean')",
    )
    # Used by the --workers supervisor to start its workers.
    run.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    run.add_argument("--worker-fd", type=int, help=argparse.SUPPRESS)
    run.set_defaults(handler=_cmd_run)

    demo = commands.add_parser(
        "demo",
        help="run the service against a bundled mock exchange with a scripted market",
        description="Start the bundled mock exchange on 127.0.0.1 with a scripted market "
        "and run the service against it; the demo rules fire within about 10 s and each "
        "transition prints as `ALERT <state> <rule_id> <symbol> value=<v>`. Needs no "
        "internet. Alerts go to var/oraculo-demo.db (recreated each run) unless "
        "--database-url is given.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_config_options(demo)
    demo.add_argument(
        "--duration",
        type=float,
        metavar="S",
        help="stop by itself after S seconds (default: run until Ctrl-C)",
    )
    demo.set_defaults(handler=_cmd_demo)

    health = commands.add_parser(
        "health",
        help="print a running service's health and exit non-zero when unhealthy",
    )
    # The endpoint of a service run with the default http.host and http.port.
    http = HttpSettings()
    health.add_argument(
        "--url",
        default=f"http://{http.host}:{http.port}",
        help="base URL of the service's HTTP endpoint",
    )
    health.add_argument("--timeout", type=float, default=5.0, help="seconds per request")
    health.set_defaults(handler=_cmd_health)

    migrate = commands.add_parser("migrate", help="apply the store's schema migrations")
    _add_config_options(migrate)
    migrate.set_defaults(handler=_cmd_migrate)


def _add_rules_commands(commands: argparse._SubParsersAction) -> None:
    """``rules check`` and ``rules push``."""
    rules = commands.add_parser("rules", help="rule file tools")
    rules_commands = rules.add_subparsers(dest="rules_command", required=True, metavar="ACTION")
    check = rules_commands.add_parser(
        "check", help="validate a rule file and print every rule normalised"
    )
    check.add_argument("file", help="the rule file (TOML)")
    check.set_defaults(handler=_cmd_rules_check)
    push = rules_commands.add_parser(
        "push",
        help="validate a rule file and make the rules table hold exactly its rules "
        '(for rules.source = "db"; running instances reload within rules.reload_interval)',
    )
    push.add_argument("file", help="the rule file (TOML)")
    _add_config_options(push)
    push.set_defaults(handler=_cmd_rules_push)


def _add_silence_commands(commands: argparse._SubParsersAction) -> None:
    """``silence add``, ``silence list`` and ``silence expire``."""
    silence = commands.add_parser(
        "silence",
        help="mute notifications of a rule and/or symbol for a while (stored in the database; "
        "alerts are still evaluated and recorded)",
    )
    silence_commands = silence.add_subparsers(
        dest="silence_command", required=True, metavar="ACTION"
    )
    add = silence_commands.add_parser("add", help="add a silence starting now")
    add.add_argument("--rule", metavar="ID", help="the rule id to silence (default: every rule)")
    add.add_argument("--symbol", metavar="S", help="the symbol to silence (default: every one)")
    add.add_argument(
        "--for", dest="duration", required=True, metavar="DURATION", help='e.g. "30m", "1h", "2d"'
    )
    add.add_argument("--comment", default="", help="why (shown by silence list)")
    add.add_argument("--created-by", metavar="NAME", help="who (default: the login name)")
    _add_config_options(add)
    add.set_defaults(handler=_cmd_silence_add)
    listing = silence_commands.add_parser("list", help="list active and pending silences")
    listing.add_argument("--all", action="store_true", help="include silences that ended")
    _add_config_options(listing)
    listing.set_defaults(handler=_cmd_silence_list)
    expire = silence_commands.add_parser("expire", help="end a silence now")
    expire.add_argument("id", type=int, help="the silence id (see silence list)")
    _add_config_options(expire)
    expire.set_defaults(handler=_cmd_silence_expire)


def _add_load_test_commands(commands: argparse._SubParsersAction) -> None:
    """``loadtest`` and ``compare``: their arguments go, unparsed, to the load-test tool."""
    loadtest = commands.add_parser(
        "loadtest",
        help="open-loop load test with a KPI verdict (STREAM RATE | bench | calibrate RATE); "
        "`oraculo-trio loadtest --help` for its options",
        # Everything after `loadtest` (its --help too) goes to loadtest/cli.py.
        add_help=False,
        prefix_chars="\x00",
    )
    loadtest.add_argument("args", nargs=argparse.REMAINDER)
    loadtest.set_defaults(handler=_cmd_loadtest)
    compare = commands.add_parser(
        "compare",
        help="before/after table of two load-test artifacts",
        add_help=False,
        prefix_chars="\x00",
    )
    compare.add_argument("args", nargs=argparse.REMAINDER)
    compare.set_defaults(handler=_cmd_compare)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``oraculo-trio`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except BaseException as exc:
        if _only(exc, KeyboardInterrupt):
            return 130
        # Errors of ours, alone or inside a nursery's exception group, end with a message;
        # anything else is a bug and keeps its traceback.
        ours = _our_errors(exc)
        if ours is None:
            raise
        for error in ours:
            prefix = "configuration error: " if isinstance(error, ConfigError) else ""
            print(f"oraculo-trio: {prefix}{error}", file=sys.stderr)
        return EXIT_CONFIG if all(isinstance(e, ConfigError) for e in ours) else EXIT_ERROR


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
