"""The CLI's side of the API: find the service's URL, call it, turn failures into one line."""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

import httpx

from oraculo_trio.errors import ServiceError, UsageError
from oraculo_trio.settings import Settings

_UNSPECIFIED = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def normalize_url(text: str) -> str:
    """``127.0.0.1:9108`` -> ``http://127.0.0.1:9108``; a trailing slash dropped.

    Raises:
        UsageError: not an http(s) URL with a host.
    """
    url = text.strip()
    if "://" not in url:
        url = "http://" + url
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (parses the port, raises on a bad one)
    except ValueError as exc:
        raise UsageError(f"--url {text!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--url {text!r}: expected http://HOST:PORT (such as 127.0.0.1:9108)")
    return url.rstrip("/")


def service_url(settings: Settings) -> str:
    """The URL of the service the configuration describes (``http.host:http.port``)."""
    host = _UNSPECIFIED.get(settings.http.host, settings.http.host)
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    return f"http://{host}:{settings.http.port}"


class ApiClient:
    """A running service's ``/api/v1``.

    Args:
        base_url: ``http://HOST:PORT``.
        token: ``http.api_token`` for writes ("" for none).
        timeout: seconds per request.
    """

    def __init__(self, base_url: str, token: str = "", timeout: float = 10.0) -> None:
        self.base_url = base_url
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(base_url=base_url, timeout=timeout, headers=headers)

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._client.close()

    def call(
        self, method: str, path: str, *, params: dict[str, str] | None = None, body: Any = None
    ) -> Any:
        """The JSON answer of ``method path``.

        Raises:
            ServiceError: no answer (with what to do), or an error answer (its message).
        """
        params = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._client.request(method, "/api/v1" + path, params=params, json=body)
        except httpx.HTTPError as exc:
            raise ServiceError(
                f"cannot reach the service at {self.base_url} ({type(exc).__name__}: {exc}): "
                "is it running? Give its address with --url, or read the store directly "
                "with --database-url"
            ) from None
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.status_code >= 400:
            error = answer.get("error") if isinstance(answer, dict) else None
            if response.status_code == 404 and error is None:
                raise ServiceError(
                    f"{self.base_url} has no API (HTTP 404): is it an oraculo-trio service of "
                    "this version?"
                )
            raise ServiceError(f"{self.base_url}: {error or f'HTTP {response.status_code}'}")
        if answer is None:
            raise ServiceError(f"{self.base_url} answered something that is not JSON")
        return answer
