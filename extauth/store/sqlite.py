"""The embedded default: one SQLite file, through sqlite-utils.

Each thread gets its own connection (sqlite3 objects are per thread), in
WAL mode with a busy timeout and foreign keys on. A write transaction is
``BEGIN IMMEDIATE``: it takes the file's write lock before its first read,
so threads, workers and processes sharing the file never interleave a
read-then-write.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import sqlite_utils

from extauth.crypto import Cipher
from extauth.store._base import Params, Row, StoreError, StoreUnavailableError, utcnow
from extauth.store._queries import Queries
from extauth.store._schema import SQLITE_MIGRATIONS

BUSY_TIMEOUT_S = 10.0


def _statements(script: str) -> Iterator[str]:
    """The statements of a migration, each whole: a trigger's body holds
    semicolons of its own."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""


# What SQLite says when the file is held by another writer past the busy
# timeout, or cannot be read or written at all.
_UNAVAILABLE = ("database is locked", "database is busy", "disk I/O error",
                "unable to open database")


class SQLiteStore(Queries):
    """The database file, with one connection per thread, and every query."""

    latest_version = len(SQLITE_MIGRATIONS)

    def __init__(self, path: Path | str, cipher: Cipher | None = None,
                 timeout: float = BUSY_TIMEOUT_S) -> None:
        self.path = str(path)
        self.timeout = timeout
        self.where = self.path
        self.cipher = cipher or Cipher()
        self._local = threading.local()

    @property
    def db(self) -> sqlite_utils.Database:
        """This thread's connection."""
        db: sqlite_utils.Database | None = getattr(self._local, "db", None)
        if db is None:
            try:
                conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
                conn.execute("PRAGMA foreign_keys = ON")
                conn.execute("PRAGMA synchronous = NORMAL")
                # Deleted and rewritten rows are zeroed, so no old token lingers
                # in free pages of the file.
                conn.execute("PRAGMA secure_delete = ON")
            except sqlite3.Error as exc:
                raise StoreUnavailableError(f"cannot open database {self.path!r}: {exc}") from None
            db = sqlite_utils.Database(conn)
            self._local.db = db
        return db

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        self.close_thread()

    def close_thread(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.conn.close()
            self._local.db = None

    def _rows(self, sql: str, params: Params = ()) -> list[Row]:
        with self._unavailable():
            cursor = self.db.execute(sql, list(params))
            if cursor.description is None:  # a statement without RETURNING
                return []
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def _execute(self, sql: str, params: Params = ()) -> int:
        with self._unavailable():
            return int(self.db.execute(sql, list(params)).rowcount)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        conn = self.db.conn
        if conn.in_transaction:
            yield
            return
        with self._unavailable():
            conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        with self._unavailable():
            conn.execute("COMMIT")

    @contextmanager
    def _unavailable(self) -> Iterator[None]:
        """The file locked past the busy timeout, or unreadable: the database does
        not answer (503), like a PostgreSQL server that is down. Other errors are
        ours to fix."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if not any(word in text for word in _UNAVAILABLE):
                raise
            raise StoreUnavailableError(
                f"database {self.path} does not answer: {text}") from None

    def _ts(self, value: datetime | None) -> str | None:
        if value is None:
            return None
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def migrate(self) -> int:
        """Apply the pending migrations, each in a transaction of its own."""
        db = self.db
        try:
            if db.journal_mode != "wal":
                db.enable_wal()
            db.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                       "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
            for version, script in enumerate(SQLITE_MIGRATIONS, start=1):
                if version <= self.schema_version():
                    continue
                with self._transaction():
                    # Again under the write lock: another process may have just
                    # applied it.
                    if version <= self.schema_version():
                        continue
                    for statement in _statements(script):
                        db.execute(statement)
                    db.execute(
                        "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                        [version, self._ts(utcnow())],
                    )
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot prepare database {self.path!r}: {exc}") from None
        return len(SQLITE_MIGRATIONS)

    def _has_table(self, name: str) -> bool:
        return self._one("SELECT 1 AS one FROM sqlite_master WHERE type = 'table' "
                         "AND name = ?", [name]) is not None

    def _is_unique_violation(self, exc: Exception) -> bool:
        return isinstance(exc, sqlite3.IntegrityError)
