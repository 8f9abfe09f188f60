"""The operator's commands: ``alerts list|history``, ``silence add|list|query|expire`` and
``health``.

They ask a running service's HTTP API (``--url``, else the configuration's ``http.host``
and ``http.port``), or, given ``--database-url``, the store itself (the same questions:
:mod:`oraculo_trio.api.operations`). Output: a table (``-o table``, the default), JSON
(``-o json``), or ids alone (``-q``).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import trio

from oraculo_trio.api import operations as ops
from oraculo_trio.api.client import ApiClient, normalize_url, service_url
from oraculo_trio.core.markets import normalized
from oraculo_trio.core.rules import CompiledRule
from oraculo_trio.core.silences import RULE_NAMES, Matcher, matcher, parse_matchers
from oraculo_trio.dispatch.render import human_value
from oraculo_trio.errors import ConfigError, OraculoError, UsageError
from oraculo_trio.settings import Settings

T = TypeVar("T")

EXIT_OK = 0
EXIT_ERROR = 1


# --- where the answers come from ---


def _with_store(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``await work(store)`` on the configured store, in a fresh Trio run."""
    from oraculo_trio.store.opening import open_store

    async def run() -> T:
        async with open_store(
            settings.database.url, statement_timeout=settings.database.statement_timeout
        ) as store:
            return await work(store)

    return trio.run(run)


def _client(args: argparse.Namespace, settings: Settings) -> ApiClient:
    url = normalize_url(args.url) if args.url else service_url(settings)
    token = args.token or settings.http.api_token
    return ApiClient(url, token, timeout=args.timeout)


def _direct(args: argparse.Namespace) -> bool:
    """Whether to read the store itself (``--database-url``) rather than the API."""
    return bool(getattr(args, "database_url", None))


def _rules(settings: Settings) -> list[CompiledRule]:
    """The rules of the configured source, for silence warnings; [] when unreadable."""
    from oraculo_trio.pipeline.rules_source import load_db_rules, load_rule_file, rules_path

    try:
        if settings.rules.source == "db":
            return _with_store(settings, load_db_rules)
        return load_rule_file(rules_path(settings))
    except OraculoError:
        return []


# --- output ---


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    for row in (headers, *rows):
        cells = [cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip())


def _output(args: argparse.Namespace, items: list[dict[str, Any]], ids: Callable, table) -> None:
    if args.output == "json":
        print(json.dumps(items, indent=2, ensure_ascii=False))
    elif args.quiet:
        for item in items:
            print(ids(item))
    else:
        table(items)


def _when(text: str | None) -> str:
    return text or "-"


# --- alerts ---


def cmd_alerts_list(args: argparse.Namespace, settings: Settings) -> int:
    """``alerts list``."""
    query = {
        "state": args.state,
        "rule": args.rule,
        "symbol": args.symbol,
        "severity": args.severity,
    }
    if _direct(args):
        which = ops.AlertFilter.from_query({k: v for k, v in query.items() if v is not None})
        alerts = _with_store(settings, lambda store: ops.list_alerts(store, which, time.time()))
    else:
        with _client(args, settings) as client:
            alerts = client.call("GET", "/alerts", params=query)["alerts"]

    def table(items: list[dict[str, Any]]) -> None:
        rows = [
            [
                a["state"].upper(),
                a["severity"],
                a["rule_id"],
                a["symbol"],
                human_value(a["value"]),
                _when(a["started_at"] if a["state"] == "firing" else a["last_change"]),
                ",".join(map(str, a["silenced_by"])) or "-",
                a["message"],
            ]
            for a in items
        ]
        headers = ["STATE", "SEVERITY", "RULE", "SYMBOL", "VALUE", "SINCE", "SILENCED", "MESSAGE"]
        _print_table(headers, rows)
        if not items:
            print("no alerts" + ("" if args.state else " firing or pending (--state all)"))

    _output(args, alerts, lambda a: f"{a['rule_id']} {a['symbol']}", table)
    return EXIT_OK


def cmd_alerts_history(args: argparse.Namespace, settings: Settings) -> int:
    """``alerts history``."""
    query = {"since": args.since, "rule": args.rule, "symbol": args.symbol, "limit": args.limit}
    if _direct(args):
        arguments = ops.history_query(
            {k: str(v) for k, v in query.items() if v is not None}, time.time()
        )
        events = _with_store(settings, lambda store: ops.alert_history(store, **arguments))
    else:
        with _client(args, settings) as client:
            params = {k: None if v is None else str(v) for k, v in query.items()}
            events = client.call("GET", "/alerts/history", params=params)["events"]

    def table(items: list[dict[str, Any]]) -> None:
        # The alert line's layout: time, state, severity, rule, symbol, value, message.
        for e in items:
            message = json.dumps(e["message"], ensure_ascii=False)
            print(
                f"{e['at']} {e['state'].upper()} {e['severity']} {e['rule_id']} {e['symbol']} "
                f"{human_value(e['value'])} {message}"
            )
        if not items:
            print(f"no transitions since {args.since}")

    _output(args, events, lambda e: e["id"], table)
    return EXIT_OK


# --- silences ---


