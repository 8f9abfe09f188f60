"""A webhook receiver on 127.0.0.1 whose behaviour a scenario switches at any time:
``ok`` (200), ``error`` (500), ``slow`` (200 after ``slow_delay`` seconds), ``hang`` (never
answers), ``drop`` (closes the connection without answering) and ``refuse`` (nothing listens
on the port: new connections are refused, open ones are closed at their next request)."""

from __future__ import annotations

import json
from typing import Any

import attrs
import h11
import trio

MODES = ("ok", "error", "slow", "hang", "drop", "refuse")


@attrs.define(eq=False)
class Webhook:
    """Start it with ``webhook = await nursery.start(Webhook().serve)``; ``url`` is set.

    Attributes:
        requests: requests read (every mode but ``refuse``).
        requested: the JSON bodies of every request read, answered or not.
        answered: requests answered 200.
        bodies: the JSON bodies of the requests answered 200, in order.
    """

    mode: str = "ok"
    slow_delay: float = 1.0
    url: str = ""
    port: int = 0
    requests: int = 0
    answered: int = 0
    requested: list[Any] = attrs.field(factory=list)
    bodies: list[Any] = attrs.field(factory=list)
    _listening: trio.CancelScope | None = None
    _nursery: trio.Nursery | None = None
    _changed: trio.Event = attrs.field(factory=trio.Event)

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

    async def wait_answered(self, count: int) -> None:
        while self.answered < count:
            await self._changed.wait()

    async def _listen(self, *, task_status: trio.TaskStatus[Any]) -> None:
        with trio.CancelScope() as scope:
            self._listening = scope
            listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
            self.port = listeners[0].socket.getsockname()[1]
            # Handlers live in the outer nursery: refusing closes the listener, not the
            # connections, which finish their request first (see _handle).
            await trio.serve_listeners(
                self._handle, listeners, handler_nursery=self._nursery, task_status=task_status
            )

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while True:
                body = b""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await stream.receive_some(65536)
                        if not data:
                            return
                        conn.receive_data(data)
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        return
                self.requests += 1
                self.requested.append(json.loads(body))
                mode = self.mode
                if mode in ("drop", "refuse"):
                    # Closed once the whole request was read: a client never has its request
                    # cut short (httpx would leave its body's generator unfinished).
                    return
                if mode == "hang":
                    await trio.sleep_forever()
                if mode == "slow":
                    await trio.sleep(self.slow_delay)
                status = 500 if mode == "error" else 200
                if status == 200:
                    self.answered += 1
                    self.bodies.append(json.loads(body))
                    self._changed.set()
                    self._changed = trio.Event()
                response = h11.Response(status_code=status, headers=[("content-length", "0")])
                await stream.send_all(conn.send(response) + conn.send(h11.EndOfMessage()))
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
