"""Symbol identity: spot keeps the exchange's name, every other market prefixes it."""

from __future__ import annotations

import pytest

from oraculo_trio.core.markets import (
    chains_on_previous_id,
    market_of,
    normalized,
    qualified,
    split,
)
from oraculo_trio.core.sharding import partition_of

NAMES = [
    ("spot", "BTCUSDT", "BTCUSDT"),
    ("us", "BTCUSD", "us:BTCUSD"),
    ("usdm", "BTCUSDT", "usdm:BTCUSDT"),
    ("coinm", "BTCUSD_PERP", "coinm:BTCUSD_PERP"),
]


@pytest.mark.parametrize(("market", "symbol", "name"), NAMES)
def test_names_round_trip(market: str, symbol: str, name: str) -> None:
    assert qualified(market, symbol) == name
    assert split(name) == (market, symbol)
    assert market_of(name) == market
    assert chains_on_previous_id(name) == (market in ("usdm", "coinm"))


@pytest.mark.parametrize(
    ("written", "name"),
    [
        ("btcusdt", "BTCUSDT"),
        ("USDM:btcusdt", "usdm:BTCUSDT"),
        ("spot:BTC*", "BTC*"),
        ("coinm:*", "coinm:*"),
        ("*", "*"),
        ("nosuch:x", "NOSUCH:X"),
    ],
)
def test_rule_file_spellings(written: str, name: str) -> None:
    assert normalized(written) == name


def test_the_same_symbol_of_two_markets_is_two_partitions_apart_or_not_but_two_names() -> None:
    # Partitions hash the whole name: spot BTCUSDT and usdm:BTCUSDT are placed independently.
    assert partition_of("BTCUSDT") == partition_of("btcusdt")
    assert qualified("usdm", "BTCUSDT") != "BTCUSDT"
    assert isinstance(partition_of("usdm:BTCUSDT"), int)
