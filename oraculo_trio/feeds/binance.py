"""Binance adapter: stream names, combined-stream URLs and frame decoding.

Decoding is two msgspec passes with typed Structs, chosen by the stream name:

1. the envelope ``{"stream": str, "data": <raw>}`` (control frames share the same Struct:
   ``result``/``id``, ``error``, ``code``/``msg``, bare ``serverShutdown``), where ``data`` stays
   a :class:`msgspec.Raw` slice, so it is scanned but not built;
2. ``data`` with the decoder of that stream's kind. Prices and quantities arrive as JSON
   strings; ``strict=False`` turns them into floats while decoding, and ``msgspec.Meta``
   constraints reject NaN, infinities, non-positive prices and negative quantities in C,
   at almost no cost (a 40-level partial book: +0.2 µs).

The stream name is parsed once: the decoder keeps ``{stream name: (kind, symbol, decoder,
builder)}``. The feed reader takes a shorter path for a frame whose stream name it read
from the raw bytes (:meth:`BinanceDecoder.stream_key`): :meth:`BinanceDecoder.decode_keyed`
decodes envelope and payload in one pass; a frame that pass refuses goes through
:meth:`~BinanceDecoder.decode`, which names what is wrong. Measured on the recorded frames
(``python benchmarks/bench_decode.py``, Python 3.11, 2-core VM), µs per frame down to the
event, ``decode`` / one pass: trade 1.4 / 1.4, aggTrade 1.5 / 1.5, bookTicker 1.2 / 1.3,
depth diff 1.6-1.8 / 1.6-1.7, ``@depth20`` partial (40 levels) 4.6 / 4.2, control frames
0.7. Of a depth diff's 1.7 µs: envelope 0.23, payload 0.49, building the frozen
``DepthDiff`` 0.46 (``json.loads`` + ``float()`` alone: 3.1).

Nothing here raises on bad input from the network. :meth:`BinanceDecoder.decode` returns a
:class:`BadFrame` whose ``reason`` is one of
:data:`oraculo_trio.observe.metrics.BAD_FRAME_REASONS` (the ``reason`` label of
``oraculo_feed_bad_frames_total``), or a :class:`Control` for the exchange's own messages.
Error frames (``{"error": ..., "id": ...}``, ``{"code": ..., "msg": ...}``) are
``Control(kind="error")``: the pipeline decides how to count them (``exchange_error`` is the
bad-frame reason reserved for that).

Stream names are case-sensitive, as Binance writes them: lower-case symbol, then the kind
spelled exactly (``aggTrade``, ``bookTicker``). ``BTCUSDT@trade`` or ``btcusdt@aggtrade`` is
not a stream this adapter ever subscribes to, so frames carrying it are ``unknown_stream``.

Markets (:mod:`oraculo_trio.feeds.binance_markets`): a decoder reads one market's
connection. Spot frames take the path above unchanged; on any other market the events are
named by market (``usdm:BTCUSDT``) and futures payloads (``pu``, ``markPrice``,
``forceOrder``) decode in :mod:`oraculo_trio.feeds.binance_futures`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import attrs
import msgspec

from oraculo_trio.core.errors import FeedError
from oraculo_trio.core.events import (
    DEPTH,
    TRADE,
    BookTicker,
    DepthDiff,
    DepthSnapshot,
    Level,
    MarketEvent,
    Trade,
)
from oraculo_trio.core.markets import SPOT, qualified
from oraculo_trio.feeds.binance_futures import (
    FUTURES_DECODERS,
    KIND_PREFIX,
    MARKET_BUILDERS,
    MarketBuilder,
    PayloadError,
)
from oraculo_trio.feeds.binance_markets import (
    DEPTH_KINDS,
    KIND_AGG_TRADE,
    KIND_BOOK_TICKER,
    KIND_DEPTH5,
    KIND_DEPTH10,
    KIND_DEPTH20,
    KIND_DEPTH_DIFF,
    KIND_FORCE_ORDER,
    KIND_MARK_PRICE,
    KIND_TRADE,
    MAX_STREAMS_PER_CONNECTION,
    PARTIAL_DEPTH_KINDS,
    SPOT_KINDS,
    binance_market,
    combined_urls,
    parse_stream_name,
    raw_url,
    stream_name,
)
from oraculo_trio.feeds.binance_wire import (
    ANY_DECODER,
    CHECKED,
    FRAME_DECODER,
    LATEST_ONLY_KINDS,
    LAX,
    SPACED_PREFIX,
    SPACED_START,
    STREAM_PREFIX,
    STREAM_START,
    Frame,
    envelope_of,
)

__all__ = [
    "CONTROL_KINDS",
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_FRAME_BYTES",
    "DEPTH_KINDS",
    "KINDS",
    "KIND_AGG_TRADE",
    "KIND_BOOK_TICKER",
    "KIND_DEPTH5",
    "KIND_DEPTH10",
    "KIND_DEPTH20",
    "KIND_DEPTH_DIFF",
    "KIND_FORCE_ORDER",
    "KIND_MARK_PRICE",
    "KIND_STREAM",
    "KIND_TRADE",
    "MAX_STREAMS_PER_CONNECTION",
    "PARTIAL_DEPTH_KINDS",
    "BadFrame",
    "BadSnapshot",
    "BinanceDecoder",
    "Control",
    "combined_urls",
    "decode_rest_snapshot",
    "parse_stream_name",
    "raw_url",
    "stream_name",
]

DEFAULT_BASE_URL = "wss://stream.binance.com:9443"
"""Binance spot WebSocket base; Binance.US is ``wss://stream.binance.us:9443``."""

