"""The exceptions oraculo-trio raises on purpose (defined in :mod:`oraculo_trio.core.errors`).

Re-exported here because callers outside the core (the CLI, plugins, users' own rules)
import them from ``oraculo_trio.errors``.
"""

from oraculo_trio.core.errors import (
    ConfigError,
    DeliveryError,
    DeliveryRejected,
    FeedError,
    IllegalTransition,
    OraculoError,
    ServiceError,
    StoreError,
    StoreUnavailable,
    UsageError,
)

__all__ = [
    "ConfigError",
    "DeliveryError",
    "DeliveryRejected",
    "FeedError",
    "IllegalTransition",
    "OraculoError",
    "ServiceError",
    "StoreError",
    "StoreUnavailable",
    "UsageError",
]
