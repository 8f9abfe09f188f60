"""Rule windows: contents, running sums, expiry at the boundary, and O(1) amortized work."""

import random

import numpy as np
import pytest

from oraculo_trio.core.windows import Extremum, RingBuffer, RollingSum, SplitSum


def test_rolling_sum_keeps_entries_exactly_span_old() -> None:
    window = RollingSum(10.0)
    for t, value in [(0.0, 1.0), (5.0, 2.0), (10.0, 4.0)]:
        window.expire(t)
        window.add(t, value)
    assert (window.total, window.count) == (7.0, 3)  # t=0 is exactly 10 s old: inside
    assert window.expire(10.5) == [(0.0, 1.0)]
    assert (window.total, len(window)) == (6.0, 2)
    assert window.expire(10.5) is None


def test_rolling_sum_is_exactly_zero_when_empty() -> None:
    window = RollingSum(1.0)
    for i in range(100):
        window.add(i * 0.01, 0.1)
    window.expire(100.0)
    assert (window.total, window.count) == (0.0, 0)


def test_split_sum_moves_entries_from_recent_to_baseline() -> None:
    windows = SplitSum(1.0, 4.0)
    for t in range(6):
        windows.expire(float(t))
        windows.add(float(t), 1.0)
    # recent: [4, 5]; baseline: [0, 4) holds 0..3.
    assert (windows.recent.total, windows.base.total) == (2.0, 4.0)
    windows.expire(7.0)
    # recent: [6, 7] is empty; baseline [2, 6) holds 2..5.
    assert (windows.recent.total, windows.base.total) == (0.0, 4.0)
    windows.expire(20.0)
    assert (windows.recent.total, windows.base.total) == (0.0, 0.0)


@pytest.mark.parametrize("largest", [False, True])
def test_extremum_matches_a_rescan(largest: bool) -> None:
    rng = random.Random(7)
    span = 3.0
    window = Extremum(span, largest=largest)
    history: list[tuple[float, float]] = []
    t = 0.0
    for _ in range(2_000):
        t += rng.uniform(0.0, 0.5)
        value = rng.uniform(90.0, 110.0)
        window.expire(t)
        window.add(t, value)
        history.append((t, value))
        inside = [v for at, v in history if at >= t - span]
        assert window.value == (max(inside) if largest else min(inside))


def test_extremum_empties_on_expiry() -> None:
    window = Extremum(1.0)
    window.add(0.0, 5.0)
    window.expire(1.0)
    assert window.value == 5.0
    window.expire(1.01)
    assert window.value is None


def test_extremum_work_is_amortized_constant() -> None:
    # A rising series keeps every value (each is a future minimum candidate) yet the
    # deque never holds more than the window; a fall then replaces it all at once.
    window = Extremum(10.0)
    for i in range(1_000):
        window.expire(float(i))
        window.add(float(i), float(i))
    assert len(window._entries) == 11
    window.add(1_000.0, 0.0)
    assert len(window._entries) == 1


def test_ring_buffer_wraps_and_expires() -> None:
    buffer = RingBuffer(5.0, capacity=4)
    for t in range(6):
        buffer.add(float(t), float(t) * 10)
    # Capacity 4: the two oldest were overwritten.
    assert buffer.values().tolist() == [20.0, 30.0, 40.0, 50.0]
    buffer.expire(8.0)  # keeps t >= 3
    assert buffer.values().tolist() == [30.0, 40.0, 50.0]
    assert len(buffer) == 3
    buffer.expire(100.0)
    assert buffer.values().tolist() == []


def test_ring_buffer_values_are_a_copy() -> None:
    buffer = RingBuffer(10.0, capacity=3)
    buffer.add(0.0, 1.0)
    values = buffer.values()
    values[0] = 99.0
    assert buffer.values().tolist() == [1.0]
    assert isinstance(values, np.ndarray)
