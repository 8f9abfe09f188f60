"""The arguments and help of every ``oraculo-trio`` command (``--help`` answers questions)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping, Sequence

Handler = Callable[[argparse.Namespace], int]

_RAW = argparse.RawDescriptionHelpFormatter

_API_EPILOG = """\
Where the answers come from: the running service's HTTP API, at --url, else at the
configuration's http.host:http.port (--config, else $ORACULO_CONFIG, else ./oraculo.toml;
127.0.0.1:9108 without one). With --database-url the command reads and writes the store
itself instead (no service needed, but database credentials are).
"""


def positive_seconds(text: str) -> float:
    """``--duration``: a number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of seconds > 0")
    return value


def positive_int(text: str) -> int:
    """``--limit``: an integer > 0."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer > 0")
    return value


def _debug(parser: argparse.ArgumentParser) -> None:
    # Also after the command (`oraculo-trio run --debug`); SUPPRESS keeps the top level's.
    parser.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="print tracebacks"
    )


def _config(parser: argparse.ArgumentParser, log_levels: Sequence[str] = ()) -> None:
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="configuration file (TOML). Default: $ORACULO_CONFIG, else ./oraculo.toml if it "
        "exists, else the built-in defaults. Relative paths in it are taken from its folder; "
        "ORACULO_<SECTION>_<KEY> environment variables override it.",
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="override database.url (sqlite:///PATH or postgresql://...)",
    )
    if log_levels:
        parser.add_argument(
            "--http-port",
            type=int,
            metavar="PORT",
            help="override http.port (0 picks a free port)",
        )
        parser.add_argument("--log-level", choices=log_levels, help="override service.log_level")
    _debug(parser)


def _api(parser: argparse.ArgumentParser, *, output: bool = True) -> None:
    """Where an operator command gets its answers, and how it prints them."""
    _config(parser)
    parser.add_argument(
        "--url", metavar="URL", help="the service's HTTP endpoint (such as 127.0.0.1:9108)"
    )
    parser.add_argument(
        "--token",
        metavar="TOKEN",
        help="http.api_token, for writes (default: the configuration's, or "
        "$ORACULO_HTTP_API_TOKEN)",
    )
    parser.add_argument("--timeout", type=positive_seconds, default=10.0, help="seconds")
    if output:
        parser.add_argument(
            "-o", "--output", choices=("table", "json"), default="table", help="output format"
        )
        parser.add_argument("-q", "--quiet", action="store_true", help="print ids only")


def add_commands(
    commands: argparse._SubParsersAction,
    handlers: Mapping[str, Handler],
    reference: str,
    log_levels: Sequence[str],
) -> None:
    """Every command, each with its handler from ``handlers`` (keyed ``"rules check"``...)."""
    _add_service(commands, handlers, reference, log_levels)
    _add_alerts(commands, handlers)
    _add_silence(commands, handlers)
    _add_rules(commands, handlers)
    _add_load_test(commands, handlers)


def _add_service(
    commands: argparse._SubParsersAction,
    handlers: Mapping[str, Handler],
    reference: str,
    log_levels: Sequence[str],
) -> None:
    run = commands.add_parser(
        "run",
        help="run the service against the configured exchange",
        description="Run the service: check feed.symbols against each market's "
        "exchangeInfo (skip with --offline), connect to the exchange streams of feed.symbols, "
        "evaluate the rules of rules.file, store alerts in database.url, print each "
        "notification on stdout, serve /metrics, /healthz, /readyz and the /api/v1 API on "
        "http.host:http.port. SIGINT/SIGTERM drain and stop it (exit 0); a second signal "
        "exits at once. Several Binance markets: one [[feed]] table each (feed.market).",
        epilog="configuration keys (TOML section/key, default, environment variable):\n\n"
        + reference,
        formatter_class=_RAW,
    )
    _config(run, log_levels)
    run.add_argument(
        "--workers",
        default="1",
        metavar="N|auto",
        help="worker processes, each processing its share of the partitions (auto: one per "
        "core); a supervisor serves /metrics of all of them with a `worker` label, and the "
        "API from the store",
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
    run.set_defaults(handler=handlers["run"])

    demo = commands.add_parser(
        "demo",
        help="run the service against bundled mock exchanges with scripted markets",
        description="Start the bundled mock exchanges on 127.0.0.1, a scripted spot market "
        "and a scripted USD-M futures market, and run the service against both; the demo "
        "rules fire within about 10 s and each notification prints as one line: "
        'TIME STATE SEVERITY RULE SYMBOL VALUE "MESSAGE". '
        "Needs no internet. The HTTP endpoint takes a free port (printed) unless --http-port "
        "says otherwise; alerts go to var/oraculo-demo.db (recreated each run) unless "
        "--database-url is given.",
        formatter_class=_RAW,
    )
    _config(demo, log_levels)
    demo.add_argument(
        "--duration",
        type=positive_seconds,
        metavar="S",
        help="stop by itself after S seconds (default: run until Ctrl-C)",
    )
    demo.set_defaults(handler=handlers["demo"])

    health = commands.add_parser(
        "health",
        help="print a running service's health; exit 1 when unhealthy or unreachable",
        description="Read a running service's /healthz, /readyz and /metrics and print a "
        "summary: readiness and every reason it is not ready, scheduler lag, messages and "
        "queue times per stream, drops, bad frames, store latency and timeouts, feed "
        "connections, alerts firing. Exit 0 when /healthz and /readyz both answer 200, "
        "1 otherwise (or when the service cannot be reached).",
        epilog="The service is at --url, else at the configuration's http.host:http.port.",
    )
    health.add_argument("--url", metavar="URL", help="such as 127.0.0.1:9108")
    health.add_argument("--config", metavar="PATH", help="read http.host and http.port here")
    health.add_argument("--timeout", type=positive_seconds, default=5.0, help="seconds a request")
    health.add_argument("--json", action="store_true", help="print the summary as JSON")
    _debug(health)
    health.set_defaults(handler=handlers["health"])

    migrate = commands.add_parser(
        "migrate",
        help="apply the store's schema migrations and say which",
        description="Apply the store's pending schema migrations (the service also applies "
        "them at start-up) and print what was applied, or the version it already is at. A "
        "SQLite file whose folder does not exist is refused unless --create-dirs is given.",
    )
    _config(migrate)
    migrate.add_argument(
        "--create-dirs", action="store_true", help="create the SQLite file's missing folders"
    )
    migrate.set_defaults(handler=handlers["migrate"])


def _add_alerts(commands: argparse._SubParsersAction, handlers: Mapping[str, Handler]) -> None:
    alerts = commands.add_parser(
        "alerts", help="list alerts and their history (from the running service's API)"
    )
    actions = alerts.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list",
        help="the alerts firing or pending now",
        description="The alerts in the given states (default: firing and pending), with "
        "their value, message, since when and the silences muting them.",
        epilog=_API_EPILOG,
        formatter_class=_RAW,
    )
    listing.add_argument(
        "--state", help="comma-separated: firing, pending, resolved, inactive, or all"
    )
    listing.add_argument("--rule", metavar="ID", help="only this rule's alerts")
    listing.add_argument("--symbol", metavar="S", help="only this symbol's alerts")
    listing.add_argument("--severity", help="comma-separated: info, warning, critical")
    _api(listing)
    listing.set_defaults(handler=handlers["alerts list"])
    history = actions.add_parser(
        "history",
        help="the transitions since a time",
        description="Every transition (alert_events) since --since, oldest first, in the "
        "layout of the notification line.",
        epilog=_API_EPILOG,
        formatter_class=_RAW,
    )
    history.add_argument(
        "--since",
        default="1h",
        help='a duration ago ("30m", "2d"), an ISO-8601 time or Unix seconds (default: 1h)',
    )
    history.add_argument("--rule", metavar="ID", help="only this rule's transitions")
    history.add_argument("--symbol", metavar="S", help="only this symbol's transitions")
    history.add_argument("--limit", type=positive_int, help="at most the latest N (1000)")
    _api(history)
    history.set_defaults(handler=handlers["alerts history"])


def _add_silence(commands: argparse._SubParsersAction, handlers: Mapping[str, Handler]) -> None:
    silence = commands.add_parser(
        "silence",
        help="mute notifications of matching alerts for a while (alerts are still "
        "evaluated and recorded)",
        description="Silences mute the notifications of the alerts their matchers match, "
        "like Alertmanager's: NAME=VALUE, NAME!=VALUE, NAME=~REGEX, NAME!~REGEX (regexes "
        "match the whole value) on rule_id (or rule, alertname), symbol, severity and the "
        "rule's labels.",
    )
    actions = silence.add_subparsers(dest="silence_command", required=True, metavar="ACTION")
    add = actions.add_parser(
        "add",
        help="add a silence starting now",
        description="Add a silence from now for --for. Every matcher must match an alert "
        "for the silence to mute it. A silence that matches no alert of the rules in force "
        "draws a warning.",
        epilog="examples:\n"
        "  oraculo-trio silence add severity=critical 'symbol=~\"SOL.*\"' --for 2h \\\n"
        '      --comment "SOL maintenance"\n'
        "  oraculo-trio silence add --rule whale-trade --symbol BTCUSDT --for 30m \\\n"
        '      --comment "desk flow"\n\n' + _API_EPILOG,
        formatter_class=_RAW,
    )
    _matcher_arguments(add)
    add.add_argument(
        "--for", dest="duration", required=True, metavar="DURATION", help='e.g. "30m", "2h", "1d"'
    )
    add.add_argument("--comment", required=True, help="why (shown by silence list)")
    add.add_argument("--created-by", metavar="NAME", help="who (default: the login name)")
    _api(add)
    add.set_defaults(handler=handlers["silence add"])

    listing = actions.add_parser(
        "list",
        help="list the silences in effect (active or pending)",
        epilog=_API_EPILOG,
        formatter_class=_RAW,
    )
    which = listing.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="include the ones that ended")
    which.add_argument("--expired", action="store_true", help="only the ones that ended")
    _api(listing)
    listing.set_defaults(handler=handlers["silence list"])

    query = actions.add_parser(
        "query",
        help="the silences that would mute an alert with these labels",
        description="The silences in effect whose matchers match the labels given "
        "(NAME=VALUE; a label left out matches anything): is this alert silenced, and by "
        "what?",
        epilog="example:\n  oraculo-trio silence query symbol=SOLUSDT severity=critical\n\n"
        + _API_EPILOG,
        formatter_class=_RAW,
    )
    _matcher_arguments(query)
    query.add_argument("--all", action="store_true", help="include the silences that ended")
    _api(query)
    query.set_defaults(handler=handlers["silence query"])

    expire = actions.add_parser(
        "expire", help="end silences now", epilog=_API_EPILOG, formatter_class=_RAW
    )
    expire.add_argument("ids", type=positive_int, nargs="+", metavar="ID", help="silence ids")
    _api(expire, output=False)
    expire.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    expire.set_defaults(handler=handlers["silence expire"])


def _matcher_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "matchers",
        nargs="*",
        metavar="MATCHER",
        help='NAME=VALUE, NAME!=VALUE, NAME=~REGEX or NAME!~REGEX (quote "REGEX" for the shell)',
    )
    parser.add_argument("--rule", metavar="ID", help="shortcut for rule_id=ID")
    parser.add_argument("--symbol", metavar="S", help="shortcut for symbol=S")
    parser.add_argument("--severity", help="shortcut for severity=SEVERITY")


def _add_rules(commands: argparse._SubParsersAction, handlers: Mapping[str, Handler]) -> None:
    rules = commands.add_parser("rules", help="check a rule file, or push it to the rules table")
    actions = rules.add_subparsers(dest="rules_command", required=True, metavar="ACTION")
    check = actions.add_parser(
        "check",
        help="validate a rule file: every error and warning at once",
        description="Validate a rule file and print every rule normalised (default "
        "messages filled in). Every error is reported, with 'did you mean' for kinds and "
        "keys; warnings name what loads but is probably a mistake: no rules, symbols that "
        "feed.symbols does not subscribe to, message templates with unknown fields or bad "
        "formats. Exit 2 on errors (or warnings, with --strict).",
    )
    check.add_argument("file", nargs="?", help="the rule file (default: the configured rules.file)")
    check.add_argument("--strict", action="store_true", help="warnings count as errors")
    check.add_argument("--config", metavar="PATH", help="where feed.symbols and rules.file are")
    _debug(check)
    check.set_defaults(handler=handlers["rules check"])
    push = actions.add_parser(
        "push",
        help="validate a rule file and make the rules table hold exactly its rules "
        '(for rules.source = "db"; running instances reload within rules.reload_interval)',
    )
    push.add_argument("file", help="the rule file (TOML)")
    _config(push)
    push.set_defaults(handler=handlers["rules push"])


def _add_load_test(commands: argparse._SubParsersAction, handlers: Mapping[str, Handler]) -> None:
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
    loadtest.set_defaults(handler=handlers["loadtest"])
    compare = commands.add_parser(
        "compare",
        help="before/after table of two load-test artifacts",
        add_help=False,
        prefix_chars="\x00",
    )
    compare.add_argument("args", nargs=argparse.REMAINDER)
    compare.set_defaults(handler=handlers["compare"])
