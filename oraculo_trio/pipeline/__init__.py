"""The Trio side of the service: the root nursery and everything it runs.

:func:`run_service` runs one service (feed connections, shard consumers, the rule clock, the
store writer, the dispatcher, the monitors) until shutdown, handing a :class:`ServiceHandle`
to whoever started it; :func:`run_workers_command` runs ``oraculo-trio run --workers N``.
Rules come from :mod:`~oraculo_trio.pipeline.rules_source`: the rule file
(:func:`load_rule_file`) or the rules table, reloaded while running.

Typical use::

    settings = load_settings("oraculo.toml")
    rules = load_rule_file(rules_path(settings))
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(run_service, settings, rules)

The modules: ``service`` (the root), ``feed`` and ``transport`` (exchange connections),
``shards`` (channels, overload policy, consumers), ``diffbooks`` and ``snapshots`` (books
synced from the diff stream), ``rule_clock``, ``partitions`` and ``workers`` (scale-out),
``rules_source``.
"""

from oraculo_trio.pipeline.partitions import Placement
from oraculo_trio.pipeline.rules_source import (
    RuleReloader,
    load_rule_file,
    resolve_rule_class,
    rules_path,
)
from oraculo_trio.pipeline.service import TASK_NAMES, ServiceHandle, build_sinks, run_service
from oraculo_trio.pipeline.workers import run_workers_command, worker_count

__all__ = [
    "TASK_NAMES",
    "Placement",
    "RuleReloader",
    "ServiceHandle",
    "build_sinks",
    "load_rule_file",
    "resolve_rule_class",
    "rules_path",
    "run_service",
    "run_workers_command",
    "worker_count",
]
