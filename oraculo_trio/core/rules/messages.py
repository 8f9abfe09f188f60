"""Notification messages: the fields a template may use, checks, and each kind's defaults.

A rule's ``message`` is the template of its firing notifications and ``message_resolved``
that of its resolutions (``str.format`` syntax: ``"{symbol} crossed {value:,.2f}"``). A rule
that leaves one out gets its kind's default (:func:`default_messages`), so every
notification says something readable.
"""

from __future__ import annotations

import difflib
import string
from collections.abc import Callable, Iterable
from typing import Any

FIELDS = ("symbol", "value", "rule_id", "state", "severity")
"""The fields a message template may name."""

_SAMPLE: dict[str, Any] = {
    "symbol": "BTCUSDT",
    "value": 1234.5,
    "rule_id": "rule",
    "state": "firing",
    "severity": "warning",
}


def template_problems(template: str) -> list[str]:
    """What is wrong with a message template: unknown fields, bad format specs ([] if none)."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        return [f"{template!r} is not a valid template: {exc} (write {{{{ for a brace)"]
    problems = []
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        name = field.split(".", 1)[0].split("[", 1)[0]
        shown = "{" + field + (f"!{conversion}" if conversion else "")
        shown += (f":{spec}" if spec else "") + "}"
        if name not in FIELDS:
            expected = ", ".join("{" + f + "}" for f in FIELDS)
            hint = did_you_mean(name, FIELDS)
            problems.append(f"{template!r}: unknown field {shown}{hint}: expected {expected}")
            continue
        try:
            shown.format(**_SAMPLE)
        except (ValueError, IndexError, KeyError, AttributeError, TypeError) as exc:
            problems.append(f"{template!r}: bad format {shown}: {exc}")
    return problems


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _level(rule: Any) -> str:
    return f"{rule.level:,.10g}"


def _channel(rule: Any) -> str:
    return f"{rule.low:,.10g}-{rule.high:,.10g}"


def _seconds(seconds: float) -> str:
    return f"{seconds:g} s"


# kind -> rule -> (firing, resolved). The value of each kind is what its Signal carries.
_DEFAULTS: dict[str, Callable[[Any], tuple[str, str]]] = {
    "crossing": lambda r: (
        f"{{symbol}} crossed {_level(r)} at {{value:,.8g}}",
        f"{{symbol}} crossing of {_level(r)} is over ({{value:,.8g}})",
    ),
    "crossing_up": lambda r: (
        f"{{symbol}} crossed up through {_level(r)} at {{value:,.8g}}",
        f"{{symbol}} crossing up through {_level(r)} is over ({{value:,.8g}})",
    ),
    "crossing_down": lambda r: (
        f"{{symbol}} crossed down through {_level(r)} at {{value:,.8g}}",
        f"{{symbol}} crossing down through {_level(r)} is over ({{value:,.8g}})",
    ),
    "greater_than": lambda r: (
        f"{{symbol}} above {_level(r)} at {{value:,.8g}}",
        f"{{symbol}} no longer above {_level(r)} ({{value:,.8g}})",
    ),
    "less_than": lambda r: (
        f"{{symbol}} below {_level(r)} at {{value:,.8g}}",
        f"{{symbol}} no longer below {_level(r)} ({{value:,.8g}})",
    ),
    "inside_channel": lambda r: (
        f"{{symbol}} inside {_channel(r)} at {{value:,.8g}}",
        f"{{symbol}} left {_channel(r)} ({{value:,.8g}})",
    ),
    "outside_channel": lambda r: (
        f"{{symbol}} outside {_channel(r)} at {{value:,.8g}}",
        f"{{symbol}} back inside {_channel(r)} ({{value:,.8g}})",
    ),
    "entering_channel": lambda r: (
        f"{{symbol}} entered {_channel(r)} at {{value:,.8g}}",
        f"{{symbol}} entry into {_channel(r)} is over ({{value:,.8g}})",
    ),
    "exiting_channel": lambda r: (
        f"{{symbol}} left {_channel(r)} at {{value:,.8g}}",
        f"{{symbol}} exit from {_channel(r)} is over ({{value:,.8g}})",
    ),
    "moving_up_pct": lambda r: (
        f"{{symbol}} up {{value:.2f}} % within {_seconds(r.window)}",
        f"{{symbol}} rise within {_seconds(r.window)} back under {r.pct:g} % ({{value:.2f}} %)",
    ),
    "moving_down_pct": lambda r: (
        f"{{symbol}} down {{value:.2f}} % within {_seconds(r.window)}",
        f"{{symbol}} fall within {_seconds(r.window)} back under {r.pct:g} % ({{value:.2f}} %)",
    ),
    "large_trade": lambda r: (
        "{symbol} trade of {value:,.0f} (quote notional)",
        f"{{symbol}} large trade (>= {r.notional:,.10g}) is over",
    ),
    "volume_spike": lambda r: (
        "{symbol} volume {value:.1f}x its baseline",
        f"{{symbol}} volume back under {r.factor:g}x its baseline ({{value:.1f}}x)",
    ),
    "trade_rate": lambda r: (
        "{symbol} {value:,.1f} trades/s",
        f"{{symbol}} trade rate back under {r.rate:g}/s ({{value:,.1f}}/s)",
    ),
    "buy_sell_imbalance": lambda r: (
        "{symbol} buy/sell imbalance {value:+.2f}",
        f"{{symbol}} buy/sell imbalance back under {r.threshold:g} ({{value:+.2f}})",
    ),
    "spread_above_bps": lambda r: (
        "{symbol} spread is {value:.1f} bps",
        f"{{symbol}} spread back under {r.bps:g} bps ({{value:.1f}} bps)",
    ),
    "book_imbalance": lambda r: (
        f"{{symbol}} top-{r.levels} book imbalance {{value:.2f}}x",
        f"{{symbol}} top-{r.levels} book imbalance back under {r.ratio:g}x ({{value:.2f}}x)",
    ),
    "liquidity_wall": lambda r: (
        f"{{symbol}} a {{value:,.0f}} wall within {r.bps:g} bps of mid",
        f"{{symbol}} wall within {r.bps:g} bps of mid is gone ({{value:,.0f}})",
    ),
    "thin_book": lambda r: (
        f"{{symbol}} only {{value:,.0f}} within {r.bps:g} bps of mid",
        f"{{symbol}} book within {r.bps:g} bps of mid holds {{value:,.0f}} again",
    ),
    "no_data": lambda r: (
        "no data from {symbol} for {value:.1f} s",
        "{symbol} is sending data again",
    ),
    "zscore": lambda r: (
        "{symbol} price z-score {value:+.2f}",
        f"{{symbol}} price z-score back within ±{r.threshold:g} ({{value:+.2f}})",
    ),
    "funding_rate_above": lambda r: (
        f"{{symbol}} funding rate {{value:.4%}} above {r.level:.4%}",
        f"{{symbol}} funding rate back at or under {r.level:.4%} ({{value:.4%}})",
    ),
    "funding_rate_below": lambda r: (
        f"{{symbol}} funding rate {{value:.4%}} below {r.level:.4%}",
        f"{{symbol}} funding rate back at or over {r.level:.4%} ({{value:.4%}})",
    ),
    "basis_bps": lambda r: (
        "{symbol} mark/index basis {value:+.1f} bps",
        f"{{symbol}} mark/index basis back within {r.bps:g} bps ({{value:+.1f}} bps)",
    ),
    "liquidation_notional": lambda r: (
        f"{{symbol}} {{value:,.0f}} liquidated within {_seconds(r.window)}",
        f"{{symbol}} liquidations within {_seconds(r.window)} back under "
        f"{r.notional:,.10g} ({{value:,.0f}})",
    ),
}

GENERIC = ("{rule_id} firing on {symbol} (value {value:,.8g})", "{rule_id} resolved on {symbol}")
"""The messages of a custom kind that names none (``default_messages()``)."""


def default_messages(kind: str, rule: Any) -> tuple[str, str]:
    """The (firing, resolved) templates of a rule of ``kind`` that names no message.

    A custom kind may define ``default_messages() -> (firing, resolved)``.
    """
    build = _DEFAULTS.get(kind)
    if build is not None:
        return build(rule)
    custom = getattr(rule, "default_messages", None)
    if callable(custom):
        firing, resolved = custom()
        return str(firing), str(resolved)
    return GENERIC
