"""The service's own log lines: ``text`` (the default) or ``json`` (``service.log_format``).

Text: ``2026-12-04T13:37:12.345Z INFO oraculo_trio.observe.http: serving ...``; a worker of
``run --workers N`` tags its lines ``[worker i]`` before the logger's name. JSON: one object
a line with ``time`` (ISO-8601 UTC), ``level``, ``logger``, ``message``, ``worker`` when
there is one, and ``exception`` (the traceback) when one is attached. Alerts are not log
lines: they go to the notification sinks.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import TextIO


def _utc(created: float) -> str:
    moment = datetime.datetime.fromtimestamp(created, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """``TIME LEVEL [worker i] logger: message``, times in UTC."""

    def __init__(self, worker: int | None = None) -> None:
        tag = f"[worker {worker}] " if worker is not None else ""
        super().__init__(f"%(asctime)s %(levelname)s {tag}%(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _utc(record.created)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, ISO-8601 UTC times."""

    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self._worker = worker

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": _utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self._worker is not None:
            entry["worker"] = self._worker
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(
    level: str, log_format: str = "text", *, worker: int | None = None, stream: TextIO | None = None
) -> None:
    """Send the root logger's records to ``stream`` (stderr) at ``level``, in ``log_format``.

    Replaces any handler installed before (a worker calls it again with its index).
    """
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    handler.setFormatter(formatter(worker))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level))
