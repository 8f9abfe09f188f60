"""``/metrics``, ``/healthz`` and ``/readyz``, served from threads, not from the Trio loop.

A blocked loop is exactly when an operator needs the metrics and the health verdict, so the
server is the standard library's ``ThreadingHTTPServer`` running in its own daemon thread:
it only reads thread-safe state (the Prometheus registry, :class:`Readiness`,
:attr:`Watchdog.blocked`).

* ``/metrics``: the registry in Prometheus text format 0.0.4.
* ``/healthz``: 200 ``ok``; 503 while the watchdog sees the loop blocked.
* ``/readyz``: 200 when every component is ready, else 503; a JSON body either way, naming
  the components that are not ready.
* ``/api/...``: handed to the API its owner gives (``oraculo_trio.api.server``), if any.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Protocol

from oraculo_trio.observe.health import Readiness
from oraculo_trio.observe.metrics import ServiceMetrics

if TYPE_CHECKING:
    from oraculo_trio.observe.watchdog import Watchdog

LOGGER = logging.getLogger("oraculo_trio.observe.http")

DEFAULT_HOST = "127.0.0.1"
THREAD_NAME = "oraculo-http"
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"
JSON_CONTENT_TYPE = "application/json"
API_PREFIX = "/api/"
MAX_API_BODY = 64 * 1024


class ApiHandler(Protocol):
    """Answers the requests under ``/api/`` (called from the HTTP threads; never raises)."""

    def respond(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, str, bytes]: ...


class _Server(ThreadingHTTPServer):
    # Handler threads never hold up shutdown; an idle keep-alive connection ends on its own
    # after the handler's timeout.
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        metrics: ServiceMetrics,
        readiness: Readiness | None,
        watchdog: Watchdog | None,
        api: ApiHandler | None = None,
    ) -> None:
        self.metrics = metrics
        self.readiness = readiness
        self.watchdog = watchdog
        self.api = api
        # ``serve_forever`` polls for its shutdown flag (a thread wake every poll interval,
        # idle or not); this server sleeps until a connection or :meth:`stop` writes here.
        # Made before binding: a failed bind calls :meth:`server_close`, which closes it.
        self._stop_read, self._stop_write = os.pipe()
        super().__init__(address, _Handler)
        # :meth:`handle_request` never blocks longer than this should a ready connection
        # vanish before it is accepted.
        self.timeout = 0.1

    def serve_until_stopped(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self, selectors.EVENT_READ)
            selector.register(self._stop_read, selectors.EVENT_READ)
            while True:
                ready = [key.fileobj for key, _ in selector.select()]
                if self._stop_read in ready:
                    return
                self.handle_request()

    def stop(self) -> None:
        """End :meth:`serve_until_stopped` (from another thread)."""
        os.write(self._stop_write, b"x")

    def server_close(self) -> None:
        super().server_close()
        os.close(self._stop_read)
        os.close(self._stop_write)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = 30
    # Headers and body go out in two writes: without TCP_NODELAY a keep-alive client waits
    # for the delayed ACK (40 ms) on every request.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path.startswith(API_PREFIX):
            self._api("GET")
            return
        try:
            if path == "/metrics":
                self._send(200, METRICS_CONTENT_TYPE, self.server.metrics.exposition())
            elif path == "/healthz":
                self._healthz()
            elif path == "/readyz":
                self._readyz()
            else:
                self._send(404, TEXT_CONTENT_TYPE, b"not found: try /metrics /healthz /readyz\n")
        except Exception:
            LOGGER.exception("error serving %s", path)
            self._send(500, TEXT_CONTENT_TYPE, b"internal error\n")

    def do_POST(self) -> None:
        self._api("POST")

    def do_DELETE(self) -> None:
        self._api("DELETE")

    def __getattr__(self, name: str) -> Any:
        # Any other method (PUT, PATCH, QUERY...): a 405 naming the allowed ones (the API's
        # answer), rather than the standard library's 501.
        if name.startswith("do_") and name != "do_HEAD":
            return lambda: self._api(name[3:])
        raise AttributeError(name)

    def _api(self, method: str) -> None:
        api = self.server.api
        if api is None or not self.path.startswith(API_PREFIX):
            status = 404 if method in ("POST", "DELETE") else 405
            self._send(status, TEXT_CONTENT_TYPE, b"not found: try /metrics /healthz /readyz\n")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_API_BODY:
            self.close_connection = True
            body = b'{"error": "the body must be at most 65536 bytes, with a Content-Length"}\n'
            self._send(413, JSON_CONTENT_TYPE, body)
            return
        data = self.rfile.read(length) if length else b""
        status, content_type, body = api.respond(method, self.path, dict(self.headers), data)
        self._send(status, content_type, body)

    def _healthz(self) -> None:
        watchdog = self.server.watchdog
        if watchdog is not None and watchdog.blocked:
            body = f"event loop blocked for {watchdog.blocked_for():.1f} s\n".encode()
            self._send(503, TEXT_CONTENT_TYPE, body)
        else:
            self._send(200, TEXT_CONTENT_TYPE, b"ok\n")

    def _readyz(self) -> None:
        readiness = self.server.readiness
        if readiness is None:
            ready, components = True, {}
        else:
            ready, components = readiness.snapshot()
        body: dict[str, Any] = {
            "ready": ready,
            "reasons": readiness.reasons() if readiness is not None else [],
            "not_ready": sorted(name for name, entry in components.items() if not entry["ok"]),
            "components": components,
        }
        self._send(200 if ready else 503, JSON_CONTENT_TYPE, json.dumps(body).encode() + b"\n")

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # Scrapes come every few seconds: access logs would be noise.
        LOGGER.debug("%s " + format, self.address_string(), *args)


@contextmanager
def serve_http(
    host: str,
    port: int,
    metrics: ServiceMetrics,
    readiness: Readiness | None = None,
    watchdog: Watchdog | None = None,
    api: ApiHandler | None = None,
) -> Iterator[tuple[str, int]]:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` from a thread for the ``with`` block.

    Args:
        host: address to bind; the service's default is ``DEFAULT_HOST`` (127.0.0.1).
        port: TCP port; 0 picks a free one.
        metrics: the registry served on ``/metrics``.
        readiness: the verdict of ``/readyz``; always ready when None.
        watchdog: makes ``/healthz`` answer 503 while it sees the loop blocked.
        api: answers ``/api/...`` (404 without one).

    Yields:
        The bound ``(host, port)``.

    Raises:
        OSError: the address cannot be bound (in use, not local).
    """
    server = _Server((host, port), metrics, readiness, watchdog, api)
    thread = threading.Thread(target=server.serve_until_stopped, name=THREAD_NAME, daemon=True)
    thread.start()
    bound_host, bound_port = server.server_address[:2]
    LOGGER.info("serving /metrics /healthz /readyz on http://%s:%d", bound_host, bound_port)
    try:
        yield str(bound_host), int(bound_port)
    finally:
        server.stop()
        thread.join()
        server.server_close()
