"""SQLite through sqlite-utils: schema, migrations and every query.

This is the one module that knows SQL. A ``Store`` hands each thread its own
connection (sqlite3 objects are per thread), in WAL mode with a busy timeout
and foreign keys on. Every read-then-write runs inside ``BEGIN IMMEDIATE`` so
that several threads, workers or processes sharing the file never interleave.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from extauth.crypto import Cipher, DecryptError

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
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


@dataclass(frozen=True)
class User:
    id: int
    name: str
    created_at: datetime


@dataclass(frozen=True)
class ApiKey:
    id: str
    user_id: int
    user_name: str
    secret_hash: str
    created_at: datetime
    expires_at: datetime | None


@dataclass(frozen=True)
class OAuthState:
    """A pending web authorization: who started it, for which provider, until when."""

    user_id: int
    provider_id: str
    code_verifier: str
    redirect: str
    expires_at: datetime


@dataclass(frozen=True)
class Link:
    """A user's stored link to one provider. ``expires_at`` None = never expires."""

    user_id: int
    provider_id: str
    access_token: str
    refresh_token: str
    expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    extra: dict[str, Any] = field(default_factory=dict)
    refresh_failure_reason: str = ""
    refresh_failed_at: datetime | None = None
    # Bumped by every write: a write that depends on what was read checks it.
    version: int = 1
    # The encryption key of the tokens ("" = stored plain).
    key_id: str = ""
    # Why the tokens could not be decrypted ("" when they could).
    decrypt_error: str = ""

    def __repr__(self) -> str:  # never print tokens
        return f"Link(user_id={self.user_id}, provider_id={self.provider_id!r})"


@dataclass(frozen=True)
class AuditEvent:
    """One entry of the audit trail. Never holds a token."""

    action: str
    outcome: str = ""
    user_id: int | None = None
    user_name: str = ""
    provider_id: str = ""
    detail: str = ""
    request_id: str = ""
    at: datetime | None = None


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
]

_LINK_COLUMNS = (
    "user_id, provider_id, access_token, refresh_token, expires_at, extra, "
    "refresh_failure_reason, created_at, updated_at, refresh_failed_at, version, token_key_id"
)
_TOKEN_FIELDS = ("access_token", "refresh_token", "extra")


def _context(user_id: int, provider_id: str, column: str) -> str:
    """Associated data binding an encrypted value to its row and column."""
    return f"external_auth_links/{user_id}/{provider_id}/{column}"


