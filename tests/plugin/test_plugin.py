"""The pytest plugin as a user meets it: a project outside this package, with no conftest,
whose tests use ``alert_service``, ``market_script``, ``mock_exchange`` and
``wait_for_alert`` through the ``pytest11`` entry point alone, run by a separate pytest."""

from __future__ import annotations

import os
import shutil
import sys
from importlib.metadata import entry_points
from pathlib import Path

import trio

PROJECT = Path(__file__).parent / "project"

PYTEST_INI = """\
[pytest]
trio_mode = true
filterwarnings = error
"""


def plugin_args() -> list[str]:
    """Load the plugin by its entry point when installed, else by name."""
    names = {entry.value for entry in entry_points(group="pytest11")}
    return [] if "oraculo_trio.testing" in names else ["-p", "oraculo_trio.testing"]


async def test_a_project_outside_the_package_uses_the_fixtures(tmp_path: Path) -> None:
    shutil.copy(PROJECT / "rules_under_test.py", tmp_path / "rules_under_test.py")
    shutil.copy(PROJECT / "user_tests.py", tmp_path / "test_big_jump.py")
    (tmp_path / "pytest.ini").write_text(PYTEST_INI)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORACULO_", "PYTEST_"))}
    command = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *plugin_args(),
        str(tmp_path),
    ]  # fmt: skip
    with trio.fail_after(120):
        result = await trio.run_process(
            command, cwd=tmp_path, env=env, capture_stdout=True, capture_stderr=True, check=False
        )
    output = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, output
    assert "2 passed" in output