DEFAULT_MAX_FRAME_BYTES = 1 << 20
"""Frames longer than this are ``too_large`` (recorded frames reach 64 KB)."""

KINDS = (*SPOT_KINDS, KIND_MARK_PRICE, KIND_FORCE_ORDER)
"""Every stream kind this adapter subscribes to and decodes (each market offers some:
``BinanceMarket.kinds``)."""

KIND_STREAM = {
    KIND_TRADE: TRADE,
    KIND_AGG_TRADE: TRADE,
    KIND_BOOK_TICKER: DEPTH,
    KIND_DEPTH5: DEPTH,
    KIND_DEPTH10: DEPTH,
    KIND_DEPTH20: DEPTH,
    KIND_DEPTH_DIFF: DEPTH,
    # Futures events each count (never conflated): they ride the trade connections.
    KIND_MARK_PRICE: TRADE,
    KIND_FORCE_ORDER: TRADE,
}
"""Stream kind -> pipeline stream (``"trade"``/``"depth"``), the connection it belongs to."""

SERVER_SHUTDOWN_STREAM = "!serverShutdown"

CONTROL_SUBSCRIBE_ACK = "subscribe_ack"
CONTROL_LIST_SUBSCRIPTIONS = "list_subscriptions"
CONTROL_PROPERTY = "property"
CONTROL_SERVER_SHUTDOWN = "server_shutdown"
CONTROL_ERROR = "error"
CONTROL_KINDS = (
    CONTROL_SUBSCRIBE_ACK,
    CONTROL_LIST_SUBSCRIPTIONS,
    CONTROL_PROPERTY,
    CONTROL_SERVER_SHUTDOWN,
    CONTROL_ERROR,
)
"""``Control.kind`` values. A ``null`` result acknowledges SUBSCRIBE or UNSUBSCRIBE (Binance
does not say which), a list answers LIST_SUBSCRIPTIONS, anything else is a GET_PROPERTY value."""

_DETAIL_CHARS = 160


@attrs.frozen(slots=True)
class Control:
    """A message from the exchange about the connection rather than the market.

    ``payload`` is what Binance sent: ``None`` for an ack, the list of streams, a property
    value, the error object (``{"code": int, "msg": str}``) or the shutdown event object.
    ``request_id`` is the ``id`` of the request answered, when there is one.
    """

    kind: str
    payload: Any = None
    request_id: Any = None


@attrs.frozen(slots=True)
class BadFrame:
    """A frame that could not be turned into an event.

    ``reason`` is one of ``BAD_FRAME_REASONS`` (a metric label); ``detail`` is short text
    for a rate-limited log line.
    """

    reason: str
    detail: str = ""


class BadSnapshot(FeedError):
    """Raised by :func:`decode_rest_snapshot` when a REST depth body is not a usable book
    (malformed JSON, missing fields, invalid values, or an exchange error body)."""


# ---------------------------------------------------------------------------------------
# Builders: decoded Struct -> event. Called with the Struct, the stream's symbol and kind.
# Events are built with positional arguments: keywords cost 0.27 µs more per event (attrs'
# frozen __init__), 14 % of a depth diff's decode. tests/feeds pins the field order.

