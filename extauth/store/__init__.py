"""The store: every query, behind one interface, on SQLite or PostgreSQL.

This package is the one place that knows SQL. ``open_store(where)`` gives a
``Store`` for a database named the way ``--db`` names it: a file path or
``sqlite:///path`` (SQLite, the embedded default), or ``postgresql://...``
(PostgreSQL, for several instances on one database; the ``postgres``
extra). The queries are written once (``_queries`` and the modules by
concept beside it); each database's store provides connections,
transactions, time and its schema.
"""

from __future__ import annotations

from pathlib import Path

from extauth.crypto import Cipher
from extauth.store._base import DuplicateError, StoreError, StoreUnavailableError, utcnow
from extauth.store.interface import Store
from extauth.store.records import (
    AgentToken,
    ApiKey,
    AuditEvent,
    DeviceGrant,
    Link,
    OAuthState,
    PendingRevocation,
    ProviderRefusal,
    User,
)

__all__ = [
    "AgentToken", "ApiKey", "AuditEvent", "DeviceGrant", "DuplicateError", "Link", "OAuthState",
    "PendingRevocation", "ProviderRefusal", "Store", "StoreError", "StoreUnavailableError",
    "User", "is_postgres", "open_store", "sqlite_path", "utcnow",
]

_POSTGRES = ("postgresql://", "postgres://")
_SQLITE = "sqlite:///"


def is_postgres(where: str | Path) -> bool:
    return str(where).startswith(_POSTGRES)


def sqlite_path(where: str | Path) -> Path:
    """The file a SQLite ``--db`` value names (a path, or ``sqlite:///path``)."""
    text = str(where)
    return Path(text[len(_SQLITE) - 1:] if text.startswith(_SQLITE) else text)


def open_store(where: str | Path, cipher: Cipher | None = None, pool_size: int = 10,
               timeout: float = 5.0) -> Store:
    """The store for a ``--db`` value; nothing is read or written yet."""
    if is_postgres(where):
        from extauth.store.postgres import PostgresStore

        return PostgresStore(str(where), cipher, pool_size=pool_size, timeout=timeout)
    from extauth.store.sqlite import SQLiteStore

    return SQLiteStore(sqlite_path(where), cipher, timeout=timeout)
