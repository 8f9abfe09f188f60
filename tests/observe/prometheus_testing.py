"""A real Prometheus server for tests, and the PromQL the repository ships.

:func:`run_prometheus` starts Debian's ``prometheus`` binary on 127.0.0.1 with the shipped
``grafana/prometheus.yml`` (its target, intervals and rule file replaced) and a copy of
``grafana/prometheus-rules.yml`` whose ``for:`` durations are 0 s, so an alert fires at the
first evaluation that sees its condition.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from oraculo_trio.testing.net import http_get
from oraculo_trio.testing.processes import child_process
from tests.services import require_tool

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "grafana"
DASHBOARD = GRAFANA / "oraculo-alerts.json"
RULES = GRAFANA / "prometheus-rules.yml"
SCRAPE_CONFIG = GRAFANA / "prometheus.yml"
RUNBOOK_QUERIES = GRAFANA / "runbook_queries.promql"
JOB = "oraculo-alerts"

_COMPARISON = re.compile(r"^(?P<query>.*\S)\s*(?:==|!=|>=|<=|>|<)\s*[-+0-9.eE]+\s*$", re.S)


def without_comparison(expr: str) -> str:
    """An alerting rule's expression with its final ``<op> <number>`` removed.

    Raises:
        ValueError: the expression does not end with a comparison to a number.
    """
    match = _COMPARISON.match(expr)
    if match is None:
        raise ValueError(f"no final comparison to a number in {expr!r}")
    return match.group("query")


def runbook_queries() -> list[str]:
    """The runbook's CPU and GIL expressions, one a line in ``grafana/runbook_queries.promql``."""
    lines = RUNBOOK_QUERIES.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """``(where, expr)`` for every PromQL query of a dashboard: panel targets (those inside
    collapsed rows too), then the query variables' ``label_values(selector, label)``
    selectors."""
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            for query in inner.get("targets", []):
                yield f"panel {inner['title']!r} {query['refId']}", query["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue  # the data source picker
        match = re.fullmatch(
            r"label_values\((?P<selector>.+),\s*(?P<label>\w+)\)", variable["query"]
        )
        assert match is not None, variable["query"]
        yield f"variable {variable['name']}", match.group("selector")


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Replace Grafana's ``$name`` variables (longest names first)."""
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace("$" + name, variables[name])
    return expr


def _replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"expected {old!r} once in the shipped configuration"
    return text.replace(old, new)


def write_config(directory: Path, target: str) -> Path:
    """The shipped scrape configuration for ``target`` scraped every second, and the shipped
    rules with every ``for:`` at 0 s; returns the configuration file."""
    rules, count = re.subn(
        r"^(\s+)for: \S+$", r"\1for: 0s", RULES.read_text(encoding="utf-8"), flags=re.M
    )
    assert count > 0
    (directory / "rules.yml").write_text(rules, encoding="utf-8")
    config = SCRAPE_CONFIG.read_text(encoding="utf-8")
    config = _replace_once(config, "scrape_interval: 5s", "scrape_interval: 1s")
    config = _replace_once(config, "evaluation_interval: 5s", "evaluation_interval: 1s")
    config = _replace_once(config, "- prometheus-rules.yml", f"- {directory / 'rules.yml'}")
    config = _replace_once(config, '"127.0.0.1:9108"', json.dumps(target))
    path = directory / "prometheus.yml"
    path.write_text(config, encoding="utf-8")
    return path


class PrometheusError(Exception):
    """The Prometheus HTTP API answered with an error (a query that does not parse, ...)."""


def _get_json(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            body = json.loads(error.read() or b"{}")
    if body.get("status") != "success":
        raise PrometheusError(f"{url}: {body.get('errorType')}: {body.get('error')}")
    return body["data"]


@attrs.frozen
class Prometheus:
    """A running Prometheus's HTTP API."""

    url: str
    log: Path

    async def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>`` and return its ``data``.

        Raises:
            PrometheusError: the API answered with an error.
        """
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        return await trio.to_thread.run_sync(_get_json, f"{self.url}/api/v1/{path}{query}")

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """Evaluate ``expr`` now; return its series (a scalar counts as one)."""
        data = await self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    async def firing(self) -> set[str]:
        """The names of the alerts firing now."""
        data = await self.api("alerts")
        return {a["labels"]["alertname"] for a in data["alerts"] if a["state"] == "firing"}

    async def wait_for(self, expr: str, minimum: float) -> None:
        """Wait until ``expr`` has a series whose value is at least ``minimum``."""
        while True:
            series = await self.query(expr)
            if any(float(s["value"][1]) >= minimum for s in series):
                return
            await trio.sleep(0.25)  # Prometheus has no push: poll it (the test bounds it)


LISTENING = re.compile(r'msg="Listening on" address=(?P<address>\S+)')
"""Prometheus's log line naming the address its web server bound."""


async def run_prometheus(
    directory: Path,
    target: str,
    *,
    task_status: trio.TaskStatus[Prometheus] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a real Prometheus scraping ``target`` (``host:port``) until cancelled.

    Its web server listens on port 0 of 127.0.0.1: the port comes from its log.

    Args:
        directory: its configuration, TSDB and log go here.
        target: the service's HTTP address.
        task_status: receives the :class:`Prometheus` once it answers ``/-/ready``.

    Cancellation: the process is terminated (and killed if it lingers).
    """
    binary = require_tool("prometheus")
    config = write_config(directory, target)
    log = directory / "prometheus.log"
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={directory / 'tsdb'}",
        "--web.listen-address=127.0.0.1:0",
        "--log.level=info",
    ]
    async with child_process(command, name="prometheus", log_path=log) as prometheus:
        with trio.fail_after(20):
            listening = await prometheus.stderr.first(LISTENING)
            url = f"http://{listening['address']}"
            while (await _status(f"{url}/-/ready")) != 200:
                if prometheus.returncode is not None:
                    raise RuntimeError(f"prometheus exited: {prometheus.log_tail()}")
                await trio.sleep(0.1)  # a process starting up: poll its readiness
        task_status.started(Prometheus(url, log))
        await trio.sleep_forever()


async def _status(url: str) -> int | None:
    try:
        return (await http_get(url, timeout=2.0)).status
    except OSError:
        return None


EXPECTED_PROMTOOL_FINDINGS: Sequence[str] = (
    "oraculo_db_insert_ms metric names should not contain abbreviated units",
    'oraculo_threads_total non-counter metrics should not have "_total" suffix',
)
"""What ``promtool check metrics`` says of the exposition: two names of the metric contract
(docs/architecture.md) that dashboards and alerts already use, kept although promtool flags
them."""


def promtool_findings(text: str) -> list[str]:
    """``promtool check metrics`` findings for an exposition (blocking: run it in a thread)."""
    promtool = require_tool("promtool")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text.encode(), capture_output=True, check=False
    )
    output = (result.stdout + result.stderr).decode()
    return [line.strip() for line in output.splitlines() if line.strip()]