class Store:
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

    # -- users and API keys ---------------------------------------------------

    def create_user(self, name: str) -> User:
        now = utcnow()
        try:
            cur = self.db.execute(
                "INSERT INTO users (name, created_at) VALUES (?, ?)", [name, _ts(now)]
            )
        except sqlite3.IntegrityError:
            raise DuplicateError(f"user {name!r} already exists") from None
        return User(id=int(cur.lastrowid or 0), name=name, created_at=now)

    def get_user(self, name: str) -> User | None:
        row = self.db.execute(
            "SELECT id, name, created_at FROM users WHERE name = ?", [name]
        ).fetchone()
        return User(row[0], row[1], _dt(row[2]) or utcnow()) if row else None

    def list_users(self) -> list[User]:
        rows = self.db.execute("SELECT id, name, created_at FROM users ORDER BY name").fetchall()
        return [User(r[0], r[1], _dt(r[2]) or utcnow()) for r in rows]

    def insert_api_key(
        self, key_id: str, user_id: int, secret_hash: str, expires_at: datetime | None
    ) -> None:
        self.db.execute(
            "INSERT INTO api_keys (id, user_id, secret_hash, created_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?)",
            [key_id, user_id, secret_hash, _ts(utcnow()), _ts(expires_at)],
        )

    def get_api_key(self, key_id: str) -> ApiKey | None:
        row = self.db.execute(
            "SELECT k.id, k.user_id, u.name, k.secret_hash, k.created_at, k.expires_at "
            "FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.id = ?",
            [key_id],
        ).fetchone()
        if row is None:
            return None
        return ApiKey(row[0], row[1], row[2], row[3], _dt(row[4]) or utcnow(), _dt(row[5]))

    def api_keys_for_user(self, user_id: int) -> list[ApiKey]:
        rows = self.db.execute(
            "SELECT k.id, k.user_id, u.name, k.secret_hash, k.created_at, k.expires_at "
            "FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.user_id = ? "
            "ORDER BY k.created_at",
            [user_id],
        ).fetchall()
        return [ApiKey(r[0], r[1], r[2], r[3], _dt(r[4]) or utcnow(), _dt(r[5])) for r in rows]

    def delete_api_key(self, key_id: str) -> bool:
        return self.db.execute("DELETE FROM api_keys WHERE id = ?", [key_id]).rowcount > 0

    # -- external auth links ----------------------------------------------------

    def _link(self, row: tuple[Any, ...]) -> Link:
        user_id, provider_id, key = row[0], row[1], row[11]
        plain: dict[str, str] = {}
        error = ""
        try:
            for name, value in zip(_TOKEN_FIELDS, (row[2], row[3], row[5]), strict=True):
                plain[name] = self.cipher.decrypt(value, key, _context(user_id, provider_id, name))
        except DecryptError as exc:
            plain, error = {"access_token": "", "refresh_token": "", "extra": ""}, str(exc)
        return Link(
            user_id=user_id,
            provider_id=provider_id,
            access_token=plain["access_token"],
            refresh_token=plain["refresh_token"],
            expires_at=_dt(row[4]),
            extra=json.loads(plain["extra"]) if plain["extra"] else {},
            refresh_failure_reason=row[6],
            created_at=_dt(row[7]) or utcnow(),
            updated_at=_dt(row[8]) or utcnow(),
            refresh_failed_at=_dt(row[9]),
            version=row[10],
            key_id=key,
            decrypt_error=error,
        )

    def _sealed(self, user_id: int, provider_id: str, access_token: str, refresh_token: str,
                extra: dict[str, Any] | None) -> list[str]:
        """The token values as stored: encrypted with the primary key when there is one."""
        return [
            self.cipher.encrypt(value, _context(user_id, provider_id, name))
            for name, value in zip(
                _TOKEN_FIELDS, (access_token, refresh_token, json.dumps(extra or {})), strict=True
            )
        ]

    def get_link(self, user_id: int, provider_id: str) -> Link | None:
        row = self.db.execute(
            f"SELECT {_LINK_COLUMNS} FROM external_auth_links "
            "WHERE user_id = ? AND provider_id = ?",
            [user_id, provider_id],
        ).fetchone()
        return self._link(row) if row else None

    def links_for_user(self, user_id: int) -> list[Link]:
        rows = self.db.execute(
            f"SELECT {_LINK_COLUMNS} FROM external_auth_links WHERE user_id = ? "
            "ORDER BY provider_id",
            [user_id],
        ).fetchall()
        return [self._link(r) for r in rows]

    def upsert_link(
        self,
        user_id: int,
        provider_id: str,
        access_token: str,
        refresh_token: str,
        expires_at: datetime | None,
        extra: dict[str, Any] | None = None,
    ) -> Link:
        """Insert or replace the tokens of a link (a new link: any refresh failure is
        forgotten), keeping its creation time."""
        now = _ts(utcnow())
        sealed = self._sealed(user_id, provider_id, access_token, refresh_token, extra)
        with self.immediate() as db:
            db.execute(
                "INSERT INTO external_auth_links (user_id, provider_id, access_token, "
                "refresh_token, expires_at, extra, refresh_failure_reason, created_at, "
                "updated_at, token_key_id) VALUES (?, ?, ?, ?, ?, ?, '', ?, ?, ?) "
                "ON CONFLICT (user_id, provider_id) DO UPDATE SET "
                "access_token = excluded.access_token, refresh_token = excluded.refresh_token, "
                "expires_at = excluded.expires_at, extra = excluded.extra, "
                "refresh_failure_reason = '', refresh_failed_at = NULL, "
                "token_key_id = excluded.token_key_id, version = version + 1, "
                "updated_at = excluded.updated_at",
                [user_id, provider_id, sealed[0], sealed[1], _ts(expires_at), sealed[2],
                 now, now, self.cipher.primary_id],
            )
            link = self.get_link(user_id, provider_id)
        assert link is not None
        return link

    def replace_tokens(
        self,
        link: Link,
        access_token: str,
        refresh_token: str,
        expires_at: datetime | None,
    ) -> Link | None:
        """Store refreshed tokens if the row is still the one ``link`` was read from
        (compare-and-swap on its version); None when someone else wrote first."""
        sealed = self._sealed(link.user_id, link.provider_id, access_token, refresh_token,
                              link.extra)
        with self.immediate() as db:
            changed = db.execute(
                "UPDATE external_auth_links SET access_token = ?, refresh_token = ?, "
                "expires_at = ?, extra = ?, token_key_id = ?, version = version + 1, "
                "updated_at = ?, lease_owner = '', lease_until = NULL "
                "WHERE user_id = ? AND provider_id = ? AND version = ?",
                [sealed[0], sealed[1], _ts(expires_at), sealed[2], self.cipher.primary_id,
                 _ts(utcnow()), link.user_id, link.provider_id, link.version],
            ).rowcount
            return self.get_link(link.user_id, link.provider_id) if changed else None

    def record_refresh_failure(self, link: Link, reason: str) -> bool:
        """Mark a permanent refresh failure (the refresh token is dropped), if the row
        is still the one ``link`` was read from."""
        with self.immediate() as db:
            return db.execute(
                "UPDATE external_auth_links SET refresh_token = '', "
                "refresh_failure_reason = ?, refresh_failed_at = ?, version = version + 1, "
                "lease_owner = '', lease_until = NULL "
                "WHERE user_id = ? AND provider_id = ? AND version = ?",
                [reason[:400], _ts(utcnow()), link.user_id, link.provider_id, link.version],
            ).rowcount > 0

    def take_lease(self, user_id: int, provider_id: str, owner: str, until: datetime) -> bool:
        """Take (or renew) the refresh lease of a link unless another owner holds it."""
        with self.immediate() as db:
            return db.execute(
                "UPDATE external_auth_links SET lease_owner = ?, lease_until = ? "
                "WHERE user_id = ? AND provider_id = ? AND "
                "(lease_until IS NULL OR lease_until < ? OR lease_owner = ?)",
                [owner, _ts(until), user_id, provider_id, _ts(utcnow()), owner],
            ).rowcount > 0

    def release_lease(self, user_id: int, provider_id: str, owner: str) -> None:
        self.db.execute(
            "UPDATE external_auth_links SET lease_owner = '', lease_until = NULL "
            "WHERE user_id = ? AND provider_id = ? AND lease_owner = ?",
            [user_id, provider_id, owner],
        )

    def delete_link(self, user_id: int, provider_id: str) -> Link | None:
        """Delete a link and return what it held, or None when there was none."""
        with self.immediate():
            link = self.get_link(user_id, provider_id)
            if link is not None:
                self.db.execute(
                    "DELETE FROM external_auth_links WHERE user_id = ? AND provider_id = ?",
                    [user_id, provider_id],
                )
        return link

    # -- encryption keys ----------------------------------------------------------------

    def key_counts(self) -> dict[str, int]:
        """How many links are stored under each key id ("" = plain)."""
        rows = self.db.execute(
            "SELECT token_key_id, COUNT(*) FROM external_auth_links GROUP BY token_key_id"
        ).fetchall()
        return {r[0]: r[1] for r in rows}

    def reseal_batch(self, batch: int = 100) -> tuple[int, int]:
        """Re-encrypt up to ``batch`` links not under the primary key (or decrypt them
        all when there is no key). Returns (rewritten, failed); run until (0, _)."""
        target = self.cipher.primary_id
        with self.immediate() as db:
            rows = db.execute(
                f"SELECT {_LINK_COLUMNS} FROM external_auth_links WHERE token_key_id != ? "
                "ORDER BY user_id, provider_id LIMIT ?",
                [target, batch],
            ).fetchall()
            done = failed = 0
            for row in rows:
                link = self._link(row)
                if link.decrypt_error:
                    failed += 1
                    continue
                sealed = self._sealed(link.user_id, link.provider_id, link.access_token,
                                      link.refresh_token, link.extra)
                db.execute(
                    "UPDATE external_auth_links SET access_token = ?, refresh_token = ?, "
                    "extra = ?, token_key_id = ?, version = version + 1 "
                    "WHERE user_id = ? AND provider_id = ? AND version = ?",
                    [*sealed, target, link.user_id, link.provider_id, link.version],
                )
                done += 1
        return done, failed

    # -- the audit trail -------------------------------------------------------------------

    def insert_audit(self, event: AuditEvent) -> None:
        self.db.execute(
            "INSERT INTO audit_events (at, user_id, user_name, provider_id, action, outcome, "
            "detail, request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [_ts(event.at or utcnow()), event.user_id, event.user_name, event.provider_id,
             event.action, event.outcome, event.detail[:500], event.request_id],
        )

    def audit_events(self, user_name: str | None = None, provider_id: str | None = None,
                     limit: int = 100) -> list[AuditEvent]:
        """The newest events first, optionally for one user and/or provider."""
        where, args = [], []
        if user_name is not None:
            where.append("user_name = ?")
            args.append(user_name)
        if provider_id is not None:
            where.append("provider_id = ?")
            args.append(provider_id)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self.db.execute(
            "SELECT action, outcome, user_id, user_name, provider_id, detail, request_id, at "
            f"FROM audit_events {clause} ORDER BY at DESC, id DESC LIMIT ?",
            [*args, limit],
        ).fetchall()
        return [AuditEvent(action=r[0], outcome=r[1], user_id=r[2], user_name=r[3],
                           provider_id=r[4], detail=r[5], request_id=r[6], at=_dt(r[7]))
                for r in rows]

    def purge_audit(self, before: datetime) -> int:
        return self.db.execute(
            "DELETE FROM audit_events WHERE at < ?", [_ts(before)]
        ).rowcount

    # -- pending web authorizations ---------------------------------------------------

    def insert_oauth_state(self, state_hash: str, state: OAuthState) -> None:
        """Remember a pending authorization (and forget the expired ones)."""
        with self.immediate() as db:
            db.execute("DELETE FROM oauth_states WHERE expires_at < ?", [_ts(utcnow())])
            db.execute(
                "INSERT INTO oauth_states (state_hash, user_id, provider_id, code_verifier, "
                "redirect, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                [state_hash, state.user_id, state.provider_id, state.code_verifier,
                 state.redirect, _ts(state.expires_at)],
            )

    def take_oauth_state(self, state_hash: str) -> OAuthState | None:
        """Remove and return a pending authorization: each state is used once."""
        with self.immediate() as db:
            row = db.execute(
                "SELECT user_id, provider_id, code_verifier, redirect, expires_at "
                "FROM oauth_states WHERE state_hash = ?",
                [state_hash],
            ).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM oauth_states WHERE state_hash = ?", [state_hash])
        return OAuthState(row[0], row[1], row[2], row[3], _dt(row[4]) or utcnow())
