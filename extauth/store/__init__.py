"""SQLite through sqlite-utils: schema, migrations and every query.

This is the one module that knows SQL. A ``Store`` hands each thread its own
connection (sqlite3 objects are per thread), in WAL mode with a busy timeout
and foreign keys on. Every read-then-write runs inside ``BEGIN IMMEDIATE`` so
that several threads, workers or processes sharing the file never interleave.
"""

from __future__ import annotations

from extauth.store._agents import AgentsStore
from extauth.store._audit import AuditStore
from extauth.store._base import MIGRATIONS, DuplicateError, StoreError, utcnow
from extauth.store._links import LinksStore
from extauth.store._users import UsersStore
from extauth.store.records import AgentToken, ApiKey, AuditEvent, Link, OAuthState, User

__all__ = [
    "MIGRATIONS", "AgentToken", "ApiKey", "AuditEvent", "DuplicateError", "Link", "OAuthState",
    "Store", "StoreError", "User", "utcnow",
]


class Store(UsersStore, LinksStore, AuditStore, AgentsStore):
    """The database file, with one connection per thread, and every query."""
