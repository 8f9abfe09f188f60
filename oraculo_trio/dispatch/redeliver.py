"""At-least-once notifications across a crash: what was in flight is sent again.

A transition reaches the store before (or while) its notification is delivered, and the
delivery is recorded in ``dispatch_logs`` afterwards. A process killed in between (SIGKILL,
a power cut, a shutdown grace that ran out) leaves alerts whose state is stored, and restored
at the next start, but whose notification never arrived: restored as notified, it would
never be sent. So, when a pipeline starts, each alert whose latest transition was notified
and whose notification has no settled record for every sink since then is notified again,
once (:func:`unconfirmed_notifications`).

Semantics: per alert, the latest notified state is delivered at least once. A notification
delivered but not yet recorded when the process died is sent twice; an older notification
superseded by a later one of the same alert is not sent again (the receiver learns the
current state).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence

from oraculo_trio.core.alerts import AlertTransition
from oraculo_trio.store.base import AlertRow, Store

LOGGER = logging.getLogger("oraculo_trio.dispatch.redeliver")

SETTLED = ("delivered", "dropped", "silenced", "inhibited")
"""``dispatch_logs`` statuses that settle a notification for a sink (``failed`` does not:
the process may have died between two attempts)."""


async def unconfirmed_notifications(
    store: Store, sinks: Sequence[str], symbols: Collection[str]
) -> list[AlertTransition]:
    """The latest notification of each alert of ``symbols`` that some sink has not settled.

    Args:
        store: the open store.
        sinks: names of the sinks notifications go to (none: nothing to send again).
        symbols: only alerts of these symbols (the ones this process owns).

    Returns:
        The transitions to notify again, ``notify`` set, in ``at`` order.

    Raises:
        StoreError: the store could not be read.

    Cancellation: abandons the reads.
    """
    if not sinks:
        return []
    # The alert's current state is the one notified (not a later, silent transition).
    rows = [
        row
        for row in await store.load_alert_states()
        if row.last_notified_at is not None
        and row.last_change == row.last_notified_at
        and row.symbol in symbols
    ]
    if not rows:
        return []
    settled: dict[tuple[str, str, str, str], float] = {}
    since = min(row.last_notified_at for row in rows)
    for log in await store.fetch_dispatch_logs(since=since):
        if log["status"] in SETTLED:
            key = (log["rule_id"], log["symbol"], log["state"], log["sink"])
            settled[key] = max(settled.get(key, log["at"]), log["at"])
    unsettled = [
        row
        for row in rows
        if any(
            settled.get((row.rule_id, row.symbol, row.state, sink), -1.0) < row.last_notified_at
            for sink in sinks
        )
    ]
    transitions = []
    for row in unsettled:
        transition = await _notified_transition(store, row)
        if transition is not None:
            transitions.append(transition)
    transitions.sort(key=lambda t: t.at)
    return transitions


async def _notified_transition(store: Store, row: AlertRow) -> AlertTransition | None:
    """The stored event the row's last notification was about, as a transition."""
    for event in reversed(await store.fetch_alert_events(row.rule_id, row.symbol)):
        if event["at"] == row.last_notified_at and event["state"] == row.state:
            return AlertTransition(
                rule_id=event["rule_id"],
                symbol=event["symbol"],
                state=event["state"],
                previous_state=event["previous_state"],
                value=float("nan") if event["value"] is None else event["value"],
                at=event["at"],
                started_at=event["started_at"],
                fire_count=event["fire_count"],
                severity=event["severity"],
                message=event["message"],
                labels=event["labels"],
                repeat=bool(event["repeat"]),
                notify=True,
            )
        if event["at"] < row.last_notified_at:
            break
    LOGGER.warning(
        "alert %s %s: its last notification (at %.3f) is not among its stored events; "
        "not sent again",
        row.rule_id,
        row.symbol,
        row.last_notified_at,
    )
    return None
