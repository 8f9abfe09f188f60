"""Security: SQL is always parameterized (checked in PostgreSQL's statement log), webhook
URLs are allowlisted (and private addresses can be refused), secrets never show in logs,
``/metrics`` or error messages, the HTTP endpoint listens on 127.0.0.1 by default, and a
world-readable configuration file holding secrets draws a warning."""

from __future__ import annotations

import functools
import logging
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio

from oraculo_trio.cli import main
from oraculo_trio.core.alerts import AlertTransition
from oraculo_trio.core.rules import parse_rules
from oraculo_trio.core.silences import parse_matchers
from oraculo_trio.dispatch.sinks import WebhookSink
from oraculo_trio.errors import ConfigError, DeliveryRejected
from oraculo_trio.pipeline.service import run_service
from oraculo_trio.settings import load_settings
from oraculo_trio.store.opening import open_store
from oraculo_trio.testing.config import service_environ
from oraculo_trio.testing.net import closed_port, http_get
from oraculo_trio.testing.postgres import admin_sql
from oraculo_trio.testing.processes import ServiceProcess, cli_argv
from tests.postgres import PgCluster
from tests.reliability.conftest import Mode
from tests.reliability.rig import RULE_ENTRIES, deploy, loaded_service, until_async
from tests.reliability.webhook import Webhook

# ------------------------------------------------------------------------------------------
# SQL


MARKERS = ("mkRule7f3a", "mkLabel9c1d", "mkMsg44aa", "mkSilence51b", "mkWho0e2")
# One log entry per line that starts with the cluster's log_line_prefix ('%m [%p] ').
_ENTRY = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", re.MULTILINE)


def log_entries(text: str) -> list[str]:
    starts = [m.start() for m in _ENTRY.finditer(text)]
    return [text[a:b] for a, b in zip(starts, [*starts[1:], len(text)], strict=True)]


@pytest.mark.postgres
async def test_every_sql_statement_is_parameterized(
    tmp_path: Path, mode: Mode, scenario, private_cluster: PgCluster, private_database: str
) -> None:
    figures = scenario("security/sql-parameterized")
    rules = [
        {**RULE_ENTRIES[0], "id": "flappy-mkRule7f3a", "labels": {"team": "mkLabel9c1d"},
         "message": "mkMsg44aa {symbol} {value}"},
        *RULE_ENTRIES[1:],
    ]  # fmt: skip
    await trio.to_thread.run_sync(
        lambda: admin_sql(
            private_cluster.url, "ALTER SYSTEM SET log_statement = 'all'", "SELECT pg_reload_conf()"
        )
    )
    start = private_cluster.log.stat().st_size
    try:
        with trio.fail_after(mode.pick(60, 180)):
            async with loaded_service(
                tmp_path,
                mode.rate,
                database_url=private_database,
                rules=parse_rules({"rule": rules}, _resolve),
                overrides={"dispatch": {"sinks": ["log"]}},
            ) as rig:
                await rig.wait_transitions(mode.count(10, 200))
                async with open_store(private_database, statement_timeout=10) as store:
                    silence = await store.add_silence(
                        parse_matchers(["rule_id=mkRule7f3a", "symbol=~mkSym9c1.*"]),
                        1.0,
                        2.0,
                        "mkSilence51b",
                        "mkWho0e2",
                    )
                    await store.expire_silence(silence.id, 1.5)
                    await store.fetch_alert_events("flappy-mkRule7f3a", "BTCUSDT")
                    await store.replace_rules(
                        [r.spec for r in parse_rules({"rule": rules}, _resolve)]
                    )
                    await store.fetch_rules()
    finally:
        await trio.to_thread.run_sync(
            lambda: admin_sql(
                private_cluster.url, "ALTER SYSTEM RESET log_statement", "SELECT pg_reload_conf()"
            )
        )
    text = private_cluster.log.read_bytes()[start:].decode(errors="replace")
    entries = log_entries(text)
    statements = [e for e in entries if re.search(r"LOG:  (statement|execute [^:]*):", e)]
    parameters = [e for e in entries if "DETAIL:  parameters:" in e]
    leaks = [e for e in statements if any(marker in e for marker in MARKERS)]
    figures.messages = len(statements)
    figures.counts = "statements"
    figures.faults = len(MARKERS)
    figures.detail["parameter_lists"] = len(parameters)
    assert statements, "log_statement=all logged nothing"
    # The test data did reach the server, as parameters...
    for marker in MARKERS:
        assert any(marker in e for e in parameters), marker
    # ... and never inside a statement's text.
    assert leaks == [], leaks[:3]


def _resolve(reference: str) -> type:
    from oraculo_trio.pipeline.rules_source import resolve_rule_class

    return resolve_rule_class(reference)


# ------------------------------------------------------------------------------------------
# Webhook URLs


def settings_with(**dispatch: Any) -> Any:
    return load_settings(
        None, environ={}, overrides={"dispatch": {"sinks": ["webhook"], **dispatch}}
    )


