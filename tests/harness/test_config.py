"""The configuration builder of the test harness: layers, settings, files, environment."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from oraculo_trio import testing
from oraculo_trio.errors import ConfigError
from oraculo_trio.pipeline.rules_source import load_rule_file, rules_path
from oraculo_trio.settings import load_settings
from oraculo_trio.testing import fixtures
from oraculo_trio.testing.config import (
    TEST_DEFAULTS,
    merge_sections,
    rules_document,
    service_environ,
    service_sections,
    service_settings,
    write_service_config,
)

ESSENTIALS = {
    "exchange_url": "ws://127.0.0.1:9/ws",
    "symbols": ["BTCUSDT", "ETHUSDT"],
    "database_url": "sqlite:///alerts.db",
    "dump_dir": "dumps",
}


def test_layers_merge_key_by_key_later_ones_winning() -> None:
    merged = merge_sections(
        {"feed": {"a": 1, "b": 2}}, None, {"feed": {"b": 3}, "http": {"port": 0}}
    )
    assert merged == {"feed": {"a": 1, "b": 3}, "http": {"port": 0}}


def test_sections_are_the_defaults_then_the_essentials_then_the_overrides() -> None:
    sections = service_sections(
        **ESSENTIALS, overrides={"feed": {"reconnect_max": 0.2}, "pipeline": {"shards": 2}}
    )
    assert sections["feed"] == {
        **TEST_DEFAULTS["feed"],
        "url": "ws://127.0.0.1:9/ws",
        "symbols": ["BTCUSDT", "ETHUSDT"],
        "reconnect_max": 0.2,
    }
    assert sections["http"] == {"host": "127.0.0.1", "port": 0}
    assert sections["pipeline"] == {"shards": 2}
    # Fresh dicts: changing them leaves the defaults alone.
    sections["http"]["port"] = 1
    assert TEST_DEFAULTS["http"]["port"] == 0
    # Without the test defaults: the product's own, and what every service needs.
    bare = service_sections(**ESSENTIALS, defaults={})
    assert set(bare) == {"feed", "database", "observe"}


def test_settings_are_validated_and_ignore_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORACULO_HTTP_PORT", "9999")
    settings = service_settings("sqlite:///a.db", "ws://127.0.0.1:9/ws", ["btcusdt"])
    assert settings.http.port == 0
    assert settings.feed.symbols == ("BTCUSDT",)
    assert settings.rules.tick_interval == TEST_DEFAULTS["rules"]["tick_interval"]
    with pytest.raises(ConfigError, match=r"http\.port"):
        service_settings("sqlite:///a.db", "ws://127.0.0.1:9/ws", ["X"], {"http": {"port": -1}})


def test_the_files_load_as_the_same_settings(tmp_path: Path) -> None:
    rules = [
        {"id": "spread", "kind": "spread_above_bps", "symbols": ["BTCUSDT"],
         "params": {"bps": 25.5}, "trigger": "every_time", "labels": {"team": "desk"}},
        {"id": "cross", "kind": "crossing", "params": {"level": 50_000}},
    ]  # fmt: skip
    sections = service_sections(**ESSENTIALS, overrides={"dispatch": {"sinks": ["stdout"]}})
    path = write_service_config(tmp_path / "svc", sections, rules)
    from_file = load_settings(path, environ={})
    in_memory = load_settings(None, environ={}, overrides=sections)
    assert attrs_without_source(from_file) == attrs_without_source(in_memory)
    # Relative paths in the file are taken from its folder.
    folder = tmp_path / "svc"
    assert from_file.observe.dump_dir == str(folder / in_memory.observe.dump_dir)
    assert from_file.database.url == "sqlite:///" + str(folder / in_memory.database.url[10:])
    assert rules_path(from_file) == tmp_path / "svc" / "rules.toml"
    assert [rule.spec.id for rule in load_rule_file(rules_path(from_file))] == ["spread", "cross"]
    assert tomllib.loads(rules_document(rules)) == {"rule": rules}


def attrs_without_source(settings: object) -> dict[str, object]:
    import attrs

    values = attrs.asdict(settings)
    values.pop("source", None)
    values.get("rules", {}).pop("file", None)
    values.get("observe", {}).pop("dump_dir", None)
    values.get("database", {}).pop("url", None)
    return values


def test_a_rule_file_named_by_the_configuration_is_not_written(tmp_path: Path) -> None:
    sections = service_sections(**ESSENTIALS, overrides={"rules": {"file": "/srv/rules.toml"}})
    path = write_service_config(tmp_path, sections)
    assert not (tmp_path / "rules.toml").exists()
    assert tomllib.loads(path.read_text())["rules"]["file"] == "/srv/rules.toml"
    with pytest.raises(ValueError, match="rules given twice"):
        write_service_config(tmp_path, sections, "[[rule]]\n")


def test_the_environment_of_a_service_process() -> None:
    base = {
        "ORACULO_HTTP_PORT": "1",
        "ORACULO_FEED_URL": "ws://elsewhere",
        "ORACULO_TEST_DATABASE_URL": "postgresql://db",
        "ORACULO_REQUIRE_SERVICES": "1",
        "PYTHONPATH": "/elsewhere",
        "HOME": "/root",
    }
    every = service_environ(base)
    assert "ORACULO_HTTP_PORT" not in every and "ORACULO_FEED_URL" not in every
    assert every["ORACULO_TEST_DATABASE_URL"] == "postgresql://db"  # not configuration
    assert every["HOME"] == "/root"
    root = str(Path(__file__).resolve().parents[2])
    assert every["PYTHONPATH"].split(":") == [root, "/elsewhere"]
    # Only the keys the configuration sets are left out.
    some = service_environ(base, {"http": {"port": 0}})
    assert "ORACULO_HTTP_PORT" not in some
    assert some["ORACULO_FEED_URL"] == "ws://elsewhere"


def test_the_harness_imports_without_pytest_and_the_plugin_names_its_fixtures() -> None:
    # The load tool builds its service with the harness where pytest is not installed.
    code = (
        "import sys; sys.modules['pytest'] = None\n"
        "import oraculo_trio.testing.config, oraculo_trio.testing.processes\n"
        "import oraculo_trio.testing.postgres, oraculo_trio.testing.service\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=service_environ(), capture_output=True, check=False
    )
    assert result.returncode == 0, result.stderr.decode()
    for name in testing.FIXTURES:
        assert getattr(testing, name) is getattr(fixtures, name)
