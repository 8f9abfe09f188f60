"""The reliability suite's plumbing: its mode, each scenario's figures, the report.

``--reliability=quick`` (the default, part of ``just test``) runs short versions of every
scenario; ``--reliability=full`` (``just reliability``) runs them in full, under load from
the load generator. ``ORACULO_TEST_RELIABILITY=quick|full`` does the same without the option
(for a run of the whole suite). Chosen explicitly, the session ends by writing
``artifacts/reliability/<UTC timestamp>/report.json`` and printing the table.

A scenario takes the ``scenario`` fixture, ``figures = scenario("area/name")``, and fills
in its figures; whether it passed comes from the test's outcome.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.reliability.report import Figures, format_table, write_report

ROOT = Path(__file__).resolve().parents[2]
MODES = ("quick", "full")
ENV_MODE = "ORACULO_TEST_RELIABILITY"

_FIGURES = pytest.StashKey[list[Figures]]()
_REPORT = pytest.StashKey[Path]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("reliability")
    group.addoption(
        "--reliability",
        choices=MODES,
        default=None,
        help="reliability scenarios: quick (short versions, the default) or full (under "
        "load, full durations); chosen explicitly, writes "
        "artifacts/reliability/<timestamp>/report.json and prints the table",
    )
    group.addoption(
        "--overload-rate",
        type=float,
        default=None,
        help="messages per second of the overload/generator-max scenario (default: 50,000, "
        "twice the saturation target; the generator sends what it can)",
    )
    group.addoption(
        "--rss-bound-mb",
        type=float,
        default=256.0,
        help="the RSS the service must stay under in the overload scenarios (its queues are "
        "bounded: ~60 MB measured)",
    )


def _explicit_mode(config: pytest.Config) -> str | None:
    mode = config.getoption("reliability", default=None) or os.environ.get(ENV_MODE) or None
    if mode is not None and mode not in MODES:
        raise pytest.UsageError(f"{ENV_MODE}={mode!r}: expected one of {MODES}")
    return mode


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_FIGURES] = []


class Mode:
    """The suite's mode, and the figures that differ between quick and full."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.full = name == "full"
        self.quick = not self.full

    def pick(self, quick: float, full: float) -> float:
        """``quick`` or ``full``, by mode."""
        return full if self.full else quick

    def count(self, quick: int, full: int) -> int:
        """``quick`` or ``full``, by mode, as an int."""
        return int(full if self.full else quick)

    @property
    def rate(self) -> float:
        """Background load, messages per second, of the in-process scenarios."""
        return self.pick(300.0, 2000.0)


@pytest.fixture(scope="session")
def mode(pytestconfig: pytest.Config) -> Mode:
    """quick or full (see the module doc)."""
    return Mode(_explicit_mode(pytestconfig) or "quick")


@pytest.fixture
def scenario(request: pytest.FixtureRequest) -> Iterator[Callable[[str], Figures]]:
    """``scenario(name)`` returns the :class:`Figures` of a scenario run by this test."""
    made: list[Figures] = []

    def make(name: str) -> Figures:
        figures = Figures(name)
        made.append(figures)
        request.config.stash[_FIGURES].append(figures)
        return figures

    yield make
    passed = getattr(request.node, "_reliability_passed", False)
    for figures in made:
        figures.passed = passed


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    if report.when == "call":
        item._reliability_passed = report.passed  # type: ignore[attr-defined]
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    figures = config.stash.get(_FIGURES, [])
    mode = _explicit_mode(config)
    if mode is None or not figures:
        return
    rows = [f.row() for f in figures]
    config.stash[_REPORT] = write_report(
        ROOT / "artifacts" / "reliability", rows, quick=mode == "quick"
    )


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    path = config.stash.get(_REPORT, None)
    if path is None:
        return
    figures = config.stash[_FIGURES]
    terminalreporter.section(f"reliability ({_explicit_mode(config)})")
    for line in format_table([f.row() for f in figures]).splitlines():
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"report: {path.relative_to(ROOT)}")
