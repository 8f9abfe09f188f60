"""State machines as tables, and the one lookup every table uses.

Like h11's ``_state.py``: a machine is a ``{(state, signal): new_state}`` table, every legal
move one entry. The alert lifecycle (:mod:`oraculo_trio.core.alerts`) and the diff book's
sync (:mod:`oraculo_trio.core.sync`) are two such machines; :meth:`Machine.next_state` is
the move for both, and anything outside the table raises
:class:`~oraculo_trio.core.errors.IllegalTransition` naming the state and the signal.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from oraculo_trio.core.errors import IllegalTransition


@attrs.frozen(slots=True, eq=False)
class Machine:
    """A state machine as a transition table.

    Attributes:
        name: what the machine drives, as error messages name it (``"alert"``).
        initial: the state a new instance starts in.
        states: every state, ``initial`` among them.
        signals: every signal the table may be fed.
        transitions: ``{(state, signal): new_state}``; a pair not in it is illegal.

    Raises:
        ValueError: (when built) the table names a state or signal not declared, or
            ``initial`` is not a state.
    """

    name: str
    initial: str
    states: tuple[str, ...]
    signals: tuple[str, ...]
    transitions: Mapping[tuple[str, str], str]

    def __attrs_post_init__(self) -> None:
        if self.initial not in self.states:
            raise ValueError(f"{self.name}: initial state {self.initial!r} is not a state")
        for (state, signal), new in self.transitions.items():
            if state not in self.states or new not in self.states or signal not in self.signals:
                raise ValueError(
                    f"{self.name}: transition ({state!r}, {signal!r}) -> {new!r} names an "
                    "undeclared state or signal"
                )

    def next_state(self, state: str, signal: str) -> str:
        """The state ``signal`` moves ``state`` to.

        Raises:
            IllegalTransition: the pair is not in the table (an unknown state or signal, or
                a move the machine does not make), naming both.
        """
        try:
            return self.transitions[state, signal]
        except KeyError:
            raise IllegalTransition(
                f"no {self.name} transition from state {state!r} on signal {signal!r}"
            ) from None
