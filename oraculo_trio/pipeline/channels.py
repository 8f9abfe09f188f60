"""The shard channels' two helpers: waiting for room, and counting what is in flight.

A channel of the pipeline holds messages read and not yet decided; the accounting
(``docs/architecture.md``) counts them as ``in_flight``. For that count to be exact at any
moment, a message must always be somewhere it can be counted: in its sender's hands or in
the channel. Trio's ``await send()`` on a full channel leaves it in between (a consumer's
``receive`` moves it into the buffer before the sender runs again), so senders that wait
for room here retry ``send_nowait`` instead, woken by the consumer after each batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import attrs
import trio

from oraculo_trio.core.events import DEPTH, TRADE


@attrs.define(eq=False)
class Room:
    """Wakes whoever waits for room in one shard channel: the channel's consumer notifies it
    after each batch it takes. A waiting sender retries ``send_nowait``, so a message is
    always either in its sender's hands or in the channel, never between the two (which
    the accounting could not see)."""

    _event: trio.Event | None = None
    receiving: bool = False
    """True while the channel's consumer waits in ``receive()``. Trio hands a message sent
    then straight to it (or, when one was queued, keeps it in the consumer's hands over a
    checkpoint): for a moment the message is in neither the channel nor a batch."""

    def notify(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None

    async def wait(self) -> None:
        """Return after the consumer's next batch.

        Cancellation: safe; nothing is taken.
        """
        if self._event is None:
            self._event = trio.Event()
        await self._event.wait()


async def send_when_room(sender: trio.MemorySendChannel, room: Room, item: object) -> None:
    """Put ``item`` in ``sender``'s channel, waiting for room as long as it takes.

    Raises:
        trio.BrokenResourceError: the consumer is gone.

    Cancellation: ``item`` is not sent; shield the call to make sure it is.
    """
    while True:
        try:
            sender.send_nowait(item)
            return
        except trio.WouldBlock:
            await room.wait()


@attrs.define(eq=False)
class InFlight:
    """Where the messages read and not yet evaluated or dropped wait, per stream: what the
    ledger counts as ``in_flight`` at each capture (between two task steps).

    Attributes:
        channels: the shard channels' receive ends, per stream.
        buffers: the depth conflation buffers (one waiting message per symbol).
        books: the diff books' sync buffers (``buffered()`` diffs waiting for a snapshot).
        readers: ``(stream, held)`` of each feed connection reading: ``held()`` counts the
            frames of its read-ahead not yet handed on.
        snapshots_in_channels: how many of the depth channels' items are REST snapshots,
            which are not frames.
    """

    channels: dict[str, Sequence[tuple[trio.MemoryReceiveChannel, Room]]] = attrs.field(
        factory=dict
    )
    buffers: Sequence[object] = ()
    books: Sequence[object] = ()
    readers: list[tuple[str, Callable[[], int]]] = attrs.field(factory=list)
    snapshots_in_channels: Callable[[], int] = lambda: 0

    def count(self) -> dict[str, int]:
        counts = {DEPTH: 0, TRADE: 0}
        for stream, receivers in self.channels.items():
            counts[stream] += sum(_queued(receiver, room) for receiver, room in receivers)
        counts[DEPTH] += sum(map(len, self.buffers)) - self.snapshots_in_channels()
        counts[DEPTH] += sum(books.buffered() for books in self.books)
        for stream, held in self.readers:
            counts[stream] += held()
        return counts


def _queued(receiver: trio.MemoryReceiveChannel, room: Room) -> int:
    """Items in ``receiver``'s channel, and the one on its way to a waiting consumer: that
    consumer is no longer among the channel's waiting receivers, while senders remain."""
    stats = receiver.statistics()
    handed = room.receiving and stats.tasks_waiting_receive == 0 and stats.open_send_channels > 0
    return stats.current_buffer_used + handed


BEHIND_HOLD = 1.0
"""Seconds a full read-ahead keeps the service counted as behind its feed."""


@attrs.define(eq=False)
class FeedPressure:
    """Whether the feed's readers found their read-ahead full lately: the kernel held more
    than a read takes, so a backlog waits in the service's own hands. Old messages that
    arrive without it were late at the sender: skipping ours would not catch up with them.
    """

    behind_until: float = -math.inf

    def read(self, full: bool, now: float) -> None:
        if full:
            self.behind_until = now + BEHIND_HOLD

    def behind(self, now: float) -> bool:
        return now < self.behind_until
