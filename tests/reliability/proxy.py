"""A TCP proxy on 127.0.0.1 that a scenario turns into a bad network.

- forward (the default): bytes pass both ways as they come;
- :meth:`TcpProxy.blackhole`: the connections open now stop delivering anything to the
  client, and stay open (a half-open connection: no FIN, no RST, no error). What the server
  sends is read and discarded, so the server never notices. New connections are forwarded;
- :meth:`TcpProxy.trickle`: bytes from the server reach the client ``chunk`` bytes at a time,
  ``delay`` seconds apart (a slow server, frames split across many reads).
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import attrs
import trio

_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


@attrs.define(eq=False)
class _Link:
    blackholed: bool = False


@attrs.define(eq=False)
class TcpProxy:
    """Start with ``proxy = await nursery.start(TcpProxy(host, port).serve)``.

    Attributes:
        target_host, target_port: where connections go.
        port: the proxy's port (after ``serve`` started).
        accepted: connections accepted so far.
        forwarded: bytes delivered to clients so far.
    """

    target_host: str
    target_port: int
    port: int = 0
    accepted: int = 0
    forwarded: int = 0
    trickle_chunk: int | None = None
    trickle_delay: float = 0.0
    _links: list[_Link] = attrs.field(factory=list)

    async def serve(self, *, task_status: trio.TaskStatus[TcpProxy] = trio.TASK_STATUS_IGNORED):
        """Accept and forward until cancelled (cancelling closes every connection)."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._handle, listeners)
            task_status.started(self)

    def url_for(self, url: str) -> str:
        """``url`` with its host and port replaced by the proxy's."""
        parts = urlsplit(url)
        return urlunsplit(parts._replace(netloc=f"127.0.0.1:{self.port}"))

    def blackhole(self) -> int:
        """Stop delivering on every connection open now; returns how many."""
        for link in self._links:
            link.blackholed = True
        return len(self._links)

    def trickle(self, chunk: int | None, delay: float = 0.0) -> None:
        """Deliver server bytes ``chunk`` at a time, ``delay`` s apart; None: at full speed."""
        self.trickle_chunk = chunk
        self.trickle_delay = delay

    async def _handle(self, client: trio.SocketStream) -> None:
        self.accepted += 1
        link = _Link()
        self._links.append(link)
        try:
            server = await trio.open_tcp_stream(self.target_host, self.target_port)
        except OSError:
            await client.aclose()
            return
        async with client, server, trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, client, server, link, False, nursery.cancel_scope)
            nursery.start_soon(self._pump, server, client, link, True, nursery.cancel_scope)

    async def _pump(
        self,
        source: trio.SocketStream,
        sink: trio.SocketStream,
        link: _Link,
        downstream: bool,
        scope: trio.CancelScope,
    ) -> None:
        try:
            while True:
                data = await source.receive_some(65536)
                if not data:
                    break
                if link.blackholed:
                    if downstream:
                        continue  # read and dropped: the server sees a healthy peer
                    await trio.sleep_forever()  # the client's bytes go nowhere
                chunk = self.trickle_chunk
                if downstream and chunk:
                    for start in range(0, len(data), chunk):
                        await trio.sleep(self.trickle_delay)
                        piece = data[start : start + chunk]
                        await sink.send_all(piece)
                        self.forwarded += len(piece)
                    continue
                await sink.send_all(data)
                if downstream:
                    self.forwarded += len(data)
        except _GONE:
            pass
        finally:
            scope.cancel()
