"""A Binance-compatible mock exchange (WebSocket streams and REST) and its market models.

The test double that ships with the product: the demo, the pytest plugin and the load tool run
the service against it on 127.0.0.1. ``python -m oraculo_trio.mockexchange --market demo``
runs a standalone exchange.

- ``exchange``: ``MockExchange``, the WebSocket server publishing a market every tick;
- ``connection``, ``protocol``, ``config``: its clients, Binance's wire protocol, its settings;
- ``rest``: ``RestServer``, ``GET /api/v3/depth`` with Binance's weights and limits;
- ``markets``: every market model (scripted, random walk, load, replay, diff books).

It depends only on ``oraculo_trio.core`` and ``oraculo_trio.feeds``.
"""

from oraculo_trio.mockexchange.config import ExchangeSettings, OverflowPolicy
from oraculo_trio.mockexchange.connection import ABRUPT_CLOSE
from oraculo_trio.mockexchange.exchange import (
    ConnectionStatistics,
    ExchangeStatistics,
    MockExchange,
)
from oraculo_trio.mockexchange.markets.diffbook import FAULT_KINDS, DiffBookMarket, FaultPlan
from oraculo_trio.mockexchange.markets.load import (
    SPIKE_LEVEL,
    WIDE_SPREAD_BPS,
    FrameSource,
    LoadMarket,
    MarketSource,
    parse_distribution,
)
from oraculo_trio.mockexchange.markets.payloads import (
    PARTIAL_DEPTHS,
    Frame,
    Market,
    Payload,
    agg_trade_payload,
    format_units,
    synthetic_symbols,
    to_units,
    trade_payload,
)
from oraculo_trio.mockexchange.markets.replay import (
    RecordedBooks,
    ReplayMarket,
    load_recorded_frames,
)
from oraculo_trio.mockexchange.markets.scripted import (
    DEMO_PERIOD,
    Instrument,
    Phase,
    Script,
    ScriptedMarket,
    demo_instruments,
    demo_phases,
    demo_script,
)
from oraculo_trio.mockexchange.markets.walk import RandomWalkMarket
from oraculo_trio.mockexchange.protocol import parse_path, parse_stream_name
from oraculo_trio.mockexchange.rest import RestFault, RestRequest, RestServer, SnapshotSource

__all__ = [
    "ABRUPT_CLOSE",
    "DEMO_PERIOD",
    "FAULT_KINDS",
    "PARTIAL_DEPTHS",
    "SPIKE_LEVEL",
    "WIDE_SPREAD_BPS",
    "ConnectionStatistics",
    "DiffBookMarket",
    "ExchangeSettings",
    "ExchangeStatistics",
    "FaultPlan",
    "Frame",
    "FrameSource",
    "Instrument",
    "LoadMarket",
    "Market",
    "MarketSource",
    "MockExchange",
    "OverflowPolicy",
    "Payload",
    "Phase",
    "RandomWalkMarket",
    "RecordedBooks",
    "ReplayMarket",
    "RestFault",
    "RestRequest",
    "RestServer",
    "Script",
    "ScriptedMarket",
    "SnapshotSource",
    "agg_trade_payload",
    "demo_instruments",
    "demo_phases",
    "demo_script",
    "format_units",
    "load_recorded_frames",
    "parse_distribution",
    "parse_path",
    "parse_stream_name",
    "synthetic_symbols",
    "to_units",
    "trade_payload",
]
