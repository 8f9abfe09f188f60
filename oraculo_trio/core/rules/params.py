"""Durations, and the parameter checks shared by the built-in kinds.

Each check raises ``ValueError`` naming the parameter (``"params.level is required"``);
the rule loader turns it into a ``ConfigError`` naming the rule id.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_REQUIRED = object()


def seconds_or_none(value: Any) -> float | None:
    """Seconds from a number or a string like ``"30s"``; None when it is neither (or < 0)."""
    seconds = math.nan
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match[1]) * _DURATION_UNITS[match[2]]
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string like ``"30s"``, ``"5m"``, ``"1h"``, ``"2d"``.

    Raises:
        ValueError: neither a number >= 0 nor such a string.
    """
    seconds = seconds_or_none(value)
    if seconds is None:
        raise ValueError(
            f'{value!r}: expected seconds >= 0 or a duration such as "30s", "5m", "1h"'
        )
    return seconds


def number_param(
    params: Mapping[str, Any],
    key: str,
    *,
    minimum: float | None = None,
    above: float | None = None,
    maximum: float | None = None,
    default: Any = _REQUIRED,
) -> float:
    """``params[key]`` as a finite float within the bounds given; required without default."""
    if key not in params:
        if default is _REQUIRED:
            raise ValueError(f"params.{key} is required")
        return default
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"params.{key} = {value!r}: expected a finite number")
    if minimum is not None and value < minimum:
        raise ValueError(f"params.{key} = {value!r}: expected a number >= {minimum:g}")
    if above is not None and value <= above:
        raise ValueError(f"params.{key} = {value!r}: expected a number > {above:g}")
    if maximum is not None and value > maximum:
        raise ValueError(f"params.{key} = {value!r}: expected a number <= {maximum:g}")
    return float(value)


def integer_param(
    params: Mapping[str, Any], key: str, *, minimum: int, maximum: int, default: int
) -> int:
    """``params[key]`` as an integer from ``minimum`` to ``maximum``."""
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ValueError(f"params.{key} = {value!r}: expected an integer {minimum}..{maximum}")
    return value


def choice_param(
    params: Mapping[str, Any], key: str, allowed: tuple[str, ...], default: str
) -> str:
    """``params[key]``, one of ``allowed``."""
    value = params.get(key, default)
    if value not in allowed:
        raise ValueError(f"params.{key} = {value!r}: expected one of {', '.join(allowed)}")
    return value


def duration_param(params: Mapping[str, Any], key: str) -> float:
    """``params[key]`` (required) as seconds > 0, from a number or a duration string."""
    if key not in params:
        raise ValueError(f"params.{key} is required")
    seconds = seconds_or_none(params[key])
    if seconds is None or seconds <= 0:
        raise ValueError(
            f'params.{key} = {params[key]!r}: expected seconds > 0 or a duration such as "30s"'
        )
    return seconds


def no_extra_params(params: Mapping[str, Any], *allowed: str) -> None:
    """Refuse any key of ``params`` not in ``allowed`` (a typo must not pass silently)."""
    extra = sorted(set(params) - set(allowed))
    if extra:
        raise ValueError(f"params.{extra[0]} is not a parameter of this kind (takes {allowed})")
