"""Rate-limited logging: bad input is logged, but never once per message."""

from __future__ import annotations

import logging
import time

import attrs


@attrs.define(eq=False)
class RateLimitedLog:
    """Logs at most one record per ``key`` every ``interval`` seconds, with the count of
    records suppressed since the last one."""

    logger: logging.Logger
    interval: float = 10.0
    _last: dict[str, float] = attrs.field(factory=dict)
    _suppressed: dict[str, int] = attrs.field(factory=dict)

    def log(self, level: int, key: str, message: str, *args: object) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            message += " (%d similar suppressed)"
            args = (*args, suppressed)
        self.logger.log(level, message, *args)

    def warning(self, key: str, message: str, *args: object) -> None:
        self.log(logging.WARNING, key, message, *args)
