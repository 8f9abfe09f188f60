"""The alert store: the :class:`Store` protocol, SQLite and PostgreSQL implementations,
versioned migrations and the batching writer task.

Typical use::

    async with open_store(settings.database.url, statement_timeout=2.0, metrics=metrics) as store:
        send, receive = trio.open_memory_channel[StoreItem](1024)
        await nursery.start(run_store_writer, store, receive, metrics)

``SqliteStore`` and ``PostgresStore`` are imported from their modules
(``oraculo_trio.store.sqlite`` / ``.postgres``) so that triopg loads only when used.
"""

from oraculo_trio.store.base import (
    DISPATCH_STATUSES,
    AlertRow,
    DispatchLog,
    Store,
    mask_dsn,
    parse_store_url,
)
from oraculo_trio.store.opening import open_store
from oraculo_trio.store.writer import StoreItem, run_store_writer

__all__ = [
    "DISPATCH_STATUSES",
    "AlertRow",
    "DispatchLog",
    "Store",
    "StoreItem",
    "mask_dsn",
    "open_store",
    "parse_store_url",
    "run_store_writer",
]
