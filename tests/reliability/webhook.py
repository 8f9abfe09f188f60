"""A webhook receiver on 127.0.0.1 whose behaviour a scenario switches at any time: the
dispatch tests' :class:`~tests.dispatch.receiver.Receiver` with two more modes.

Modes: ``ok`` (200), ``error`` (500), ``slow`` (200 after ``slow_delay`` seconds), ``hang``
(never answers), ``drop`` (closes the connection without answering) and ``refuse`` (nothing
listens on the port: new connections are refused, open ones are closed at their next
request).
"""

from __future__ import annotations

from typing import Any

import attrs
import trio

from tests.dispatch.receiver import Receiver

MODES = ("ok", "error", "slow", "hang", "drop", "refuse")


@attrs.define(eq=False)
class Webhook(Receiver):
    """Start it with ``webhook = await nursery.start(Webhook().serve)``; ``url`` is set.

    Attributes:
        requests, bodies: every request read, and its JSON body (answered or not).
        delivered: the bodies of the requests answered 200, in order.
    """

    slow_delay: float = 1.0
    port: int = 0
    delivered: list[Any] = attrs.field(factory=list)
    _listening: trio.CancelScope | None = None
    _nursery: trio.Nursery | None = None

    async def serve(self, *, task_status: trio.TaskStatus[Webhook] = trio.TASK_STATUS_IGNORED):
        """Listen (and answer) until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self._listen)
            self.url = f"http://127.0.0.1:{self.port}/hooks/oraculo"
            task_status.started(self)
            await trio.sleep_forever()  # the listener may come and go (refuse)

    async def set_mode(self, mode: str) -> None:
        """Switch behaviour; ``refuse`` closes the listening socket, leaving it reopens it."""
        assert mode in MODES, mode
        if mode == "refuse" and self._listening is not None:
            self._listening.cancel()
            self._listening = None
        elif mode != "refuse" and self._listening is None:
            assert self._nursery is not None
            await self._nursery.start(self._listen)
        self.mode = mode

    async def wait_delivered(self, count: int) -> None:
        while len(self.delivered) < count:
            await self._changed.wait()

    async def _listen(self, *, task_status: trio.TaskStatus[Any]) -> None:
        with trio.CancelScope() as scope:
            self._listening = scope
            listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
            self.port = listeners[0].socket.getsockname()[1]
            # Handlers live in the outer nursery: refusing closes the listener, not the
            # connections, which finish their request first (see _answer).
            await trio.serve_listeners(
                self._handle, listeners, handler_nursery=self._nursery, task_status=task_status
            )

    async def _answer(self) -> int | None:
        # Receiver._handle appended this request's body just before calling us.
        body = self.bodies[-1]
        mode = self.mode
        if mode in ("drop", "refuse"):
            # Closed once the whole request was read: a client never has its request cut
            # short (httpx would leave its body's generator unfinished).
            return None
        if mode == "hang":
            await trio.sleep_forever()
        if mode == "slow":
            await trio.sleep(self.slow_delay)
        if mode == "error":
            return 500
        self.delivered.append(body)
        self._notify()
        return 200
