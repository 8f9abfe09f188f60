"""How the mock exchange behaves: ``ExchangeSettings``."""

from __future__ import annotations

from typing import Literal

import attrs

from oraculo_trio.core.markets import MARKETS

OverflowPolicy = Literal["block", "drop"]


@attrs.frozen
class ExchangeSettings:
    """How the mock exchange behaves.

    Attributes:
        tick: publishing period in seconds (Binance's 100 ms bursts).
        ping_interval: seconds between server pings; ``None`` disables them.
        pong_timeout: seconds a ping may wait for its pong before the connection is aborted.
        queue_size: frames each connection's outgoing queue holds.
        overflow: ``"block"`` (default: the publisher waits for a full queue, lateness is
            visible) or ``"drop"`` (the frame is discarded for that connection and counted).
        max_streams: streams one connection may hold (Binance spot: 1024).
        max_requests_per_s: incoming messages per second before the connection is closed
            with 1008 (Binance spot: 5); ``None`` disables the limit.
        strict_symbols: reject subscriptions to symbols the market does not publish (error
            frame "invalid stream"), so a typo fails loudly.
        close_timeout: seconds a clean close may wait for the client's close frame before
            the TCP connection is aborted.
        connect_timeout: seconds a client has to finish the opening handshake.
        batch_writes: write each connection's queued frames with one ``send_all`` per burst
            (default), framing them here; ``False`` sends frame by frame through
            trio-websocket's ``send_message`` (about 10,000 frames/s at most).
        market: which Binance market the exchange plays (``spot``, ``us``, ``usdm``,
            ``coinm``): its REST paths, request weights and per-IP weight limit.
        clock_offset: seconds the exchange's clock runs ahead of this host's (negative:
            behind): every ``E``, ``T`` it makes and its ``/time`` answer are shifted.
        record_written: keep every trade and aggTrade frame written to a socket, by connection
            (``MockExchange.written``): what a test expects the client to have read.
    """

    tick: float = attrs.field(default=0.1, validator=attrs.validators.gt(0))
    ping_interval: float | None = attrs.field(
        default=20.0, validator=attrs.validators.optional(attrs.validators.gt(0))
    )
    pong_timeout: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))
    queue_size: int = attrs.field(default=16384, validator=attrs.validators.ge(1))
    overflow: OverflowPolicy = attrs.field(
        default="block", validator=attrs.validators.in_(("block", "drop"))
    )
    max_streams: int = attrs.field(default=1024, validator=attrs.validators.ge(1))
    max_requests_per_s: int | None = attrs.field(
        default=5, validator=attrs.validators.optional(attrs.validators.ge(1))
    )
    strict_symbols: bool = True
    close_timeout: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))
    connect_timeout: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    batch_writes: bool = True
    market: str = attrs.field(default="spot", validator=attrs.validators.in_(MARKETS))
    clock_offset: float = 0.0
    record_written: bool = False
