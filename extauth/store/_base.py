"""The database file: connections per thread, transactions, migrations."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import sqlite_utils

from extauth.crypto import Cipher

BUSY_TIMEOUT_S = 10.0


class StoreError(Exception):
    """The database cannot be used (unreadable file, failed migration)."""


class DuplicateError(StoreError):
    """A row with this unique key already exists."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def _ts(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _dt(value: str | None) -> datetime | None:
    if value is None:
        return None
    # What _ts writes, read by fromisoformat: about 50 times faster than
    # strptime, and a list of three links reads ten of these.
    return datetime.fromisoformat(value)


# Numbered migrations; each runs once, in order, in its own transaction.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL
    );
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        secret_hash TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT
    );
    CREATE INDEX api_keys_user_id ON api_keys(user_id);
    CREATE TABLE external_auth_links (
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        provider_id TEXT NOT NULL,
        access_token TEXT NOT NULL,
        refresh_token TEXT NOT NULL DEFAULT '',
        expires_at TEXT,
        extra TEXT NOT NULL DEFAULT '{}',
        refresh_failure_reason TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (user_id, provider_id)
    ) WITHOUT ROWID;
    """,
    """
    CREATE TABLE oauth_states (
        state_hash TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        provider_id TEXT NOT NULL,
        code_verifier TEXT NOT NULL DEFAULT '',
        redirect TEXT NOT NULL DEFAULT '',
        expires_at TEXT NOT NULL
    );
    CREATE INDEX oauth_states_expires_at ON oauth_states(expires_at);
    """,
    """
    ALTER TABLE external_auth_links ADD COLUMN token_key_id TEXT NOT NULL DEFAULT '';
    ALTER TABLE external_auth_links ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE external_auth_links ADD COLUMN refresh_failed_at TEXT;
    ALTER TABLE external_auth_links ADD COLUMN lease_owner TEXT NOT NULL DEFAULT '';
    ALTER TABLE external_auth_links ADD COLUMN lease_until TEXT;
    CREATE INDEX external_auth_links_token_key_id ON external_auth_links(token_key_id);
    CREATE TABLE audit_events (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        user_id INTEGER,
        user_name TEXT NOT NULL DEFAULT '',
        provider_id TEXT NOT NULL DEFAULT '',
        action TEXT NOT NULL,
        outcome TEXT NOT NULL DEFAULT '',
        detail TEXT NOT NULL DEFAULT '',
        request_id TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX audit_events_at ON audit_events(at);
    CREATE INDEX audit_events_user_id ON audit_events(user_id, at);
    CREATE INDEX audit_events_provider_id ON audit_events(provider_id, at);
    """,
    """
    CREATE TABLE agent_tokens (
        id TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        name TEXT NOT NULL DEFAULT '',
        token_hash TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        expires_at TEXT
    );
    CREATE INDEX agent_tokens_user_id ON agent_tokens(user_id);
    CREATE INDEX external_auth_links_updated_at ON external_auth_links(updated_at);
    """,
]


class StoreBase:
    """The database file, with one connection per thread."""

    def __init__(self, path: Path | str, cipher: Cipher | None = None) -> None:
        self.path = str(path)
        self.cipher = cipher or Cipher()
        self._local = threading.local()

    @property
    def db(self) -> sqlite_utils.Database:
        db: sqlite_utils.Database | None = getattr(self._local, "db", None)
        if db is None:
            try:
                conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
                conn.execute("PRAGMA foreign_keys = ON")
                conn.execute("PRAGMA synchronous = NORMAL")
                # Deleted and rewritten rows are zeroed, so no old token lingers
                # in free pages of the file.
                conn.execute("PRAGMA secure_delete = ON")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open database {self.path!r}: {exc}") from None
            db = sqlite_utils.Database(conn)
            self._local.db = db
        return db

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.conn.close()
            self._local.db = None

    @contextmanager
    def immediate(self) -> Iterator[sqlite_utils.Database]:
        """A write transaction that takes the write lock before its first read."""
        db = self.db
        if db.conn.in_transaction:
            with db.atomic():
                yield db
            return
        db.conn.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.conn.execute("ROLLBACK")
            raise
        db.conn.execute("COMMIT")

    # -- schema ---------------------------------------------------------------

    def migrate(self) -> int:
        """Apply pending migrations; return the schema version. Safe to race."""
        db = self.db
        try:
            if db.journal_mode != "wal":
                db.enable_wal()
            with self.immediate():
                db.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations "
                    "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
                )
                row = db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
                current = row[0] or 0
                for version, script in enumerate(MIGRATIONS, start=1):
                    if version <= current:
                        continue
                    for statement in script.split(";"):
                        if statement.strip():
                            db.execute(statement)
                    db.execute(
                        "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                        [version, _ts(utcnow())],
                    )
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot prepare database {self.path!r}: {exc}") from None
        return len(MIGRATIONS)

    def ping(self) -> bool:
        self.db.execute("SELECT 1").fetchone()
        return True
