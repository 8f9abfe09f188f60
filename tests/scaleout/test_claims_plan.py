"""Claim planning (core/claims.py): fair shares, and a simulated cluster whose members join
and leave in any order always settles with every partition owned once."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oraculo_trio.core.claims import (
    fair_share,
    plan_claims,
    preference,
    symbols_of,
    worker_partitions,
)
from oraculo_trio.core.sharding import partition_of


@pytest.mark.parametrize(
    ("partitions", "members", "share"),
    [(64, 0, 64), (64, 1, 64), (64, 2, 32), (64, 3, 22), (64, 5, 13), (64, 64, 1), (64, 65, 1)],
)
def test_fair_share_is_the_ceiling(partitions: int, members: int, share: int) -> None:
    assert fair_share(partitions, members) == share


def test_preference_visits_every_partition_once_from_a_stable_start() -> None:
    order = preference("host-a", 64)
    assert sorted(order) == list(range(64))
    assert order == preference("host-a", 64)
    assert preference("host-b", 64)[0] != order[0]


def test_a_member_below_its_share_claims_free_partitions_in_its_order() -> None:
    order = list(range(8))
    plan = plan_claims(owned={0}, taken={1, 2}, members=2, order=order)
    assert plan.claim == (3, 4, 5) and plan.release == () and plan.target == 4


def test_a_member_above_its_share_releases_its_least_preferred() -> None:
    order = [4, 5, 6, 7, 0, 1, 2, 3]
    plan = plan_claims(owned=set(range(8)), taken=set(), members=3, order=order)
    assert plan.release == (3, 2, 1, 0, 7) and plan.claim == ()


def test_workers_split_partitions_disjointly() -> None:
    shares = [worker_partitions(i, 3, 64) for i in range(3)]
    assert set().union(*shares) == set(range(64))
    assert sum(len(s) for s in shares) == 64
    symbols = [f"SYM{i:03d}USDT" for i in range(40)]
    mine = symbols_of(symbols, shares[1], 64)
    assert mine and all(partition_of(s) % 3 == 1 for s in mine)


def settle(owners: dict[str, set[int]], partitions: int) -> int:
    """Run rounds (each member in turn, as PostgreSQL would serialise them) until nobody
    changes anything; return the rounds taken."""
    for rounds in range(1, 50):
        changed = False
        for name, owned in owners.items():
            taken = set().union(*(o for n, o in owners.items() if n != name))
            plan = plan_claims(owned, taken, len(owners), preference(name, partitions))
            if plan.release:
                owned.difference_update(plan.release)
                changed = True
            elif plan.claim:
                owned.update(plan.claim)  # free partitions only: each lock succeeds
                changed = True
        if not changed:
            return rounds
    raise AssertionError("the cluster never settled")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 7)), min_size=1, max_size=12),
    st.sampled_from([8, 64]),
)
def test_any_join_and_leave_sequence_settles_complete_and_fair(
    events: list[tuple[bool, int]], partitions: int
) -> None:
    owners: dict[str, set[int]] = {}
    for join, who in events:
        name = f"instance-{who}"
        if join:
            owners.setdefault(name, set())
        else:
            owners.pop(name, None)  # a crash or a shutdown: its locks go with it
        if not owners:
            continue
        assert settle(owners, partitions) <= 4
        shares = [len(o) for o in owners.values()]
        assert sum(shares) == partitions
        assert set().union(*owners.values()) == set(range(partitions))
        assert max(shares) <= math.ceil(partitions / len(owners))
