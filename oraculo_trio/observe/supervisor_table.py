"""The rows of the ``run --workers N`` supervisor's own metrics (its workers export
:data:`~oraculo_trio.observe.metric_table.SERVICE_METRICS`, each with a ``worker`` label).

:class:`~oraculo_trio.observe.metrics.SupervisorMetrics` is built from them. Like
:mod:`~oraculo_trio.observe.metric_table`, this module imports no I/O.
"""

from __future__ import annotations

from oraculo_trio.observe.metric_labels import WORKERS
from oraculo_trio.observe.metric_spec import BOOLEAN, COUNT, COUNTER, GAUGE, MetricSpec

SUPERVISOR_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "workers",
        "oraculo_workers",
        GAUGE,
        COUNT,
        "Worker processes the supervisor keeps running.",
    ),
    MetricSpec(
        "worker_up",
        "oraculo_worker_up",
        GAUGE,
        BOOLEAN,
        "1 while the worker process runs and has reported its endpoint.",
        labels=("worker",),
        initial=(WORKERS,),
        children=True,
    ),
    MetricSpec(
        "worker_restarts",
        "oraculo_worker_restarts_total",
        COUNTER,
        COUNT,
        "Worker processes started again after an unexpected exit.",
        labels=("worker",),
        initial=(WORKERS,),
        children=True,
    ),
    MetricSpec(
        "worker_scrape_errors",
        "oraculo_worker_scrape_errors_total",
        COUNTER,
        COUNT,
        "Failed reads of a worker's /metrics by the supervisor.",
        labels=("worker",),
        initial=(WORKERS,),
        children=True,
    ),
)
"""The metrics of the ``run --workers N`` supervisor itself (its workers export their own)."""
