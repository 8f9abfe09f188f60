"""The one alert line: its fields, its numbers, and colour only on a terminal."""

import io
import re

import pytest
import trio

from oraculo_trio.core.alerts import AlertTransition
from oraculo_trio.dispatch.render import alert_line, alert_record, human_value
from oraculo_trio.dispatch.sinks import StdoutSink

BLOCK_TRADE = AlertTransition(
    rule_id="sol-block-trade",
    symbol="SOLUSDT",
    state="firing",
    previous_state="inactive",
    value=1_065_890.2,
    at=1_796_391_432.4,
    started_at=1_796_391_432.4,
    fire_count=1,
    severity="critical",
    message="SOLUSDT block trade of 1,065,890 USDT",
)


def test_the_line_names_time_state_severity_rule_symbol_value_and_message() -> None:
    assert alert_line(BLOCK_TRADE) == (
        "2026-12-04T13:37:12Z FIRING critical sol-block-trade SOLUSDT 1,065,890 "
        '"SOLUSDT block trade of 1,065,890 USDT"'
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [(1_065_890.2, "1,065,890"), (50_001.37, "50,001.37"), (3.5232403, "3.52324"),
     (0.00012345, "0.00012345"), (0.0, "0"), (-12.5, "-12.5"), (float("nan"), "nan")],
)  # fmt: skip
def test_values_read_as_a_person_reads_them(value: float, text: str) -> None:
    assert human_value(value) == text


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_colour_follows_the_state_on_a_terminal_only(monkeypatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    piped, terminal = io.StringIO(), Terminal()
    with trio.fail_after(5):
        await StdoutSink(piped).deliver(BLOCK_TRADE)
        await StdoutSink(terminal).deliver(BLOCK_TRADE)
    assert "\x1b[" not in piped.getvalue()
    assert "\x1b[31m\x1b[1mFIRING\x1b[0m" in terminal.getvalue()
    assert re.sub(r"\x1b\[[0-9;]*m", "", terminal.getvalue()) == piped.getvalue()
    monkeypatch.setenv("NO_COLOR", "1")
    assert StdoutSink(Terminal()).colour is False


def test_the_record_has_iso_times() -> None:
    record = alert_record(BLOCK_TRADE)
    assert record["at"] == record["started_at"] == "2026-12-04T13:37:12Z"
    assert record["message"] == BLOCK_TRADE.message
