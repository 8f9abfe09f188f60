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
    """Raised when a state machine (an alert's lifecycle, a book's sync) is asked for a move
    its table does not hold."""


class StoreError(OraculoError):
    """Raised when the alert store fails in a way a retry will not fix (bad schema, bad DSN)."""


class StoreUnavailable(StoreError):
    """Raised when the store cannot be reached or a statement times out; the writer retries."""


class FeedError(OraculoError):
    """Raised when an exchange feed cannot be used (handshake refused, bad URL)."""


class DeliveryError(OraculoError):
    """Raised by a notification sink when one delivery attempt failed (refused, timed out,
    an HTTP 5xx); the dispatcher records it and retries with backoff."""


class DeliveryRejected(DeliveryError):
    """Raised by a notification sink when the receiver refused the notification itself (an
    HTTP 4xx other than 408 and 429): retrying the same payload will not help."""


class UsageError(OraculoError):
    """Raised by the command line when its arguments are wrong (a bad duration, a missing
    option); the message names the option and what is allowed."""


class ServiceError(OraculoError):
    """Raised by the command line when the running service's HTTP API cannot be reached,
    or refuses a request (the message carries the service's own explanation)."""
