"""The whole load test as a user runs it: real processes, real sockets, a real store.

Each test starts ``oraculo-trio loadtest`` as a subprocess (which starts the generator and
the service as its own subprocesses), so they are the slowest of the suite (~35 s together).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from oraculo_trio.loadtest.processes import RUN_TOKEN_ENV, LineReader

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def loadtest_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "oraculo_trio.cli", "loadtest", *args]


def environment(token: str | None = None) -> dict[str, str]:
    # Configuration variables of the developer's shell must not reach the service.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ORACULO_") or k.startswith(("ORACULO_TEST_", "ORACULO_REQUIRE"))
    }
    env["PYTHONPATH"] = str(ROOT)
    if token is not None:
        env[RUN_TOKEN_ENV] = token
    return env


def processes_with(token: str) -> list[int]:
    """Live processes whose environment carries the run token."""
    needle = f"{RUN_TOKEN_ENV}={token}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


async def run_loadtest(cwd: Path, *args: str) -> tuple[int, str, str]:
    """Run ``oraculo-trio loadtest ARGS`` to its end: (exit code, stdout, stderr)."""
    with trio.fail_after(90):
        result = await trio.run_process(
            loadtest_command(*args, "--quiet"),
            cwd=cwd,
            env=environment(),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def test_a_short_load_test_passes_and_writes_its_artifacts(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stdout, stderr = await run_loadtest(
        tmp_path, "depth", "500", "--duration", "10", "--warmup", "1", "--webhook", "ok",
        "--out", str(out),
    )  # fmt: skip
    assert code == 0, stdout + stderr
    assert "PASS: 12/12 thresholds hold" in stdout
    assert "✗" not in stdout

    document = json.loads((out / "metrics.json").read_text())
    assert {"config", "environment", "kpis", "accounting", "series"} <= set(document)
    assert document["config"]["stream"] == "depth"
    assert document["config"]["rate"] == 500
    assert {"cpu_model", "cores", "python", "versions"} <= set(document["environment"])
    for kpi in document["kpis"]:
        assert set(kpi) >= {"name", "value", "threshold", "pass"}
    checked = {k["name"]: k for k in document["kpis"] if k["threshold"] is not None}
    assert len(checked) == 12
    assert all(k["pass"] is True for k in checked.values())
    accounting = document["accounting"]
    assert set(accounting) == {
        "sent", "received", "evaluated", "dropped", "bad_frames", "unaccounted",
    }  # fmt: skip
    assert set(accounting["dropped"]) == {
        "stale_drop", "conflated", "superseded", "overflow", "unsynced",
    }  # fmt: skip
    assert accounting["sent"] == accounting["received"] >= 5500
    assert accounting["unaccounted"] == 0
    assert accounting["sent"] == accounting["evaluated"] + sum(accounting["dropped"].values())
    series = document["series"]
    assert len(series) >= 10
    assert {"t", "phase", "sent", "queue_depth_max", "lag"} <= set(series[-1])
    assert [row["mark"] for row in series if row["mark"]][:2] == ["start", "measure_start"]
    # The load rules made the store write, and the webhook receiver got the notifications.
    assert checked["db_upsert_p50"]["value"] is not None
    assert document["webhook"]["requests"] > 0
    page = (out / "report.html").read_text()
    assert page.count("<svg") >= 4
    assert "<script" not in page
    assert (out / "summary.txt").read_text() in stdout


async def test_a_service_slowed_on_purpose_fails_its_thresholds_with_99(tmp_path: Path) -> None:
    code, stdout, stderr = await run_loadtest(
        tmp_path, "depth", "300", "--duration", "4", "--warmup", "1", "--out", str(tmp_path / "o"),
        "--set", "pipeline.debug_batch_delay_ms=800",
    )  # fmt: skip
    assert code == 99, stdout + stderr
    failed = [line.strip() for line in stdout.splitlines() if line.strip().startswith("✗")]
    assert any(line.startswith("✗ queue_time_mean") for line in failed), stdout
    assert any(line.startswith("✗ queue_time_latest_max") for line in failed), stdout
    assert "FAIL:" in stdout
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["verdict"] == "fail"


async def test_ctrl_c_during_a_run_leaves_no_process_behind(tmp_path: Path) -> None:
    token = secrets.token_hex(8)
    process = await trio.lowlevel.open_process(
        loadtest_command("depth", "300", "--duration", "60", "--warmup", "1", "--out",
                         str(tmp_path / "o"), "--quiet"),
        cwd=tmp_path,
        env=environment(token),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        reader = LineReader(process.stderr)
        with trio.fail_after(60):
            while True:
                line = await reader.next_line()
                assert line is not None, "the load test ended before the load started"
                if "load starts" in line:
                    break
            # The generator and the service (and the runner itself) carry the token.
            assert len(processes_with(token)) >= 3
            process.send_signal(signal.SIGINT)
            await process.wait()
        assert process.returncode == 130
        assert processes_with(token) == []
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        await process.stderr.aclose()


async def test_calibrate_runs_the_generator_alone_and_writes_its_result(tmp_path: Path) -> None:
    out = tmp_path / "cal"
    args = ["calibrate", "2000", "--duration", "2", "--warmup", "0.5", "--out", str(out)]
    with trio.fail_after(60):
        result = await trio.run_process(
            loadtest_command(*args),
            cwd=tmp_path,
            env=environment(),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    stdout = result.stdout.decode()
    assert result.returncode == 0, stdout + result.stderr.decode()
    assert "generator alone, depth 2,000 msg/s for 2 s" in stdout
    document = json.loads((out / "calibrate.json").read_text())
    assert document["config"]["rate"] == 2000
    assert document["window_sent"] == document["expected"] == 4000
