"""The load tool's error."""

from __future__ import annotations

from oraculo_trio.errors import OraculoError


class LoadTestError(OraculoError):
    """Raised when a load test cannot run or finish: a process would not start or become
    ready, died during the run, or an option asks for something the service cannot do."""
