"""The JSON API under ``/api/v1``, served next to ``/metrics`` (``docs/api.md``).

::

    GET    /api/v1/alerts            ?state=firing,pending|all &rule= &symbol= &severity=
    GET    /api/v1/alerts/history    ?since=1h|ISO|unix &rule= &symbol= &limit=
    GET    /api/v1/silences          ?state=active,pending|expired|all
    POST   /api/v1/silences          {"matchers": [...], "duration": "2h", "comment": "...",
                                      "created_by": "..."}
    DELETE /api/v1/silences/{id}
    GET    /api/v1/rules
    GET    /api/v1/status

The HTTP endpoint runs in threads (``observe/http.py``), so that ``/metrics`` answers while
the Trio loop is blocked; :meth:`Api.respond` is called there and hands each request to the
Trio loop (``trio.from_thread.run``), where the store lives. A request gets
:data:`REQUEST_TIMEOUT` seconds; a loop that does not answer in that time gets a 503.

Writes (POST and DELETE) need ``Authorization: Bearer <http.api_token>`` when a token is
set; with ``http.host`` anything but a loopback address they need one in any case (without
a token configured they are refused).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import attrs
import trio

from oraculo_trio import __version__
from oraculo_trio.api import operations as ops
from oraculo_trio.core.rules import CompiledRule
from oraculo_trio.dispatch.render import utc_iso
from oraculo_trio.errors import StoreError
from oraculo_trio.store.base import Store

LOGGER = logging.getLogger("oraculo_trio.api.server")

PREFIX = "/api/v1"
REQUEST_TIMEOUT = 10.0
"""Seconds one request may take in the Trio loop (store reads included)."""
MAX_BODY = 64 * 1024
JSON_TYPE = "application/json"

Response = tuple[int, str, bytes]


@attrs.frozen
class Request:
    """One HTTP request, as the HTTP thread read it."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes

    @classmethod
    def parse(cls, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Request:
        parts = urlsplit(target)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        lowered = {k.lower(): v for k, v in headers.items()}
        return cls(method.upper(), parts.path.rstrip("/") or "/", query, lowered, body)


class HttpError(Exception):
    """Raised by a handler to answer with ``status`` and an ``{"error": message}`` body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@attrs.define(eq=False)
class ApiSources:
    """What the API reads, set by its owner (the service or the ``--workers`` supervisor).

    Attributes:
        store: the open store; None until it is (requests then get a 503).
        rules: the rules in force (async: the supervisor reads its source).
        symbols: ``feed.symbols``.
        status: the ``/api/v1/status`` body's own part (service name, readiness, ...).
        silences_changed: awaited after a silence was added or expired, so the dispatcher
            sees it at once rather than at its next refresh.
    """

    store: Store | None = None
    rules: Callable[[], Awaitable[Sequence[CompiledRule]]] | None = None
    symbols: Sequence[str] = ()
    status: Callable[[], dict[str, Any]] = dict
    silences_changed: Callable[[], Awaitable[None]] | None = None


def _loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@attrs.define(eq=False)
class Api:
    """The ``/api/v1`` endpoints over :class:`ApiSources`.

    Create it in the Trio thread (it keeps that run's token), hand it to ``serve_http``.

    Attributes:
        sources: what it reads (filled in by the owner as things open).
        host: ``http.host``: a non-loopback host makes writes need a token.
        token: ``http.api_token`` ("" for none).
        clock: wall-clock seconds.
    """

    sources: ApiSources
    host: str
    token: str = ""
    clock: Callable[[], float] = time.time
    _trio_token: trio.lowlevel.TrioToken = attrs.field(factory=trio.lowlevel.current_trio_token)

    def __attrs_post_init__(self) -> None:
        if not self.token and not _loopback(self.host):
            LOGGER.warning(
                "http.host is %s, not a loopback address, and http.api_token is not set: the "
                "API's writes (silences) are refused; set ORACULO_HTTP_API_TOKEN to allow them",
                self.host,
            )

    def respond(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> Response:
        """Answer one request; called from an HTTP thread. Never raises."""
        try:
            request = Request.parse(method, target, headers, body)
            self._authorize(request)
            return trio.from_thread.run(self._handle, request, trio_token=self._trio_token)
        except HttpError as exc:
            return _error(exc.status, str(exc))
        except trio.RunFinishedError:
            return _error(503, "the service is stopping")
        except Exception:
            LOGGER.exception("API error on %s %s", method, target)
            return _error(500, "internal error (logged by the service)")

    def _authorize(self, request: Request) -> None:
        if request.method == "GET":
            return
        if not self.token:
            if _loopback(self.host):
                return
            raise HttpError(
                403,
                f"writes are refused: http.host is {self.host}, not a loopback address, and "
                "http.api_token is not set",
            )
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            value.strip().encode(), self.token.encode()
        ):
            raise HttpError(401, "writes need the header Authorization: Bearer <http.api_token>")

    async def _handle(self, request: Request) -> Response:
        try:
            with trio.fail_after(REQUEST_TIMEOUT):
                status, body = await self._route(request)
        except trio.TooSlowError:
            return _error(503, f"no answer within {REQUEST_TIMEOUT:g} s (store busy?)")
        except HttpError as exc:
            return _error(exc.status, str(exc))
        except ops.BadRequest as exc:
            return _error(400, str(exc))
        except StoreError as exc:
            return _error(503, f"the store failed: {exc}")
        return status, JSON_TYPE, json.dumps(body, ensure_ascii=False).encode() + b"\n"

    async def _route(self, request: Request) -> tuple[int, Any]:
        path, method = request.path, request.method
        routes: dict[str, dict[str, Callable[[Request], Awaitable[tuple[int, Any]]]]] = {
            f"{PREFIX}/alerts": {"GET": self._alerts},
            f"{PREFIX}/alerts/history": {"GET": self._history},
            f"{PREFIX}/silences": {"GET": self._silences, "POST": self._add_silence},
            f"{PREFIX}/rules": {"GET": self._rules},
            f"{PREFIX}/status": {"GET": self._status},
        }
        if path.startswith(f"{PREFIX}/silences/"):
            routes[path] = {"DELETE": self._expire_silence}
        methods = routes.get(path)
        if methods is None:
            raise HttpError(404, f"no such endpoint: {path} (see docs/api.md)")
        handler = methods.get(method)
        if handler is None:
            raise HttpError(405, f"{method} is not allowed on {path}: {', '.join(methods)}")
        return await handler(request)

    def _store(self) -> Store:
        if self.sources.store is None:
            raise HttpError(503, "the store is not open yet")
        return self.sources.store

    async def _rules_in_force(self) -> Sequence[CompiledRule]:
        return [] if self.sources.rules is None else await self.sources.rules()

    async def _alerts(self, request: Request) -> tuple[int, Any]:
        which = ops.AlertFilter.from_query(request.query)
        alerts = await ops.list_alerts(self._store(), which, self.clock())
        return 200, {"alerts": alerts}

    async def _history(self, request: Request) -> tuple[int, Any]:
        arguments = ops.history_query(request.query, self.clock())
        return 200, {"events": await ops.alert_history(self._store(), **arguments)}

    async def _silences(self, request: Request) -> tuple[int, Any]:
        states = ops.silence_states(request.query.get("state"))
        return 200, {"silences": await ops.list_silences(self._store(), states, self.clock())}

    async def _add_silence(self, request: Request) -> tuple[int, Any]:
        now = self.clock()
        try:
            body = json.loads(request.body or b"null")
        except ValueError:
            raise ops.BadRequest("the body is not JSON") from None
        silence_request = ops.SilenceRequest.from_json(body, now)
        silence, warnings = await ops.add_silence(
            self._store(),
            silence_request,
            await self._rules_in_force(),
            self.sources.symbols,
            now,
        )
        for warning in warnings:
            LOGGER.warning("silence %d: %s", silence["id"], warning)
        await self._silences_changed()
        return 201, {"silence": silence, "warnings": warnings}

    async def _expire_silence(self, request: Request) -> tuple[int, Any]:
        text = request.path.rsplit("/", 1)[1]
        if not text.isdigit() or len(text) > 15:
            raise HttpError(404, f"no silence {text!r}: ids are integers")
        silence = await ops.expire_silence(self._store(), int(text), self.clock())
        if silence is None:
            raise HttpError(404, f"no silence {text} still in effect")
        await self._silences_changed()
        return 200, {"silence": silence}

    async def _silences_changed(self) -> None:
        if self.sources.silences_changed is not None:
            await self.sources.silences_changed()

    async def _rules(self, request: Request) -> tuple[int, Any]:
        return 200, {"rules": [ops.rule_view(r) for r in await self._rules_in_force()]}

    async def _status(self, request: Request) -> tuple[int, Any]:
        now = self.clock()
        store = self._store()
        rows = await store.load_alert_states()
        counts = {state: 0 for state in ("pending", "firing", "resolved", "inactive")}
        for row in rows:
            counts[row.state] = counts.get(row.state, 0) + 1
        silences = await store.fetch_silences(not_ended_at=now)
        body = {
            "version": __version__,
            "time": utc_iso(now),
            **self.sources.status(),
            "rules": len(await self._rules_in_force()),
            "alerts": counts,
            "silences_active": sum(1 for s in silences if s.active(now)),
            "store": store.dialect,
        }
        return 200, body


def _error(status: int, message: str) -> Response:
    body = json.dumps({"error": message}, ensure_ascii=False).encode() + b"\n"
    return status, JSON_TYPE, body
