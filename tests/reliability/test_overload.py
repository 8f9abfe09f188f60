"""Overload: the load generator (``oraculo-trio loadtest``'s runner: generator and service as
processes) sends more than the service can take, for 60 s in full (5 s quick). RSS stays
under a bound (``--rss-bound-mb``, 256 by default), no trade is lost (the trade feed waits:
TCP backpressure), depth is conflated, the scheduler lag stays bounded, and once the burst
ends the service catches up within seconds (measured).

On this 2-core machine the real service keeps up with the most the generator can send
(~50,000 msg/s, twice the saturation target of docs/architecture.md), so two rows:
``overload/generator-max`` (the service as it is, at the generator's ceiling) and
``overload/2x-saturation`` (its consumers slowed with ``pipeline.debug_batch_delay_ms`` to
6,400 msg/s a stream, 12,800 in all, and sent 25,000 msg/s: the depth stream three times what
its consumer takes, so the overload policy is what is exercised). Trades stay under their
consumer's capacity there: a trade stream beyond it for a minute would build a backlog at the
exchange (the feed waits, never drops) whose drain time is the backlog's, not a recovery; the
database scenarios show that push-back reaching the trade feed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import trio

from oraculo_trio.loadtest import LoadShape, RunConfig, run_load_test
from oraculo_trio.loadtest.measure import accounted
from oraculo_trio.testing.processes import parse_terms
from tests.reliability.conftest import Mode
from tests.reliability.rig import check_store, second_check

LAG_BOUND_S = 1.0
"""The scheduler lag the service must stay under at any sample."""


def final_terms(log: Path, what: str) -> dict[str, int]:
    for line in reversed(log.read_text().splitlines()):
        match = re.search(rf"service stopped; {what}: (.*)$", line)
        if match:
            return parse_terms(match.group(1))
    raise AssertionError(f"no 'service stopped; {what}' line in {log}")


def recovery(samples: list[dict[str, Any]], marks: dict[str, int], duration: float) -> float:
    """Seconds from the scheduled end of the burst until every frame sent was accounted for
    (a generator running late is part of it: its backlog is the service's too); 0 when the
    first sample that accounts for them all comes before that end (the end is estimated from
    a sample's time, which may be later than the burst's real start)."""
    end = samples[marks["measure_start"]]["t"] + duration
    sent = samples[-1]["sent"]
    for sample in samples[marks["measure_start"] :]:
        if accounted(sample) >= sent:
            return max(0.0, sample["t"] - end)
    return float("inf")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "slowed"), [("overload/generator-max", False), ("overload/2x-saturation", True)]
)
async def test_overload_keeps_memory_flat_and_loses_no_trade(
    tmp_path: Path, mode: Mode, scenario, pytestconfig: pytest.Config, name: str, slowed: bool
) -> None:
    figures = scenario(name)
    database = tmp_path / "overload.db"
    settings = [f"database.url=sqlite:///{database}"]
    rate = pytestconfig.getoption("overload_rate", default=None) or 50_000.0
    if slowed:
        # One shard; each consumer takes at most 32 messages per 5 ms: 6,400 msg/s a stream.
        settings += [
            "pipeline.shards=1",
            "pipeline.batch_max=32",
            "pipeline.debug_batch_delay_ms=5",
        ]
        rate = 25_000.0
    duration = mode.pick(5.0, 60.0)
    config = RunConfig(
        LoadShape(
            stream="mixed", rate=rate, duration=duration, warmup=1.0, symbols=50, trade_ratio=0.2
        ),
        progress=False,
        settings=tuple(settings),
        drain_timeout=120.0,
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with trio.fail_after(duration * 3 + 120):
        output = await run_load_test(config, run_dir)
    samples, marks = output.samples, output.marks
    final = samples[-1]
    measured = samples[marks["measure_start"] : marks["measure_end"] + 1]
    rss = [s["service_rss"] for s in samples if s["service_rss"]]
    sent = int(final["sent"])
    seconds = measured[-1]["t"] - measured[0]["t"]
    log = run_dir / "service.log"
    terms = final_terms(log, "accounting")
    alerts = final_terms(log, "alerts")
    result = await check_store(f"sqlite:///{database}", alerts["transitions"])
    second_check(terms, result)
    # The expectation is the generator's: the frames it sent (its own count, in its own
    # process); every one must be read and accounted for by the service.
    figures.faults = 1
    figures.messages = sent
    figures.counts = "frames sent"
    figures.measured(
        "exchange_sent",
        lost=max(0, sent - int(accounted(final))) + result.lost,
        duplicates=result.duplicates,
    )
    figures.recovery_s = recovery(samples, marks, duration)
    trade_backlog = final["received"]["trade"] - final["evaluated"]["trade"]
    figures.detail.update(
        requested_rate=rate,
        sent_rate=(measured[-1]["sent"] - measured[0]["sent"]) / seconds,
        rss_mb_start=rss[0] / 1e6,
        rss_mb_max=max(rss) / 1e6,
        lag_max_s=max(s["lag"] for s in samples),
        dropped=final["dropped"],
        trades_received=final["received"]["trade"],
        trades_not_evaluated=trade_backlog,
        queue_depth_max=max(s["queue_depth_max"] for s in samples),
    )
    assert output.service_exit == 0
    assert figures.lost == 0
    bound = pytestconfig.getoption("rss_bound_mb", default=256.0)
    figures.detail["rss_bound_mb"] = bound
    assert max(rss) / 1e6 < bound
    assert figures.detail["lag_max_s"] < LAG_BOUND_S
    # Trades are never conflated: a trade not evaluated was only stale, and stale ones still
    # updated the rules' state. (Nothing here can be shed as overflow: that is diff books'
    # policy, and this load has partial books; test_accounting.py provokes it.)
    assert trade_backlog <= final["dropped"]["stale_drop"]
    assert figures.recovery_s < 30.0
    if slowed:
        assert final["dropped"]["conflated"] > 0
