"""Diff books kept in sync the way Binance specifies: one pure state machine per symbol.

Binance's procedure for a local book from a diff stream (``@depth``/``@depth@100ms``):

1. buffer the stream's diffs and note the ``U`` of the first one buffered;
2. fetch a REST snapshot (``GET /api/v3/depth``), elsewhere, never in the read loop;
3. if the snapshot cannot join the buffer (spot: ``lastUpdateId + 1`` < that first ``U``),
   fetch it again;
4. drop the buffered diffs the snapshot holds (``u`` <= ``lastUpdateId``); the book is the
   snapshot, its local id ``lastUpdateId``; apply the rest of the buffer, then every diff
   that comes:
5. a diff with ``u`` <= the local id is ignored (the book already holds it);
6. a diff with ``U`` > local id + 1 means updates were lost: resync THAT symbol (1 again);
7. otherwise set each level (quantity 0 removes it) and make ``u`` the local id.

Futures (USD-M ``/fapi/v1/depth``, COIN-M ``/dapi/v1/depth``) differ, because their update
ids are shared by every symbol of the matching engine, so ``U`` is not the previous ``u + 1``
(``chained`` syncs): a diff carries ``pu``, the ``u`` of the symbol's previous diff. Buffered
diffs with ``u`` < ``lastUpdateId`` are dropped; the first one applied must span the
snapshot (``U`` <= ``lastUpdateId`` <= ``u``; a later one means the snapshot is too old, unless
its ``pu`` is ``lastUpdateId``: it continues right from the snapshot); from then on each diff
must have ``pu`` == the local id, or the symbol resyncs (``gap``).

:class:`BookSync` is that procedure for one symbol, as a table (:data:`TRANSITIONS`) of
``(state, signal) -> state`` driven by the same :class:`~oraculo_trio.core.machines.Machine`
as the alert lifecycle. It never does I/O: it says when a snapshot is wanted
(:attr:`Step.request`) and takes it when the caller brings it. Two checks of ours come on
top: a book left crossed (best bid >= best ask) by a diff resyncs too, and while syncing a
diff that does not follow the buffer's last one restarts the buffer at it (no snapshot could
use the older ones with it).

Every diff handed to a sync ends exactly once in the accounting (``docs/architecture.md``):
applied to a book that is live afterwards (:attr:`Step.applied`, or the diff itself for
``apply``); ``superseded`` (:attr:`Step.superseded`): a snapshot, the book or the buffer
holds it already (``u`` <= ``lastUpdateId``, a duplicate), or a book it was applied to was
dropped and the snapshot to come holds it; or ``unsynced`` (:attr:`Step.unsynced`): it was
discarded while the symbol waited for a snapshot that never took it (the buffer restarted,
overflowed, or the consumer stopped). Until then it waits in the buffer.

The book cannot see levels deeper than the snapshot's ``limit`` until a diff touches them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

import attrs

from oraculo_trio.core.book import OrderBook
from oraculo_trio.core.events import DEPTH, DepthDiff, Level
from oraculo_trio.core.machines import Machine

SYNCING = "syncing"
LIVE = "live"
BOOK_STATES = (SYNCING, LIVE)
"""A diff book is ``syncing`` (buffering, its rules paused) or ``live`` (the ``state`` label of
``oraculo_book_symbols``)."""

# Signals: what a diff or a snapshot turned out to be.
BUFFER = "buffer"  # syncing: the diff waits for the snapshot
BUFFER_RESTART = "buffer_restart"  # syncing: it does not follow the buffer: buffer restarts at it
OLD = "old"  # u <= the local id (or the buffer's last u): already held
APPLY = "apply"  # live: applied
GAP = "gap"  # live: U > local id + 1
CROSSED = "crossed"  # live: the book is crossed after it
SNAPSHOT_STALE = "snapshot_stale"  # lastUpdateId < first buffered U: fetch again
SNAPSHOT_APPLIED = "snapshot_applied"  # the book is the snapshot plus the buffer's later diffs
SNAPSHOT_IGNORED = "snapshot_ignored"  # not the snapshot this sync is waiting for
SHED = "shed"  # behind its feed: the book and its backlog dropped for a fresh snapshot
SIGNALS = (
    BUFFER, BUFFER_RESTART, OLD, APPLY, GAP, CROSSED,
    SNAPSHOT_STALE, SNAPSHOT_APPLIED, SNAPSHOT_IGNORED, SHED,
)  # fmt: skip

RESYNC_REASONS = (GAP, CROSSED, SNAPSHOT_STALE, SHED)
"""Why a snapshot is fetched again (the ``reason`` label of ``oraculo_book_resyncs_total``)."""

TRANSITIONS: Mapping[tuple[str, str], str] = {
    (SYNCING, BUFFER): SYNCING,
    (SYNCING, BUFFER_RESTART): SYNCING,
    (SYNCING, OLD): SYNCING,
    (SYNCING, SNAPSHOT_STALE): SYNCING,
    (SYNCING, SNAPSHOT_APPLIED): LIVE,
    (SYNCING, SNAPSHOT_IGNORED): SYNCING,
    (LIVE, APPLY): LIVE,
    (LIVE, OLD): LIVE,
    (LIVE, GAP): SYNCING,
    (LIVE, CROSSED): SYNCING,
    (LIVE, SNAPSHOT_IGNORED): LIVE,
    (LIVE, SHED): SYNCING,
    (SYNCING, SHED): SYNCING,
}

BOOK_SYNC = Machine("book-sync", SYNCING, BOOK_STATES, SIGNALS, TRANSITIONS)
"""One symbol's sync; :meth:`Machine.next_state` moves it (as it does the alert lifecycle)."""