_Builder = Callable[[Any, str, str, float, float], MarketEvent | Control | BadFrame]


def _mismatch(payload_symbol: Any, symbol: str) -> BadFrame:
    return BadFrame("invalid_payload", f"payload symbol {payload_symbol!r} on a {symbol} stream")


def _build_trade(m: Any, symbol: str, kind: str, at: float, wall: float) -> Trade | BadFrame:
    if m.s != symbol and m.s.upper() != symbol:
        return _mismatch(m.s, symbol)
    return Trade(symbol, m.p, m.q, m.m, m.t, m.T, m.E, at, wall, kind)


def _build_agg_trade(m: Any, symbol: str, kind: str, at: float, wall: float) -> Trade | BadFrame:
    if m.s != symbol and m.s.upper() != symbol:
        return _mismatch(m.s, symbol)
    return Trade(symbol, m.p, m.q, m.m, m.a, m.T, m.E, at, wall, kind)


def _build_book_ticker(
    m: Any, symbol: str, kind: str, at: float, wall: float
) -> BookTicker | BadFrame:
    if m.s != symbol and m.s.upper() != symbol:
        return _mismatch(m.s, symbol)
    return BookTicker(symbol, m.b, m.B, m.a, m.A, m.u, at, wall)


def _build_diff(m: Any, symbol: str, kind: str, at: float, wall: float) -> DepthDiff | BadFrame:
    if m.s != symbol and m.s.upper() != symbol:
        return _mismatch(m.s, symbol)
    if m.u < m.U:
        return BadFrame("invalid_payload", f"{symbol} diff with U={m.U} > u={m.u}")
    return DepthDiff(symbol, m.U, m.u, m.b, m.a, m.E, at, wall)


def _build_partial(
    m: Any, symbol: str, kind: str, at: float, wall: float
) -> DepthSnapshot | BadFrame:
    bids = m.bids if m.bids is not None else m.b
    asks = m.asks if m.asks is not None else m.a
    last_update_id = m.lastUpdateId if m.lastUpdateId is not None else m.u
    if bids is None or asks is None or last_update_id is None:
        return BadFrame("invalid_payload", f"{symbol} partial book without bids/asks/lastUpdateId")
    if m.s is not None and m.s != symbol and m.s.upper() != symbol:
        return _mismatch(m.s, symbol)
    return DepthSnapshot(symbol, bids, asks, last_update_id, m.E, at, wall)


_BUILDERS: dict[str, _Builder] = {
    KIND_TRADE: _build_trade,
    KIND_AGG_TRADE: _build_agg_trade,
    KIND_BOOK_TICKER: _build_book_ticker,
    KIND_DEPTH_DIFF: _build_diff,
    KIND_DEPTH5: _build_partial,
    KIND_DEPTH10: _build_partial,
    KIND_DEPTH20: _build_partial,
}


def _build_shutdown(m: Any, symbol: str, kind: str, at: float, wall: float) -> Control | BadFrame:
    if not isinstance(m, dict) or m.get("e") != "serverShutdown":
        return BadFrame("invalid_payload", f"{SERVER_SHUTDOWN_STREAM} data is not serverShutdown")
    return Control(CONTROL_SERVER_SHUTDOWN, m)


_Spec = tuple[str, str, msgspec.json.Decoder, _Builder]
_SHUTDOWN_SPEC: _Spec = (CONTROL_SERVER_SHUTDOWN, "", ANY_DECODER, _build_shutdown)


def _spec_for(name: str, market: str = SPOT) -> _Spec | None:
    if name == SERVER_SHUTDOWN_STREAM:
        return _SHUTDOWN_SPEC
    parsed = parse_stream_name(name, market)
    if parsed is None:
        return None
    symbol, kind = parsed
    if market == SPOT:
        return (kind, symbol, CHECKED[kind], _BUILDERS[kind])
    build = _on_market(MARKET_BUILDERS[kind], symbol)
    name = qualified(market, symbol)
    futures = KIND_PREFIX + kind
    if binance_market(market).chained and futures in FUTURES_DECODERS:
        # The spec's kind keys the lax decoder of a failure; these builders ignore it.
        return (futures, name, FUTURES_DECODERS[futures], build)
    return (kind, name, CHECKED[kind], build)


