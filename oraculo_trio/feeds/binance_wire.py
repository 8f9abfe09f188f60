"""Binance's wire types: the msgspec Structs that frames decode into, per stream kind.

Prices and quantities arrive as JSON strings; ``strict=False`` turns them into floats while
decoding, and ``msgspec.Meta`` constraints reject NaN, infinities, non-positive prices and
negative quantities in C. The checked decoders are the hot path; the lax ones (plain floats)
run only after a ``ValidationError``, to tell a bad value from a bad shape.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import msgspec

from oraculo_trio.feeds.binance_futures import FUTURES_LAX
from oraculo_trio.feeds.binance_markets import (
    KIND_AGG_TRADE,
    KIND_BOOK_TICKER,
    KIND_DEPTH_DIFF,
    KIND_TRADE,
    PARTIAL_DEPTH_KINDS,
)

FLOAT_MAX = sys.float_info.max
PRICE = Annotated[float, msgspec.Meta(gt=0.0, le=FLOAT_MAX)]
QTY = Annotated[float, msgspec.Meta(ge=0.0, le=FLOAT_MAX)]


def _payload_fields(price: Any, qty: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Payload fields per kind; unknown fields are ignored by msgspec."""
    levels = tuple[tuple[price, qty], ...]
    return {
        KIND_TRADE: [
            ("s", str), ("p", price), ("q", qty), ("m", bool), ("t", int), ("T", int),
            ("E", int | None, None),
        ],
        KIND_AGG_TRADE: [
            ("s", str), ("p", price), ("q", qty), ("m", bool), ("a", int), ("T", int),
            ("E", int | None, None),
        ],
        KIND_BOOK_TICKER: [
            ("s", str), ("u", int), ("b", price), ("B", qty), ("a", price), ("A", qty),
        ],
        KIND_DEPTH_DIFF: [
            ("s", str), ("U", int), ("u", int), ("b", levels), ("a", levels),
            ("E", int | None, None),
        ],
        # Spot partial books: lastUpdateId/bids/asks, no symbol, no E. Futures-style ones
        # (and our load generator) add E, and futures spell the rest s/u/b/a.
        "partial": [
            ("lastUpdateId", int | None, None), ("u", int | None, None),
            ("bids", levels | None, None), ("asks", levels | None, None),
            ("b", levels | None, None), ("a", levels | None, None),
            ("s", str | None, None), ("E", int | None, None),
        ],
        "rest": [("lastUpdateId", int), ("bids", levels), ("asks", levels)],
    }  # fmt: skip


def _payload_types(price: Any, qty: Any, tag: str) -> dict[str, type[msgspec.Struct]]:
    return {
        kind: msgspec.defstruct(f"{tag}_{kind}", fields, gc=False)
        for kind, fields in _payload_fields(price, qty).items()
    }


def _decoders(types: dict[str, type[msgspec.Struct]]) -> dict[str, msgspec.json.Decoder]:
    decoders = {kind: msgspec.json.Decoder(struct, strict=False) for kind, struct in types.items()}
    for kind in PARTIAL_DEPTH_KINDS:
        decoders[kind] = decoders["partial"]
    return decoders


# Checked decoders are the hot path. Lax ones (plain floats) run only after a
# ValidationError, to tell a bad value (invalid_value) from a bad shape (invalid_payload).
CHECKED_TYPES = _payload_types(PRICE, QTY, "Checked")
CHECKED = _decoders(CHECKED_TYPES)
LAX = _decoders(_payload_types(float, float, "Lax"))
LAX.update(FUTURES_LAX)

_ENVELOPE_OF: dict[int, msgspec.json.Decoder] = {}


def envelope_of(decoder: msgspec.json.Decoder) -> msgspec.json.Decoder:
    """The one-pass decoder of a whole combined-stream frame whose payload ``decoder``
    decodes: ``{"stream": ..., "data": payload}``, built in the same pass."""
    envelope = _ENVELOPE_OF.get(id(decoder))
    if envelope is None:
        struct = msgspec.defstruct("Envelope", [("stream", str), ("data", decoder.type)], gc=False)
        envelope = _ENVELOPE_OF[id(decoder)] = msgspec.json.Decoder(struct, strict=False)
    return envelope


# A combined-stream frame as Binance writes it starts with its stream name: the reader finds
# the name in the raw bytes, before any decoding (to skip frames a newer one supersedes).
STREAM_PREFIX = b'{"stream":"'
STREAM_START = len(STREAM_PREFIX)
SPACED_PREFIX = b'{"stream": "'  # as Python's json.dumps writes it
SPACED_START = len(SPACED_PREFIX)

LATEST_ONLY_KINDS = frozenset((*PARTIAL_DEPTH_KINDS, KIND_BOOK_TICKER))
"""Kinds whose every frame replaces the previous one of its stream: of two frames of one such
stream waiting together, the older one is superseded without being read."""


class Frame(msgspec.Struct, gc=False):
    """A combined-stream envelope or a control frame; absent keys keep their defaults."""

    stream: str | None = None
    data: msgspec.Raw = msgspec.Raw(b"")
    result: Any = msgspec.UNSET
    id: Any = None
    error: Any = msgspec.UNSET
    code: Any = msgspec.UNSET
    msg: Any = msgspec.UNSET
    e: Any = None
    E: Any = None


FRAME_DECODER = msgspec.json.Decoder(Frame)
ANY_DECODER = msgspec.json.Decoder()
