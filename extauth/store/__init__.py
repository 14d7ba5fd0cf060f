"""SQLite through sqlite-utils: schema, migrations and every query.

This is the one module that knows SQL. A ``Store`` hands each thread its own
connection (sqlite3 objects are per thread), in WAL mode with a busy timeout
and foreign keys on. Every read-then-write runs inside ``BEGIN IMMEDIATE`` so
that several threads, workers or processes sharing the file never interleave.
"""

from __future__ import annotations

from extauth.store._audit import AuditStore
from extauth.store._base import MIGRATIONS, DuplicateError, StoreError, utcnow
from extauth.store._providers import ProvidersStore
from extauth.store._revocations import RevocationsStore
from extauth.store._users import UsersStore
from extauth.store.records import (
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
    "MIGRATIONS", "ApiKey", "AuditEvent", "DeviceGrant", "DuplicateError", "Link", "OAuthState",
    "PendingRevocation", "ProviderRefusal", "Store", "StoreError", "User", "utcnow",
]


class Store(UsersStore, RevocationsStore, ProvidersStore, AuditStore):
    """The database file, with one connection per thread, and every query."""
