"""Recorded frames played back: ``ReplayMarket`` loops recorded ``{"stream", "data"}`` lines
at a set rate; ``RecordedBooks`` plays recorded diff sessions once, with the REST snapshots
recorded alongside.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs

from oraculo_trio.mockexchange.markets.payloads import Frame, RateCarry, check_nonnegative


def load_recorded_frames(paths: Iterable[str | Path]) -> list[Frame]:
    """Read the ``{"stream": ..., "data": ...}`` lines of recorded ``.jsonl`` files.

    Lines that are not combined-stream envelopes (REST snapshots, control replies, raw
    payloads) are skipped.

    Args:
        paths: files, read in order, each line by line.

    Returns:
        ``(stream, data)`` pairs in file order.
    """
    frames: list[Frame] = []
    for path in paths:
        with open(path, encoding="utf-8") as lines:
            for line in lines:
                if not line.strip():
                    continue
                record = json.loads(line)
                if (
                    isinstance(record, dict)
                    and isinstance(record.get("stream"), str)
                    and "data" in record
                ):
                    frames.append((record["stream"], record["data"]))
    return frames


@attrs.define(eq=False)
class ReplayMarket:
    """Replays recorded frames at ``rate_per_s``, in file order, looping at the end.

    The frames are yielded as recorded (same stream names, same payload objects). Looping
    restarts every recorded sequence, so a diff-depth consumer sees an update-id gap at the
    loop point and must resynchronise, as it would on the real exchange.

    Attributes:
        paths: recorded ``.jsonl`` files (see ``load_recorded_frames``).
        rate_per_s: frames per second, carried exactly across ticks like ``RandomWalkMarket``.
        retime: when true, a copy of each payload gets ``E`` (and ``T``) set to the tick time,
            so the frames look fresh to a service that measures feed lag; default false.
    """

    paths: tuple[Path, ...] = attrs.field(
        converter=lambda paths: tuple(Path(path) for path in paths)
    )
    rate_per_s: float = attrs.field(validator=check_nonnegative)
    retime: bool = False
    frames: list[Frame] = attrs.field(init=False)
    _symbols: list[str] = attrs.field(init=False)
    _cursor: int = attrs.field(init=False, default=0)
    _carry: RateCarry = attrs.field(init=False, factory=RateCarry)

    def __attrs_post_init__(self) -> None:
        self.frames = load_recorded_frames(self.paths)
        if not self.frames:
            raise ValueError(
                f"ReplayMarket: no {{'stream', 'data'}} lines in {[str(p) for p in self.paths]}"
            )
        seen: dict[str, None] = {}
        for stream, _ in self.frames:
            name = stream.split("@", 1)[0]
            if not name.startswith("!"):
                seen.setdefault(name.upper(), None)
        self._symbols = list(seen)

    @property
    def symbols(self) -> list[str]:
        """Upper-case symbols of the recorded stream names, in first-seen order."""
        return self._symbols

    def tick(self, now: float, dt: float) -> list[Frame]:
        """Return the next ``rate_per_s * dt`` recorded frames (fractions carried).

        Args:
            now: exchange time of the tick, epoch seconds (used only when ``retime``).
            dt: tick length in seconds.

        Returns:
            Recorded ``(stream, data)`` pairs, continuing where the last tick stopped.
        """
        count = self._carry.take(self.rate_per_s * dt)
        recorded = self.frames
        out: list[Frame] = []
        now_ms = int(now * 1000)
        for _ in range(count):
            stream, data = recorded[self._cursor]
            self._cursor = (self._cursor + 1) % len(recorded)
            if self.retime and isinstance(data, dict) and "E" in data:
                data = dict(data)
                data["E"] = now_ms
                if "T" in data:
                    data["T"] = now_ms
            out.append((stream, data))
        return out


#: A capture session ends where the event time jumps by more than this (ms).
SESSION_GAP_MS = 60_000


def _load_jsonl(path: str | Path) -> list[Any]:
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


@attrs.define(eq=False)
class RecordedBooks:
    """Recorded diff sessions replayed once, with the REST snapshots recorded alongside.

    A file may hold several capture sessions (split where ``E`` jumps by over a minute); a
    snapshot belongs to the session and symbol whose diffs span its ``lastUpdateId``, and the
    REST server answers with the snapshot of the session being replayed. A snapshot's symbol
    is its body's ``symbol`` (COIN-M), else the next of ``snapshot_symbols`` when given (USD-M
    bodies name none), else the one whose diffs span it (spot). Only symbols with a snapshot
    are played. Frames go out in file order, ``rate_per_s`` of them a second; then nothing
    (``done``): a loop would be a gap the recording does not have.

    Attributes:
        diff_paths: ``{"stream", "data"}`` lines of ``@depth`` diffs (spot or futures).
        snapshot_paths: ``GET <prefix>/depth`` bodies, one a line.
        rate_per_s: frames per second.
        retime: give each frame the tick's time as ``E`` (so a service finds it fresh).
        snapshot_symbols: the symbol of each snapshot line without one, in order.
    """

    diff_paths: Sequence[str | Path]
    snapshot_paths: Sequence[str | Path]
    rate_per_s: float = 200.0
    retime: bool = True
    snapshot_symbols: Sequence[str] = ()
    frames: list[tuple[int, Frame]] = attrs.field(init=False, factory=list)
    snapshots: dict[tuple[int, str], dict[str, Any]] = attrs.field(init=False, factory=dict)
    _symbols: list[str] = attrs.field(init=False, factory=list)
    _session: dict[str, int] = attrs.field(init=False, factory=dict)
    _cursor: int = attrs.field(init=False, default=0)
    _carry: RateCarry = attrs.field(init=False, factory=RateCarry)

    def __attrs_post_init__(self) -> None:
        sessions: dict[tuple[int, str], list[dict[str, Any]]] = {}
        recorded: list[tuple[int, Frame]] = []
        session, previous = -1, None
        for path in self.diff_paths:
            for record in _load_jsonl(path):
                data = record["data"]
                if previous is None or abs(data["E"] - previous) > SESSION_GAP_MS:
                    session += 1
                previous = data["E"]
                sessions.setdefault((session, data["s"]), []).append(data)
                recorded.append((session, (record["stream"], data)))
        named = iter(self.snapshot_symbols)
        for path in self.snapshot_paths:
            for snapshot in _load_jsonl(path):
                symbol = snapshot.get("symbol") or next(named, None)
                last = snapshot["lastUpdateId"]
                for key, diffs in sessions.items():
                    if symbol is not None and key[1] != symbol:
                        continue
                    # Spot joins at lastUpdateId + 1, futures within a diff's U..u.
                    if diffs[0]["U"] <= last + 1 and last <= diffs[-1]["u"]:
                        self.snapshots[key] = snapshot
        played = {symbol for _, symbol in self.snapshots}
        self.frames = [(s, frame) for s, frame in recorded if frame[1]["s"] in played]
        self._symbols = list(dict.fromkeys(frame[1]["s"] for _, frame in self.frames))

    @property
    def symbols(self) -> list[str]:
        """The symbols played (those with a recorded snapshot), in first-seen order."""
        return self._symbols

    @property
    def done(self) -> bool:
        """Every frame has been played."""
        return self._cursor >= len(self.frames)

    def last_diffs(self) -> dict[str, dict[str, Any]]:
        """The last recorded diff of each symbol played."""
        return {frame[1]["s"]: frame[1] for _, frame in self.frames}

    def tick(self, now: float, dt: float) -> list[Frame]:
        """The next ``rate_per_s * dt`` recorded frames (fractions carried), none at the end."""
        count = self._carry.take(self.rate_per_s * dt)
        out: list[Frame] = []
        now_ms = int(now * 1000)
        while count and self._cursor < len(self.frames):
            session, (stream, data) = self.frames[self._cursor]
            self._cursor += 1
            count -= 1
            self._session[data["s"]] = session
            if self.retime:
                data = {**data, "E": now_ms}
            out.append((stream, data))
        return out

    def snapshot(self, symbol: str, limit: int) -> dict[str, Any] | None:
        """The recorded snapshot of the session ``symbol`` is in (``limit`` levels a side)."""
        session = self._session.get(symbol)
        for (recorded_session, recorded_symbol), snapshot in self.snapshots.items():
            if recorded_symbol == symbol and session in (None, recorded_session):
                # As recorded (futures add E, T, and on COIN-M symbol and pair), cut to limit.
                return {
                    **snapshot,
                    "bids": snapshot["bids"][:limit],
                    "asks": snapshot["asks"][:limit],
                }
        return None
