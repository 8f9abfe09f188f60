import pytest

from oraculo_trio.core.sharding import PARTITIONS, partition_of, shard_of, stable_hash

# Known values: a change here moves every symbol to another shard or partition, which a
# running fleet must never see between versions.
KNOWN = [
    # symbol, crc32, partition, shard of 4
    ("BTCUSDT", 2895029187, 3, 3),
    ("ETHUSDT", 519679068, 28, 1),
    ("SOLUSDT", 2254852400, 48, 0),
    ("BNBUSDT", 866364302, 14, 2),
    ("NKNUSDT", 1631501640, 8, 1),
    ("XRPUSDT", 2654563852, 12, 0),
]


@pytest.mark.parametrize(("symbol", "hashed", "partition", "shard"), KNOWN)
def test_known_placements(symbol: str, hashed: int, partition: int, shard: int) -> None:
    assert stable_hash(symbol) == hashed
    assert partition_of(symbol) == partition
    assert shard_of(symbol, 4) == shard


def test_case_does_not_matter() -> None:
    assert stable_hash("btcusdt") == stable_hash("BTCUSDT")


def test_every_shard_gets_symbols_inside_one_partition_owner() -> None:
    # A process that owns only partition 3 must still spread its symbols over all shards.
    symbols = [f"SYM{i}USDT" for i in range(20000)]
    owned = [s for s in symbols if partition_of(s) == 3]
    assert {shard_of(s, 4) for s in owned} == {0, 1, 2, 3}
    assert PARTITIONS == 64
