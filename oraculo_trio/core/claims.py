"""Which partitions a process should own: fixed splits between workers, fair shares in a cluster.

Pure decisions, no I/O: :mod:`oraculo_trio.pipeline.partitions` asks PostgreSQL who is alive
and which partitions are taken, then asks :func:`plan_claims` what to do about it.

A cluster member's fair share is ``ceil(P / members)``: the shares add up to at least P, so
every partition finds an owner, and nobody holds more than one partition above anybody else
once the cluster is settled. Each member walks the partitions in its own rotation (starting
at a point fixed by its id), so members starting together mostly try different partitions.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence

import attrs

from oraculo_trio.core.sharding import partition_of, stable_hash


@attrs.frozen
class ClaimPlan:
    """What one member should do this round.

    Attributes:
        claim: free partitions to try to lock, in order of preference.
        release: owned partitions to hand back (this member holds more than its share).
        target: the fair share these claims aim at.
    """

    claim: tuple[int, ...] = ()
    release: tuple[int, ...] = ()
    target: int = 0


def fair_share(partitions: int, members: int) -> int:
    """``ceil(partitions / members)``; every partition when ``members`` is 0 or 1."""
    return math.ceil(partitions / max(1, members))


def preference(instance_id: str, partitions: int) -> list[int]:
    """Every partition once, in the order ``instance_id`` prefers them (a fixed rotation)."""
    start = stable_hash(instance_id) % partitions
    return [(start + i) % partitions for i in range(partitions)]


def plan_claims(
    owned: Collection[int],
    taken: Collection[int],
    members: int,
    order: Sequence[int],
) -> ClaimPlan:
    """Decide one round of a member of the cluster.

    Args:
        owned: partitions this member holds.
        taken: partitions other members hold.
        members: live members, this one included.
        order: this member's :func:`preference` (every partition once).

    Returns:
        Partitions to claim when below the fair share, partitions to release (the least
        preferred first) when above it; nothing when at it.
    """
    target = fair_share(len(order), members)
    if len(owned) > target:
        excess = len(owned) - target
        least_preferred = [p for p in reversed(order) if p in owned]
        return ClaimPlan(release=tuple(least_preferred[:excess]), target=target)
    if len(owned) < target:
        free = [p for p in order if p not in owned and p not in taken]
        return ClaimPlan(claim=tuple(free[: target - len(owned)]), target=target)
    return ClaimPlan(target=target)


def worker_partitions(worker: int, workers: int, partitions: int) -> frozenset[int]:
    """The fixed partitions of worker ``worker`` of ``workers`` (no coordinator needed)."""
    return frozenset(p for p in range(partitions) if p % workers == worker)


def symbols_of(symbols: Iterable[str], owned: Collection[int], partitions: int) -> tuple[str, ...]:
    """The symbols (in their given order) whose partition is in ``owned``."""
    return tuple(s for s in symbols if partition_of(s, partitions) in owned)
