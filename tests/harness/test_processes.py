"""The processes of the test harness: output kept line by line, the port a service bound,
the whole process group stopped at the end, and a port that refuses connections."""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import textwrap
from pathlib import Path

import pytest
import trio

from oraculo_trio.testing.config import service_sections, write_service_config
from oraculo_trio.testing.net import closed_port
from oraculo_trio.testing.processes import (
    SERVING_LINE,
    ServiceProcessError,
    child_process,
    service_process,
)
from tests.postgres import quiet_port


def python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


async def test_output_is_kept_line_by_line_and_waited_on(tmp_path: Path) -> None:
    code = """
        import sys
        print("one", flush=True)
        print("err 1", file=sys.stderr, flush=True)
        sys.stdin.readline()
        print("two\\nthree", end="", flush=True)
    """
    log = tmp_path / "child.log"
    with trio.fail_after(20):
        async with child_process(python(code), log_path=log, stdin=True) as child:
            assert await child.stdout.next_line() == "one"
            assert (await child.stdout.first(re.compile("^o(n)e$")))[1] == "n"
            assert (await child.stderr.first(re.compile(r"err (\d)")))[1] == "1"
            await child.process.stdin.send_all(b"go\n")
            # A last line without its newline counts once the stream ends.
            assert (await child.stdout.until("t(w)o")).string == "two"
            assert [await child.stdout.next_line() for _ in range(2)] == ["three", None]
            assert await child.wait() == 0
            await child.wait_output()
            with pytest.raises(ServiceProcessError, match="stdout ended before a line matching"):
                await child.stdout.until("never")
    assert child.stdout.lines == ["one", "two", "three"]
    assert child.stderr.count("err") == 1
    assert sorted(log.read_text().split()) == sorted(["one", "err", "1", "two", "three"])


async def test_leaving_the_block_stops_the_whole_process_group() -> None:
    # The child starts a grandchild in its process group and prints its pid.
    code = """
        import subprocess, sys, time
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print(grandchild.pid, flush=True)
        time.sleep(60)
    """
    with trio.fail_after(20):
        async with child_process(python(code), stop_grace=5.0) as child:
            grandchild = int((await child.stdout.until(r"^\d+$"))[0])
        assert child.returncode == -signal.SIGTERM
        while _alive(grandchild):  # noqa: ASYNC110 (reparented, reaped by init: not at once)
            await trio.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    # A zombie is gone for our purposes (killed, waiting for its new parent's wait).
    return not (status.exists() and status.read_text().split(") ", 1)[1].startswith("Z"))


async def test_a_child_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    code = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(60)
    """
    with trio.fail_after(20):
        async with child_process(python(code)) as child:
            await child.stdout.until("ready")
            assert await child.stop(signal.SIGTERM, grace=0.2) == -signal.SIGKILL


async def test_a_program_that_cannot_start_is_named() -> None:
    with pytest.raises(ServiceProcessError, match="cannot start nowhere"):
        async with child_process(["/nonexistent/nowhere"]):
            pass  # pragma: no cover


def test_the_serving_line_is_the_service_s_or_the_supervisor_s_not_a_worker_s() -> None:
    message = "serving /metrics /healthz /readyz on http://127.0.0.1:40123"
    supervisor = f"2026-01-01 10:00:00,000 INFO oraculo_trio.observe.http: {message}"
    worker = f"2026-01-01 10:00:00,000 INFO [worker 1] oraculo_trio.observe.http: {message}"
    match = SERVING_LINE.search(supervisor)
    assert match is not None and (match["host"], match["port"]) == ("127.0.0.1", "40123")
    assert SERVING_LINE.search(worker) is None


async def test_a_service_process_reports_the_port_it_bound(tmp_path: Path) -> None:
    with closed_port() as refused:
        # No exchange: the feed keeps failing to connect, the HTTP endpoint serves anyway.
        sections = service_sections(
            exchange_url=f"ws://127.0.0.1:{refused}",
            symbols=["BTCUSDT"],
            database_url=f"sqlite:///{tmp_path / 'alerts.db'}",
            dump_dir=tmp_path / "dumps",
        )
        config = write_service_config(tmp_path, sections)
        with trio.fail_after(30):
            async with service_process(config) as service:
                host, port = await service.wait_address()
                assert host == "127.0.0.1" and port not in (0, refused)
                # Started (signals handled) once its feed tries again.
                await service.stderr.until(r"reconnecting in .* \(connect_failed\)")
                assert (await service.get("/healthz")).status == 200
                assert (await service.get("/readyz")).status == 503  # the feed is down
                assert "oraculo_feed_reconnects_total" in await service.metrics()
                assert await service.stop(signal.SIGTERM) == 0, service.log_tail()
    assert service.final_terms("accounting")["received"] == 0


async def test_a_service_that_exits_early_says_so(tmp_path: Path) -> None:
    config = tmp_path / "oraculo.toml"
    config.write_text("[http]\nport = -1\n")
    with trio.fail_after(30):
        async with service_process(config) as service:
            with pytest.raises(ServiceProcessError, match=r"exited \(2\) without logging"):
                await service.wait_ready()
    assert "http.port" in service.stderr.text


def test_a_service_that_would_hide_its_address_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "oraculo.toml"
    config.write_text("[service]\nlog_level = 'WARNING'\n")
    with pytest.raises(ServiceProcessError, match=r"service\.log_level WARNING hides"):
        service_process(config)
    service_process(config, "--log-level", "INFO")  # the option wins over the file
    with pytest.raises(ServiceProcessError, match=r"service\.log_level ERROR hides"):
        service_process(config, "--log-level=ERROR")


def test_a_closed_port_refuses_connections() -> None:
    with closed_port() as port, socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", port))


def test_a_private_cluster_port_is_below_the_ephemeral_range() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert 1024 <= quiet_port() < low


async def test_a_block_that_fails_logs_the_output_of_its_child(
    caplog: pytest.LogCaptureFixture,
) -> None:
    code = """
        import time
        print("the last words", flush=True)
        time.sleep(60)
    """
    with trio.fail_after(20), pytest.RaisesGroup(ValueError):
        async with child_process(python(code), name="talker") as child:
            await child.stdout.until("last words")
            raise ValueError("the test failed")
    [record] = [r for r in caplog.records if r.name == "oraculo_trio.testing.processes"]
    assert "talker: its block ended with ValueError" in record.getMessage()
    assert "the last words" in record.getMessage()
