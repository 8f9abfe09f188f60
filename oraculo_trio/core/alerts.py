"""The alert lifecycle as a transition table, and the records it produces.

States: ``inactive`` -> ``pending`` (condition holds, waiting for ``for``) -> ``firing`` ->
``resolved`` (condition false for ``keep_firing_for``) -> ``inactive``. Like h11's
``_state.py``, every legal move is one entry of :data:`TRANSITIONS`, looked up by the
:class:`~oraculo_trio.core.machines.Machine` shared with the book sync; anything else raises
:class:`~oraculo_trio.errors.IllegalTransition` naming the state and the signal.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from oraculo_trio.core.machines import Machine

INACTIVE = "inactive"
PENDING = "pending"
FIRING = "firing"
RESOLVED = "resolved"
STATES = (INACTIVE, PENDING, FIRING, RESOLVED)

# Signals fed to the table. They are derived from the rule's condition and the timers.
TRUE = "true"  # the condition holds, `for` not yet elapsed (or zero)
HELD = "held"  # the condition has held for `for`
FALSE = "false"  # the condition is false, `keep_firing_for` not yet elapsed
CLEARED = "cleared"  # the condition has been false for `keep_firing_for`
SIGNALS = (TRUE, HELD, FALSE, CLEARED)

TRANSITIONS: Mapping[tuple[str, str], str] = {
    (INACTIVE, TRUE): PENDING,
    (INACTIVE, HELD): FIRING,
    (INACTIVE, FALSE): INACTIVE,
    (INACTIVE, CLEARED): INACTIVE,
    (PENDING, TRUE): PENDING,
    (PENDING, HELD): FIRING,
    (PENDING, FALSE): INACTIVE,
    (PENDING, CLEARED): INACTIVE,
    (FIRING, TRUE): FIRING,
    (FIRING, HELD): FIRING,
    (FIRING, FALSE): FIRING,
    (FIRING, CLEARED): RESOLVED,
    (RESOLVED, TRUE): PENDING,
    (RESOLVED, HELD): FIRING,
    (RESOLVED, FALSE): INACTIVE,
    (RESOLVED, CLEARED): INACTIVE,
}

ALERT_LIFECYCLE = Machine("alert", INACTIVE, STATES, SIGNALS, TRANSITIONS)
"""The lifecycle of one (rule, symbol) alert; :meth:`Machine.next_state` moves it."""


@attrs.frozen(slots=True)
class AlertTransition:
    """One alert state change (or a repeat notification while firing), as stored and sent.

    Attributes:
        rule_id, symbol: the alert's identity; one ``rule_alerts`` row per pair.
        state: the state entered (``pending``, ``firing``, ``resolved``, ``inactive``).
        previous_state: the state left.
        value: the value that decided the transition (price, spread in bps, ...).
        at: wall-clock Unix seconds of the transition.
        started_at: when the current firing episode began (None before the first firing).
        fire_count: how many times this (rule, symbol) has entered ``firing`` in total.
        repeat: True for a ``repeat_interval`` re-notification (state unchanged).
        notify: whether the transition should reach the dispatcher at all.
        inhibited_by: the id of a firing rule whose ``inhibits`` matchers match this alert
            (same symbol): the dispatcher records it but does not deliver it.
    """

    rule_id: str
    symbol: str
    state: str
    previous_state: str
    value: float
    at: float
    started_at: float | None
    fire_count: int
    severity: str = "warning"
    message: str = ""
    labels: Mapping[str, str] = attrs.field(factory=dict)
    repeat: bool = False
    notify: bool = True
    inhibited_by: str | None = None


class _SafeFields(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def render_message(template: str, **fields: object) -> str:
    """Fill ``{symbol}``, ``{value}``... in a rule's message; unknown fields stay as written.

    A template that cannot be formatted (``oraculo-trio rules check`` warns about it) is
    sent as written, followed by the value, so the notification still says something.
    """
    if not template:
        return ""
    try:
        return template.format_map(_SafeFields(fields))
    except (ValueError, IndexError, AttributeError, TypeError, KeyError):
        return f"{template} (value {fields.get('value')})"


@attrs.define(eq=False, slots=True)
class AlertTracker:
    """The lifecycle of one (rule, symbol) alert: turns condition readings into transitions.

    ``update`` derives the table's signal from the reading and the timers, looks up the
    move in :data:`TRANSITIONS`, and returns the :class:`AlertTransition` to store and
    notify, or None. A pending alert whose condition clears goes back to ``inactive``:
    stored (so its row does not stay ``pending``), never notified; ``resolved ->
    inactive`` is housekeeping: neither stored nor sent.

    Notification policy (``trigger``):
        ``once``: only the first firing episode of the pair is notified.
        ``once_per_interval``: a firing is notified unless the last notification was less
            than ``repeat_interval`` ago (flap damping); while firing, a repeat every
            ``repeat_interval``.
        ``every_time``: every firing and resolution is notified; repeats as above.
    A resolution is notified exactly when its firing was.
    """

    rule_id: str
    symbol: str
    state: str = INACTIVE
    condition_since: float | None = None
    clear_since: float | None = None
    started_at: float | None = None
    fire_count: int = 0
    last_value: float = float("nan")
    last_active: bool = False
    last_notified_at: float | None = None
    episode_notified: bool = False
    once_spent: bool = False

    def update(
        self, active: bool, value: float, now: float, spec: object
    ) -> AlertTransition | None:
        """Feed one condition reading taken at wall-clock ``now``; ``spec`` is the RuleSpec."""
        self.last_value = value
        self.last_active = active
        if active:
            self.clear_since = None
            if self.condition_since is None:
                self.condition_since = now
            signal = HELD if now - self.condition_since >= spec.for_ else TRUE
        else:
            self.condition_since = None
            if self.clear_since is None:
                self.clear_since = now
            signal = CLEARED if now - self.clear_since >= spec.keep_firing_for else FALSE
        previous = self.state
        state = ALERT_LIFECYCLE.next_state(previous, signal)
        if state == previous:
            if state == FIRING and self._repeat_due(now, spec):
                self.last_notified_at = now
                return self._transition(previous, value, now, spec, repeat=True, notify=True)
            return None
        self.state = state
        if state == INACTIVE:
            if previous != PENDING:
                return None
            return self._transition(previous, value, now, spec, repeat=False, notify=False)
        notify = False
        if state == FIRING:
            self.fire_count += 1
            self.started_at = now
            notify = self._notify_firing(now, spec)
            self.episode_notified = notify
        elif state == RESOLVED:
            notify = self.episode_notified
            self.episode_notified = False
        if notify:
            self.last_notified_at = now
        return self._transition(previous, value, now, spec, repeat=False, notify=notify)

    def retire(self, now: float, spec: object) -> AlertTransition | None:
        """The rule is gone (removed, changed or expired): resolve a firing alert now.

        Returns the ``resolved`` transition (notified when its firing was), or None when
        the alert was not firing. The tracker is left inactive either way.
        """
        previous = self.state
        self.state = INACTIVE
        self.condition_since = self.clear_since = None
        if previous != FIRING:
            return None
        self.state = RESOLVED
        notify = self.episode_notified
        self.episode_notified = False
        if notify:
            self.last_notified_at = now
        transition = self._transition(
            previous, self.last_value, now, spec, repeat=False, notify=notify
        )
        self.state = INACTIVE
        return transition

    def _notify_firing(self, now: float, spec: object) -> bool:
        trigger = spec.trigger
        if trigger == "once":
            if self.once_spent:
                return False
            self.once_spent = True
            return True
        if trigger == "once_per_interval" and self.last_notified_at is not None:
            return now - self.last_notified_at >= spec.repeat_interval
        return True

    def _repeat_due(self, now: float, spec: object) -> bool:
        return (
            spec.trigger != "once"
            and self.episode_notified
            and spec.repeat_interval > 0
            and self.last_notified_at is not None
            and now - self.last_notified_at >= spec.repeat_interval
        )

    def _transition(
        self, previous: str, value: float, now: float, spec: object, *, repeat: bool, notify: bool
    ) -> AlertTransition:
        return AlertTransition(
            rule_id=self.rule_id,
            symbol=self.symbol,
            state=self.state,
            previous_state=previous,
            value=value,
            at=now,
            started_at=self.started_at,
            fire_count=self.fire_count,
            severity=spec.severity,
            message=render_message(
                spec.template(self.state),
                symbol=self.symbol,
                value=value,
                rule_id=self.rule_id,
                state=self.state,
                severity=spec.severity,
            ),
            labels=spec.labels,
            repeat=repeat,
            notify=notify,
        )
