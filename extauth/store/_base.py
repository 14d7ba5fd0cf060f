"""What every store shares: errors, time, and the primitives each database
provides (rows, statements, transactions, migrations).

The queries themselves are written once, in the modules beside this one, in
the SQL both databases speak: ``?`` placeholders (the PostgreSQL store turns
them into ``%s``), ``INSERT ... ON CONFLICT ... DO UPDATE`` with the target
table's columns qualified, ``RETURNING``, row values. What differs is
provided by ``SQLiteStore`` and ``PostgresStore``: connections, how a write
transaction keeps concurrent writers out (``BEGIN IMMEDIATE`` locks the
whole file; PostgreSQL locks the rows read with ``FOR UPDATE``), how time is
stored, and the schema's DDL.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from extauth.crypto import Cipher


class StoreError(Exception):
    """The database cannot be used (unreadable file, failed migration)."""


class DuplicateError(StoreError):
    """A row with this unique key already exists."""


class StoreUnavailableError(StoreError):
    """The database does not answer (down, unreachable, or every connection busy)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def _dt(value: str | datetime | None) -> datetime | None:
    """A stored time as an aware UTC datetime, whichever way the database keeps it."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    # What SQLite's _ts writes, read by fromisoformat: about 50 times faster
    # than strptime, and a list of three links reads ten of these.
    return datetime.fromisoformat(value)


Params = Sequence[Any]
Row = dict[str, Any]


class StoreBase(abc.ABC):
    """The primitives the query modules use; a database's store provides them."""

    cipher: Cipher
    # Where the data lives, for messages (a path, or a URL without its password).
    where: str
    # Appended to a SELECT inside a transaction to keep its rows from
    # concurrent writers until the end ("" where the transaction already does).
    for_update: str = ""
    # The same, passing over rows that another transaction holds.
    skip_locked: str = ""
    # The schema version this server's migrations make.
    latest_version: int

    @abc.abstractmethod
    def _rows(self, sql: str, params: Params = ()) -> list[Row]:
        """The rows of a query, as dicts keyed by column name."""

    @abc.abstractmethod
    def _execute(self, sql: str, params: Params = ()) -> int:
        """Run a statement; return how many rows it changed."""

    @abc.abstractmethod
    def _transaction(self) -> AbstractContextManager[None]:
        """A write transaction (joined, when one is already open in this thread)."""

    @abc.abstractmethod
    def _ts(self, value: datetime | None) -> Any:
        """A time as this database stores it."""

    @abc.abstractmethod
    def migrate(self) -> int:
        """Apply pending migrations; return the schema version. Safe to race."""

    def schema_version(self) -> int:
        """The last migration applied (0: none, not even the table of them)."""
        if not self._has_table("schema_migrations"):
            return 0
        row = self._one("SELECT MAX(version) AS v FROM schema_migrations")
        return int(row["v"] or 0) if row else 0

    @abc.abstractmethod
    def _has_table(self, name: str) -> bool:
        """A table of that name exists."""

    def ping(self) -> bool:
        self._rows("SELECT 1 AS one")
        return True

    @abc.abstractmethod
    def close(self) -> None:
        """Give back this store's connections."""

    def close_thread(self) -> None:  # noqa: B027 - most databases hold nothing per thread
        """Give back what the calling thread holds (before the thread ends)."""

    def _one(self, sql: str, params: Params = ()) -> Row | None:
        rows = self._rows(sql, params)
        return rows[0] if rows else None
