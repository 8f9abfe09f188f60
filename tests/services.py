"""What the tests need from outside Python (a PostgreSQL server, Prometheus's tools): a test
that cannot have it is skipped, or fails when ``ORACULO_REQUIRE_SERVICES=1``."""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

REQUIRE_ENV = "ORACULO_REQUIRE_SERVICES"


def services_required() -> bool:
    """Whether a missing service fails the tests (``ORACULO_REQUIRE_SERVICES=1``)."""
    return os.environ.get(REQUIRE_ENV) == "1"


def unavailable(reason: str) -> NoReturn:
    """Skip the test, or fail it when ``ORACULO_REQUIRE_SERVICES=1``."""
    if services_required():
        pytest.fail(f"{reason} (and {REQUIRE_ENV}=1)")
    pytest.skip(reason)


def require_tool(name: str, package: str = "prometheus") -> str:
    """The path of the program ``name`` (``promtool``, ``prometheus``, ``chromium``), else
    unavailable (``package``: the Debian package that has it)."""
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} not found (Debian package: {package})")
    return path
