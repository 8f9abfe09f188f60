"""Time windows for rules, each O(1) amortized per event: no window is ever rescanned.

- :class:`RollingSum`: values of the last ``span`` seconds in a deque, with a running sum
  and count (volume, trade counts, buy/sell quantities).
- :class:`SplitSum`: a recent window and the baseline window just before it; an entry
  leaving the recent window moves to the baseline (volume spikes against a baseline).
- :class:`Extremum`: the minimum or maximum of the last ``span`` seconds as a monotonic deque
  (price moves of X % within a window).
- :class:`RingBuffer`: the last ``span`` seconds of values in preallocated numpy arrays, of
  at most ``capacity`` entries; :meth:`RingBuffer.values` copies them out contiguously for a
  computation that runs elsewhere (a worker thread).

Every window takes ``now`` from the caller; entries are kept while ``t >= now - span``, so
an entry exactly ``span`` seconds old is still inside ("within W seconds" is inclusive).
Times must not go backwards by more than the windows tolerate (they are wall-clock seconds of
evaluation, which the engine takes in order).
"""

from __future__ import annotations

from collections import deque

import numpy as np


class RollingSum:
    """Sum and count of the values added during the last ``span`` seconds.

    Args:
        span: the window length in seconds (> 0).
    """

    __slots__ = ("_entries", "count", "span", "total")

    def __init__(self, span: float) -> None:
        self.span = span
        self._entries: deque[tuple[float, float]] = deque()
        self.total = 0.0
        self.count = 0

    def add(self, t: float, value: float) -> None:
        """Add ``value`` at time ``t`` (expire first, with the same ``t``, when needed)."""
        self._entries.append((t, value))
        self.total += value
        self.count += 1

    def expire(self, now: float) -> list[tuple[float, float]] | None:
        """Drop entries older than ``now - span``; return them (None when nothing left)."""
        entries = self._entries
        cutoff = now - self.span
        if not entries or entries[0][0] >= cutoff:
            return None
        dropped = []
        while entries and entries[0][0] < cutoff:
            entry = entries.popleft()
            self.total -= entry[1]
            dropped.append(entry)
        self.count = len(entries)
        if not entries:
            # Running sums drift by float rounding; an empty window is exactly zero.
            self.total = 0.0
        return dropped

    def __len__(self) -> int:
        return self.count


class SplitSum:
    """A recent window of ``span`` seconds and the ``baseline`` seconds before it.

    An entry is in :attr:`recent` while ``t >= now - span``, then in :attr:`base` while
    ``t >= now - span - baseline``.
    """

    __slots__ = ("base", "recent")

    def __init__(self, span: float, baseline: float) -> None:
        self.recent = RollingSum(span)
        self.base = RollingSum(span + baseline)

    def add(self, t: float, value: float) -> None:
        """Add ``value`` at time ``t``."""
        self.recent.add(t, value)

    def expire(self, now: float) -> None:
        """Move entries out of the recent window into the baseline, then age the baseline."""
        moved = self.recent.expire(now)
        if moved:
            base = self.base
            for t, value in moved:
                base.add(t, value)
        self.base.expire(now)


class Extremum:
    """The minimum (or maximum) value of the last ``span`` seconds, as a monotonic deque.

    Each value enters and leaves the deque once, so updates are O(1) amortized.

    Args:
        span: the window length in seconds (> 0).
        largest: track the maximum instead of the minimum.
    """

    __slots__ = ("_entries", "largest", "span")

    def __init__(self, span: float, *, largest: bool = False) -> None:
        self.span = span
        self.largest = largest
        self._entries: deque[tuple[float, float]] = deque()

    def add(self, t: float, value: float) -> None:
        """Add ``value`` at time ``t``; values it dominates can never be the extremum again."""
        entries = self._entries
        if self.largest:
            while entries and entries[-1][1] <= value:
                entries.pop()
        else:
            while entries and entries[-1][1] >= value:
                entries.pop()
        entries.append((t, value))

    def expire(self, now: float) -> None:
        """Drop entries older than ``now - span``."""
        entries = self._entries
        cutoff = now - self.span
        while entries and entries[0][0] < cutoff:
            entries.popleft()

    @property
    def value(self) -> float | None:
        """The extremum of what the window holds, None when it is empty."""
        return self._entries[0][1] if self._entries else None


class RingBuffer:
    """The values of the last ``span`` seconds, at most ``capacity`` of them, in numpy arrays.

    When full, a new value overwrites the oldest one.

    Args:
        span: the window length in seconds (> 0).
        capacity: the most values kept (>= 1).
    """

    __slots__ = ("_head", "_times", "_values", "capacity", "size", "span")

    def __init__(self, span: float, capacity: int) -> None:
        self.span = span
        self.capacity = capacity
        self._times = np.empty(capacity, dtype=np.float64)
        self._values = np.empty(capacity, dtype=np.float64)
        self._head = 0  # index of the oldest value
        self.size = 0

    def add(self, t: float, value: float) -> None:
        """Append ``value`` at time ``t``."""
        capacity = self.capacity
        if self.size == capacity:
            self._head = (self._head + 1) % capacity
            self.size -= 1
        end = (self._head + self.size) % capacity
        self._times[end] = t
        self._values[end] = value
        self.size += 1

    def expire(self, now: float) -> None:
        """Drop values older than ``now - span``."""
        cutoff = now - self.span
        times = self._times
        capacity = self.capacity
        while self.size and times[self._head] < cutoff:
            self._head = (self._head + 1) % capacity
            self.size -= 1

    def values(self) -> np.ndarray:
        """A contiguous copy of the values, oldest first."""
        head, size, capacity = self._head, self.size, self.capacity
        if head + size <= capacity:
            return self._values[head : head + size].copy()
        return np.concatenate((self._values[head:], self._values[: head + size - capacity]))

    def __len__(self) -> int:
        return self.size
