"""Notification sinks. A sink delivers one transition and raises on failure.

- :class:`StdoutSink`: the one alert line (:func:`~oraculo_trio.dispatch.render.alert_line`),
  coloured on a terminal; the default sink;
- :class:`LogSink`: one structured JSON line on the ``oraculo_trio.alerts`` logger;
- :class:`WebhookSink`: an HTTP POST in Alertmanager's webhook payload shape
  (:func:`alertmanager_payload`), so existing Alertmanager receivers work unchanged.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import logging
import math
import sys
from typing import Any, Protocol, TextIO
from urllib.parse import urlsplit

import attrs
import httpx
import trio

from oraculo_trio.core.alerts import RESOLVED, AlertTransition
from oraculo_trio.dispatch.policy import SinkPolicy
from oraculo_trio.dispatch.render import alert_line, alert_record, wants_colour
from oraculo_trio.errors import DeliveryError, DeliveryRejected
from oraculo_trio.settings import Settings

LOGGER = logging.getLogger("oraculo_trio.dispatch.sinks")
ALERT_LOGGER = logging.getLogger("oraculo_trio.alerts")


class Sink(Protocol):
    """Delivers notifications. ``deliver`` raises on failure; the dispatcher retries.

    Optional: a ``policy`` attribute (:class:`~oraculo_trio.dispatch.policy.SinkPolicy`;
    default: one attempt, one at a time), and ``__aenter__``/``__aexit__``, entered by the
    dispatcher for its lifetime (to hold a connection pool).
    """

    name: str

    async def deliver(self, transition: AlertTransition) -> None: ...


def format_value(value: float) -> str:
    """A value as a short, grep-friendly number (the webhook's ``value`` annotation)."""
    if not math.isfinite(value):
        return str(value)
    return f"{value:.8g}"


@attrs.define(eq=False)
class StdoutSink:
    """Prints :func:`~oraculo_trio.dispatch.render.alert_line` to ``stream``, flushed.

    Attributes:
        colour: colour the state and severity; None decides by the stream (a terminal, and
            ``NO_COLOR`` unset).
    """

    stream: TextIO = attrs.field(factory=lambda: sys.stdout)
    name: str = "stdout"
    colour: bool | None = None

    def __attrs_post_init__(self) -> None:
        if self.colour is None:
            self.colour = wants_colour(self.stream)

    async def deliver(self, transition: AlertTransition) -> None:
        print(alert_line(transition, colour=bool(self.colour)), file=self.stream, flush=True)


@attrs.define(eq=False)
class LogSink:
    """Logs one structured JSON line per notification on ``oraculo_trio.alerts``."""

    name: str = "log"

    async def deliver(self, transition: AlertTransition) -> None:
        ALERT_LOGGER.info("%s", json.dumps(alert_record(transition), sort_keys=True))


# Alertmanager's "not ended yet" time.
_ZERO_TIME = "0001-01-01T00:00:00Z"


def _rfc3339(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def alertmanager_payload(
    transition: AlertTransition, *, receiver: str = "oraculo-trio", external_url: str = ""
) -> dict[str, Any]:
    """The transition as an Alertmanager webhook payload (``version`` 4) of one alert.

    Labels: the rule's labels, then ``alertname`` (the rule id), ``symbol`` and
    ``severity``; annotations: ``summary`` (the rendered message), ``value`` and ``state``.
    A resolution has ``status = "resolved"`` and ``endsAt`` set; the fingerprint is stable
    per (rule, symbol), like Alertmanager's per label set.
    """
    status = "resolved" if transition.state == RESOLVED else "firing"
    labels = {
        **transition.labels,
        "alertname": transition.rule_id,
        "symbol": transition.symbol,
        "severity": transition.severity,
    }
    summary = transition.message or (
        f"{transition.rule_id} {transition.state} on {transition.symbol}"
    )
    annotations = {
        "summary": summary,
        "value": format_value(transition.value),
        "state": transition.state,
    }
    started = transition.started_at if transition.started_at is not None else transition.at
    key = f"{transition.rule_id}\0{transition.symbol}".encode()
    alert = {
        "status": status,
        "labels": labels,
        "annotations": annotations,
        "startsAt": _rfc3339(started),
        "endsAt": _rfc3339(transition.at) if status == "resolved" else _ZERO_TIME,
        "generatorURL": external_url,
        "fingerprint": hashlib.sha256(key).hexdigest()[:16],
    }
    group_labels = {"alertname": transition.rule_id, "symbol": transition.symbol}
    group_key = "{}:{" + ", ".join(f'{k}="{v}"' for k, v in group_labels.items()) + "}"
    return {
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": group_labels,
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": external_url,
        "alerts": [alert],
    }


@attrs.define(eq=False)
class WebhookSink:
    """POSTs :func:`alertmanager_payload` as JSON to ``url`` with httpx, under Trio.

    Every attempt is bounded by ``timeout`` (``trio.fail_after`` around the whole request,
    so a receiver that trickles bytes cannot hold it either). Enter it (``async with``) to
    open its connection pool; the dispatcher does.

    Attributes:
        url: the receiver.
        timeout: seconds per attempt.
        policy: retries, backoff, concurrency and circuit breaker for the dispatcher.
        name: the ``sink`` label and ``dispatch_logs.sink``.
        block_private: refuse (``DeliveryRejected``) when the URL's host resolves to a
            non-public address (``dispatch.webhook_block_private``), checked before each
            attempt.
    """

    # Not in the repr: a webhook URL often carries a token.
    url: str = attrs.field(repr=False)
    timeout: float = 5.0
    policy: SinkPolicy = attrs.field(factory=lambda: SinkPolicy(retries=3, breaker_failures=5))
    name: str = "webhook"
    receiver: str = "oraculo-trio"
    block_private: bool = False
    _client: httpx.AsyncClient | None = attrs.field(default=None, init=False)

    async def __aenter__(self) -> WebhookSink:
        limit = self.policy.concurrency
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout),
            limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        client, self._client = self._client, None
        if client is not None:
            # Closing sockets is quick; shielded so a cancelled dispatcher leaks none.
            with trio.CancelScope(shield=True), trio.move_on_after(self.timeout):
                await client.aclose()

    async def deliver(self, transition: AlertTransition) -> None:
        """POST one notification.

        Raises:
            DeliveryError: connection refused or broken, timed out, or an HTTP 5xx, 408 or 429.
            DeliveryRejected: any other HTTP status >= 300 (the payload itself is refused).

        Cancellation: the request is abandoned and its connection closed.
        """
        client = self._client
        if client is None:
            raise DeliveryError(f"webhook {self.name} is not open (use async with)")
        if self.block_private:
            await self._check_public()
        body = json.dumps(alertmanager_payload(transition, receiver=self.receiver)).encode()
        try:
            with trio.fail_after(self.timeout):
                response = await client.post(
                    self.url, content=body, headers={"content-type": "application/json"}
                )
        except trio.TooSlowError:
            raise DeliveryError(f"timed out after {self.timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from None
        status = response.status_code
        if status < 300:
            return
        if 400 <= status < 500 and status not in (408, 429):
            raise DeliveryRejected(f"HTTP {status}")
        raise DeliveryError(f"HTTP {status}")

    async def _check_public(self) -> None:
        # Resolved here, before httpx resolves the name again: a name that moves to a
        # private address between the two is not caught (DNS rebinding needs more than this).
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
        except OSError as exc:
            raise DeliveryError(f"cannot resolve the webhook host {host!r}: {exc}") from None
        for *_, sockaddr in infos:
            address = ipaddress.ip_address(sockaddr[0])
            if not address.is_global or address.is_multicast:
                raise DeliveryRejected(
                    f"webhook host {host!r} resolves to the non-public address {address} "
                    "(dispatch.webhook_block_private)"
                )


def build_sinks(settings: Settings) -> list[Sink]:
    """The configured notification sinks."""
    sinks: list[Sink] = []
    for name in settings.dispatch.sinks:
        if name == "stdout":
            sinks.append(StdoutSink())
        elif name == "log":
            sinks.append(LogSink())
        elif name == "webhook":
            dispatch = settings.dispatch
            policy = SinkPolicy(
                retries=dispatch.webhook_retries,
                backoff_initial=dispatch.webhook_backoff,
                backoff_max=max(30.0, dispatch.webhook_backoff),
                concurrency=dispatch.webhook_concurrency,
                queue=dispatch.channel_capacity,
                breaker_failures=dispatch.webhook_breaker_failures,
                breaker_cooldown=dispatch.webhook_breaker_cooldown,
            )
            sinks.append(
                WebhookSink(
                    dispatch.webhook_url,
                    dispatch.webhook_timeout,
                    policy,
                    block_private=dispatch.webhook_block_private,
                )
            )
    return sinks
