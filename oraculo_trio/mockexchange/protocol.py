"""Binance's WebSocket protocol as the mock exchange speaks it: stream names, handshake paths,
control replies and error frames, and the RFC 6455 header of the frames it writes itself.

- ``/stream?streams=a@trade/b@depth20@100ms``: combined streams, every frame is
  ``{"stream":"<name>","data":<payload>}``; ``/ws/<name>[/<name>...]`` and ``/ws``: raw
  payloads (``/ws`` starts with no streams). Other paths are rejected with HTTP 404, invalid
  stream names in a URL with HTTP 400.
- Control requests ``SUBSCRIBE``, ``UNSUBSCRIBE``, ``LIST_SUBSCRIPTIONS``, ``SET_PROPERTY`` /
  ``GET_PROPERTY`` (``combined``) get Binance's replies and error frames
  ``{"error":{"code":..,"msg":".."},"id":..}``.
"""

from __future__ import annotations

import re
import struct
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec

#: Stream kinds the mock accepts: trades, best bid/ask, partial books and diff depth at every
#: speed of every market (subscribable even when the market does not produce them), and the
#: futures mark price and liquidation streams. Futures symbols carry ``_``
#: (``btcusd_perp``).
STREAM_NAME_RE = re.compile(
    r"^(?P<symbol>[a-z0-9_]+)@(?P<kind>trade|aggTrade|bookTicker|forceOrder"
    r"|markPrice(?:@1s)?|depth(?:5|10|20)?(?:@100ms|@500ms)?)$"
)

#: Binance's methods, in the order its "unknown variant" error lists them.
METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")

ENCODER = msgspec.json.Encoder()
"""The exchange's one JSON encoder (payloads, replies, error frames)."""


def parse_stream_name(name: str) -> tuple[str, str] | None:
    """Split a Binance stream name into its lower-case symbol and kind.

    Args:
        name: e.g. ``btcusdt@depth20@100ms``.

    Returns:
        ``(symbol, kind)`` such as ``("btcusdt", "depth20@100ms")``, or ``None`` when the name
        is not one the mock serves.
    """
    match = STREAM_NAME_RE.match(name)
    if match is None:
        return None
    return match["symbol"], match["kind"]


class InvalidRequest(Exception):
    """A control request the exchange answers with an error frame (code and message)."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(code, msg)
        self.code = code
        self.msg = msg


class Rejected(Exception):
    """A handshake the exchange refuses with an HTTP status."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body


def parse_path(target: str) -> tuple[bool, list[str]]:
    """Read a handshake target the way Binance routes it.

    Args:
        target: the request target, path and query (``/stream?streams=a@trade/b@trade``).

    Returns:
        ``(combined, streams)``: ``True`` for ``/stream``, ``False`` for ``/ws``; the streams
        named in the URL, in order, without duplicates.

    Raises:
        Rejected: 404 for an unknown path, 400 for an invalid stream name.
    """
    parts = urlsplit(target)
    path = parts.path.rstrip("/")
    if path == "/stream":
        combined = True
        query = parse_qs(parts.query)
        names = [n for value in query.get("streams", []) for n in value.split("/") if n]
    elif path == "/ws" or path.startswith("/ws/"):
        combined = False
        names = [n for n in path[len("/ws") :].split("/") if n]
    else:
        raise Rejected(404, "Not Found")
    for name in names:
        if parse_stream_name(name) is None:
            raise Rejected(400, f"Invalid request: invalid stream {name!r}")
    return combined, list(dict.fromkeys(names))


def reply_frame(result: Any, request_id: Any) -> bytes:
    """Binance's reply to a control request, ``{"result":...,"id":...}``."""
    return ENCODER.encode({"result": result, "id": request_id})


def error_frame(code: int, msg: str, request_id: Any = None) -> bytes:
    """Binance's error frame, ``{"error":{"code":2,"msg":"Invalid request: ..."},"id":1}``.

    Args:
        code: Binance's code (0 unknown property, 1 bad value type, 2 invalid request,
            3 invalid JSON).
        msg: the message.
        request_id: the request's id, ``None`` when it could not be read.

    Returns:
        The frame's UTF-8 text.
    """
    return ENCODER.encode({"error": {"code": code, "msg": msg}, "id": request_id})


def valid_id(value: Any) -> bool:
    """Whether ``value`` is a request id Binance accepts."""
    # Binance spot takes an unsigned integer, a string or null as the request id.
    if value is None or isinstance(value, str):
        return True
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**64


def frame_header(length: int, text: bool) -> bytes:
    """RFC 6455 header of an unmasked, final server frame (text or binary) of ``length``."""
    first = 0x81 if text else 0x82
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)