MAX_BUFFERED = 1000
"""Diffs a syncing symbol holds at most (100 s of ``@depth@100ms``); beyond it the oldest is
dropped, counted as ``overflow`` (load shed on purpose): a snapshot requested while they were
buffered is newer than they are, so the book does not need them."""


@attrs.frozen(slots=True)
class BookSnapshot:
    """A REST depth snapshot on its way to the shard whose sync asked for it.

    Not a frame read from the feed: the shard's consumer hands it to the sync and it is not
    counted in the accounting.
    """

    symbol: str
    request_id: int
    last_update_id: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    latency: float = 0.0

    stream = DEPTH
    event_time_ms = None


@attrs.frozen(slots=True)
class Step:
    """What one diff or snapshot did to a sync.

    Attributes:
        signal: the table's signal (for a snapshot, the snapshot's own).
        state: the state afterwards.
        applied: diffs of the buffer applied after a snapshot, to a book that is live now
            (a live diff applied on its own is signalled ``apply`` with ``applied`` empty).
        superseded: diffs discarded because the book, the buffer or the snapshot holds them.
        overflow: diffs dropped on purpose: past the buffer's bound, or shed by a resync of
            a book too far behind its feed.
        unsynced: diffs discarded while syncing, before any snapshot took them.
        resync: set when a snapshot must be fetched again: ``gap``, ``crossed`` or
            ``snapshot_stale``.
        request: the id of a snapshot request to send (the snapshot must carry it back).
        synced_after: seconds from the start of the sync to live, when this step ended it.
        initial: whether that sync was the symbol's first (not a resync).
    """

    signal: str
    state: str
    applied: tuple[DepthDiff, ...] = ()
    superseded: int = 0
    overflow: int = 0
    resync: str | None = None
    request: int | None = None
    synced_after: float | None = None
    initial: bool = False
    unsynced: int = 0


# The steps of the hot path, allocated once.
APPLIED = Step(APPLY, LIVE)
_OLD_LIVE = Step(OLD, LIVE, superseded=1)
_OLD_SYNCING = Step(OLD, SYNCING, superseded=1)
_BUFFERED = Step(BUFFER, SYNCING)
_BUFFERED_DROPPING_OLDEST = Step(BUFFER, SYNCING, overflow=1)