REFUSED_URLS = [
    "ftp://example.com/hook",
    "file:///etc/passwd",
    "gopher://example.com:70/1",
    "javascript:alert(1)",
    "data:text/plain,hello",
    "http://",
    "https:///path-without-host",
    "ws://example.com/socket",
]


async def test_webhook_urls_are_allowlisted_and_private_addresses_can_be_refused(
    scenario, nursery: trio.Nursery
) -> None:
    figures = scenario("security/webhook-url-policy")
    refused = 0
    for url in REFUSED_URLS:
        with pytest.raises(ConfigError, match=r"dispatch\.webhook_url"):
            settings_with(webhook_url=url)
        refused += 1
    # Local receivers are allowed by default...
    assert settings_with(webhook_url="http://127.0.0.1:9/hook").dispatch.webhook_url
    # ... and refused at start-up with webhook_block_private.
    for url in ("http://127.0.0.1:9/hook", "http://10.1.2.3/hook", "http://[::1]:8080/",
                "http://169.254.169.254/latest/meta-data", "http://localhost:9/hook",
                "https://192.168.1.10/x"):  # fmt: skip
        with pytest.raises(ConfigError, match="webhook_block_private"):
            settings_with(webhook_url=url, webhook_block_private=True)
        refused += 1
    assert settings_with(webhook_url="https://hooks.example.com/x", webhook_block_private=True)
    # A name is checked once resolved, at each delivery: refused, nothing sent.
    webhook = await nursery.start(Webhook().serve)
    named = webhook.url.replace("127.0.0.1", "localhost")
    transition = AlertTransition("r", "BTCUSDT", "firing", "inactive", 1.0, 1.0, 1.0, 1)
    with trio.fail_after(10):
        async with WebhookSink(named, 2.0, block_private=True) as sink:
            with pytest.raises(DeliveryRejected, match="non-public address"):
                await sink.deliver(transition)
        assert webhook.requests == 0
        async with WebhookSink(named, 2.0) as sink:
            await sink.deliver(transition)
        assert len(webhook.delivered) == 1
    figures.faults = refused + 1
    figures.messages = 2
    figures.counts = "deliveries"


# ------------------------------------------------------------------------------------------
# Secrets

DB_PASSWORD = "DbSecret-Zq81"
HOOK_PASSWORD = "HookPw-Xr55"
HOOK_TOKEN = "HookToken7c0ffee5ca1ab1e42"
QUERY_TOKEN = "QueryTok-6d2e"
SECRETS = (DB_PASSWORD, HOOK_PASSWORD, HOOK_TOKEN, QUERY_TOKEN)


async def not_ready(service: ServiceProcess) -> bool:
    return (await service.get("/readyz")).status == 503


def leaked(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_argv(*args), capture_output=True, text=True, env=service_environ(), timeout=60,
        check=False,
    )  # fmt: skip


@pytest.mark.postgres
async def test_secrets_never_show_in_logs_metrics_or_errors(
    tmp_path: Path, mode: Mode, scenario, nursery: trio.Nursery,
    private_cluster: PgCluster, private_database: str,
) -> None:  # fmt: skip
    figures = scenario("security/secrets-masked")
    host_port = private_database.split("@", 1)[1]
    database_url = f"postgresql://postgres:{DB_PASSWORD}@{host_port}"
    texts: list[str] = []
    with closed_port() as closed, trio.fail_after(mode.pick(90, 240)):
        # Nothing answers on the closed port: every delivery fails.
        webhook_url = (
            f"http://hook:{HOOK_PASSWORD}@127.0.0.1:{closed}/services/{HOOK_TOKEN}"
            f"?token={QUERY_TOKEN}"
        )
        deployment = await deploy(
            nursery,
            tmp_path,
            rate=mode.rate,
            database_url=database_url,
            extra={
                "database": {"statement_timeout": 1.0},
                "observe": {"store_check_interval": 0.2},
                "dispatch": {"sinks": ["webhook", "log"], "webhook_url": webhook_url,
                             "webhook_retries": 1, "webhook_backoff": 0.05},
            },
        )  # fmt: skip
        os.chmod(deployment.config, 0o600)
        async with deployment.service() as service:
            await trio.sleep(mode.pick(1.0, 5.0))  # deliveries fail meanwhile
            # The database goes away for a while: errors name it, masked.
            await trio.to_thread.run_sync(private_cluster.stop)
            await until_async(lambda: not_ready(service))
            for path in ("/metrics", "/readyz", "/healthz"):
                texts.append((await service.get(path)).body)
            await trio.to_thread.run_sync(private_cluster.start)
            texts.append(await service.metrics())
            assert await service.stop(signal.SIGTERM) == 0, service.log_tail()
        texts.extend([*service.stderr.lines, *service.stdout.lines])
        rows = await trio.to_thread.run_sync(
            lambda: admin_sql(
                private_database, "SELECT error FROM dispatch_logs WHERE error IS NOT NULL"
            )
        )
        texts.extend(row[0] for row in rows)
        # Start-up errors: a database that cannot be reached, a refused database URL.
        unreachable = f"postgresql://postgres:{DB_PASSWORD}@127.0.0.1:{closed}/db"
        failures = [
            await trio.to_thread.run_sync(
                functools.partial(run_cli, "migrate", "--database-url", unreachable)
            ),
            await trio.to_thread.run_sync(
                functools.partial(
                    run_cli, "migrate", "--database-url", f"mysql://root:{DB_PASSWORD}@h/db"
                )
            ),
        ]
    for failure in failures:
        assert failure.returncode != 0
        texts.append(failure.stdout + failure.stderr)
    assert "postgres:***@" in "\n".join(texts)  # masked, not left out: the DSN is still named
    assert rows, "no delivery failed: the error texts were not exercised"
    figures.faults = len(rows) + 3
    figures.messages = sum(text.count("\n") + 1 for text in texts)
    figures.counts = "lines"
    found = {secret for text in texts for secret in leaked(text)}
    assert found == set(), found


