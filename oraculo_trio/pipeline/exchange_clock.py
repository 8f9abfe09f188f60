"""The exchange's clock against ours: measured, exported, and used to correct ages.

A message's age is ``now - E`` (its exchange event time). A host clock running behind or
ahead turns into lag that is not there, and into stale drops of fresh messages. So each
market's clock is measured at start-up and every ``feed.clock_check_interval`` seconds
(``GET <prefix>/time``, weight 1 from the market's REST budget): the offset is the server's
time minus the midpoint of our request, from the quickest of a few round trips. It is exported
(``oraculo_exchange_clock_offset_seconds{market}``), logged as a warning past
``feed.clock_offset_warning``, and added to the wall-clock stamp a feed connection gives each
frame it reads: ages and feed lag are then measured on the exchange's clock.
"""

from __future__ import annotations

import logging
import time

import attrs
import httpx
import trio
from prometheus_client import Gauge

from oraculo_trio.feeds.binance_markets import TIME
from oraculo_trio.feeds.binance_rest import parse_server_time
from oraculo_trio.observe.metrics import ServiceMetrics
from oraculo_trio.observe.ratelimit import RateLimitedLog
from oraculo_trio.pipeline.rest import RestBudget, RestEndpoint

LOGGER = logging.getLogger("oraculo_trio.pipeline.exchange_clock")

SAMPLES = 3
"""Round trips per measurement; the quickest one decides (the least uncertain)."""

RETRY_AFTER_FAILURE = 30.0
"""Seconds before a failed measurement is tried again (if sooner than the interval)."""


@attrs.define(eq=False)
class ExchangeClock:
    """One market's clock offset: exchange time = our wall clock + ``offset`` (seconds).

    Read by the feed connections of that market at every socket read.
    """

    market: str
    offset: float = 0.0
    round_trip: float | None = None
    measured: trio.Event = attrs.field(factory=trio.Event)


class NoClock(ValueError):
    """Raised by :func:`measure_offset` when the server has no ``/time`` at all (a local
    replay or a benchmark's feed, not Binance): there is nothing to measure, ever."""


async def measure_offset(client: httpx.AsyncClient, path: str) -> tuple[float, float]:
    """``(offset, round trip)`` of one ``GET path`` (a ``/time`` endpoint), in seconds.

    Raises:
        httpx.HTTPError: the request failed.
        ValueError: the answer is not a time (an error status counts as one).

    Cancellation: the request is abandoned.
    """
    sent = time.time()
    response = await client.get(path)
    received = time.time()
    if response.status_code == 404:
        raise NoClock(f"{path} not found: the server offers no clock")
    if response.status_code != 200:
        raise ValueError(f"HTTP {response.status_code}: {response.text[:120]}")
    server = parse_server_time(response.content) / 1000.0
    return server - (sent + received) / 2.0, received - sent


@attrs.define(eq=False)
class ClockWatch:
    """Measures one market's clock every ``interval`` seconds (0: at start-up only).

    Attributes:
        clock: where the offset goes.
        endpoint: the market's REST base.
        budget: the market's REST budget (each round trip spends ``time_weight``).
        metrics: the offset gauge.
        interval: ``feed.clock_check_interval``.
        warn_after: ``feed.clock_offset_warning``.
    """

    clock: ExchangeClock
    endpoint: RestEndpoint
    budget: RestBudget
    metrics: ServiceMetrics
    interval: float
    warn_after: float
    # The server has no /time at all (404): measured once, never again.
    absent: bool = False
    _log: RateLimitedLog = attrs.field(factory=lambda: RateLimitedLog(LOGGER))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Measure now (reporting started once tried, so the first frames are corrected),
        then every ``interval`` seconds, until cancelled.

        Cancellation: a measurement in flight is abandoned.
        """
        gauge = self.metrics.exchange_clock_offset.labels(self.clock.market)
        async with httpx.AsyncClient(
            base_url=self.endpoint.base_url, timeout=self.endpoint.timeout
        ) as client:
            ok = await self._measure(client, gauge)
            task_status.started()
            while True:
                if self.absent or (ok and self.interval <= 0):
                    await trio.sleep_forever()
                if ok:
                    delay = self.interval
                elif self.interval > 0:
                    delay = min(self.interval, RETRY_AFTER_FAILURE)
                else:
                    delay = RETRY_AFTER_FAILURE
                await trio.sleep(delay)
                ok = await self._measure(client, gauge)

    async def _measure(self, client: httpx.AsyncClient, gauge: Gauge) -> bool:
        market = self.endpoint.market
        best: tuple[float, float] | None = None
        try:
            for _ in range(SAMPLES):
                await self.budget.spend(market.time_weight)
                with trio.fail_after(self.endpoint.timeout):
                    sample = await measure_offset(client, market.path(TIME))
                if best is None or sample[1] < best[1]:
                    best = sample
        except NoClock as exc:
            LOGGER.info("clock of %s not measured (%s): ages are not corrected", market.title, exc)
            self.absent = True
            return False
        except (httpx.HTTPError, ValueError, trio.TooSlowError) as exc:
            self._log.warning(
                "failed",
                "clock of %s not measured (%s): ages keep the last offset (%.3f s)",
                market.title,
                exc if str(exc) else type(exc).__name__,
                self.clock.offset,
            )
            if best is None:
                return False
        assert best is not None
        offset, round_trip = best
        self.clock.offset, self.clock.round_trip = offset, round_trip
        self.clock.measured.set()
        gauge.set(offset)
        if abs(offset) > self.warn_after:
            self._log.warning(
                "offset",
                "the clock of %s is %.3f s %s ours (round trip %.3f s): ages are corrected by "
                "it; fix this host's clock (NTP) if it is ours that drifts",
                market.title,
                abs(offset),
                "ahead of" if offset > 0 else "behind",
                round_trip,
            )
        return True
