"""The mock exchange's REST side, as Binance serves it for one market: ``<prefix>/depth``,
``/exchangeInfo``, ``/time``, ``/aggTrades`` and ``/historicalTrades`` (``<prefix>``: spot and
Binance.US ``/api/v3``, USD-M ``/fapi/v1``, COIN-M ``/dapi/v1``).

trio-websocket's server only speaks WebSocket, so this is a small HTTP/1.1 server of its own
(h11 over a trio listener, keep-alive), on its own port: ``MockExchange`` starts one and shows
it as ``rest_url``.

Like Binance (the market's row of :mod:`oraculo_trio.feeds.binance_markets`):

- a depth request weighs by its ``limit`` (spot 5, 25, 50 or 250 up to 100, 500, 1000, 5000;
  futures 2, 5, 10, 20 up to 50, 100, 500, 1000; default 100), every other request its
  endpoint's weight; the weight of a fixed ``window`` (Binance: the calendar minute) is
  limited to ``weight_limit`` (the market's per-IP limit: spot 6000, usdm/coinm 2400, us
  1200): past it, HTTP 429 with ``Retry-After`` (seconds to the window's end) and the
  ``X-MBX-USED-WEIGHT-1M`` header on every answer;
- ``exchangeInfo`` lists the market's symbols as ``TRADING`` (and any ``statuses`` given,
  such as a delisted symbol in ``BREAK``); ``time`` answers the exchange's clock (its
  ``clock_offset`` included); ``aggTrades?fromId=`` and ``historicalTrades?fromId=`` answer
  from the trades the exchange published (``tape.py``); ``historicalTrades`` wants an API
  key where Binance does (every market but spot): without one, 401 and code -2014;
- a request during a ``Retry-After`` it was given is refused (429 again); more than
  ``ban_after`` of them get the IP banned: HTTP 418 with ``Retry-After`` for ``ban_seconds``,
  and every request until then too (Binance bans for "failing to back off after 429s");
- errors are ``{"code": ..., "msg": ...}`` bodies (``-1121`` invalid symbol, ``-1100`` bad
  parameter, ``-1003`` too much weight).

Faults on command (tests and ``--faults 429,slow``): :meth:`RestServer.fail_next` answers the
next requests with 429 (or 418) and a ``Retry-After``; :meth:`RestServer.fail_depth` answers
every depth request of a symbol with an error (500) until :meth:`RestServer.heal_depth`;
``delay`` (or a source's :meth:`SnapshotSource.rest_fault`) slows every snapshot down, and
``hold`` keeps snapshots waiting until a test lets them go. Every request is recorded
(:attr:`RestServer.requests`) so a test can check the weight a client spent.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qs, urlsplit

import attrs
import h11
import trio

from oraculo_trio.feeds.binance_markets import (
    AGG_TRADES,
    BINANCE_MARKETS,
    DEPTH,
    EXCHANGE_INFO,
    HISTORICAL_TRADES,
    TIME,
    BinanceMarket,
)
from oraculo_trio.feeds.binance_rest import IP_WEIGHT_WINDOW, TRADING
from oraculo_trio.mockexchange.tape import AGG_TRADE, TRADE, TradeTape

LOGGER = logging.getLogger("oraculo_trio.mockexchange.rest")

_MAX_REQUEST_BYTES = 64 * 1024


@attrs.frozen
class RestFault:
    """How to answer one request instead of normally: an error status with ``Retry-After``,
    or the snapshot after ``delay`` seconds."""

    status: int = 200
    retry_after: float = 0.0
    delay: float = 0.0


@runtime_checkable
class SnapshotSource(Protocol):
    """What the REST server serves: depth snapshots by symbol."""

    def snapshot(self, symbol: str, limit: int) -> dict[str, Any] | None:
        """``{"lastUpdateId", "bids", "asks"}`` (at most ``limit`` levels a side, best first,
        price and quantity strings), or None for a symbol it does not know."""
        ...


@attrs.frozen
class RestRequest:
    """One request as the server saw it (``at`` on the trio clock)."""

    at: float
    symbol: str
    limit: int
    weight: int
    status: int
    path: str = ""


_Body = Callable[[], tuple[int, bytes]]
"""Makes an answer's status and body (called when answered, after any delay)."""


