"""Small helpers shared by the observe tests."""

from __future__ import annotations

import urllib.error
import urllib.request

import attrs


@attrs.frozen
class Response:
    """What a test needs from an HTTP answer."""

    status: int
    content_type: str
    body: str


def fetch(url: str, timeout: float = 5.0) -> Response:
    """GET ``url`` (blocking: call it from a thread), 4xx/5xx included."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return Response(
                response.status, response.headers["Content-Type"], response.read().decode()
            )
    except urllib.error.HTTPError as error:
        with error:
            return Response(error.code, error.headers["Content-Type"], error.read().decode())


class FakeClock:
    """A clock a test moves by hand."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@attrs.define(eq=False)
class FakeTask:
    """Stands in for a ``trio.lowlevel.Task`` in hook calls: hooks only read ``name``."""

    name: str
