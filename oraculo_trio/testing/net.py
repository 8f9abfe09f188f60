"""Loopback helpers of the test harness: plain HTTP GETs, and a port that refuses."""

from __future__ import annotations

import contextlib
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import attrs
import trio

__all__ = ["Response", "closed_port", "fetch", "http_get"]


@attrs.frozen
class Response:
    """What a test needs from an HTTP answer."""

    status: int
    content_type: str
    body: str


def fetch(url: str, timeout: float = 5.0) -> Response:
    """GET ``url``, 4xx and 5xx answers included. Blocking: call it from a thread.

    Raises:
        OSError: no answer (``urllib.error.URLError`` when the connection is refused).
    """
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return Response(
                response.status, response.headers["Content-Type"], response.read().decode()
            )
    except urllib.error.HTTPError as error:
        with error:
            return Response(error.code, error.headers["Content-Type"], error.read().decode())


async def http_get(url: str, timeout: float = 5.0) -> Response:  # noqa: ASYNC109
    """:func:`fetch` from a worker thread.

    Raises:
        OSError: no answer.

    Cancellation: abandons the request (its thread finishes within ``timeout``).
    """
    return await trio.to_thread.run_sync(fetch, url, timeout, abandon_on_cancel=True)


@contextlib.contextmanager
def closed_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A TCP port of ``host`` that refuses every connection while the block runs.

    The port is bound (so nothing else can take it) but never listened on: a connection
    to it is refused at once, unlike a port that was free a moment ago.
    """
    with socket.socket() as sock:
        sock.bind((host, 0))
        yield sock.getsockname()[1]