def _on_market(build: MarketBuilder, wire: str) -> _Builder:
    """A builder of another market's stream: events named by market, payloads checked
    against the exchange's name ``wire``."""

    def bound(m: Any, symbol: str, kind: str, at: float, wall: float) -> Any:
        try:
            return build(m, symbol, wire, kind, at, wall)
        except PayloadError as exc:
            return BadFrame("invalid_payload", _short(exc))
        except ValueError as exc:
            return BadFrame("invalid_value", _short(exc))

    return bound


# ---------------------------------------------------------------------------------------
# Error paths (never on the hot path)


def _short(text: object) -> str:
    text = str(text)
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 3] + "..."


def _unparsable(frame: str | bytes | bytearray | memoryview, exc: Exception) -> BadFrame:
    """Name a frame msgspec could not parse: binary garbage or broken JSON text."""
    if not isinstance(frame, str):
        raw = bytes(frame)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return BadFrame("binary_frame", f"{len(raw)} bytes, not UTF-8")
        # Control characters other than whitespace never occur in JSON text frames.
        if any(c < "\x20" and c not in "\t\n\r" for c in text):
            return BadFrame("binary_frame", f"{len(raw)} bytes with control characters")
    return BadFrame("malformed_json", _short(exc))


# What msgspec raises on bad input: DecodeError (and its ValidationError), UnicodeDecodeError
# for invalid UTF-8 inside a string, RecursionError for absurd nesting.
_DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


def _failure(exc: Exception, frame: Any, kind: str | None = None, where: str = "") -> BadFrame:
    """The bad-frame reason for an exception in ``_DECODE_ERRORS``."""
    if isinstance(exc, msgspec.ValidationError):
        return _invalid(kind, frame, exc, where)
    if isinstance(exc, msgspec.DecodeError):
        return _unparsable(frame, exc)
    if isinstance(exc, UnicodeDecodeError):
        return BadFrame("binary_frame", _short(f"{where}: not UTF-8: {exc.reason}"))
    return BadFrame("invalid_payload", _short(f"{where}: nested too deep"))


def _invalid(kind: str | None, data: Any, exc: msgspec.ValidationError, where: str) -> BadFrame:
    """Tell a bad value (the lax decoder accepts it) from a bad shape."""
    lax = LAX.get(kind) if kind is not None else None
    detail = _short(f"{where}: {exc}" if where else exc)
    if lax is None:
        return BadFrame("invalid_payload", detail)
    if "out of range" in str(exc):
        return BadFrame("invalid_value", detail)
    try:
        lax.decode(data)
    except _DECODE_ERRORS:
        return BadFrame("invalid_payload", detail)
    return BadFrame("invalid_value", detail)


def _control(frame: Frame) -> Control | BadFrame:
    """Classify a frame without ``stream``: ack, error, shutdown or nothing we know."""
    if frame.error is not msgspec.UNSET:
        return Control(CONTROL_ERROR, frame.error, frame.id)
    if frame.code is not msgspec.UNSET:
        msg = None if frame.msg is msgspec.UNSET else frame.msg
        return Control(CONTROL_ERROR, {"code": frame.code, "msg": msg}, frame.id)
    if frame.result is not msgspec.UNSET:
        result = frame.result
        if result is None:
            return Control(CONTROL_SUBSCRIBE_ACK, None, frame.id)
        if isinstance(result, list):
            return Control(CONTROL_LIST_SUBSCRIPTIONS, result, frame.id)
        return Control(CONTROL_PROPERTY, result, frame.id)
    if frame.e == "serverShutdown":
        return Control(CONTROL_SERVER_SHUTDOWN, {"e": frame.e, "E": frame.E})
    return BadFrame("invalid_payload", "neither a stream envelope nor a control message")


def raw_final_update_id(frame: bytes) -> int | None:
    """A depth diff frame's ``u``, read from the raw bytes without decoding the frame; None
    when it is not there as Binance writes it (the caller then decodes)."""
    start = frame.find(b'"u":')
    if start < 0:
        return None
    start += 4
    end = frame.find(b",", start)
    try:
        return int(frame[start:end])
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------
# The decoder


