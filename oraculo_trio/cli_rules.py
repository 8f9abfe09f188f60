"""``rules check``, ``rules push`` and ``migrate``: the rule file and the store's schema."""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tomllib
from pathlib import Path

import trio

from oraculo_trio.core.rules import CompiledRule, collect_rules, rule_warnings
from oraculo_trio.errors import ConfigError
from oraculo_trio.pipeline.rules_source import (
    load_rule_file,
    read_rule_file,
    resolve_rule_class,
    rules_path,
)
from oraculo_trio.settings import Settings
from oraculo_trio.store.base import mask_dsn, parse_store_url

EXIT_OK = 0
EXIT_PROBLEMS = 2


def rule_summary(compiled: CompiledRule) -> str:
    """One rule, normalised, on one line."""
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
        f"message={spec.message!r}",
        f"message_resolved={spec.message_resolved!r}",
    ]
    if spec.expires_at is not None:
        expires = datetime.datetime.fromtimestamp(spec.expires_at, tz=datetime.UTC)
        fields.append(f"expires_at={expires.isoformat().replace('+00:00', 'Z')}")
    if spec.labels:
        fields.append(f"labels={dict(spec.labels)}")
    if spec.inhibits:
        fields.append(f"inhibits={dict(spec.inhibits)}")
    return f"{spec.id}: " + " ".join(fields)


def check_file(path: Path, subscribed: tuple[str, ...] | None) -> tuple[list, list, list]:
    """``(rules, errors, warnings)`` of the rule file at ``path``.

    Raises:
        ConfigError: the file cannot be read.
    """
    try:
        document = tomllib.loads(read_rule_file(path))
    except tomllib.TOMLDecodeError as exc:
        return [], [f"not valid TOML: {exc}"], []
    rules, errors = collect_rules(document, resolve_rule_class)
    warnings = rule_warnings(rules, subscribed) if not errors or rules else []
    return rules, errors, warnings


def cmd_rules_check(args: argparse.Namespace, settings: Settings) -> int:
    """``rules check [FILE] [--strict]``: every error and warning of the file, at once."""
    path = Path(args.file) if args.file else rules_path(settings)
    rules, errors, warnings = check_file(path, settings.symbols)
    for compiled in rules:
        print(rule_summary(compiled))
    for error in errors:
        print(f"{path}: error: {error}", file=sys.stderr)
    for warning in warnings:
        print(f"{path}: warning: {warning}", file=sys.stderr)
    if errors or (warnings and args.strict):
        counted = [f"{len(errors)} error{'s' if len(errors) != 1 else ''}"]
        counted.append(f"{len(warnings)} warning{'s' if len(warnings) != 1 else ''}")
        strict = " (--strict: warnings count as errors)" if args.strict and warnings else ""
        print(f"{path}: {', '.join(counted)}{strict}", file=sys.stderr)
        return EXIT_PROBLEMS
    noted = f", {len(warnings)} warning{'s' if len(warnings) != 1 else ''}" if warnings else ""
    print(f"{path}: {len(rules)} rules OK{noted}")
    return EXIT_OK


def cmd_rules_push(args: argparse.Namespace, settings: Settings) -> int:
    """``rules push FILE``."""
    from oraculo_trio.cli_commands import _with_store

    rules = load_rule_file(args.file)
    _with_store(settings, lambda store: store.replace_rules([r.spec for r in rules]))
    print(f"{args.file}: {len(rules)} rules stored in {mask_dsn(settings.database.url)}")
    return EXIT_OK


def check_database_folder(url: str, create: bool) -> None:
    """Refuse a SQLite file whose folder does not exist, unless ``create``.

    Raises:
        ConfigError: naming the folder and the way out.
    """
    dialect, target = parse_store_url(url)
    if dialect != "sqlite" or target == ":memory:":
        return
    folder = Path(target).resolve().parent
    if folder.is_dir():
        return
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"database.url: cannot create {folder}: {exc.strerror}") from None
        return
    raise ConfigError(
        f"database.url: the folder {folder} does not exist: create it, fix the path, or pass "
        "--create-dirs"
    )


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    """``migrate [--create-dirs]``: says what it applied, or that nothing was pending."""
    from oraculo_trio.store.migrations import load_migrations
    from oraculo_trio.store.opening import open_store

    url = settings.database.url
    check_database_folder(url, args.create_dirs)

    async def migrate() -> list[int]:
        async with open_store(
            url, statement_timeout=settings.database.statement_timeout, apply_migrations=False
        ) as store:
            return await store.migrate()

    applied = trio.run(migrate)
    latest = max(m.version for m in load_migrations(parse_store_url(url)[0]))
    where = mask_dsn(url) if "://" in url else os.fspath(url)
    if applied:
        versions = ", ".join(map(str, applied))
        print(f"{where}: applied {versions} (now at version {latest})")
    else:
        print(f"{where}: already at version {latest}")
    return EXIT_OK
