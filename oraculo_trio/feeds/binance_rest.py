"""Binance's REST facts that the service and the mock exchange both follow.

The depth-snapshot path, the request weight of a snapshot by its ``limit``, the weight an IP
may spend per window, and what a 429 or 418 without ``Retry-After`` means. The snapshot
fetcher (:mod:`oraculo_trio.pipeline.snapshots`) spends within these limits; the mock
exchange (its REST server) enforces them.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

# Binance allows an IP this much request weight per window, for everything it sends.
IP_WEIGHT_LIMIT = 6000
IP_WEIGHT_WINDOW = 60.0

DEPTH_PATH = "/api/v3/depth"
MAX_SNAPSHOT_LIMIT = 5000

# (largest limit, weight), Binance spot's GET /api/v3/depth.
_WEIGHTS = ((100, 5), (500, 25), (1000, 50), (MAX_SNAPSHOT_LIMIT, 250))

# Seconds to stop for when a 429 or 418 comes without Retry-After (Binance bans for 2 min
# at least).
DEFAULT_RETRY_AFTER = {429: 60.0, 418: 120.0}


def snapshot_weight(limit: int) -> int:
    """Binance's request weight of ``GET /api/v3/depth`` with ``limit`` levels per side.

    Raises:
        ValueError: ``limit`` is not in 1..5000.
    """
    for most, weight in _WEIGHTS:
        if 1 <= limit <= most:
            return weight
    raise ValueError(f"limit={limit!r}: allowed 1..{MAX_SNAPSHOT_LIMIT}")


def rest_base_url(rest_url: str, ws_url: str) -> str:
    """The REST base URL: ``rest_url`` when set, else derived from the WebSocket URL.

    ``wss://stream.binance.com:9443`` gives ``https://api.binance.com`` (likewise
    ``binance.us``); any other ``ws(s)://host:port`` gives ``http(s)://host:port``.
    """
    if rest_url:
        return rest_url.rstrip("/")
    parts = urlsplit(ws_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    host = parts.hostname or ""
    if host.startswith("stream."):
        return f"{scheme}://api.{host[len('stream.') :]}"
    return urlunsplit((scheme, parts.netloc, "", "", "")).rstrip("/")
