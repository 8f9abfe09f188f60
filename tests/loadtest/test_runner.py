"""The whole load test as a user runs it: real processes, real sockets, a real store.

Each test starts ``oraculo-trio loadtest`` as a subprocess (which starts the generator and
the service as its own subprocesses), so they are the slowest of the suite (~50 s together).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest
import trio

from oraculo_trio.loadtest.processes import RUN_TOKEN_ENV
from oraculo_trio.testing.processes import child_process

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

# Speed is for the load test itself and the benchmarks to judge. Here the thresholds on speed
# are loose (each replaces its KPI's default), so that a busy machine cannot fail a test of
# the tool: every threshold is still measured and checked, and its artifacts written; what
# must hold at any speed (nothing unaccounted for, nothing stale or shed) keeps its default.
LOOSE_SPEED = (
    "lag_p95 < 30s",
    "queue_time_mean < 30s",
    "queue_time_latest_max <= 30s",
    "queue_depth_peak < 1000000",
    "conflated < 1000000",
    "db_upsert_p50 < 10s",
    "db_upsert_p95 < 10s",
    "sent_rate_error <= 50%",
)


def loose_speed() -> list[str]:
    return [arg for threshold in LOOSE_SPEED for arg in ("--threshold", threshold)]


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
        "--out", str(out), "--junit", str(tmp_path / "junit.xml"), *loose_speed(),
    )  # fmt: skip
    assert code == 0, stdout + stderr
    assert stdout.splitlines()[0].strip() == "PASS: 12/12 thresholds hold"
    assert "✗" not in stdout
    # The artifact folder appears complete, under its own name only.
    assert sorted(os.listdir(tmp_path)) == ["junit.xml", "out"]
    junit = ElementTree.parse(tmp_path / "junit.xml").getroot()
    cases = junit.findall("./testsuite/testcase")
    assert len(cases) == 12 and not junit.findall(".//failure")
    assert {case.get("name") for case in cases} >= {"unaccounted == 0", "queue_time_mean < 30s"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["verdict"] == "pass" and len(summary["thresholds"]) == 12
    assert summary["kpis"]["evaluated_age_p99_depth"]["unit"] == "s"
    assert summary["distributions"]["evaluated_age{depth}"]["count"] > 1000

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
        "sent", "received", "evaluated", "dropped", "bad_frames", "in_flight", "unaccounted",
        "backfilled",
    }  # fmt: skip
    assert set(accounting["dropped"]) == {
        "stale_drop", "conflated", "superseded", "overflow", "unsynced", "duplicate",
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


async def test_a_service_slowed_on_purpose_fails_with_99_and_compare_says_it_regressed(
    tmp_path: Path,
) -> None:
    common = ("--duration", "4", "--warmup", "1")
    code, stdout, stderr = await run_loadtest(
        tmp_path, "depth", "600", *common, "--out", str(tmp_path / "before"), *loose_speed()
    )
    assert code == 0, stdout + stderr
    code, stdout, stderr = await run_loadtest(
        tmp_path, "depth", "300", *common, "--out", str(tmp_path / "after"),
        "--set", "pipeline.debug_batch_delay_ms=800",
    )  # fmt: skip
    assert code == 99, stdout + stderr
    failed = [line.strip() for line in stdout.splitlines() if line.strip().startswith("✗")]
    assert any(line.startswith("✗ queue_time_mean") for line in failed), stdout
    assert any(line.startswith("✗ queue_time_latest_max") for line in failed), stdout
    assert stdout.splitlines()[0].strip().startswith("FAIL:")
    assert "failed: " in stdout.splitlines()[0] and "queue_time_mean < 200ms" in stdout
    assert json.loads((tmp_path / "after" / "metrics.json").read_text())["verdict"] == "fail"
    page = (tmp_path / "after" / "report.html").read_text()
    assert '<div class="banner fail" id="verdict">FAIL:' in page

    with trio.fail_after(30):
        compared = await trio.run_process(
            [sys.executable, "-m", "oraculo_trio.cli", "compare", str(tmp_path / "before"),
             str(tmp_path / "after"), "--fail-on-regression", "10"],
            env=environment(), capture_stdout=True, capture_stderr=True, check=False,
        )  # fmt: skip
    out, err = compared.stdout.decode(), compared.stderr.decode()
    assert compared.returncode == 99, out + err
    assert "warning: rate (msg/s) differs: 600 in before, 300 in after" in err
    assert "warning: --set differs" in err
    assert "regression: queue_time_p99:" in err
    assert "queue_time_p99" in out and "{" not in out


async def test_ctrl_c_during_a_run_leaves_no_process_behind(tmp_path: Path) -> None:
    token = secrets.token_hex(8)
    argv = loadtest_command(
        "depth", "300", "--duration", "60", "--warmup", "1", "--out", str(tmp_path / "o"),
        "--quiet",
    )  # fmt: skip
    with trio.fail_after(60):
        async with child_process(
            argv, name="loadtest", cwd=tmp_path, env=environment(token)
        ) as loadtest:
            await loadtest.stderr.until("load starts")
            # The generator and the service (and the runner itself) carry the token.
            assert len(processes_with(token)) >= 3
            loadtest.send_signal(signal.SIGINT)
            assert await loadtest.wait() == 130
    assert processes_with(token) == []
    # No artifact folder: the interrupted run's logs are kept apart.
    assert not (tmp_path / "o").exists()
    assert (tmp_path / "o.failed" / "service.log").exists()


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