@attrs.define(eq=False, slots=True)
class BookSync:
    """One symbol's diff book and the procedure that keeps it equal to the exchange's.

    Feed it every diff of the symbol in stream order (:meth:`on_diff`) and the snapshots it
    asks for (:meth:`on_snapshot`); act on the returned :class:`Step`. ``now`` is any
    monotonic clock in seconds (it only times the syncs).

    Attributes:
        book: the book; empty while syncing, the exchange's book (down to the snapshot's
            depth) while live.
        chained: futures: diffs continue on ``pu`` (see the module docstring); spot: on
            ``U`` = previous ``u`` + 1.
        state: ``syncing`` or ``live``.
        buffer: diffs waiting for the snapshot, contiguous.
        first_update_id: ``U`` of the buffer's first diff.
        request_id: id of the latest snapshot request; ``requested`` while it is out.
        resyncs: how many times a snapshot was fetched again.
        joined: chained books: whether a diff spanning the snapshot was applied yet.
    """

    symbol: str
    max_buffered: int = MAX_BUFFERED
    chained: bool = False
    book: OrderBook = attrs.field(
        default=attrs.Factory(lambda self: OrderBook(self.symbol), takes_self=True)
    )
    state: str = SYNCING
    buffer: deque[DepthDiff] = attrs.field(factory=deque)
    first_update_id: int | None = None
    request_id: int = 0
    requested: bool = False
    resyncs: int = 0
    syncing_since: float | None = None
    live_once: bool = False
    joined: bool = True

    def on_diff(self, diff: DepthDiff, now: float) -> Step:
        """Take the symbol's next diff from the stream.

        Returns:
            :data:`APPLIED` (the common case: the diff is in the live book), or the step
            that buffered, ignored or resynced.
        """
        if self.state == LIVE:
            book = self.book
            local = book.last_update_id
            if not self.joined:
                return self._join(diff, now)
            if diff.final_update_id <= local:
                return _OLD_LIVE
            if self.chained:
                if diff.previous_update_id != local:
                    return self._resync(GAP, now, diff)
            elif diff.first_update_id > local + 1:
                return self._resync(GAP, now, diff)
            book.apply_diff(diff.bids, diff.asks, diff.final_update_id)
            if book.is_crossed():
                return self._resync(CROSSED, now, None, superseded=1)
            return APPLIED
        return self._buffer(diff, now)

    def on_snapshot(
        self,
        request_id: int,
        last_update_id: int,
        bids: tuple[Level, ...],
        asks: tuple[Level, ...],
        now: float,
    ) -> Step:
        """Take a REST snapshot: refetch, or become live from it and the buffer.

        Args:
            request_id: the id of the request it answers (:attr:`Step.request`).
            last_update_id: the snapshot's ``lastUpdateId``.
            bids: its levels (any order).
            asks: likewise.
            now: monotonic seconds.

        Returns:
            ``snapshot_ignored`` (not the snapshot waited for), ``snapshot_stale`` (older than
            the buffer: a new request), or ``snapshot_applied`` with the buffered diffs
            applied and superseded (and a new resync if one of them gapped or crossed).
        """
        if self.state != SYNCING or not self.requested or request_id != self.request_id:
            return Step(SNAPSHOT_IGNORED, BOOK_SYNC.next_state(self.state, SNAPSHOT_IGNORED))
        self.requested = False
        buffer = self.buffer
        # Diffs the snapshot holds: spot u <= lastUpdateId; futures u < lastUpdateId (the
        # diff ending at lastUpdateId is the first one applied: it spans the snapshot).
        held = last_update_id if not self.chained else last_update_id - 1
        superseded = 0
        while buffer and buffer[0].final_update_id <= held:
            buffer.popleft()
            superseded += 1
        if buffer and self._too_old(last_update_id, buffer[0]):
            self.state = BOOK_SYNC.next_state(self.state, SNAPSHOT_STALE)
            self.resyncs += 1
            return Step(
                SNAPSHOT_STALE,
                self.state,
                superseded=superseded,
                resync=SNAPSHOT_STALE,
                request=self._request(),
            )
        self.book.apply_snapshot(bids, asks, last_update_id)
        self.state = BOOK_SYNC.next_state(self.state, SNAPSHOT_APPLIED)
        self.joined = not self.chained
        if self.book.is_crossed():
            step = self._resync(CROSSED, now, None)
            return Step(
                SNAPSHOT_APPLIED,
                step.state,
                superseded=superseded,
                resync=CROSSED,
                request=step.request,
            )
        return self._replay(superseded, now)

    def shed(self, now: float) -> Step:
        """Drop the book and whatever waits in the buffer, and ask for a fresh snapshot: the
        symbol is too far behind its feed to be worth catching up diff by diff. The diffs
        still to come that the snapshot holds are superseded (:attr:`caught_up_to`)."""
        dropped = len(self.buffer)
        self.buffer.clear()
        self.requested = False
        step = self._resync(SHED, now, None)
        request = step.request if step.request is not None else self._request()
        return Step(SHED, self.state, overflow=dropped, resync=SHED, request=request)

    def discard(self) -> int:
        """Forget the buffer (the consumer is stopping); returns how many diffs it held
        (``unsynced``: no snapshot took them)."""
        held = len(self.buffer)
        self.buffer.clear()
        return held

    # -- internals --------------------------------------------------------------------------

    def _too_old(self, last_update_id: int, first: DepthDiff) -> bool:
        """Whether a snapshot misses updates before the buffer's first diff (after the
        diffs it holds were dropped)."""
        if self.chained:
            # A first diff continuing right from the snapshot (pu = lastUpdateId) joins it
            # exactly, as spot's U = lastUpdateId + 1 does.
            return (
                first.first_update_id > last_update_id
                and first.previous_update_id != last_update_id
            )
        # Spot: a snapshot that ends right before the first diff joins it exactly.
        return first.first_update_id > last_update_id + 1

    def _join(self, diff: DepthDiff, now: float) -> Step:
        """A chained book's first diff after its snapshot: it must span ``lastUpdateId``."""
        book = self.book
        local = book.last_update_id
        if diff.final_update_id < local:
            return _OLD_LIVE
        if diff.first_update_id > local and diff.previous_update_id != local:
            return self._resync(GAP, now, diff)
        self.joined = True
        book.apply_diff(diff.bids, diff.asks, diff.final_update_id)
        if book.is_crossed():
            return self._resync(CROSSED, now, None, superseded=1)
        return APPLIED

    def _replay(self, superseded: int, now: float) -> Step:
        """Apply the buffer to the book the snapshot made live."""
        buffer = self.buffer
        applied: list[DepthDiff] = []
        while buffer:
            diff = buffer.popleft()
            step = self.on_diff(diff, now)
            if step is APPLIED:
                applied.append(diff)
            elif step.signal == OLD:
                superseded += 1
            else:
                # Gap or crossed: the book is gone again, and the diffs applied to it with it.
                return Step(
                    SNAPSHOT_APPLIED,
                    step.state,
                    superseded=superseded + len(applied) + step.superseded,
                    resync=step.resync,
                    request=step.request,
                )
        since = self.syncing_since
        initial = not self.live_once
        self.syncing_since = None
        self.live_once = True
        self.first_update_id = None
        return Step(
            SNAPSHOT_APPLIED,
            self.state,
            applied=tuple(applied),
            superseded=superseded,
            synced_after=None if since is None else now - since,
            initial=initial,
        )

    def _request(self) -> int:
        self.request_id += 1
        self.requested = True
        return self.request_id

    def _follows(self, diff: DepthDiff, last: DepthDiff) -> bool:
        if self.chained:
            return diff.previous_update_id == last.final_update_id
        return diff.first_update_id <= last.final_update_id + 1

    def _buffer(self, diff: DepthDiff, now: float) -> Step:
        buffer = self.buffer
        if self.syncing_since is None:
            self.syncing_since = now
        if buffer:
            last = buffer[-1]
            if diff.final_update_id <= last.final_update_id:
                self.state = BOOK_SYNC.next_state(self.state, OLD)
                return _OLD_SYNCING
            if not self._follows(diff, last):
                self.state = BOOK_SYNC.next_state(self.state, BUFFER_RESTART)
                dropped = len(buffer)
                buffer.clear()
                buffer.append(diff)
                self.first_update_id = diff.first_update_id
                return Step(BUFFER_RESTART, self.state, unsynced=dropped)
            buffer.append(diff)
            if len(buffer) > self.max_buffered:
                buffer.popleft()
                self.first_update_id = buffer[0].first_update_id
                return _BUFFERED_DROPPING_OLDEST
            return _BUFFERED
        self.state = BOOK_SYNC.next_state(self.state, BUFFER)
        buffer.append(diff)
        self.first_update_id = diff.first_update_id
        if self.requested:
            return _BUFFERED
        return Step(BUFFER, self.state, request=self._request())

    def _resync(self, reason: str, now: float, keep: DepthDiff | None, superseded: int = 0) -> Step:
        """Drop the book; start buffering at ``keep`` (the diff after the gap) if given."""
        self.state = BOOK_SYNC.next_state(self.state, reason)
        self.resyncs += 1
        self.book.clear()
        self.joined = not self.chained
        if self.syncing_since is None:
            self.syncing_since = now
        buffer = self.buffer
        if keep is not None:
            buffer.appendleft(keep)
        if not buffer:
            # Binance's order: buffer first, then ask; the next diff asks.
            self.first_update_id = None
            return Step(reason, self.state, superseded=superseded, resync=reason)
        self.first_update_id = buffer[0].first_update_id
        request = None if self.requested else self._request()
        return Step(reason, self.state, superseded=superseded, resync=reason, request=request)


