"""Running oraculo-trio as a real subprocess, as a user would."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import trio

from oraculo_trio.loadtest.configuration import toml_document
from oraculo_trio.loadtest.processes import LineReader as ChildLines
from oraculo_trio.loadtest.processes import free_port as free_port  # re-exported for the tests

ROOT = Path(__file__).resolve().parents[2]

#: One rule alerting on every tenth trade of any symbol (tests/e2e/flappy.py).
TENTH_TRADE_RULES = """
[[rule]]
id = "tenth"
kind = "tests.e2e.flappy:EveryTenthTrade"
symbols = "*"
trigger = "every_time"
"""


def write_service_config(
    directory: Path, sections: dict[str, dict[str, Any]], rules: str = TENTH_TRADE_RULES
) -> Path:
    """Write ``rules`` as ``rules.toml`` and ``sections`` (plus ``rules.file``) as
    ``oraculo.toml`` in ``directory`` (created if missing); return the config's path."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "rules.toml").write_text(rules)
    path = directory / "oraculo.toml"
    path.write_text(toml_document({**sections, "rules": {"file": "rules.toml"}}))
    return path


def require_tool(name: str) -> str:
    """The path of an outside tool; skip without it, fail under ORACULO_REQUIRE_SERVICES=1."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found (Debian package: prometheus)"
        if os.environ.get("ORACULO_REQUIRE_SERVICES") == "1":
            pytest.fail(message + " and ORACULO_REQUIRE_SERVICES=1")
        pytest.skip(message)
    return path


def command(*args: str) -> list[str]:
    """``oraculo-trio ARGS`` run by this interpreter, from the project root."""
    return [sys.executable, "-m", "oraculo_trio.cli", *args]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORACULO_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


async def http_get(url: str) -> tuple[int, str]:
    """GET ``url`` from a worker thread (urllib), returning (status, body)."""
    import urllib.error
    import urllib.request

    def fetch() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    return await trio.to_thread.run_sync(fetch)


class LineReader(ChildLines):
    """Reads a subprocess's output line by line, keeping every line."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        super().__init__(stream)
        self.lines: list[str] = []

    async def next_line(self) -> str | None:
        text = await super().next_line()
        if text is not None:
            self.lines.append(text)
        return text

    async def until(self, pattern: str) -> re.Match[str]:
        regex = re.compile(pattern)
        while True:
            line = await self.next_line()
            if line is None:
                raise AssertionError(f"output ended before {pattern!r}; got {self.lines[-20:]}")
            match = regex.search(line)
            if match:
                return match

    async def rest(self) -> list[str]:
        while await self.next_line() is not None:
            pass
        return self.lines


def parse_accounting(line: str) -> dict[str, int]:
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", line)}


def promtool_findings(text: str) -> list[str]:
    """``promtool check metrics`` findings for an exposition."""
    promtool = require_tool("promtool")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text.encode(), capture_output=True, check=False
    )
    output = (result.stdout + result.stderr).decode()
    return [line.strip() for line in output.splitlines() if line.strip()]


# The two plan names DESIGN.md keeps although promtool flags them.
EXPECTED_PROMTOOL_FINDINGS: Sequence[str] = (
    "oraculo_db_insert_ms metric names should not contain abbreviated units",
    'oraculo_threads_total non-counter metrics should not have "_total" suffix',
)


async def start_process(
    nursery: trio.Nursery, args: Sequence[str], **kwargs: object
) -> trio.Process:
    """Start ``args`` as a child of ``nursery`` (killed if the nursery is cancelled)."""
    run = functools.partial(trio.run_process, args, check=False, **kwargs)
    return await nursery.start(run)
