"""Small fakes shared by the observe tests."""

from __future__ import annotations

import attrs


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
