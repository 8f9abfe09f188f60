"""Stable symbol placement: partitions (shared by processes and hosts) and shards (in a process).

``stable_hash`` must give the same value in every process, on every host and in every run,
so Python's salted ``hash()`` is out. CRC-32 of the upper-cased symbol is fast and fixed.
"""

from __future__ import annotations

import zlib

PARTITIONS = 64
"""Fixed partition count: partition p = h % 64 is what processes and hosts claim."""


def stable_hash(symbol: str) -> int:
    """Return a 32-bit hash of ``symbol`` that never changes between runs or hosts."""
    return zlib.crc32(symbol.upper().encode("ascii"))


def partition_of(symbol: str, partitions: int = PARTITIONS) -> int:
    """Return the partition that owns ``symbol``."""
    return stable_hash(symbol) % partitions


def shard_of(symbol: str, shards: int, partitions: int = PARTITIONS) -> int:
    """Return the shard inside one process for ``symbol``.

    Uses ``(h // partitions) % shards`` rather than ``h % shards`` so that a process owning
    only some partitions still spreads its symbols over every shard.
    """
    return (stable_hash(symbol) // partitions) % shards
