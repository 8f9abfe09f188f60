"""Loading the configuration: the TOML file, ``ORACULO_<SECTION>_<KEY>`` overrides, the
checks across sections, and the configuration reference printed by ``--help``."""

from __future__ import annotations

import difflib
import ipaddress
import logging
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs

from oraculo_trio.core.rules.params import seconds_or_none
from oraculo_trio.errors import ConfigError
from oraculo_trio.feeds.binance_markets import binance_market
from oraculo_trio.settings.schema import (
    DEPTH_STREAM_KINDS,
    FUTURES_STREAM_KINDS,
    SECTIONS,
    TRADE_STREAM_KINDS,
    FeedSettings,
    Settings,
)
from oraculo_trio.settings.secrets import shown_value

LOGGER = logging.getLogger("oraculo_trio.settings")

ENV_PREFIX = "ORACULO_"
ENV_CONFIG = "ORACULO_CONFIG"
"""The configuration file to read when ``--config`` is not given."""
DEFAULT_CONFIG = "oraculo.toml"
"""The configuration file read from the working directory when neither names one."""
# Environment variables of ours that are not configuration keys.
ENV_NOT_CONFIG = (ENV_CONFIG, "ORACULO_REQUIRE_SERVICES", "ORACULO_TEST_")


def find_config(explicit: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The configuration file to read: ``explicit`` (``--config``), else ``$ORACULO_CONFIG``,
    else ``./oraculo.toml`` when it exists, else None (the built-in defaults).

    Raises:
        ConfigError: ``ORACULO_CONFIG`` names a file that does not exist.
    """
    if explicit is not None:
        return explicit
    environ = os.environ if environ is None else environ
    named = environ.get(ENV_CONFIG)
    if named:
        if not os.path.isfile(named):
            raise ConfigError(
                f"{ENV_CONFIG}={named}: no such file: point it at an oraculo.toml, or unset it"
            )
        return named
    return DEFAULT_CONFIG if os.path.isfile(DEFAULT_CONFIG) else None


def _fields(section_cls: type) -> dict[str, attrs.Attribute]:
    attrs.resolve_types(section_cls)
    return {f.name: f for f in attrs.fields(section_cls)}


def _kind(field: attrs.Attribute) -> type:
    t = field.type
    if t in (int, float, bool, str):
        return t
    return tuple


def _coerce(where: str, field: attrs.Attribute, value: Any) -> Any:
    kind = _kind(field)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(f"{where} = {value!r}: expected true or false")
    if kind is float and field.metadata.get("duration") and isinstance(value, str):
        seconds = seconds_or_none(value)
        if seconds is None:
            raise ConfigError(
                f'{where} = {value!r}: expected seconds or a duration such as "30m", "90d"'
            )
        return seconds
    if kind is int or kind is float:
        if isinstance(value, str):
            try:
                return kind(value)
            except ValueError:
                pass
        # An integer is a number too, never a boolean; a float is not an integer.
        elif isinstance(value, int | kind) and not isinstance(value, bool):
            return kind(value)
        expected = "an integer" if kind is int else "a number"
        raise ConfigError(f"{where} = {value!r}: expected {expected}")
    if kind is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} = {shown_value(where, value)}: expected a string")
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{where} = {value!r}: expected a list of strings")


def _build_section(name: str, values: Mapping[str, Any], shown: str | None = None) -> Any:
    section_cls = SECTIONS[name]
    fields = _fields(section_cls)
    shown = name if shown is None else shown
    kwargs = {}
    for key, raw in values.items():
        where = f"{shown}.{key}"
        field = fields.get(key)
        if field is None:
            allowed = ", ".join(sorted(fields))
            raise ConfigError(f"unknown key {where!r}; [{name}] takes: {allowed}")
        value = _coerce(where, field, raw)
        check = field.metadata.get("check")
        if check is not None:
            if field.converter is not None:
                value = field.converter(value)
            problem = check(value)
            if problem:
                raise ConfigError(
                    f"{where} = {shown_value(where, raw)} is not allowed: expected {problem}"
                )
        kwargs[key] = value
    return section_cls(**kwargs)


def env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Map ``ORACULO_<SECTION>_<KEY>`` variables to ``{section: {key: text}}``.

    A variable whose SECTION is not a section (``ORACULO_BIN``, set by a wrapper script for
    itself) is not configuration: it draws one warning and is otherwise ignored.

    Raises:
        ConfigError: a variable names a section and a key that section does not have.
    """
    found: dict[str, dict[str, str]] = {}
    for name, value in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name.startswith(ENV_NOT_CONFIG):
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        for section in SECTIONS:
            if rest.startswith(section + "_"):
                key = rest[len(section) + 1 :]
                fields = _fields(SECTIONS[section])
                if key not in fields:
                    close = difflib.get_close_matches(key, list(fields), n=1)
                    hint = f" (did you mean {ENV_PREFIX}{section.upper()}_{close[0].upper()}?)"
                    raise ConfigError(
                        f"environment variable {name} names unknown key {section}.{key}"
                        f"{hint if close else ''}; [{section}] takes: {', '.join(fields)}"
                    )
                found.setdefault(section, {})[key] = value
                break
        else:
            head = rest.split("_", 1)[0]
            close = difflib.get_close_matches(head, list(SECTIONS), n=1)
            hint = ""
            if close:
                meant = f"{ENV_PREFIX}{close[0]}_{rest[len(head) + 1 :]}".upper()
                hint = f" (did you mean {meant}?)"
            LOGGER.warning(
                "environment variable %s is not configuration: ignored%s. Configuration "
                "variables are ORACULO_<SECTION>_<KEY>, SECTION one of %s",
                name,
                hint,
                ", ".join(section.upper() for section in SECTIONS),
            )
    return found


def load_settings(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Load, merge and validate the configuration.

    Precedence, lowest first: defaults, the TOML file, ``ORACULO_*`` variables, then
    ``overrides`` (command-line options).

    Args:
        path: a TOML file, or None for defaults only.
        environ: the environment to read overrides from (``os.environ`` if None).
        overrides: ``{section: {key: value}}`` applied last.

    Returns:
        The validated :class:`Settings`.

    Raises:
        ConfigError: unreadable file, bad TOML, unknown section or key, or a value that is
            not allowed; the message names the key, the value and what is allowed.
    """
    document: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            with open(path, "rb") as file:
                document = tomllib.load(file)
        except FileNotFoundError:
            raise ConfigError(f"configuration file {source} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {source} is not valid TOML: {exc}") from None
    merged: dict[str, dict[str, Any]] = {}
    feeds: list[dict[str, Any]] = [{}]
    for section, values in document.items():
        if section not in SECTIONS:
            allowed = ", ".join(SECTIONS)
            raise ConfigError(f"unknown section [{section}] in {source}; sections: {allowed}")
        if section == FEED and isinstance(values, list):
            feeds = _feed_tables(values, source)
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"[{section}] in {source} must be a table")
        if section == FEED:
            feeds = [dict(values)]
        else:
            merged[section] = dict(values)
    env = env_overrides(os.environ if environ is None else environ)
    given = set()
    for origin, layer in (("environment", env), ("command line", overrides or {})):
        for section, values in layer.items():
            if section == FEED:
                feeds = _override_feeds(feeds, values, origin, source)
            else:
                merged.setdefault(section, {}).update(values)
                given.update((section, key) for key in values)
    sections = {
        name: _build_section(name, merged.get(name, {})) for name in SECTIONS if name != FEED
    }
    if path is not None:
        # The file's paths (and the defaults it leaves) are the file's; a path given on the
        # command line or in the environment is the caller's, relative to where they are.
        # (No feed key is a path.)
        folder = Path(path).resolve().parent
        for name, section in sections.items():
            sections[name] = _resolve_paths(name, section, folder, given)
    built = tuple(
        _build_section(FEED, values, _feed_where(index, len(feeds)))
        for index, values in enumerate(feeds)
    )
    settings = Settings(**sections, feeds=built, source=source)
    _check_across_sections(settings)
    return settings


FEED = "feed"
# Keys that name what a feed follows: one value cannot apply to several markets' feeds.
_PER_FEED_KEYS = (
    "market", "url", "rest_url", "symbols", "depth_streams", "trade_streams",
    "futures_streams", "depth_update_ms", "snapshot_limit", "rest_weight_budget",
)  # fmt: skip


def _feed_tables(values: list[Any], source: str) -> list[dict[str, Any]]:
    if not values or not all(isinstance(table, dict) for table in values):
        raise ConfigError(f"[[feed]] in {source} must be one or more tables")
    return [dict(table) for table in values]


def _override_feeds(
    feeds: list[dict[str, Any]], values: Any, origin: str, source: str
) -> list[dict[str, Any]]:
    """Apply the environment's or the command line's ``feed`` keys: a table applies to every
    feed, a list of tables replaces them."""
    if isinstance(values, list | tuple):
        return _feed_tables(list(values), origin)
    if len(feeds) > 1:
        for key in values:
            if key in _PER_FEED_KEYS:
                raise ConfigError(
                    f"feed.{key} from the {origin} cannot apply to the {len(feeds)} [[feed]] "
                    f"tables of {source}: set it in each [[feed]] table"
                )
    return [{**feed, **values} for feed in feeds]


def _feed_where(index: int, count: int) -> str:
    return FEED if count == 1 else f"feed[{index}]"


def _resolve_paths(name: str, section: Any, folder: Path, given: set[tuple[str, str]]) -> Any:
    changes = {}
    for key, field in _fields(type(section)).items():
        if not field.metadata.get("path") or (name, key) in given:
            continue
        value = getattr(section, key)
        if value.startswith("sqlite:///"):
            target = value[len("sqlite:///") :]
            if target and target != ":memory:" and not os.path.isabs(target):
                changes[key] = "sqlite:///" + str(folder / target)
        elif "://" not in value and value and not os.path.isabs(value):
            changes[key] = str(folder / value)
    return attrs.evolve(section, **changes) if changes else section


def _non_public_host(url: str) -> str | None:
    """The host of ``url`` when it is a non-public IP address or localhost, else None."""
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return host
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None  # a name: checked at each delivery, once resolved
    return None if address.is_global and not address.is_multicast else host


def _check_across_sections(settings: Settings) -> None:
    """Rules that tie keys of different sections together."""
    markets: dict[str, int] = {}
    for index, feed in enumerate(settings.feeds):
        where = _feed_where(index, len(settings.feeds))
        if feed.market in markets:
            raise ConfigError(
                f"{where}.market = {feed.market!r} is not allowed: [[feed]] table "
                f"{markets[feed.market]} follows that market already (one table per market)"
            )
        markets[feed.market] = index
        _check_feed(feed, where)
    if "webhook" in settings.dispatch.sinks and not settings.dispatch.webhook_url:
        raise ConfigError(
            "dispatch.sinks includes 'webhook' but dispatch.webhook_url is empty: "
            "expected an http:// or https:// URL"
        )
    dispatch = settings.dispatch
    private = dispatch.webhook_block_private and _non_public_host(dispatch.webhook_url)
    if private:
        shown = shown_value("dispatch.webhook_url", dispatch.webhook_url)
        raise ConfigError(
            f"dispatch.webhook_url = {shown} is not allowed: its host {private!r} is not a "
            "public address and dispatch.webhook_block_private is true"
        )
    if settings.cluster.mode == "postgres" and not settings.database.url.startswith(
        ("postgresql://", "postgres://")
    ):
        raise ConfigError(
            "cluster.mode = 'postgres' needs PostgreSQL, but database.url is "
            f"{shown_value('database.url', settings.database.url)}: SQLite serves one instance "
            "only. Use a postgresql:// database.url, or cluster.mode = 'single'"
        )


def _check_feed(feed: FeedSettings, where: str) -> None:
    """One feed's keys against each other and against its market."""
    market = binance_market(feed.market)
    if feed.reconnect_initial > feed.reconnect_max:
        raise ConfigError(
            f"{where}.reconnect_initial = {feed.reconnect_initial} is not allowed: expected at "
            f"most {where}.reconnect_max ({feed.reconnect_max})"
        )
    if not feed.depth_streams and not feed.trade_streams and not feed.futures_streams:
        raise ConfigError(
            f"{where}.depth_streams, trade_streams and futures_streams are all empty: "
            "nothing to read"
        )
    if "depth" in feed.depth_streams and len(feed.depth_streams) > 1:
        raise ConfigError(
            f"{where}.depth_streams = {list(feed.depth_streams)} is not allowed: the diff "
            "stream 'depth' keeps the symbol's one book, so it goes alone"
        )
    for key in ("depth_streams", "trade_streams", "futures_streams"):
        refused = [kind for kind in getattr(feed, key) if kind not in market.kinds]
        if refused:
            offered = [k for k in market.kinds if k in _KINDS_OF[key]]
            raise ConfigError(
                f"{where}.{key} = {list(getattr(feed, key))} is not allowed: {market.title} "
                f"offers {', '.join(map(repr, offered)) or 'none of them'} "
                f"({where}.market = {feed.market!r})"
            )
    if feed.depth_update_ms not in market.speeds:
        allowed = ", ".join(map(str, market.speeds))
        raise ConfigError(
            f"{where}.depth_update_ms = {feed.depth_update_ms} is not allowed: {market.title} "
            f"offers {allowed}"
        )
    for symbol in feed.symbols:
        if not market.is_symbol(symbol):
            raise ConfigError(
                f"{where}.symbols: {symbol!r} is not allowed: {market.title} symbols look like "
                f"{market.symbol_example!r} ({where}.market = {feed.market!r})"
            )
    try:
        weight = market.depth_weight(feed.snapshot_limit)
    except ValueError as exc:
        raise ConfigError(
            f"{where}.snapshot_limit = {feed.snapshot_limit} is not allowed: {exc}"
        ) from None
    budget = feed.rest_weight_budget or market.ip_weight_limit // 2
    # Binance counts a minute; a shorter window is a test's (its mock counts the same). Only
    # Binance's own hosts have Binance's limit: a local feed (a mock, a replay) may allow more.
    if (
        feed.rest_weight_window == 60.0
        and budget > market.ip_weight_limit
        and _is_binance_host(feed.rest_url or feed.url or market.rest_url)
    ):
        raise ConfigError(
            f"{where}.rest_weight_budget = {budget} is not allowed: {market.title} allows an IP "
            f"{market.ip_weight_limit} per minute, and more would be answered with 429s"
        )
    if "depth" in feed.depth_streams and budget < 2 * weight:
        raise ConfigError(
            f"{where}.rest_weight_budget = {budget} is not allowed: expected at least the "
            f"weight of two snapshots of {where}.snapshot_limit = {feed.snapshot_limit} "
            f"levels ({2 * weight})"
        )


BINANCE_DOMAINS = ("binance.com", "binance.us", "binancefuture.com")
"""Hosts whose REST limits are Binance's own (test networks included)."""

_KINDS_OF = {
    "depth_streams": DEPTH_STREAM_KINDS,
    "trade_streams": TRADE_STREAM_KINDS,
    "futures_streams": FUTURES_STREAM_KINDS,
}


def _is_binance_host(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return any(host == domain or host.endswith("." + domain) for domain in BINANCE_DOMAINS)


def rest_weight_budget(feed: FeedSettings) -> int:
    """The feed's REST weight budget per ``rest_weight_window``: ``rest_weight_budget``, or
    half of what its market allows an IP per minute when that is 0."""
    return feed.rest_weight_budget or binance_market(feed.market).ip_weight_limit // 2


def configuration_reference() -> str:
    """Every configuration key with its default and help, for ``--help`` and the README."""
    lines = []
    for section, section_cls in SECTIONS.items():
        lines.append(f"[{section}]")
        for name, field in _fields(section_cls).items():
            default = field.default
            if isinstance(default, tuple):
                default = list(default)
            elif field.metadata.get("duration") and default:
                default = f"{default / 86400:g}d" if default % 86400 == 0 else default
            env = f"{ENV_PREFIX}{section.upper()}_{name.upper()}"
            lines.append(f"  {name} = {default!r}   ({env})")
            lines.append(f"      {field.metadata['help']}")
    return "\n".join(lines)
