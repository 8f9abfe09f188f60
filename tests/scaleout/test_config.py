"""Scale-out configuration: what it refuses, and how it says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from oraculo_trio.cli import EXIT_CONFIG, main
from oraculo_trio.errors import ConfigError
from oraculo_trio.pipeline.workers import worker_count
from oraculo_trio.settings import load_settings


def test_sqlite_serves_one_instance_only() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            None,
            environ={"ORACULO_CLUSTER_MODE": "postgres"},
            overrides={"database": {"url": "sqlite:///var/alerts.db"}},
        )
    message = str(caught.value)
    assert "cluster.mode = 'postgres'" in message and "SQLite serves one instance" in message


@pytest.mark.parametrize(
    ("section", "key", "value", "allowed"),
    [
        ("cluster", "mode", "raft", "one of 'single', 'postgres'"),
        ("cluster", "partitions", 65, "an integer 1..64"),
        ("cluster", "claim_interval", 0, "a positive number"),
        ("cluster", "instance_id", "no spaces", "at most 40 letters"),
    ],
)
def test_cluster_keys_are_checked(section: str, key: str, value: object, allowed: str) -> None:
    with pytest.raises(ConfigError, match=f"{section}.{key} = .* expected {allowed}"):
        load_settings(None, environ={}, overrides={section: {key: value}})


def test_worker_counts() -> None:
    assert worker_count("3") == 3
    assert worker_count("auto") >= 1
    for bad in ("0", "-1", "many", "257"):
        with pytest.raises(ConfigError, match="--workers"):
            worker_count(bad)


def test_the_cli_names_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "rules.toml").write_text("")
    config = tmp_path / "oraculo.toml"
    config.write_text('[rules]\nfile = "rules.toml"\n')
    assert main(["run", "--config", str(config), "--workers", "many"]) == EXIT_CONFIG
    assert "--workers 'many' is not allowed" in capsys.readouterr().err
    config.write_text('[rules]\nfile = "rules.toml"\n[cluster]\nmode = "postgres"\n')
    assert main(["run", "--config", str(config)]) == EXIT_CONFIG
    assert "SQLite serves one instance only" in capsys.readouterr().err
