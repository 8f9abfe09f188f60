"""PostgreSQL as the cluster's coordinator: partition claims held as advisory locks.

Each instance keeps ONE dedicated session (never a pooled connection: a session-level
advisory lock belongs to the session that took it). In it the instance holds:

- a membership lock ``(members namespace, hash(instance_id))`` for as long as it lives; the
  number of such locks in ``pg_locks`` is the number of live instances;
- one lock ``(partitions namespace, p)`` per partition ``p`` it owns.

When a session ends (graceful exit, crash, SIGKILL, or a vanished host whose TCP keepalives
go unanswered) PostgreSQL drops its locks: that is the whole failure detector, there is no
protocol of our own. Namespaces derive from ``service.name``, so two clusters can share a
database. Any failed or timed-out statement terminates the session on purpose: its locks
must not outlive our belief that we hold them.

Like :mod:`oraculo_trio.store.postgres`, triopg runs on a trio-asyncio loop that this module
opens and enters around every call.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import attrs
import trio
import trio_asyncio
import triopg

from oraculo_trio.core.sharding import stable_hash
from oraculo_trio.errors import StoreError, StoreUnavailable
from oraculo_trio.store.base import mask_dsn
from oraculo_trio.store.postgres import (
    CLOSE_TIMEOUT,
    _classify,
    _close_asyncpg_pool,
    _only_exception,
)

LOGGER = logging.getLogger("oraculo_trio.store.coordination")

T = TypeVar("T")

APPLICATION_PREFIX = "oraculo-trio-claims:"
"""``application_name`` of a claims session is this prefix and the instance id."""

_INT4 = 0x7FFFFFFF

# Advisory locks taken with two int4 keys show in pg_locks with objsubid = 2.
_VIEW = """
SELECT classid::int8 AS ns, objid::int8 AS key, pid = pg_backend_pid() AS mine
FROM pg_locks
WHERE locktype = 'advisory' AND granted AND objsubid = 2
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND classid::int8 IN ($1::int8, $2::int8)
"""

# Every partition of the list is tried once; the ones locked now are returned.
_CLAIM = "SELECT p FROM unnest($2::int4[]) AS p WHERE pg_try_advisory_lock($1::int4, p)"

_RELEASE = "SELECT count(*) FROM unnest($2::int4[]) AS p WHERE pg_advisory_unlock($1::int4, p)"


def namespace(cluster: str, what: str) -> int:
    """The first advisory-lock key of ``what`` (``partitions``, ``members``) in ``cluster``."""
    return stable_hash(f"oraculo-trio/{cluster}/{what}") & _INT4


@attrs.frozen
class ClusterView:
    """What PostgreSQL says about the cluster right now.

    Attributes:
        members: live instances (membership locks held), this one included.
        mine: partitions this session holds.
        taken: partitions other sessions hold.
    """

    members: int
    mine: frozenset[int]
    taken: frozenset[int]


class PartitionLocks:
    """This instance's claims session. Open it with :func:`open_partition_locks`.

    Every method raises :class:`~oraculo_trio.errors.StoreUnavailable` when the session
    failed or a statement timed out; the session is then terminated (its locks are gone)
    and every later call raises too: open a new one.
    """

    def __init__(
        self,
        conn: Any,
        loop: Any,
        *,
        dsn: str,
        cluster: str,
        instance_id: str,
        statement_timeout: float,
    ) -> None:
        self._conn = conn
        self._loop = loop
        self.dsn = mask_dsn(dsn)
        self.instance_id = instance_id
        self.statement_timeout = statement_timeout
        self._partitions_ns = namespace(cluster, "partitions")
        self._members_ns = namespace(cluster, "members")
        self.broken = False
        self.lost = trio.Event()
        """Set when the session failed and was terminated."""

    async def view(self) -> ClusterView:
        """Read who holds what from ``pg_locks`` (also the heartbeat of the session).

        Cancellation: aborts the query and terminates the session.
        """
        rows = await self._run(
            "read pg_locks",
            lambda conn: conn.fetch(_VIEW, self._partitions_ns, self._members_ns),
        )
        members = sum(1 for r in rows if r["ns"] == self._members_ns)
        mine = frozenset(
            int(r["key"]) for r in rows if r["ns"] == self._partitions_ns and r["mine"]
        )
        taken = frozenset(
            int(r["key"]) for r in rows if r["ns"] == self._partitions_ns and not r["mine"]
        )
        return ClusterView(members, mine, taken)

    async def claim(self, partitions: Iterable[int]) -> frozenset[int]:
        """Try to lock each partition (never waiting); return those locked now.

        Only pass partitions this session does not hold: advisory locks count re-entries.

        Cancellation: aborts the statement and terminates the session (dropping every lock).
        """
        wanted = sorted(set(partitions))
        if not wanted:
            return frozenset()
        rows = await self._run(
            "claim partitions", lambda conn: conn.fetch(_CLAIM, self._partitions_ns, wanted)
        )
        return frozenset(int(r["p"]) for r in rows)

    async def release(self, partitions: Iterable[int]) -> None:
        """Unlock partitions this session holds.

        Cancellation: aborts the statement and terminates the session (dropping every lock).
        """
        held = sorted(set(partitions))
        if held:
            await self._run(
                "release partitions",
                lambda conn: conn.fetchval(_RELEASE, self._partitions_ns, held),
            )

    async def _join(self) -> bool:
        return await self._run(
            "join the cluster",
            lambda conn: conn.fetchval(
                "SELECT pg_try_advisory_lock($1::int4, $2::int4)",
                self._members_ns,
                stable_hash(self.instance_id) & _INT4,
            ),
        )

    async def _run(self, what: str, work: Callable[[Any], Awaitable[T]]) -> T:
        if self.broken:
            raise StoreUnavailable(f"the claims session on {self.dsn} was lost")
        token = trio_asyncio.current_loop.set(self._loop)
        try:
            with trio.fail_after(self.statement_timeout):
                return await work(self._conn)
        except trio.TooSlowError:
            self._terminate()
            raise StoreUnavailable(
                f"{what} timed out after {self.statement_timeout:g}s on {self.dsn}"
            ) from None
        except BaseException as exc:
            self._terminate()
            if isinstance(exc, Exception) and _classify(exc) is not None:
                raise StoreUnavailable(
                    f"{what} failed on {self.dsn}: {type(exc).__name__}: {exc}"
                ) from exc
            raise
        finally:
            trio_asyncio.current_loop.reset(token)

    def _terminate(self) -> None:
        # Closing politely would wait for the server; the point is to drop the locks now.
        self.broken = True
        self._conn._asyncpg_conn.terminate()
        self.lost.set()

    def _on_termination(self, conn: Any) -> None:
        # asyncpg calls this (on the loop, in the Trio thread) when the server ends the
        # session (restart, pg_terminate_backend, a dead connection): the locks went with it.
        if not self.broken:
            self.broken = True
            self.lost.set()

    async def _close(self) -> None:
        if self.broken:
            return
        self.broken = True
        raw = self._conn._asyncpg_conn
        with trio.CancelScope(shield=True):
            # The pool's bounded close serves a lone connection too (close, else terminate).
            await trio_asyncio.aio_as_trio(_close_asyncpg_pool)(raw, CLOSE_TIMEOUT)


@asynccontextmanager
async def open_partition_locks(
    url: str,
    *,
    cluster: str,
    instance_id: str,
    statement_timeout: float,
    keepalive: float,
) -> AsyncIterator[PartitionLocks]:
    """Open this instance's claims session and join the cluster; leave it on exit.

    Leaving closes the session, which releases every lock it holds.

    Args:
        url: ``postgresql://...`` (``database.url``).
        cluster: the cluster's name (``service.name``); separates lock namespaces.
        instance_id: unique among live instances (``cluster.instance_id``).
        statement_timeout: seconds for connecting and for each statement.
        keepalive: seconds of silence after which the server probes this session's TCP
            connection; a host that vanished loses its locks a few probes later.

    Raises:
        StoreUnavailable: the server cannot be reached, or ``instance_id`` is held by
            another live session (a previous run whose session has not ended yet).
        StoreError: bad credentials, unknown database or a malformed DSN.

    Cancellation: safe; closing is shielded and bounded.
    """
    try:
        async with trio_asyncio.open_loop() as loop:
            conn = await _connect(url, instance_id, statement_timeout, keepalive)
            locks = PartitionLocks(
                conn,
                loop,
                dsn=url,
                cluster=cluster,
                instance_id=instance_id,
                statement_timeout=statement_timeout,
            )
            conn._asyncpg_conn.add_termination_listener(locks._on_termination)
            try:
                if not await locks._join():
                    raise StoreUnavailable(
                        f"cluster.instance_id {instance_id!r} is held by another live session "
                        "(a previous run not gone yet, or two instances sharing an id)"
                    )
                yield locks
            finally:
                await locks._close()
    except BaseExceptionGroup as group:
        # trio-asyncio's nurseries wrap whatever crosses them in groups of one.
        only = _only_exception(group)
        if only is None:
            raise
        raise only from only.__cause__


async def _connect(url: str, instance_id: str, statement_timeout: float, keepalive: float) -> Any:
    """The claims session's connection (inside the trio-asyncio loop)."""
    dsn = mask_dsn(url)
    idle = max(1, math.ceil(keepalive))
    try:
        with trio.fail_after(statement_timeout):
            conn = triopg.connect(
                url,
                timeout=statement_timeout,
                server_settings={
                    "application_name": (APPLICATION_PREFIX + instance_id)[:63],
                    "statement_timeout": str(max(1, int(statement_timeout * 1000))),
                    "tcp_keepalives_idle": str(idle),
                    "tcp_keepalives_interval": str(max(1, idle // 3)),
                    "tcp_keepalives_count": "3",
                },
            )
            await conn.__aenter__()
            return conn
    except trio.TooSlowError:
        raise StoreUnavailable(
            f"claims session: connecting to {dsn} timed out after {statement_timeout:g}s"
        ) from None
    except Exception as exc:
        verdict = _classify(exc, connecting=True)
        if verdict is None:
            if isinstance(exc, ValueError):
                raise StoreError(f"database.url: cannot use {dsn}: {exc}") from exc
            raise
        error = StoreUnavailable if verdict[0] else StoreError
        raise error(f"claims session: cannot connect to {dsn}: {exc}") from exc
