"""Hot reload in the running service: a changed rule file (or rules table) swaps the rules
and unchanged rules keep their state; a bad file changes nothing; SIGHUP reloads."""

from __future__ import annotations

import os
import signal
import tomllib
from pathlib import Path
from typing import Any

import pytest
import trio

from oraculo_trio.core.rules import parse_rules
from oraculo_trio.pipeline.service import run_service
from oraculo_trio.store.opening import open_store
from oraculo_trio.testing import service_settings

ABOVE = """
[[rule]]
id = "above"
kind = "greater_than"
symbols = ["BTCUSDT"]
params = { level = 100 }
"""
DOOMED = """
[[rule]]
id = "doomed"
kind = "greater_than"
symbols = ["BTCUSDT"]
params = { level = 50 }
trigger = "every_time"
"""
RATE = """
[[rule]]
id = "rate"
kind = "trade_rate"
symbols = ["BTCUSDT"]
params = { rate = 100, window = "1m" }
"""
BELOW = """
[[rule]]
id = "below"
kind = "less_than"
symbols = ["BTCUSDT"]
params = { level = 120 }
"""
RULES = ABOVE + DOOMED + RATE
# "above" and "rate" unchanged, "doomed" removed, "below" added.
CHANGED = ABOVE + RATE + BELOW


@pytest.fixture
def rule_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(RULES)
    return path


@pytest.fixture
def alert_rules(rule_file: Path) -> list[dict[str, Any]]:
    return tomllib.loads(rule_file.read_text())["rule"]


@pytest.fixture
def alert_service_config(rule_file: Path) -> dict[str, Any]:
    return {"rules": {"file": str(rule_file), "reload_interval": 0.05}}


def binding(handle, rule_id: str, symbol: str = "BTCUSDT"):
    for engine in handle.engines:
        found = engine._by_key.get((rule_id, symbol))
        if found is not None:
            return found
    raise AssertionError(f"{rule_id} is not bound to {symbol}")


async def test_a_changed_file_reloads_and_unchanged_rules_keep_their_state(
    alert_service, market_script, rule_file
):
    handle = alert_service.handle
    with trio.fail_after(10):
        for _ in range(3):
            market_script.trade("BTCUSDT", 150.0)
        await alert_service.wait_for_alert("above", "BTCUSDT", "firing")
        await alert_service.wait_for_alert("doomed", "BTCUSDT", "firing")
        while binding(handle, "rate").state.data.__len__() < 3:  # noqa: ASYNC110
            await trio.sleep(0.01)
        above, rate = binding(handle, "above"), binding(handle, "rate")
        rule_file.write_text(CHANGED)
        await handle.rules.wait_generation(2)
        # The removed rule resolved; the unchanged ones kept their alert and their window.
        await alert_service.wait_for_alert("doomed", "BTCUSDT", "resolved")
        assert binding(handle, "above") is above and above.tracker.state == "firing"
        assert binding(handle, "rate") is rate and len(rate.state.data) == 3
        # The new rule is live, for a symbol that already had state.
        market_script.trade("BTCUSDT", 110.0)
        await alert_service.wait_for_alert("below", "BTCUSDT", "firing")
    events = await alert_service.events("above")
    assert [e["state"] for e in events] == ["firing"]  # never re-fired
    assert [r.spec.id for r in handle.rules.rules] == ["above", "rate", "below"]
    metrics = handle.metrics
    assert metrics.inner.get_sample_value("oraculo_rules_reloads_total", {"outcome": "ok"}) == 1
    assert metrics.inner.get_sample_value("oraculo_rules_loaded") == 3


async def test_a_bad_file_keeps_the_rules_in_force(alert_service, market_script, rule_file):
    handle = alert_service.handle
    metrics = handle.metrics
    rule_file.write_text(RULES.replace("level = 50", "level = -50"))
    with trio.fail_after(10):
        while not metrics.inner.get_sample_value(  # noqa: ASYNC110 (a counter has no event)
            "oraculo_rules_reloads_total", {"outcome": "error"}
        ):
            await trio.sleep(0.02)
        assert handle.rules.generation == 1
        market_script.trade("BTCUSDT", 150.0)
        await alert_service.wait_for_alert("doomed", "BTCUSDT", "firing")
        # Fixing the file reloads it.
        rule_file.write_text(RULES.replace("level = 50", "level = 500"))
        await handle.rules.wait_generation(2)
        await alert_service.wait_for_alert("doomed", "BTCUSDT", "resolved")


async def test_sighup_reloads_the_rules(tmp_path: Path, mock_exchange, market_script):
    rule_file = tmp_path / "rules.toml"
    rule_file.write_text(RULES)
    settings = service_settings(
        f"sqlite:///{tmp_path / 'a.db'}",
        mock_exchange.ws_url,
        market_script.symbols,
        {"rules": {"file": str(rule_file), "reload_interval": 0}},
        dump_dir=tmp_path / "dumps",
    )
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(run_service, settings, None)
            assert handle.rules.generation == 1 and len(handle.rules.rules) == 3
            rule_file.write_text(CHANGED.replace("level = 120", "level = 130"))
            os.kill(os.getpid(), signal.SIGHUP)
            await handle.rules.wait_generation(2)
            assert [r.spec.id for r in handle.rules.rules] == ["above", "rate", "below"]
            handle.request_shutdown()


@pytest.fixture
def db_rules(tmp_path: Path) -> None:
    """The service's database, holding two rules before the service starts."""
    url = f"sqlite:///{tmp_path / 'oraculo-test.db'}"

    async def seed() -> None:
        async with open_store(url, statement_timeout=5) as store:
            await store.replace_rules([r.spec for r in parse_rules(tomllib.loads(RULES))])

    trio.run(seed)


@pytest.fixture
def db_config(db_rules: None) -> dict[str, Any]:
    return {"rules": {"source": "db", "reload_interval": 0.05}}


async def test_rules_from_the_database_reload_when_the_table_changes(
    db_config, market_script, nursery, tmp_path, mock_exchange
):
    settings = service_settings(
        f"sqlite:///{tmp_path / 'oraculo-test.db'}",
        mock_exchange.ws_url,
        market_script.symbols,
        db_config,
        dump_dir=tmp_path / "dumps",
    )
    with trio.fail_after(20):
        handle = await nursery.start(
            lambda task_status: run_service(
                settings, [], sinks=[], handle_signals=False, task_status=task_status
            )
        )
        assert [r.spec.id for r in handle.rules.rules] == ["above", "doomed", "rate"]
        async with open_store(settings.database.url, statement_timeout=5) as store:
            await store.replace_rules([r.spec for r in parse_rules(tomllib.loads(CHANGED))])
        await handle.rules.wait_generation(2)
        assert [r.spec.id for r in handle.rules.rules] == ["above", "below", "rate"]
        handle.request_shutdown()
        await handle.stopped.wait()