# ------------------------------------------------------------------------------------------
# The HTTP endpoint, the configuration file


async def test_the_http_endpoint_binds_loopback_by_default(tmp_path: Path, scenario) -> None:
    figures = scenario("security/http-loopback-default")
    defaults = load_settings(None, environ={})
    assert defaults.http.host == "127.0.0.1"
    # The service as configured by default (but on a free port, and no exchange to read).
    settings = load_settings(
        None,
        environ={},
        overrides={
            "http": {"port": 0},
            "feed": {"url": "ws://127.0.0.1:9", "reconnect_max": 0.5},
            "database": {"url": f"sqlite:///{tmp_path / 'a.db'}"},
            "observe": {"dump_dir": str(tmp_path / "dumps")},
        },
    )
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(
                functools.partial(run_service, settings, [], handle_signals=False)
            )
            assert handle.http_address[0] == "127.0.0.1"
            assert (await http_get(handle.metrics_url)).status == 200
            handle.request_shutdown()
            await handle.stopped.wait()
            nursery.cancel_scope.cancel()
    figures.messages = 1
    figures.counts = "services"


# (permissions, configuration text, warned?)
CONFIGS = [
    (0o644, '[database]\nurl = "postgresql://u:{secret}@127.0.0.1:9/db"\n', True),
    (
        0o604,
        '[database]\nurl = "postgresql://u@127.0.0.1:9/db"\n'
        '[dispatch]\nwebhook_url = "https://h.example/services/T01/B02/{secret}000"\n',
        True,
    ),
    (
        0o644,
        '[dispatch]\nwebhook_url = "https://u:{secret}@h.example/x"\n'
        '[database]\nurl = "postgresql://u@127.0.0.1:9/db"\n',
        True,
    ),
    (0o600, '[database]\nurl = "postgresql://u:{secret}@127.0.0.1:9/db"\n', False),
    (0o640, '[database]\nurl = "postgresql://u:{secret}@127.0.0.1:9/db"\n', False),
    (0o644, '[database]\nurl = "postgresql://u@127.0.0.1:9/db"\n', False),
]


def test_a_world_readable_config_holding_secrets_draws_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, scenario
) -> None:
    figures = scenario("security/world-readable-config")
    caplog.set_level(logging.WARNING, logger="oraculo_trio.cli")
    for i, (perms, text, warned) in enumerate(CONFIGS):
        caplog.clear()
        path = tmp_path / f"oraculo-{i}.toml"
        path.write_text(text.format(secret=DB_PASSWORD) + "[service]\nlog_level = 'ERROR'\n")
        os.chmod(path, perms)
        # Any command that reads the configuration; the database does not answer (fails fast).
        assert main(["migrate", "--config", str(path)]) != 0
        messages = [r.getMessage() for r in caplog.records]
        warnings = [m for m in messages if "readable by every user" in m]
        assert bool(warnings) == warned, (perms, text)
        assert not any(DB_PASSWORD in m for m in messages)
        figures.messages += len(warnings)
    figures.faults = sum(1 for _, _, warned in CONFIGS if warned)
    figures.counts = "warnings"


def test_the_warning_reaches_stderr_at_start_up(tmp_path: Path) -> None:
    path = tmp_path / "oraculo.toml"
    path.write_text(f'[database]\nurl = "postgresql://u:{DB_PASSWORD}@127.0.0.1:9/db"\n')
    os.chmod(path, 0o644)
    result = subprocess.run(
        cli_argv("run", "--config", str(path), "--offline"),
        capture_output=True, text=True, env=service_environ(), timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "readable by every user" in result.stderr
    assert "chmod 600" in result.stderr
    assert DB_PASSWORD not in result.stderr + result.stdout
