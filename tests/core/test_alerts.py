"""The alert tracker: timers, notification policy and messages (its table: test_machines)."""

from oraculo_trio.core.alerts import (
    FIRING,
    INACTIVE,
    PENDING,
    RESOLVED,
    AlertTracker,
    render_message,
)
from oraculo_trio.core.rules import RuleSpec


def spec(**overrides: object) -> RuleSpec:
    base = dict(id="r", kind="crossing", symbols=("*",), params={}, repeat_interval=60.0)
    base.update(overrides)
    return RuleSpec(**base)


def run(tracker: AlertTracker, rule: RuleSpec, readings: list[tuple[float, bool]]) -> list:
    out = []
    for now, active in readings:
        transition = tracker.update(active, 1.0, now, rule)
        if transition is not None:
            out.append((now, transition.state, transition.repeat, transition.notify))
    return out


def test_fires_and_resolves_immediately_without_timers() -> None:
    got = run(AlertTracker("r", "X"), spec(), [(0, False), (1, True), (2, True), (3, False)])
    assert got == [(1, FIRING, False, True), (3, RESOLVED, False, True)]


def test_for_holds_pending_until_elapsed() -> None:
    rule = spec(for_=5.0)
    got = run(AlertTracker("r", "X"), rule, [(0, True), (3, True), (5, True), (6, False)])
    assert got == [
        (0, PENDING, False, False),
        (5, FIRING, False, True),
        (6, RESOLVED, False, True),
    ]


def test_pending_that_clears_never_fires() -> None:
    got = run(AlertTracker("r", "X"), spec(for_=5.0), [(0, True), (2, False), (3, True)])
    # Back to inactive is stored (the row must not stay pending), never notified.
    assert got == [
        (0, PENDING, False, False),
        (2, INACTIVE, False, False),
        (3, PENDING, False, False),
    ]


def test_keep_firing_for_bridges_flaps() -> None:
    rule = spec(keep_firing_for=10.0)
    got = run(
        AlertTracker("r", "X"), rule, [(0, True), (1, False), (5, True), (6, False), (16, False)]
    )
    assert got == [(0, FIRING, False, True), (16, RESOLVED, False, True)]


def test_repeat_interval_renotifies_while_firing() -> None:
    rule = spec(repeat_interval=10.0)
    got = run(
        AlertTracker("r", "X"), rule, [(0, True), (5, True), (10, True), (15, True), (20, True)]
    )
    assert got == [(0, FIRING, False, True), (10, FIRING, True, True), (20, FIRING, True, True)]


def test_once_per_interval_damps_a_new_episode_inside_the_interval() -> None:
    rule = spec(repeat_interval=60.0, trigger="once_per_interval")
    tracker = AlertTracker("r", "X")
    got = run(tracker, rule, [(0, True), (1, False), (2, True), (3, False), (70, True)])
    assert got == [
        (0, FIRING, False, True),
        (1, RESOLVED, False, True),
        (2, FIRING, False, False),  # stored, not notified
        (3, RESOLVED, False, False),
        (70, FIRING, False, True),
    ]
    assert tracker.fire_count == 3


def test_once_notifies_only_the_first_episode() -> None:
    rule = spec(trigger="once", repeat_interval=1.0)
    got = run(AlertTracker("r", "X"), rule, [(0, True), (5, True), (6, False), (7, True)])
    assert [(s, n) for _, s, _, n in got] == [(FIRING, True), (RESOLVED, True), (FIRING, False)]


def test_every_time_notifies_each_episode() -> None:
    rule = spec(trigger="every_time", repeat_interval=60.0)
    got = run(AlertTracker("r", "X"), rule, [(0, True), (1, False), (2, True), (3, False)])
    assert all(notify for *_, notify in got) and len(got) == 4


def test_transition_carries_identity_counts_and_message() -> None:
    rule = spec(
        message="{symbol} at {value:.1f} ({unknown})", severity="critical", labels={"team": "a"}
    )
    tracker = AlertTracker("r", "BTCUSDT")
    transition = tracker.update(True, 50001.25, 100.0, rule)
    assert (transition.rule_id, transition.symbol, transition.state) == ("r", "BTCUSDT", FIRING)
    assert transition.previous_state == INACTIVE
    assert (transition.started_at, transition.fire_count) == (100.0, 1)
    assert transition.message == "BTCUSDT at 50001.2 ({unknown})"
    assert transition.severity == "critical" and transition.labels == {"team": "a"}


def test_render_message_survives_bad_templates() -> None:
    assert render_message("{value:d}", value=1.5) == "{value:d} (value 1.5)"
    assert render_message("", value=1) == ""


def test_retire_resolves_a_firing_alert_once() -> None:
    rule = spec(trigger="every_time")
    tracker = AlertTracker("r", "X")
    tracker.update(True, 5.0, 0.0, rule)
    resolved = tracker.retire(3.0, rule)
    assert (resolved.state, resolved.previous_state, resolved.value, resolved.notify) == (
        RESOLVED,
        FIRING,
        5.0,
        True,
    )
    assert tracker.state == INACTIVE
    assert tracker.retire(4.0, rule) is None


def test_retire_of_a_pending_alert_is_silent() -> None:
    rule = spec(for_=10.0)
    tracker = AlertTracker("r", "X")
    assert tracker.update(True, 1.0, 0.0, rule).state == PENDING
    assert tracker.retire(1.0, rule) is None
    assert tracker.state == INACTIVE