class BinanceDecoder:
    """Turns Binance WebSocket frames into market events, control messages or bad frames.

    One per connection or per process: it only caches what it learns about stream names.
    Not thread-safe (nothing here needs it: one Trio thread decodes).

    Args:
        streams: If given, only these stream names (and ``!serverShutdown``) are known;
            frames for any other stream are ``unknown_stream``. By default every stream
            name :func:`parse_stream_name` accepts is known.
        max_frame_bytes: Longer frames are ``too_large`` without being parsed.
        market: the market the connection reads (``feed.market``); events of a market other
            than spot are named by market (``usdm:BTCUSDT``).
    """

    __slots__ = (
        "_closed",
        "_fast",
        "_market",
        "_max_frame",
        "_specs",
        "diff_symbols",
        "latest_only",
    )

    _MAX_LEARNED_STREAMS = 65_536

    def __init__(
        self,
        streams: Iterable[str] | None = None,
        *,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        market: str = SPOT,
    ) -> None:
        binance_market(market)  # an unknown market is a ValueError here, not per frame
        self._max_frame = max_frame_bytes
        self._market = market
        self._specs: dict[str, _Spec] = {SERVER_SHUTDOWN_STREAM: _SHUTDOWN_SPEC}
        # Market-data streams by the raw bytes of their name, with the one-pass decoder.
        self._fast: dict[bytes, _Spec] = {}
        self.latest_only: set[bytes] = set()
        """Raw names of the known streams whose kind is in :data:`LATEST_ONLY_KINDS`."""
        self.diff_symbols: dict[bytes, str] = {}
        """Raw names of the known depth-diff streams, and their symbol."""
        self._closed = streams is not None
        for name in streams or ():
            spec = _spec_for(name, market)
            if spec is None:
                raise ValueError(f"stream {name!r} is not a Binance stream name this adapter knows")
            self._remember(name, spec)

    def _learn(self, name: str) -> _Spec | None:
        if self._closed:
            return None
        spec = _spec_for(name, self._market)
        # Only a misbehaving server sends endless new names; stop caching rather than grow.
        if spec is not None and len(self._specs) < self._MAX_LEARNED_STREAMS:
            self._remember(name, spec)
        return spec

    def _remember(self, name: str, spec: _Spec) -> None:
        self._specs[name] = spec
        kind, symbol, decoder, build = spec
        if kind == CONTROL_SERVER_SHUTDOWN:
            return
        raw = name.encode()
        self._fast[raw] = (kind, symbol, envelope_of(decoder), build)
        base_kind = kind.removeprefix(KIND_PREFIX)
        if base_kind in LATEST_ONLY_KINDS:
            self.latest_only.add(raw)
        elif base_kind == KIND_DEPTH_DIFF:
            self.diff_symbols[raw] = symbol

    def stream_key(self, frame: bytes) -> bytes | None:
        """The raw name of a known market-data stream that ``frame`` carries, read from the
        frame's first bytes without decoding it; None for anything else (control frames,
        unknown streams, another key order), which :meth:`decode` handles.

        A frame with a key is one market message: what the reader counts as received.
        """
        if frame[:STREAM_START] == STREAM_PREFIX:
            start = STREAM_START
        elif frame[:SPACED_START] == SPACED_PREFIX:
            start = SPACED_START
        else:
            return None
        key = frame[start : frame.find(b'"', start)]
        if key in self._fast:
            return key
        if self._closed or len(self._fast) >= self._MAX_LEARNED_STREAMS:
            return None
        try:
            name = key.decode()
        except UnicodeDecodeError:
            return None
        self._learn(name)
        return key if key in self._fast else None

    def decode_keyed(
        self, key: bytes, frame: bytes, received_at: float, received_wall: float
    ) -> MarketEvent | Control | BadFrame:
        """Decode a frame :meth:`stream_key` named, in one pass. Never raises.

        Same result as :meth:`decode`; a frame the one-pass decoder refuses goes through
        :meth:`decode`, which names what is wrong with it.
        """
        kind, symbol, decoder, build = self._fast[key]
        if len(frame) > self._max_frame:
            return BadFrame("too_large", f"{len(frame)} > {self._max_frame}")
        try:
            envelope = decoder.decode(frame)
        except _DECODE_ERRORS:
            return self.decode(frame, received_at, received_wall)
        return build(envelope.data, symbol, kind, received_at, received_wall)

    def decode(
        self,
        frame: str | bytes | bytearray | memoryview,
        received_at: float,
        received_wall: float,
    ) -> MarketEvent | Control | BadFrame:
        """Decode one combined-stream frame (``/stream?streams=...``). Never raises.

        Args:
            frame: The WebSocket message, text as ``str`` or as UTF-8 ``bytes``.
            received_at: Monotonic read stamp, copied to the event.
            received_wall: Wall-clock read stamp, copied to the event.

        Returns:
            A market event; a :class:`Control` for acks, errors and server shutdown; or a
            :class:`BadFrame` whose reason is one of ``BAD_FRAME_REASONS``.
        """
        if len(frame) > self._max_frame:
            return BadFrame("too_large", f"{len(frame)} > {self._max_frame}")
        try:
            envelope = FRAME_DECODER.decode(frame)
        except _DECODE_ERRORS as exc:
            return _failure(exc, frame)
        name = envelope.stream
        if name is None:
            return _control(envelope)
        spec = self._specs.get(name) or self._learn(name)
        if spec is None:
            return BadFrame("unknown_stream", _short(name))
        kind, symbol, decoder, build = spec
        data = envelope.data
        if not data:
            return BadFrame("invalid_payload", _short(f"{name}: no data"))
        try:
            payload = decoder.decode(data)
        except _DECODE_ERRORS as exc:
            return _failure(exc, data, kind, name)
        return build(payload, symbol, kind, received_at, received_wall)

    def decode_raw(
        self,
        stream: str,
        frame: str | bytes | bytearray | memoryview,
        received_at: float,
        received_wall: float,
    ) -> MarketEvent | Control | BadFrame:
        """Decode one frame of a raw stream (``/ws/<stream>``): the payload, no envelope.

        Control frames (acks, errors, ``serverShutdown``) arrive unwrapped on such a
        connection too and become :class:`Control`. Never raises.

        Args:
            stream: The connection's stream name, for example ``"btcusdt@trade"``.
            frame: The WebSocket message, text as ``str`` or as UTF-8 ``bytes``.
            received_at: Monotonic read stamp, copied to the event.
            received_wall: Wall-clock read stamp, copied to the event.

        Returns:
            As :meth:`decode`.
        """
        if len(frame) > self._max_frame:
            return BadFrame("too_large", f"{len(frame)} > {self._max_frame}")
        spec = self._specs.get(stream) or self._learn(stream)
        if spec is None:
            return BadFrame("unknown_stream", _short(stream))
        kind, symbol, decoder, build = spec
        try:
            payload = decoder.decode(frame)
        except _DECODE_ERRORS as exc:
            result: MarketEvent | Control | BadFrame = _failure(exc, frame, kind, stream)
        else:
            result = build(payload, symbol, kind, received_at, received_wall)
        if isinstance(result, BadFrame) and result.reason == "invalid_payload":
            # Not this stream's payload: maybe a control message (bare or, like
            # !serverShutdown, in an envelope).
            control = self.decode(frame, received_at, received_wall)
            if isinstance(control, Control):
                return control
        return result