@attrs.define(eq=False)
class RestServer:
    """A Binance-like REST endpoint of one market: depth snapshots from a
    :class:`SnapshotSource`, exchangeInfo, time, and trades from a :class:`TradeTape`.

    Start it with ``await nursery.start(server.serve)``; then ``server.url`` is its base URL.

    Attributes:
        source: the snapshots (None: every depth request is an invalid symbol).
        market: the Binance market it plays (paths, weights, its default ``weight_limit``).
        symbols: the symbols ``exchangeInfo`` lists as trading (upper case).
        statuses: more symbols for ``exchangeInfo``, with their status (``{"OLDUSDT":
            "BREAK"}``: delisted).
        tape: the trades published (``aggTrades``, ``historicalTrades``).
        clock: the exchange's clock, epoch seconds (``time``).
        weight_limit: weight allowed per ``window`` (default: the market's per-IP limit).
        window: seconds of one rate-limit window (fixed windows, as Binance's minutes).
        ban_after: requests during a ``Retry-After`` tolerated before a ban (a client may
            have sent some before the 429 reached it).
        ban_seconds: how long a 418 ban lasts.
        delay: seconds every snapshot answer waits (slow snapshots).
        hold: while an unset event, every snapshot answer waits for it to be set (a test
            holds a resync open until it has seen what it waits for, with no clock involved).
        requests: every request answered, in order.
    """

    source: SnapshotSource | None
    market: BinanceMarket = BINANCE_MARKETS["spot"]
    symbols: Iterable[str] = ()
    statuses: Mapping[str, str] = attrs.field(factory=dict)
    tape: TradeTape = attrs.field(factory=TradeTape)
    clock: Callable[[], float] = time.time
    weight_limit: int = attrs.field(
        default=attrs.Factory(lambda self: self.market.ip_weight_limit, takes_self=True)
    )
    window: float = IP_WEIGHT_WINDOW
    ban_after: int = 2
    ban_seconds: float = 120.0
    delay: float = 0.0
    hold: trio.Event | None = None
    url: str = attrs.field(init=False, default="")
    port: int = attrs.field(init=False, default=0)
    requests: list[RestRequest] = attrs.field(init=False, factory=list)
    _faults: deque[RestFault] = attrs.field(init=False, factory=deque)
    _failing_depth: dict[str, int] = attrs.field(init=False, factory=dict)
    _window_start: float = attrs.field(init=False, default=-math.inf)
    _window_used: int = attrs.field(init=False, default=0)
    _retry_until: float = attrs.field(init=False, default=-math.inf)
    _violations: int = attrs.field(init=False, default=0)
    _banned_until: float = attrs.field(init=False, default=-math.inf)
    _changed: trio.Event = attrs.field(init=False, factory=trio.Event)

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[RestServer] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen and answer until cancelled.

        Args:
            host: interface to bind.
            port: TCP port; 0 picks a free one (``url`` says which).
            task_status: receives this server once it listens.

        Cancellation: closes the listener and every connection.
        """
        listeners = await trio.open_tcp_listeners(port, host=host)
        self.port = listeners[0].socket.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._connection, listeners)
            task_status.started(self)

    def fail_next(self, count: int = 1, status: int = 429, retry_after: float = 1.0) -> None:
        """Answer the next ``count`` requests with ``status`` (429 or 418) and ``Retry-After``."""
        for _ in range(count):
            self._faults.append(RestFault(status, retry_after))

    def fail_depth(self, symbol: str, status: int = 500) -> None:
        """Answer every depth request of ``symbol`` (upper case) with ``status`` and an error
        body, weighed as usual, until :meth:`heal_depth`."""
        self._failing_depth[symbol] = status

    def heal_depth(self, symbol: str) -> None:
        """Serve ``symbol``'s depth again."""
        self._failing_depth.pop(symbol, None)

    def weight_used(self, since: float = -math.inf) -> int:
        """Weight of the requests answered (any status) at or after ``since``."""
        return sum(r.weight for r in self.requests if r.at >= since)

    def max_weight_in(self, seconds: float) -> int:
        """The most weight any ``seconds``-long sliding window of requests holds."""
        best = 0
        start = 0
        total = 0
        requests = self.requests
        for request in requests:
            total += request.weight
            while request.at - requests[start].at >= seconds:
                total -= requests[start].weight
                start += 1
            best = max(best, total)
        return best

    def count(self, status: int | None = None) -> int:
        """Requests answered with ``status`` (all of them when None)."""
        return sum(1 for r in self.requests if status is None or r.status == status)

    async def wait_for(self, predicate: Callable[[RestServer], bool]) -> None:
        """Return once ``predicate(self)`` holds (checked after every request).

        Cancellation: safe; put a ``trio.fail_after`` around it in tests.
        """
        while not predicate(self):
            await self._changed.wait()

    # -- HTTP -------------------------------------------------------------------------------

    async def _connection(self, stream: trio.SocketStream) -> None:
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_REQUEST_BYTES)
        async with stream:
            while True:
                try:
                    event = connection.next_event()
                except h11.RemoteProtocolError:
                    return
                if event is h11.NEED_DATA:
                    try:
                        data = await stream.receive_some(65536)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        return
                    connection.receive_data(data)
                    continue
                if isinstance(event, h11.Request):
                    status, headers, body = await self._answer(event)
                    try:
                        await self._send(stream, connection, status, headers, body)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        return
                elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                    if event is h11.PAUSED and connection.our_state is h11.DONE:
                        try:
                            connection.start_next_cycle()
                        except h11.LocalProtocolError:
                            return
                        continue
                    return

    async def _send(
        self,
        stream: trio.SocketStream,
        connection: h11.Connection,
        status: int,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> None:
        headers = [
            ("Content-Type", "application/json;charset=UTF-8"),
            ("Content-Length", str(len(body))),
            *headers,
        ]
        data = connection.send(h11.Response(status_code=status, headers=headers))
        data += connection.send(h11.Data(data=body))
        data += connection.send(h11.EndOfMessage())
        await stream.send_all(data)

    async def _answer(self, request: h11.Request) -> tuple[int, list[tuple[str, str]], bytes]:
        target = urlsplit(request.target.decode("latin-1"))
        market = self.market
        routes = {
            market.path(DEPTH): self._depth,
            market.path(EXCHANGE_INFO): self._exchange_info,
            market.path(TIME): self._time,
            market.path(AGG_TRADES): self._agg_trades,
            market.path(HISTORICAL_TRADES): self._historical_trades,
        }
        route = routes.get(target.path)
        if request.method != b"GET" or route is None:
            return 404, [], _error(-1, "Not found")
        query = {key: values[0] for key, values in parse_qs(target.query).items()}
        headers_in = {name.decode().lower(): value for name, value in request.headers}
        try:
            symbol, limit, weight, body = route(query, headers_in)
        except ValueError as exc:
            return 400, [], _error(-1100, str(exc))
        now = trio.current_time()
        depth = target.path == market.path(DEPTH)
        status, headers, refusal, delay = self._decide(symbol, weight, now, depth)
        self.requests.append(RestRequest(now, symbol, limit, weight, status, target.path))
        self._changed.set()
        self._changed = trio.Event()
        if refusal is not None:
            return status, headers, refusal
        # Taken when answered, after any delay (a slow snapshot is as fresh as it comes).
        await trio.sleep(delay)
        if depth and self.hold is not None:
            await self.hold.wait()
        status, answer = body()
        return status, headers, answer

    # -- endpoints: (symbol, limit, weight, body) of a request -----------------------------

    def _depth(self, query: dict[str, str], headers: dict[str, bytes]) -> tuple:
        symbol = query.get("symbol", "")
        limit = _int(query, "limit", 100)
        try:
            weight = self.market.depth_weight(limit)
        except ValueError:
            raise ValueError("Illegal characters found in parameter 'limit'.") from None

        def body() -> tuple[int, bytes]:
            snapshot = self.source.snapshot(symbol, limit) if self.source is not None else None
            if snapshot is None:
                return 400, _error(-1121, "Invalid symbol.")
            return 200, _encode(snapshot)

        return symbol, limit, weight, body

    def _exchange_info(self, query: dict[str, str], headers: dict[str, bytes]) -> tuple:
        def body() -> tuple[int, bytes]:
            listed = {symbol.upper(): TRADING for symbol in self.symbols} | dict(self.statuses)
            key = self.market.status_key
            symbols = [{"symbol": name, key: state} for name, state in listed.items()]
            info = {
                "timezone": "UTC",
                "serverTime": int(self.clock() * 1000),
                "rateLimits": [
                    {
                        "rateLimitType": "REQUEST_WEIGHT",
                        "interval": "MINUTE",
                        "intervalNum": 1,
                        "limit": self.weight_limit,
                    }
                ],
                "symbols": symbols,
            }
            return 200, _encode(info)

        return "", 0, self.market.exchange_info_weight, body

    def _time(self, query: dict[str, str], headers: dict[str, bytes]) -> tuple:
        def body() -> tuple[int, bytes]:
            return 200, _encode({"serverTime": int(self.clock() * 1000)})

        return "", 0, self.market.time_weight, body

    def _agg_trades(self, query: dict[str, str], headers: dict[str, bytes]) -> tuple:
        return self._trades(query, AGG_TRADE, self.market.agg_trades_weight)

    def _historical_trades(self, query: dict[str, str], headers: dict[str, bytes]) -> tuple:
        symbol, limit, weight, body = self._trades(
            query, TRADE, self.market.historical_trades_weight
        )
        if not self.market.historical_trades_keyless and "x-mbx-apikey" not in headers:

            def body() -> tuple[int, bytes]:
                return 401, _error(-2014, "API-key format invalid.")

        return symbol, limit, weight, body

    def _trades(self, query: dict[str, str], kind: str, weight: int) -> tuple:
        symbol = query.get("symbol", "")
        limit = _int(query, "limit", 500)
        if not 1 <= limit <= 1000:
            raise ValueError("Illegal characters found in parameter 'limit'.")
        from_id = _int(query, "fromId", None)

        def body() -> tuple[int, bytes]:
            listed = {s.upper() for s in self.symbols}
            if symbol not in listed:
                return 400, _error(-1121, "Invalid symbol.")
            return 200, _encode(self.tape.query(symbol, kind, from_id, limit))

        return symbol, limit, weight, body

    def _decide(
        self, symbol: str, weight: int, now: float, depth: bool = True
    ) -> tuple[int, list[tuple[str, str]], bytes | None, float]:
        """Status, headers, the body of a refusal (None: answer, after the delay) for one
        request. Faults on command (:meth:`fail_next`, the source's) hit depth requests."""
        if now < self._banned_until:
            return 418, _retry(self._banned_until - now), _error(-1003, "IP banned."), 0.0
        if now < self._retry_until:
            # It did not wait for the Retry-After it was given.
            self._violations += 1
            if self._violations <= self.ban_after:
                return 429, _retry(self._retry_until - now), _too_many(), 0.0
            self._banned_until = now + self.ban_seconds
            return 418, _retry(self.ban_seconds), _error(-1003, "IP banned."), 0.0
        fault = self._faults.popleft() if self._faults and depth else None
        if fault is None and depth:
            rest_fault = getattr(self.source, "rest_fault", None)
            fault = rest_fault(symbol) if callable(rest_fault) else None
        if fault is not None and fault.status in (429, 418):
            until = now + fault.retry_after
            if fault.status == 418:
                self._banned_until = until
            else:
                self._retry_until = until
                self._violations = 0
            return fault.status, _retry(fault.retry_after), _too_many(), 0.0
        if now >= self._window_start + self.window:
            self._window_start = now
            self._window_used = 0
        if self._window_used + weight > self.weight_limit:
            self._retry_until = self._window_start + self.window
            self._violations = 0
            return 429, _retry(self._retry_until - now), _too_many(), 0.0
        self._window_used += weight
        headers = [("X-MBX-USED-WEIGHT-1M", str(self._window_used))]
        failing = self._failing_depth.get(symbol) if depth else None
        if failing is not None:
            return failing, headers, _error(-1001, "Internal error; unable to process."), 0.0
        return 200, headers, None, self.delay + (fault.delay if fault is not None else 0.0)


def _error(code: int, msg: str) -> bytes:
    return json.dumps({"code": code, "msg": msg}).encode()


def _too_many() -> bytes:
    return _error(-1003, "Too much request weight used; please use WebSocket Streams.")


def _retry(seconds: float) -> list[tuple[str, str]]:
    return [("Retry-After", str(max(0, math.ceil(seconds * 1000) / 1000)))]


def _encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _int(query: dict[str, str], key: str, default: int | None) -> Any:
    value = query.get(key)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"Illegal characters found in parameter '{key}'.") from None