def silence_matchers(args: argparse.Namespace) -> tuple[Matcher, ...]:
    """The matchers of ``silence add``/``query``: MATCHER arguments plus the shortcuts.

    Raises:
        UsageError: a matcher that does not parse.
    """
    try:
        found = list(parse_matchers(args.matchers))
        if args.rule:
            found.append(matcher("rule_id", "=", args.rule))
        if args.symbol:
            found.append(matcher("symbol", "=", normalized(args.symbol)))
        if args.severity:
            found.append(matcher("severity", "=", args.severity))
    except ValueError as exc:
        raise UsageError(f"silence {args.silence_command}: {exc}") from None
    return tuple(found)


def _silence_table(items: list[dict[str, Any]]) -> None:
    rows = [
        [
            str(s["id"]),
            s["status"],
            _when(s["starts_at"]),
            _when(s["ends_at"]),
            s["created_by"] or "-",
            " ".join(str(Matcher(m["name"], m["op"], m["value"])) for m in s["matchers"]),
            s["comment"],
        ]
        for s in items
    ]
    _print_table(["ID", "STATUS", "STARTS", "ENDS", "CREATED BY", "MATCHERS", "COMMENT"], rows)


def cmd_silence_add(args: argparse.Namespace, settings: Settings) -> int:
    """``silence add``."""
    now = time.time()
    matchers = silence_matchers(args)
    try:
        seconds = ops.positive_duration(args.duration, "--for")
        created_by = args.created_by or getpass.getuser()
        request = ops.SilenceRequest.checked(
            matchers, now, now + seconds, created_by, args.comment, now
        )
    except ops.BadRequest as exc:
        raise UsageError(f"silence add {exc}" if str(exc).startswith("--") else str(exc)) from None
    if _direct(args):
        rules, symbols = _rules(settings), settings.symbols
        silence, warnings = _with_store(
            settings, lambda store: ops.add_silence(store, request, rules, symbols, now)
        )
    else:
        body = {
            "matchers": [str(m) for m in request.matchers],
            "duration": args.duration,
            "created_by": request.created_by,
            "comment": request.comment,
        }
        with _client(args, settings) as client:
            answer = client.call("POST", "/silences", body=body)
        silence, warnings = answer["silence"], answer["warnings"]
    for warning in warnings:
        print(f"oraculo-trio: warning: {warning}", file=sys.stderr)
    _output(args, [silence], lambda s: s["id"], _silence_table)
    return EXIT_OK


def _fetch_silences(
    args: argparse.Namespace, settings: Settings, states: tuple[str, ...] | None
) -> list[dict[str, Any]]:
    if _direct(args):
        return _with_store(settings, lambda store: ops.list_silences(store, states, time.time()))
    state = "all" if states is None else ",".join(states)
    with _client(args, settings) as client:
        return client.call("GET", "/silences", params={"state": state})["silences"]


def cmd_silence_list(args: argparse.Namespace, settings: Settings) -> int:
    """``silence list``."""
    states = None if args.all else ("expired",) if args.expired else ("active", "pending")
    silences = _fetch_silences(args, settings, states)

    def table(items: list[dict[str, Any]]) -> None:
        _silence_table(items)
        if not items:
            print("no silences" + ("" if args.all else " in effect (--all shows ended ones)"))

    _output(args, silences, lambda s: s["id"], table)
    return EXIT_OK


def cmd_silence_query(args: argparse.Namespace, settings: Settings) -> int:
    """``silence query NAME=VALUE...``: the silences that would mute an alert with those
    labels (a label not given matches anything)."""
    given = silence_matchers(args)
    if any(m.op != "=" for m in given):
        raise UsageError("silence query: give the alert's labels as NAME=VALUE")
    labels = {m.name: m.value for m in given}
    for name in RULE_NAMES:
        if name in labels:
            labels.update(dict.fromkeys(RULE_NAMES, labels[name]))
    states = None if args.all else ("active", "pending")
    found = []
    for silence in _fetch_silences(args, settings, states):
        matchers = [Matcher(m["name"], m["op"], m["value"]) for m in silence["matchers"]]
        relevant = [m for m in matchers if m.name in labels]
        if (relevant or not labels) and all(m.matches(labels) for m in relevant):
            found.append(silence)

    def table(items: list[dict[str, Any]]) -> None:
        _silence_table(items)
        if not items:
            print("no silence mutes such an alert")

    _output(args, found, lambda s: s["id"], table)
    return EXIT_OK


def cmd_silence_expire(args: argparse.Namespace, settings: Settings) -> int:
    """``silence expire ID...``."""
    failed = 0
    for silence_id in args.ids:
        if _direct(args):
            done = _with_store(
                settings, lambda store, i=silence_id: ops.expire_silence(store, i, time.time())
            )
        else:
            with _client(args, settings) as client:
                try:
                    done = client.call("DELETE", f"/silences/{silence_id}")["silence"]
                except OraculoError as exc:
                    if "no silence" not in str(exc):
                        raise
                    done = None
        if done is None:
            print(f"oraculo-trio: silence {silence_id}: no such silence in effect", file=sys.stderr)
            failed += 1
        elif not args.quiet:
            print(f"silence {silence_id}: expired")
    return EXIT_ERROR if failed else EXIT_OK


# --- health ---


def cmd_health(args: argparse.Namespace, settings: Settings | None) -> int:
    """``health``."""
    from oraculo_trio.observe.report import format_health, health_summary

    if args.url:
        url = normalize_url(args.url)
    elif settings is not None:
        url = service_url(settings)
    else:
        raise ConfigError("health: no configuration to read http.port from: give --url")
    summary = health_summary(url, timeout=args.timeout)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_health(summary))
    return EXIT_OK if summary["healthy"] else EXIT_ERROR
