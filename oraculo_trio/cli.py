"""Command line: ``oraculo-trio run | demo | health | migrate | rules check | loadtest``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

from oraculo_trio import __version__
from oraculo_trio.errors import ConfigError, OraculoError
from oraculo_trio.settings import (
    Settings,
    configuration_reference,
    load_rule_file,
    load_settings,
    rules_path,
)

LOGGER = logging.getLogger("oraculo_trio.cli")

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
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
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
    return load_settings(path, overrides=overrides)


def _cmd_run(args: argparse.Namespace) -> int:
    from oraculo_trio.pipeline.service import run_service

    settings = _settings_from(args)
    _configure_logging(settings.service.log_level)
    rules = load_rule_file(rules_path(settings))
    LOGGER.info(
        "starting: %d symbols, %d rules, store %s, metrics on http://%s:%d/metrics",
        len(settings.feed.symbols),
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
        extra["database"] = {"url": "sqlite:///var/oraculo-demo.db"}
    settings = _settings_from(args, extra)
    _configure_logging(settings.service.log_level)
    trio.run(run_demo, settings, args.duration)
    return EXIT_OK


def _cmd_migrate(args: argparse.Namespace) -> int:
    from oraculo_trio.store.base import open_store

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
            fields.append(f"expires_at={spec.expires_at:g}")
        if spec.labels:
            fields.append(f"labels={dict(spec.labels)}")
        print(f"{spec.id}: " + " ".join(fields))
    print(f"{args.file}: {len(rules)} rules OK")
    return EXIT_OK


def _cmd_health(args: argparse.Namespace) -> int:
    from oraculo_trio.observe.report import health_report

    ok, report = health_report(args.url, timeout=args.timeout)
    print(report)
    return EXIT_OK if ok else EXIT_ERROR


def _cmd_loadtest(args: argparse.Namespace) -> int:
    print("oraculo-trio loadtest: not built yet (see the load-test issue)", file=sys.stderr)
    return EXIT_CONFIG


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="oraculo-trio",
        description="Market-data alerting on Trio: exchange feeds -> order books -> alert "
        "rules -> store and notifications, with Prometheus metrics.",
    )
    parser.add_argument("--version", action="version", version=f"oraculo-trio {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the service against the configured exchange",
        description="Run the service: connect to the exchange streams of feed.symbols, "
        "evaluate the rules of rules.file, store alerts in database.url, serve /metrics, "
        "/healthz and /readyz on http.host:http.port. SIGINT/SIGTERM drain and stop it "
        "(exit 0); a second signal exits at once.",
        epilog="configuration keys (TOML section/key, default, environment variable):\n\n"
        + configuration_reference(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_config_options(run)
    run.set_defaults(handler=_cmd_run)

    demo = commands.add_parser(
        "demo",
        help="run the service against a bundled mock exchange with a scripted market",
        description="Start the bundled mock exchange on 127.0.0.1 with a scripted market "
        "and run the service against it; the demo rules fire within about 10 s and each "
        "transition prints as `ALERT <state> <rule_id> <symbol> value=<v>`. Needs no "
        "internet. Alerts go to var/oraculo-demo.db unless --database-url is given.",
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
    health.add_argument(
        "--url", default="http://127.0.0.1:9108", help="base URL of the service's HTTP endpoint"
    )
    health.add_argument("--timeout", type=float, default=5.0, help="seconds per request")
    health.set_defaults(handler=_cmd_health)

    migrate = commands.add_parser("migrate", help="apply the store's schema migrations")
    _add_config_options(migrate)
    migrate.set_defaults(handler=_cmd_migrate)

    rules = commands.add_parser("rules", help="rule file tools")
    rules_commands = rules.add_subparsers(dest="rules_command", required=True, metavar="ACTION")
    check = rules_commands.add_parser(
        "check", help="validate a rule file and print every rule normalised"
    )
    check.add_argument("file", help="the rule file (TOML)")
    check.set_defaults(handler=_cmd_rules_check)

    loadtest = commands.add_parser("loadtest", help="open-loop load test with a KPI verdict")
    loadtest.add_argument("args", nargs=argparse.REMAINDER)
    loadtest.set_defaults(handler=_cmd_loadtest)
    return parser


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
