"""Notification sinks. A sink delivers one transition and raises on failure."""

from __future__ import annotations

import json
import logging
import math
import sys
from typing import Protocol, TextIO

import attrs

from oraculo_trio.core.alerts import AlertTransition

LOGGER = logging.getLogger("oraculo_trio.dispatch.sinks")
ALERT_LOGGER = logging.getLogger("oraculo_trio.alerts")


class Sink(Protocol):
    """Delivers notifications. ``deliver`` raises on failure; the dispatcher retries."""

    name: str

    async def deliver(self, transition: AlertTransition) -> None: ...


def format_value(value: float) -> str:
    """A value as a short, grep-friendly number."""
    if not math.isfinite(value):
        return str(value)
    return f"{value:.8g}"


def alert_line(transition: AlertTransition) -> str:
    """``ALERT <state> <rule_id> <symbol> value=<v>``, one line per transition."""
    state = transition.state
    line = f"ALERT {state} {transition.rule_id} {transition.symbol} value={format_value(transition.value)}"
    if transition.repeat:
        line += " repeat=true"
    return line


def alert_record(transition: AlertTransition) -> dict[str, object]:
    """The transition as a JSON-ready dict."""
    return {
        "rule_id": transition.rule_id,
        "symbol": transition.symbol,
        "state": transition.state,
        "previous_state": transition.previous_state,
        "value": transition.value if math.isfinite(transition.value) else None,
        "at": transition.at,
        "started_at": transition.started_at,
        "fire_count": transition.fire_count,
        "severity": transition.severity,
        "message": transition.message,
        "labels": dict(transition.labels),
        "repeat": transition.repeat,
    }


@attrs.define(eq=False)
class StdoutSink:
    """Prints :func:`alert_line` to stdout, flushed, for the demo and for grep."""

    stream: TextIO = attrs.field(factory=lambda: sys.stdout)
    name: str = "stdout"

    async def deliver(self, transition: AlertTransition) -> None:
        print(alert_line(transition), file=self.stream, flush=True)


@attrs.define(eq=False)
class LogSink:
    """Logs one structured JSON line per notification on ``oraculo_trio.alerts``."""

    name: str = "log"

    async def deliver(self, transition: AlertTransition) -> None:
        ALERT_LOGGER.info("%s", json.dumps(alert_record(transition), sort_keys=True))