def merge_depth(old: object, new: object) -> object:
    """Merge two waiting depth messages of one symbol (the shard's conflation buffer).

    Two diffs become one spanning both: levels of the later (by update id) win, no level is
    lost. When an update is missing between them (spot: a gap in ``U``/``u``; futures: the
    later's ``pu`` is not the earlier's ``u``) only the later one is kept: its book resyncs
    at it, and that snapshot holds the earlier one. Anything else keeps the newest message.
    """
    if type(old) is not DepthDiff or type(new) is not DepthDiff:
        return new
    first, last = (old, new) if old.final_update_id <= new.final_update_id else (new, old)
    previous = last.previous_update_id
    if previous is None:
        if last.first_update_id > first.final_update_id + 1:
            return last
    elif previous != first.final_update_id:
        return last
    return DepthDiff(
        new.symbol,
        min(first.first_update_id, last.first_update_id),
        last.final_update_id,
        _merge_levels(first.bids, last.bids),
        _merge_levels(first.asks, last.asks),
        new.event_time_ms,
        new.received_at,
        new.received_wall,
        first.previous_update_id,
    )


class PendingDiff:
    """Diffs of one symbol merged while they wait for a full shard channel to drain.

    The same result as folding :func:`merge_depth` over them, at the cost of each new diff's
    levels only: the levels wait in two dicts, and a diff is built once, when the consumer
    takes it (:meth:`event`). A merge of accumulated levels would cost the whole merged book
    per new diff, which is what a service behind its feed cannot afford.
    """

    __slots__ = ("asks", "bids", "first", "last", "newest")

    def __init__(self, diff: DepthDiff) -> None:
        self.first = diff.first_update_id
        self.last = diff.final_update_id
        self.bids = dict(diff.bids)
        self.asks = dict(diff.asks)
        self.newest = diff

    def add(self, diff: DepthDiff) -> None:
        """Merge ``diff``, the next one of this symbol to arrive."""
        if diff.first_update_id > self.last + 1:
            # An update is missing: only the later diff is kept (its book resyncs at it).
            self.__init__(diff)
        elif diff.final_update_id > self.last and diff.first_update_id >= self.first:
            self.last = diff.final_update_id
            if diff.bids:
                self.bids.update(diff.bids)
            if diff.asks:
                self.asks.update(diff.asks)
            self.newest = diff
        else:
            # Out of order (never from one connection): merge by update id, the slow way.
            self.__init__(merge_depth(self.event(), diff))

    def event(self) -> DepthDiff:
        """The merged diff: from the first diff's ``U`` to the last one's ``u``, with the
        newest diff's event time and read stamps."""
        newest = self.newest
        return DepthDiff(
            newest.symbol,
            self.first,
            self.last,
            tuple(self.bids.items()),
            tuple(self.asks.items()),
            newest.event_time_ms,
            newest.received_at,
            newest.received_wall,
        )


def _merge_levels(first: tuple[Level, ...], last: tuple[Level, ...]) -> tuple[Level, ...]:
    if not first:
        return last
    if not last:
        return first
    merged = dict(first)
    merged.update(last)
    return tuple(merged.items())
