"""The functional core: market events, books, rules and alert lifecycles. No I/O.

Nothing in ``core`` imports trio, triopg, prometheus_client or any other package of ours
(``docs/architecture.md`` has the layer rules, and a test checks them): its functions take
events and ``now`` and return values, so a plain synchronous test covers them.

Modules:
    events: the market events every feed decodes to (trades, depth snapshots and diffs).
    book: order books (:class:`OrderBook` for diffs, :class:`PartialBook` for ``@depthN``).
    sync: Binance's diff-book procedure as a state machine (:class:`BookSync`).
    rules: rule kinds and the rule file (:func:`parse_rules`, :class:`RuleSpec`).
    alerts: the alert lifecycle and the :class:`AlertTransition` records it produces.
    machines: the :class:`~oraculo_trio.core.machines.Machine` both lifecycles are tables of.
    engine: one shard's evaluation (:class:`ShardEngine`).
    windows: the rolling windows rules keep.
    silences: muted notifications (:class:`SilenceSet`).
    sharding, claims: where a symbol goes, which partitions a process owns.
    errors: the exceptions raised on purpose (re-exported by ``oraculo_trio.errors``).

The names in ``__all__`` are the ones the rest of the package uses; they can be imported
from here (``from oraculo_trio.core import ShardEngine``). Each loads its module on first
use, so a caller of one light module (a feed reading ``events``) does not load numpy for
the rules.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "alerts": ("FIRING", "INACTIVE", "PENDING", "RESOLVED", "AlertTransition"),
    "book": ("OrderBook", "PartialBook"),
    "claims": ("plan_claims", "preference", "symbols_of", "worker_partitions"),
    "engine": ("OffloadJob", "ShardEngine", "compute_offloaded"),
    "errors": (
        "ConfigError",
        "DeliveryError",
        "DeliveryRejected",
        "FeedError",
        "IllegalTransition",
        "OraculoError",
        "StoreError",
        "StoreUnavailable",
    ),
    "events": (
        "DEPTH",
        "STREAMS",
        "TRADE",
        "BookTicker",
        "DepthDiff",
        "DepthSnapshot",
        "Level",
        "MarketEvent",
        "Trade",
    ),
    "rules": (
        "CompiledRule",
        "RuleBase",
        "RuleSpec",
        "RuleState",
        "Signal",
        "parse_duration",
        "parse_rules",
    ),
    "sharding": ("partition_of", "shard_of", "stable_hash"),
    "silences": ("Silence", "SilenceSet"),
    "sync": (
        "APPLIED",
        "BOOK_STATES",
        "MAX_BUFFERED",
        "RESYNC_REASONS",
        "SYNCING",
        "BookSnapshot",
        "BookSync",
        "Step",
        "merge_depth",
    ),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
