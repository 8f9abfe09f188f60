"""Partition claims as PostgreSQL advisory locks (store/coordination.py), on a real server:
a partition is held by one session at a time, members are counted from pg_locks, and a
session that ends (closed or killed) hands everything back."""

from __future__ import annotations

import pytest
import trio

from oraculo_trio.errors import StoreUnavailable
from oraculo_trio.store.coordination import ClusterView, open_partition_locks
from tests.scaleout.cluster import TERMINATE_CLAIMS

pytestmark = pytest.mark.postgres


def session(url: str, name: str, cluster: str = "alerts"):
    return open_partition_locks(
        url, cluster=cluster, instance_id=name, statement_timeout=2.0, keepalive=5.0
    )


async def test_claims_are_exclusive_and_members_are_counted(pg_database_url: str) -> None:
    with trio.fail_after(20):
        async with session(pg_database_url, "a") as a, session(pg_database_url, "b") as b:
            assert await a.claim({0, 1, 2}) == {0, 1, 2}
            assert await b.claim({2, 3}) == {3}
            assert await a.view() == ClusterView(2, frozenset({0, 1, 2}), frozenset({3}))
            await a.release({1})
            assert await b.claim({1}) == {1}
            assert await b.view() == ClusterView(2, frozenset({1, 3}), frozenset({0, 2}))
            # Another cluster on the same database has its own partitions.
            async with session(pg_database_url, "c", cluster="other") as c:
                assert await c.claim({0, 1}) == {0, 1}
                assert (await c.view()).members == 1
        async with session(pg_database_url, "d") as d:
            assert await d.view() == ClusterView(1, frozenset(), frozenset())
            assert await d.claim(range(4)) == {0, 1, 2, 3}


async def test_an_instance_id_is_live_once(pg_database_url: str) -> None:
    with trio.fail_after(20):
        async with session(pg_database_url, "same"):
            with pytest.raises(StoreUnavailable, match="held by another live session"):
                async with session(pg_database_url, "same"):
                    pass


async def test_a_killed_session_loses_its_locks_and_says_so(pg_database_url: str) -> None:
    with trio.fail_after(20):
        async with session(pg_database_url, "a") as a, session(pg_database_url, "b") as b:
            assert await a.claim({5}) == {5}
            # What an instance looks like to the others once its process is gone.
            await b._run(
                "terminate a",
                lambda conn: conn.execute(TERMINATE_CLAIMS, "oraculo-trio-claims:a"),
            )
            assert await b.claim({5}) == {5}
            assert (await b.view()).members == 1
            with pytest.raises(StoreUnavailable):
                await a.view()
            assert a.lost.is_set()
            with pytest.raises(StoreUnavailable, match="was lost"):
                await a.claim({6})
