"""Watchdog: one dump per blocked-loop episode, with the blocking line, and /healthz."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import trio
import trio.testing

from oraculo_trio.observe.health import Readiness
from oraculo_trio.observe.http import serve_http
from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.observe.watchdog import THREAD_NAME, Watchdog
from oraculo_trio.testing.net import fetch
from tests.observe.helpers import FakeClock


def dumps_total(metrics: ServiceMetrics) -> float | None:
    return metrics.inner.get_sample_value("oraculo_dumps_total", {"reason": "event_loop_lag"})


def dump_files(directory: Path) -> list[Path]:
    return sorted(directory.iterdir())


def read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


async def test_a_blocked_loop_is_dumped_once_and_healthz_says_so(tmp_path: Path) -> None:
    metrics = ServiceMetrics()
    statuses: list[int] = []
    stop_polling = threading.Event()

    with (
        trio.fail_after(20),
        Watchdog(metrics, dump_dir=tmp_path) as watchdog,  # dump_after: the default 2 s
        serve_http("127.0.0.1", 0, metrics, Readiness(), watchdog) as (host, port),
    ):
        url = f"http://{host}:{port}/healthz"

        def poll_healthz() -> None:
            while not stop_polling.is_set():
                statuses.append(fetch(url).status)
                stop_polling.wait(0.1)

        async with trio.open_nursery() as nursery:
            await nursery.start(watchdog.run)
            assert (await trio.to_thread.run_sync(fetch, url)).status == 200
            poller = threading.Thread(target=poll_healthz, name="healthz-poller")
            poller.start()
            try:
                time.sleep(3)  # noqa: ASYNC251 - blocking the loop is the fault under test
                # Every other task (the heartbeat) has had its turn: the loop beat again.
                await trio.testing.wait_all_tasks_blocked()
                assert not watchdog.blocked
            finally:
                stop_polling.set()
                await trio.to_thread.run_sync(poller.join)
            after = await trio.to_thread.run_sync(fetch, url)
            nursery.cancel_scope.cancel()

    assert 503 in statuses
    assert after.status == 200
    assert after.body == "ok\n"
    files = dump_files(tmp_path)
    assert len(files) == 1
    assert files[0].suffix == ".txt"
    text = read_text(files[0])
    assert "time.sleep(3)" in text
    assert "test_a_blocked_loop_is_dumped_once_and_healthz_says_so" in text
    assert "=== Trio thread 'MainThread'" in text
    assert f"'{THREAD_NAME}'" in text  # the other threads' stacks, by name
    assert "=== task tree" in text
    assert dumps_total(metrics) == 1.0
    assert watchdog.dumps == files


def test_one_dump_per_episode_rearmed_when_the_heartbeat_moves(tmp_path: Path) -> None:
    metrics = ServiceMetrics()
    clock = FakeClock(1000.0)
    watchdog = Watchdog(metrics, dump_after=2.0, dump_dir=tmp_path / "dumps", clock=clock)

    assert watchdog.check() is None  # not armed before the first heartbeat
    watchdog.beat()
    clock.now += 1.5
    assert watchdog.check() is None
    assert not watchdog.blocked
    clock.now += 1.0
    assert watchdog.blocked
    first = watchdog.check()
    assert first is not None
    assert first.exists()
    clock.now += 10.0
    assert watchdog.check() is None  # same episode
    assert dumps_total(metrics) == 1.0

    watchdog.beat()
    assert not watchdog.blocked
    clock.now += 2.5
    second = watchdog.check()
    assert second is not None
    assert second != first
    assert dumps_total(metrics) == 2.0
    assert sorted((tmp_path / "dumps").iterdir()) == sorted([first, second])
    text = second.read_text()
    assert "no Trio heartbeat for 2.500 s" in text
    assert "test_one_dump_per_episode_rearmed_when_the_heartbeat_moves" in text
    assert "task tree: no snapshot yet" in text


async def test_task_tree_snapshot_names_tasks_and_where_they_wait(tmp_path: Path) -> None:
    watchdog = Watchdog(ServiceMetrics(), dump_dir=tmp_path)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever, name="feed[depth]")
            await trio.testing.wait_all_tasks_blocked()
            tree = watchdog.snapshot_tasks()
            nursery.cancel_scope.cancel()
    assert "feed[depth]  [sleep_forever at " in tree
    assert "test_task_tree_snapshot_names_tasks_and_where_they_wait" in tree


async def test_the_watchdog_disarms_when_its_task_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = FakeClock(0.0)
    watchdog = Watchdog(ServiceMetrics(), dump_after=1.0, clock=clock)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(watchdog.run)
            clock.now += 5.0
            assert watchdog.blocked
            nursery.cancel_scope.cancel()
    assert not watchdog.blocked
    assert watchdog.check() is None


def test_thread_starts_named_and_stops(tmp_path: Path) -> None:
    with Watchdog(ServiceMetrics(), dump_dir=tmp_path):
        names = {thread.name: thread for thread in threading.enumerate()}
        assert names[THREAD_NAME].daemon
    assert THREAD_NAME not in {thread.name for thread in threading.enumerate()}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dump_after": 0}, "dump_after"),
        ({"dump_after": 1.0, "beat_interval": 1.0}, "beat_interval"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Watchdog(ServiceMetrics(), **kwargs)
