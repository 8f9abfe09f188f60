"""The rule clock: time-driven rule readings and CPU-heavy rules, per batch.

Every ``rules.tick_interval`` seconds, one task:

1. calls :meth:`ShardEngine.tick` on every shard's engine (``no_data``, windows that
   empty, ``for`` / ``keep_firing_for`` / ``repeat_interval`` of symbols gone quiet, rules
   that expired);
2. collects the offload jobs of every engine (rules with ``offload``: inputs copied out in
   the event loop) and computes them in ONE call per kind: ``trio.to_thread.run_sync`` under
   the ``rules`` CapacityLimiter for code that releases the GIL (numpy), ``trio_parallel``
   under ``rules_process`` for code that holds it; then feeds the results back.

Evaluation in the consumers never waits for this task: the engines are only touched between
awaits, from the Trio thread, and a worker only ever sees copies.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import attrs
import trio
import trio_parallel

from oraculo_trio.core.alerts import AlertTransition
from oraculo_trio.core.engine import OffloadJob, ShardEngine, compute_offloaded
from oraculo_trio.observe.supervise import sleep_to_tick
from oraculo_trio.pipeline.shards import AlertOutlet

LOGGER = logging.getLogger("oraculo_trio.pipeline.rule_clock")

THREAD_LIMITER = "rules"
PROCESS_LIMITER = "rules_process"


@attrs.frozen(eq=False)
class RuleLimiters:
    """The CapacityLimiters of offloaded rules, exported as ``limiter="rules"`` and
    ``limiter="rules_process"`` in the ``oraculo_to_thread_executor_*`` series."""

    thread: trio.CapacityLimiter
    process: trio.CapacityLimiter

    @classmethod
    def create(cls, tokens: int) -> RuleLimiters:
        return cls(trio.CapacityLimiter(tokens), trio.CapacityLimiter(tokens))

    def by_name(self) -> dict[str, trio.CapacityLimiter]:
        return {THREAD_LIMITER: self.thread, PROCESS_LIMITER: self.process}


async def run_rule_clock(
    engines: Sequence[ShardEngine],
    outlet: AlertOutlet,
    interval: float,
    limiters: RuleLimiters,
    *,
    clock: Callable[[], float] = time.time,
) -> None:
    """Tick every engine and run offloaded rules every ``interval`` seconds, until cancelled.

    Args:
        engines: every shard's engine.
        outlet: where the transitions go (store and dispatch); closed here.
        interval: seconds between rounds.
        limiters: the offload limiters.
        clock: wall-clock seconds.

    Raises:
        Whatever an offloaded ``compute`` raised (a bug in a rule): the supervisor counts
        and restarts the task.

    Cancellation: stops between rounds, or abandons the worker call in flight (the thread
    finishes on its own; a worker process is left to trio_parallel).
    """
    with outlet:
        while True:
            await sleep_to_tick(interval)
            now = clock()
            transitions: list[AlertTransition] = []
            for engine in engines:
                raised = engine.tick(now)
                if raised:
                    transitions.extend(raised)
            transitions.extend(await _run_offloaded(engines, limiters, clock))
            if transitions:
                await outlet.emit(transitions)


async def _run_offloaded(
    engines: Sequence[ShardEngine], limiters: RuleLimiters, clock: Callable[[], float]
) -> list[AlertTransition]:
    now = clock()
    batches: dict[str, list[tuple[ShardEngine, OffloadJob]]] = {}
    for engine in engines:
        for job in engine.offload_jobs(now):
            batches.setdefault(job.mode, []).append((engine, job))
    transitions: list[AlertTransition] = []
    for mode, batch in batches.items():
        work = [(job.rule, job.snapshot) for _, job in batch]
        if mode == "process":
            results = await trio_parallel.run_sync(
                compute_offloaded, work, limiter=limiters.process
            )
        else:
            results = await trio.to_thread.run_sync(
                compute_offloaded, work, limiter=limiters.thread, abandon_on_cancel=True
            )
        done = clock()
        grouped: dict[ShardEngine, tuple[list[OffloadJob], list]] = {}
        for (engine, job), result in zip(batch, results, strict=True):
            jobs, outcomes = grouped.setdefault(engine, ([], []))
            jobs.append(job)
            outcomes.append(result)
        for engine, (jobs, outcomes) in grouped.items():
            raised = engine.complete_offload(jobs, outcomes, done)
            if raised:
                transitions.extend(raised)
    return transitions
