"""The state-machine tables, checked by their properties rather than copied entry by entry."""

from __future__ import annotations

import itertools

import pytest

from oraculo_trio.core.alerts import (
    ALERT_LIFECYCLE,
    CLEARED,
    FIRING,
    HELD,
    INACTIVE,
    PENDING,
    RESOLVED,
)
from oraculo_trio.core.machines import Machine
from oraculo_trio.core.sync import APPLY, BOOK_SYNC, LIVE, RESYNC_REASONS, SNAPSHOT_APPLIED
from oraculo_trio.errors import IllegalTransition

MACHINES = pytest.mark.parametrize("machine", [ALERT_LIFECYCLE, BOOK_SYNC], ids=lambda m: m.name)


def reachable(machine: Machine) -> set[str]:
    seen = {machine.initial}
    frontier = [machine.initial]
    while frontier:
        state = frontier.pop()
        for signal in machine.signals:
            new = machine.transitions.get((state, signal))
            if new is not None and new not in seen:
                seen.add(new)
                frontier.append(new)
    return seen


@MACHINES
def test_every_state_is_reachable_from_the_initial_state(machine: Machine) -> None:
    assert reachable(machine) == set(machine.states)


@MACHINES
def test_every_pair_is_in_the_table_or_raises_naming_state_and_signal(machine: Machine) -> None:
    for state, signal in itertools.product(machine.states, machine.signals):
        if (state, signal) in machine.transitions:
            assert machine.next_state(state, signal) == machine.transitions[state, signal]
        else:
            with pytest.raises(IllegalTransition, match=f"{state!r}.*{signal!r}"):
                machine.next_state(state, signal)


@MACHINES
def test_no_transition_out_of_an_unknown_state(machine: Machine) -> None:
    for signal in machine.signals:
        with pytest.raises(IllegalTransition, match=f"'dead'.*{signal!r}"):
            machine.next_state("dead", signal)


@MACHINES
def test_an_unknown_signal_is_illegal_in_every_state(machine: Machine) -> None:
    for state in machine.states:
        with pytest.raises(IllegalTransition, match=f"{machine.name} .*{state!r}.*'bogus'"):
            machine.next_state(state, "bogus")


@MACHINES
def test_every_state_accepts_some_signal(machine: Machine) -> None:
    for state in machine.states:
        assert any((state, signal) in machine.transitions for signal in machine.signals)


def test_a_table_naming_an_undeclared_state_is_refused() -> None:
    with pytest.raises(ValueError, match="undeclared"):
        Machine("m", "a", ("a",), ("go",), {("a", "go"): "b"})
    with pytest.raises(ValueError, match="initial"):
        Machine("m", "b", ("a",), ("go",), {})


def test_an_alert_reading_is_legal_in_every_state() -> None:
    # Readings come whatever the state: the lifecycle must take each one.
    assert set(ALERT_LIFECYCLE.transitions) == set(
        itertools.product(ALERT_LIFECYCLE.states, ALERT_LIFECYCLE.signals)
    )


def test_an_alert_fires_only_when_held_and_resolves_only_when_cleared() -> None:
    for (state, signal), new in ALERT_LIFECYCLE.transitions.items():
        if new == FIRING and state != FIRING:
            assert signal == HELD
        if state == FIRING and new != FIRING:
            assert (signal, new) == (CLEARED, RESOLVED)
        if new == RESOLVED:
            assert state == FIRING
        if new == PENDING:
            assert state in (INACTIVE, PENDING, RESOLVED)


def test_a_book_goes_live_only_from_a_snapshot_and_leaves_only_to_resync() -> None:
    for (state, signal), new in BOOK_SYNC.transitions.items():
        if new == LIVE and state != LIVE:
            assert signal == SNAPSHOT_APPLIED
        if state == LIVE and new != LIVE:
            assert signal in RESYNC_REASONS
    assert (LIVE, APPLY) in BOOK_SYNC.transitions
