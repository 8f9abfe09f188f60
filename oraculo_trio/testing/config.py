"""One configuration of a test service: sections of TOML keys, as Settings or as files.

A service under test differs from the product's defaults in a few keys only (fast
reconnects, ticks and store batches, no notification sinks, an HTTP port the system picks):
:data:`TEST_DEFAULTS`. :func:`service_sections` puts them together with what every service
needs (the exchange, the symbols, the store, a dump directory) and a caller's overrides;
:func:`service_settings` turns sections into validated
:class:`~oraculo_trio.settings.Settings` for a service run in this process, and
:func:`write_service_config` into ``oraculo.toml`` and ``rules.toml`` for a service run as a
subprocess (see :mod:`oraculo_trio.testing.processes`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import oraculo_trio
from oraculo_trio.settings import ENV_NOT_CONFIG, ENV_PREFIX, Settings, load_settings

__all__ = [
    "TEST_DEFAULTS",
    "Sections",
    "merge_sections",
    "rules_document",
    "service_environ",
    "service_sections",
    "service_settings",
    "toml_document",
    "write_service_config",
]

Sections = dict[str, dict[str, Any]]
"""``{section: {key: value}}``, as in ``oraculo.toml``."""

SectionsLike = Mapping[str, Mapping[str, Any]]

TEST_DEFAULTS: SectionsLike = MappingProxyType(
    {
        "feed": {
            "depth_streams": ["depth20"],
            "trade_streams": ["trade"],
            "reconnect_initial": 0.05,
            "reconnect_max": 0.5,
            "clock_check_interval": 0.0,
        },
        "rules": {"tick_interval": 0.1, "reload_interval": 0.0},
        "database": {"batch_window_ms": 5.0, "commit_interval_ms": 0.0},
        "dispatch": {"sinks": [], "silence_refresh": 0.1},
        "http": {"host": "127.0.0.1", "port": 0},
    }
)
"""Where a test service departs from the product's defaults: reconnects, rule ticks, store
batches and silence reads within a tenth of a second, no rule-file polling, no notification
sinks, no measurement of the exchange's clock (a test that wants it sets
``feed.clock_check_interval`` and ``feed.rest_url``), and the HTTP endpoint on 127.0.0.1 at a
port the system picks (port 0)."""


def merge_sections(*layers: SectionsLike | None) -> Sections:
    """The ``layers`` merged key by key, later layers winning; None layers are skipped.

    A section given as a list of tables (several ``[[feed]]``) is each of those tables over
    what lower layers had for the section, and a table of a later layer applies to each.
    """
    merged: dict[str, Any] = {}
    for layer in layers:
        for section, values in (layer or {}).items():
            if isinstance(values, list | tuple):
                under = merged.get(section)
                under = under if isinstance(under, dict) else {}
                merged[section] = [{**under, **table} for table in values]
            elif isinstance(merged.get(section), list):
                merged[section] = [{**table, **values} for table in merged[section]]
            else:
                merged.setdefault(section, {}).update(values)
    return merged


def service_sections(
    *,
    exchange_url: str,
    symbols: Iterable[str],
    database_url: str,
    dump_dir: str | os.PathLike[str],
    overrides: SectionsLike | None = None,
    defaults: SectionsLike = TEST_DEFAULTS,
) -> Sections:
    """The configuration of a service reading ``symbols`` from ``exchange_url``.

    Args:
        exchange_url: the WebSocket base URL (``feed.url``), e.g. a mock exchange's.
        symbols: ``feed.symbols``.
        database_url: ``database.url``.
        dump_dir: ``observe.dump_dir`` (stack dumps of a blocked loop).
        overrides: sections applied last, over everything else.
        defaults: the layer under everything (``{}``: the product's own defaults).

    Returns:
        Fresh sections the caller may change.
    """
    essentials = {
        "feed": {"url": exchange_url, "symbols": list(symbols)},
        "database": {"url": database_url},
        "observe": {"dump_dir": str(dump_dir)},
    }
    return merge_sections(defaults, essentials, overrides)


def service_settings(
    database_url: str,
    exchange_url: str,
    symbols: Iterable[str],
    overrides: SectionsLike | None = None,
    dump_dir: str | os.PathLike[str] = "var/dumps",
) -> Settings:
    """Validated settings of a test service (:data:`TEST_DEFAULTS` under ``overrides``).

    The environment is ignored: a test's service is the same wherever the suite runs.

    Raises:
        ConfigError: an override that is not allowed (named).
    """
    sections = service_sections(
        exchange_url=exchange_url,
        symbols=symbols,
        database_url=database_url,
        dump_dir=dump_dir,
        overrides=overrides,
    )
    return load_settings(None, environ={}, overrides=sections)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    # A JSON string is a TOML basic string (same quotes and escapes).
    return json.dumps(str(value))


def toml_document(sections: SectionsLike) -> str:
    """A TOML document of ``sections`` (values: scalars, lists, inline tables; a section
    given as a list of tables becomes ``[[section]]`` tables)."""
    lines = []
    for section, values in sections.items():
        tables = values if isinstance(values, list | tuple) else [values]
        header = f"[[{section}]]" if isinstance(values, list | tuple) else f"[{section}]"
        for table in tables:
            lines.append(header)
            lines.extend(f"{key} = {_toml_value(value)}" for key, value in table.items())
            lines.append("")
    return "\n".join(lines)


def rules_document(entries: Sequence[Mapping[str, Any]]) -> str:
    """A rule file holding ``entries`` (each a ``[[rule]]`` table)."""
    blocks = []
    for entry in entries:
        lines = ["[[rule]]", *(f"{k} = {_toml_value(v)}" for k, v in entry.items())]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def write_service_config(
    directory: str | os.PathLike[str],
    sections: SectionsLike,
    rules: str | Sequence[Mapping[str, Any]] = (),
) -> Path:
    """Write ``oraculo.toml`` and its ``rules.toml`` into ``directory`` (created if missing).

    Args:
        directory: where both files go.
        sections: the configuration; ``rules.file`` is set to the rule file written here
            unless ``sections`` names one (then ``rules`` must be empty).
        rules: the rule file's text, or its entries.

    Returns:
        The path of ``oraculo.toml``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    layers: list[SectionsLike] = [sections]
    if "file" not in sections.get("rules", {}):
        text = rules if isinstance(rules, str) else rules_document(rules)
        (directory / "rules.toml").write_text(text)
        layers.append({"rules": {"file": "rules.toml"}})
    elif rules:
        raise ValueError("rules given twice: as rules.file and as the rules argument")
    path = directory / "oraculo.toml"
    path.write_text(toml_document(merge_sections(*layers)))
    return path


def service_environ(
    base: Mapping[str, str] | None = None, sections: SectionsLike | None = None
) -> dict[str, str]:
    """The environment of a service subprocess.

    ``ORACULO_<SECTION>_<KEY>`` variables would override its configuration file, so they are
    left out: those of the keys ``sections`` sets, or all of them when ``sections`` is None.
    ``PYTHONPATH`` starts with the folder this ``oraculo_trio`` is imported from, so the
    child runs the same code (and finds rule modules beside it, such as the tests').

    Args:
        base: the environment to start from (``os.environ`` if None).
        sections: the configuration the service is given.
    """
    base = os.environ if base is None else base
    if sections is None:
        blocked = {
            name
            for name in base
            if name.startswith(ENV_PREFIX) and not name.startswith(ENV_NOT_CONFIG)
        }
    else:
        blocked = {
            f"{ENV_PREFIX}{section.upper()}_{key.upper()}"
            for section, values in sections.items()
            for table in (values if isinstance(values, list | tuple) else [values])
            for key in table
        }
    env = {name: value for name, value in base.items() if name not in blocked}
    root = str(Path(oraculo_trio.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env
