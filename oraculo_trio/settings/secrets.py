"""Secrets in the configuration: which keys hold them, masking them in messages, and a
world-readable configuration file that exposes them."""

from __future__ import annotations

import os
import stat
import tomllib
from typing import Any
from urllib.parse import parse_qsl, urlsplit

# Keys whose values may hold secrets (a password, a token in a webhook URL): masked in every
# message, and a world-readable configuration file holding them draws a warning.
SECRET_KEYS = ("database.url", "dispatch.webhook_url", "http.api_token")


def mask_url(url: str) -> str:
    """``url`` for logs and messages: the password, the path and the query hidden (webhook
    tokens live there), scheme, user, host and port kept."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<unparseable url>"
    if not parts.scheme or not parts.hostname:
        return "***" if url else url
    netloc = parts.hostname if port is None else f"{parts.hostname}:{port}"
    if parts.username is not None:
        netloc = (
            f"{parts.username}:***@{netloc}" if parts.password else f"{parts.username}@{netloc}"
        )
    hidden = parts.path not in ("", "/") or parts.query or parts.fragment
    return f"{parts.scheme}://{netloc}{'/***' if hidden else parts.path}"


def shown_value(where: str, value: Any) -> str:
    """``repr(value)`` for a message about key ``where``; secrets masked."""
    if where in SECRET_KEYS and isinstance(value, str):
        if where == "database.url":
            from oraculo_trio.store.base import mask_dsn

            return repr(mask_dsn(value))
        return repr(mask_url(value)) if where != "http.api_token" else "'***'"
    if where in SECRET_KEYS:
        return "<hidden>"
    return repr(value)


def holds_secret(where: str, value: Any) -> bool:
    """Whether ``value`` of key ``where`` holds a secret (a password, a token)."""
    if not isinstance(value, str) or not value:
        return False
    if where == "http.api_token":
        return True
    if where == "database.url":
        from oraculo_trio.store.base import mask_dsn

        return mask_dsn(value) != value
    try:
        parts = urlsplit(value)
    except ValueError:
        return True
    # A password, a query (?token=...), or a path segment that looks like a token (Slack's
    # /services/T0/B0/<24 characters>, Discord's /api/webhooks/<id>/<68 characters>).
    tokens = [p for p in parts.path.split("/") if len(p) >= 16 and not p.isalpha()]
    return bool(parts.password or parse_qsl(parts.query) or tokens)


def exposed_secrets(path: str | os.PathLike[str]) -> list[str]:
    """The keys of :data:`SECRET_KEYS` that configuration file ``path`` sets to a value
    holding a secret, when any user of the machine may read the file; [] otherwise."""
    try:
        mode = os.stat(path).st_mode
        if not mode & stat.S_IROTH:
            return []
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError):
        return []
    found = []
    for where in SECRET_KEYS:
        section, key = where.split(".")
        values = document.get(section)
        if isinstance(values, dict) and holds_secret(where, values.get(key)):
            found.append(where)
    return found
