"""The rows of the process's own metrics: what it is (``oraculo_build_info``) and what it
holds (memory, CPU, file descriptors, start time).

The ``process_*`` names are the ones every Prometheus client library exports, so the usual
dashboards and alerts find them; they are read from ``/proc/self`` at scrape time
(:class:`~oraculo_trio.observe.metrics.ProcessCollector`), never updated by the code. Like
:mod:`~oraculo_trio.observe.metric_table`, this module imports no I/O.
"""

from __future__ import annotations

from oraculo_trio.observe.metric_spec import (
    BYTES,
    COUNT,
    COUNTER,
    GAUGE,
    INFO,
    SECONDS,
    TIMESTAMP,
    MetricSpec,
)

BUILD_LABELS = ("version", "python", "trio")
"""The labels of ``oraculo_build_info``: oraculo-trio's, Python's and Trio's versions."""

PROCESS_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "build_info",
        "oraculo_build_info",
        GAUGE,
        INFO,
        "Always 1; the labels name the versions of oraculo-trio, Python and Trio running.",
        labels=BUILD_LABELS,
    ),
    MetricSpec(
        "process_cpu",
        "process_cpu_seconds_total",
        COUNTER,
        SECONDS,
        "CPU seconds (user and system) the process has used; its rate is in cores.",
        collected=True,
    ),
    MetricSpec(
        "process_resident_memory",
        "process_resident_memory_bytes",
        GAUGE,
        BYTES,
        "Resident memory of the process, bytes.",
        collected=True,
    ),
    MetricSpec(
        "process_virtual_memory",
        "process_virtual_memory_bytes",
        GAUGE,
        BYTES,
        "Virtual memory of the process, bytes.",
        collected=True,
    ),
    MetricSpec(
        "process_start_time",
        "process_start_time_seconds",
        GAUGE,
        TIMESTAMP,
        "Unix time the process started.",
        collected=True,
    ),
    MetricSpec(
        "process_open_fds",
        "process_open_fds",
        GAUGE,
        COUNT,
        "File descriptors the process holds open.",
        collected=True,
    ),
    MetricSpec(
        "process_max_fds",
        "process_max_fds",
        GAUGE,
        COUNT,
        "File descriptors the process may open (its soft limit).",
        collected=True,
    ),
)
"""The process's rows, last in :data:`~oraculo_trio.observe.metric_table.SERVICE_METRICS`."""
