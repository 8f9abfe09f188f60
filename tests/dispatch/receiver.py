"""A real HTTP receiver on 127.0.0.1 for webhook tests, whose behaviour a test switches:
answer 200, answer 500, answer 400, hang (never answer until released), or drop the
connection without an answer."""

from __future__ import annotations

import json
from typing import Any

import attrs
import h11
import trio

OK = "ok"
ERROR = "error"  # HTTP 500
REJECT = "reject"  # HTTP 400
HANG = "hang"
DROP = "drop"


@attrs.define(eq=False)
class Receiver:
    """Counts requests and keeps each JSON body; ``mode`` decides the answer.

    Start it with ``receiver = await nursery.start(Receiver().serve)``.
    """

    mode: str = OK
    url: str = ""
    requests: int = 0
    bodies: list[Any] = attrs.field(factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    _released: trio.Event = attrs.field(factory=trio.Event)
    _changed: trio.Event = attrs.field(factory=trio.Event)

    async def serve(self, *, task_status: trio.TaskStatus[Receiver] = trio.TASK_STATUS_IGNORED):
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/alerts"
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._handle, listeners)
            task_status.started(self)

    def release(self) -> None:
        """Let every hanging request (and those to come) answer 200."""
        self._released.set()

    async def wait_requests(self, count: int) -> None:
        while self.requests < count:
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

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
                self.bodies.append(json.loads(body))
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                self._notify()
                try:
                    status = await self._answer()
                finally:
                    self.in_flight -= 1
                if status is None:
                    return  # drop the connection without an answer
                response = h11.Response(status_code=status, headers=[("content-length", "0")])
                await stream.send_all(conn.send(response) + conn.send(h11.EndOfMessage()))
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()

    async def _answer(self) -> int | None:
        mode = self.mode
        if mode == HANG:
            await self._released.wait()
            return 200
        if mode == DROP:
            return None
        return {OK: 200, ERROR: 500, REJECT: 400}[mode]
