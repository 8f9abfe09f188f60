"""How a notification reads: the one alert line, its colours, and the JSON record.

The line, one per notification, for a person and for ``grep``/``awk`` alike::

    2026-12-04T13:37:12Z FIRING critical sol-block-trade SOLUSDT 1,065,890 "SOLUSDT bl..."

time (UTC), state, severity, rule, symbol, value, then the message as a JSON string. Its
fields never contain a space except the quoted message, so ``awk '{print $4}'`` is the
rule. On a terminal the state and severity are coloured (red firing, green resolved).
"""

from __future__ import annotations

import datetime
import json
import math
import os
from typing import Any, TextIO

from oraculo_trio.core.alerts import FIRING, RESOLVED, AlertTransition

_RESET = "\x1b[0m"
_STATE_COLOURS = {FIRING: "\x1b[31m", RESOLVED: "\x1b[32m"}
_OTHER_COLOUR = "\x1b[33m"
_BOLD = "\x1b[1m"


def utc_iso(seconds: float | None) -> str | None:
    """Unix seconds as ISO-8601 UTC to the second (``2026-12-04T13:37:12Z``); None stays."""
    if seconds is None or not math.isfinite(seconds):
        return None
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def human_value(value: float | None) -> str:
    """A value as a person reads it: thousands separated, about seven significant digits
    (``1,065,890``, ``50,001.37``, ``3.52324``, ``0.00012345``)."""
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    magnitude = abs(value)
    if magnitude >= 1:
        digits = len(str(int(magnitude)))
        text = f"{value:,.{max(0, 7 - digits)}f}"
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return text
    return f"{value:.6g}"


def wants_colour(stream: TextIO) -> bool:
    """Colour only for a terminal, and never with ``NO_COLOR`` set or ``TERM=dumb``."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def alert_line(transition: AlertTransition, *, colour: bool = False) -> str:
    """The one line of a notification (see the module's docstring)."""
    state = transition.state.upper()
    severity = transition.severity
    if colour:
        tint = _STATE_COLOURS.get(transition.state, _OTHER_COLOUR)
        state = f"{tint}{_BOLD if severity == 'critical' else ''}{state}{_RESET}"
        severity = f"{tint}{severity}{_RESET}"
    fields = [
        utc_iso(transition.at) or "-",
        state,
        severity,
        transition.rule_id,
        transition.symbol,
        human_value(transition.value),
        json.dumps(transition.message, ensure_ascii=False),
    ]
    return " ".join(fields)


def alert_record(transition: AlertTransition) -> dict[str, Any]:
    """The transition as a JSON-ready dict, times as ISO-8601 UTC."""
    return {
        "at": utc_iso(transition.at),
        "state": transition.state,
        "previous_state": transition.previous_state,
        "severity": transition.severity,
        "rule_id": transition.rule_id,
        "symbol": transition.symbol,
        "value": transition.value if math.isfinite(transition.value) else None,
        "message": transition.message,
        "labels": dict(transition.labels),
        "started_at": utc_iso(transition.started_at),
        "fire_count": transition.fire_count,
        "repeat": transition.repeat,
    }