def decode_rest_snapshot(body: str | bytes) -> tuple[int, tuple[Level, ...], tuple[Level, ...]]:
    """Decode a ``GET /api/v3/depth`` body into ``(last_update_id, bids, asks)``.

    Levels are ``(price, quantity)`` float tuples in the exchange's order (bids best first,
    asks best first), checked as WebSocket levels are (price > 0, finite; quantity >= 0).

    Raises:
        BadSnapshot: Malformed JSON, missing or mistyped fields, invalid values, or an
            exchange error body (``{"code": ..., "msg": ...}``, named in the message).
    """
    try:
        snapshot = CHECKED["rest"].decode(body)
    except _DECODE_ERRORS as exc:
        error = _rest_error(body)
        if error is not None:
            raise BadSnapshot(f"exchange error {error}") from None
        bad = _failure(exc, body, "rest", "depth snapshot")
        raise BadSnapshot(f"{bad.reason}: {bad.detail}") from None
    return snapshot.lastUpdateId, snapshot.bids, snapshot.asks


def _rest_error(body: str | bytes) -> str | None:
    try:
        frame = FRAME_DECODER.decode(body)
    except _DECODE_ERRORS:
        return None
    if frame.code is msgspec.UNSET:
        return None
    return _short(f"code={frame.code!r} msg={frame.msg!r}")
