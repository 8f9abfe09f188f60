"""What ``oraculo_trio.core`` and ``oraculo_trio.core.rules`` export."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import oraculo_trio.core
import oraculo_trio.core.rules


@pytest.mark.parametrize("name", oraculo_trio.core.__all__)
def test_every_core_name_is_its_module_s_object(name: str) -> None:
    module = importlib.import_module(f"oraculo_trio.core.{oraculo_trio.core._MODULE_OF[name]}")
    assert getattr(oraculo_trio.core, name) is getattr(module, name)


def test_an_unknown_core_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        oraculo_trio.core.no_such_name  # noqa: B018


@pytest.mark.parametrize("name", oraculo_trio.core.rules.__all__)
def test_every_rules_name_is_importable(name: str) -> None:
    assert getattr(oraculo_trio.core.rules, name) is not None


def test_importing_events_does_not_load_the_rules() -> None:
    code = "import sys, oraculo_trio.core.events; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
