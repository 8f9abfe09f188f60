"""The load tool: ``oraculo-trio loadtest`` (a measured run with a KPI verdict), ``loadtest
bench`` (the saturation search), ``loadtest calibrate`` and ``oraculo-trio compare``.

It runs the service against the mock exchange (``oraculo_trio.mockexchange``) in separate
processes; the product never imports it (``oraculo_trio.cli`` only dispatches to it).

- ``shape``: ``LoadShape``, what is sent; ``schedule`` and ``generator``: the open-loop
  schedule and the generator process;
- ``run``, with ``processes``, ``configuration`` and ``sampling``: one measured run, its
  processes started with the test harness (``oraculo_trio.testing``);
- ``latency`` (HDR distributions, percentiles with their error), ``measure``, ``thresholds``,
  ``summary``, ``html_report``, ``ci_files`` (``summary.json``, JUnit), ``artifacts``,
  ``compare``: the KPIs, the verdict and the artifacts;
- ``cli``, ``bench``, ``overload``, ``options``, ``console``: the commands.
"""

from oraculo_trio.loadtest.configuration import RunConfig
from oraculo_trio.loadtest.errors import LoadTestError
from oraculo_trio.loadtest.run import RunOutput, calibrate, run_load_test
from oraculo_trio.loadtest.shape import GeneratorSpec, LoadShape

__all__ = [
    "GeneratorSpec",
    "LoadShape",
    "LoadTestError",
    "RunConfig",
    "RunOutput",
    "calibrate",
    "run_load_test",
]
