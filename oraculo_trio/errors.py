"""The exceptions oraculo-trio raises on purpose.

Like trio's ``Closed``/``Broken`` split: an error says whether *we* decided something was
wrong (configuration, an illegal transition) or whether something outside failed (the
database, the exchange).
"""

from __future__ import annotations


class OraculoError(Exception):
    """Base class of every error oraculo-trio raises on purpose."""


class ConfigError(OraculoError):
    """Raised at start-up when a configuration key, value or rule is invalid.

    The message always names the key (``section.key``), the offending value and what is
    allowed, so a typo never passes silently.
    """


class IllegalTransition(OraculoError):
    """Raised when the alert state machine is asked for a move its table does not hold."""


class StoreError(OraculoError):
    """Raised when the alert store fails in a way a retry will not fix (bad schema, bad DSN)."""


class StoreUnavailable(StoreError):
    """Raised when the store cannot be reached or a statement times out; the writer retries."""


class FeedError(OraculoError):
    """Raised when an exchange feed cannot be used (handshake refused, bad URL)."""
