"""The service as a real process (``oraculo-trio run --config``), for the scenarios that
signal or kill it, or measure it from outside (RSS, logs)."""

from __future__ import annotations

import functools
import json
import re
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from oraculo_trio.mockexchange import LoadMarket
from oraculo_trio.mockexchange.exchange import ExchangeSettings, MockExchange
from tests.e2e.processes import (
    LineReader,
    clean_env,
    command,
    free_port,
    http_get,
    parse_accounting,
    write_service_config,
)
from tests.reliability.rig import RULE_ENTRIES, SYMBOLS


def rules_toml(entries: Sequence[Mapping[str, Any]]) -> str:
    """A rule file of ``entries`` (scalars, lists of strings, one level of tables)."""

    def value(v: Any) -> str:
        if isinstance(v, Mapping):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        return json.dumps(v)

    blocks = []
    for entry in entries:
        lines = ["[[rule]]", *(f"{k} = {value(v)}" for k, v in entry.items())]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def write_config(
    directory: Path,
    *,
    exchange_url: str,
    symbols: Sequence[str],
    database_url: str,
    rules: Sequence[Mapping[str, Any]],
    http_port: int,
    extra: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """``oraculo.toml`` (and ``rules.toml``) for a service process; returns its path."""
    sections: dict[str, dict[str, Any]] = {
        "service": {"shutdown_grace": 10.0},
        "feed": {
            "url": exchange_url,
            "symbols": list(symbols),
            "depth_streams": ["depth20"],
            "trade_streams": ["trade"],
            "reconnect_initial": 0.05,
            "reconnect_max": 0.5,
        },
        "database": {"url": database_url, "batch_window_ms": 5.0},
        "dispatch": {"sinks": []},
        "http": {"host": "127.0.0.1", "port": http_port},
        "observe": {"dump_dir": str(directory / "dumps")},
    }
    for section, values in (extra or {}).items():
        sections.setdefault(section, {}).update(values)
    return write_service_config(directory, sections, rules_toml(rules))


@attrs.define(eq=False)
class ServiceProcess:
    """One ``oraculo-trio run`` child; its stderr is read (and kept) as it comes.

    Start it with ``service = await ServiceProcess.start(nursery, config, port)``.
    """

    process: trio.Process
    http_port: int
    reader: LineReader
    ended: trio.Event = attrs.field(factory=trio.Event)

    @classmethod
    async def start(
        cls, nursery: trio.Nursery, config: Path, http_port: int, *args: str
    ) -> ServiceProcess:
        process = await _start(nursery, config, args)
        service = cls(process, http_port, LineReader(process.stderr))
        nursery.start_soon(service._drain)
        return service

    async def _drain(self) -> None:
        # Reading all the time: a full pipe would block the service's logging.
        await self.reader.rest()
        self.ended.set()

    @property
    def lines(self) -> list[str]:
        return self.reader.lines

    async def wait_ready(self) -> None:
        """Wait until ``/readyz`` answers 200 (polled)."""
        url = f"http://127.0.0.1:{self.http_port}/readyz"
        while True:
            if self.process.returncode is not None:
                raise AssertionError(f"the service exited: {self.lines[-20:]}")
            try:
                status, _ = await http_get(url)
            except OSError:
                status = 0
            if status == 200:
                return
            await trio.sleep(0.05)  # /readyz has no push: polled

    async def metrics(self) -> str:
        _, body = await http_get(f"http://127.0.0.1:{self.http_port}/metrics")
        return body

    async def stop(self, signum: int = signal.SIGTERM) -> int:
        """Send ``signum`` and wait for the exit; returns the exit code."""
        self.process.send_signal(signum)
        await self.process.wait()
        await self.ended.wait()
        return self.process.returncode

    def final_terms(self, what: str = "accounting") -> dict[str, int]:
        """The ``service stopped; <what>: k=v ...`` line's numbers."""
        pattern = re.compile(rf"service stopped; {what}: (.*)$")
        for line in reversed(self.lines):
            match = pattern.search(line)
            if match:
                return parse_accounting(match.group(1))
        raise AssertionError(f"no 'service stopped; {what}' line in {self.lines[-20:]}")


async def _start(nursery: trio.Nursery, config: Path, args: Sequence[str]) -> trio.Process:
    run = functools.partial(
        trio.run_process,
        command("run", "--config", str(config), *args),
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=clean_env(),
    )
    return await nursery.start(run)


async def start_exchange(nursery: trio.Nursery, rate: float) -> MockExchange:
    """The mock exchange on 127.0.0.1 publishing the rig's load at ``rate`` msg/s."""
    market = LoadMarket(SYMBOLS, trade_ratio=0.5, rate_per_s=rate, alert_period=0.5)
    settings = ExchangeSettings(tick=0.05, ping_interval=None)
    return await nursery.start(MockExchange(market, settings).serve)


@attrs.frozen
class Deployment:
    """A mock exchange under load and a service configuration that reads it."""

    exchange: MockExchange
    config: Path
    http_port: int

    async def start(self, nursery: trio.Nursery) -> ServiceProcess:
        """Start a service process on this configuration and wait until it is ready."""
        service = await ServiceProcess.start(nursery, self.config, self.http_port)
        await service.wait_ready()
        return service


async def deploy(
    nursery: trio.Nursery,
    directory: Path,
    *,
    rate: float,
    database_url: str,
    rules: Sequence[Mapping[str, Any]] = RULE_ENTRIES,
    extra: Mapping[str, Mapping[str, Any]] | None = None,
) -> Deployment:
    """Start the mock exchange (load at ``rate``) and write the service's configuration
    (``rules``, ``extra`` sections, a free HTTP port) into ``directory``."""
    exchange = await start_exchange(nursery, rate)
    port = free_port()
    config = write_config(
        directory,
        exchange_url=exchange.ws_url,
        symbols=SYMBOLS,
        database_url=database_url,
        rules=rules,
        http_port=port,
        extra=extra,
    )
    return Deployment(exchange, config, port)


__all__ = ["Deployment", "ServiceProcess", "deploy", "free_port", "rules_toml", "write_config"]
