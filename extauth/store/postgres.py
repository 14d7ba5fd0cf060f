"""PostgreSQL, for several instances on one database (``--db postgresql://...``).

psycopg 3 with its connection pool (the ``postgres`` extra). Statements run
in autocommit on a pooled connection; a write transaction holds one
connection for its length, and the rows it reads with ``FOR UPDATE`` stay
locked against other instances until it ends. Migrations run under an
advisory lock, so instances starting together apply each one once. A
database that does not answer raises ``StoreUnavailableError`` (503).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

try:
    import psycopg
    from psycopg.rows import dict_row
    from psycopg_pool import ConnectionPool, PoolTimeout
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("PostgreSQL needs the postgres extra: "
                      "pip install 'extauth[postgres]'") from exc

from extauth.crypto import Cipher
from extauth.store._base import Params, Row, StoreError, StoreUnavailableError, utcnow
from extauth.store._copy import Table
from extauth.store._queries import Queries
from extauth.store._schema import POSTGRES_MIGRATIONS

# Any constant: the advisory lock that serialises migrations between instances.
_MIGRATION_LOCK = 0x657874617574
_UNAVAILABLE = (psycopg.OperationalError, PoolTimeout)  # LockNotAvailable is one


@lru_cache(maxsize=512)
def _sql(statement: str) -> str:
    """The queries are written with ``?``; psycopg takes ``%s``."""
    return statement.replace("?", "%s")


def _params(params: Params) -> list[object]:
    """PostgreSQL text cannot hold NUL: it is stored as U+FFFD. No id, name or
    token of ours contains one, so a lookup with one still finds nothing."""
    return [p.replace("\x00", "\ufffd") if isinstance(p, str) and "\x00" in p else p
            for p in params]


_SECRET_PARAM = re.compile(r"(?<=[?&])((?:ssl)?password=)[^&]*", re.IGNORECASE)


def redacted(url: str) -> str:
    """The URL without its password (as the user part's or as a parameter), for
    messages."""
    parts = urlsplit(url)
    if parts.password is not None:
        host = parts.hostname or ""
        netloc = f"{parts.username}:****@{host}" + (f":{parts.port}" if parts.port else "")
        url = urlunsplit(parts._replace(netloc=netloc))
    return _SECRET_PARAM.sub(r"\1****", url)


class PostgresStore(Queries):
    """A PostgreSQL database, through a pool of connections."""

    latest_version = len(POSTGRES_MIGRATIONS)
    for_update = " FOR UPDATE"
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str, cipher: Cipher | None = None, pool_size: int = 10,
                 timeout: float = 5.0) -> None:
        self.url = url
        self.where = redacted(url)
        self.cipher = cipher or Cipher()
        self.timeout = timeout
        self._local = threading.local()
        # Opened on first use, so that a store that is never used holds nothing.
        self.pool = ConnectionPool(
            url, min_size=1, max_size=pool_size, timeout=timeout, open=False,
            kwargs={"autocommit": True, "row_factory": dict_row,
                    "connect_timeout": max(1, round(timeout))},
            configure=self._configure,
            # A connection the database dropped (a restart, a failover) is
            # replaced before it is handed out, not found broken by a request.
            check=ConnectionPool.check_connection,
            name="extauth",
        )
        self._opening = threading.Lock()
        self._opened = False

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        # A row another instance keeps locked is waited for as long as a
        # connection is, then the request is answered 503, not held.
        conn.execute(f"SET lock_timeout = {int(self.timeout * 1000)}")

    def close(self) -> None:
        self.pool.close()

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Row]]:
        held: psycopg.Connection[Row] | None = getattr(self._local, "conn", None)
        if held is not None:
            yield held
            return
        if not self._opened:
            with self._opening:
                if not self._opened:
                    self.pool.open()
                    self._opened = True
        try:
            with self.pool.connection() as conn:
                yield cast("psycopg.Connection[Row]", conn)
        except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
            raise  # a deadlock or a serialization failure: ours to fix, not a database down
        except _UNAVAILABLE as exc:
            raise StoreUnavailableError(
                f"database {self.where} does not answer: {type(exc).__name__}") from None

    def _rows(self, sql: str, params: Params = ()) -> list[Row]:
        with self._connection() as conn:
            cur = conn.execute(_sql(sql), _params(params))
            return cur.fetchall() if cur.description else []

    def _execute(self, sql: str, params: Params = ()) -> int:
        with self._connection() as conn:
            return conn.execute(_sql(sql), _params(params)).rowcount

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        if getattr(self._local, "conn", None) is not None:
            yield
            return
        with self._connection() as conn, conn.transaction():
            self._local.conn = conn
            try:
                yield
            finally:
                self._local.conn = None

    def _ts(self, value: datetime | None) -> datetime | None:
        return None if value is None else value.astimezone(UTC)

    def _rows_copied(self, table: Table) -> None:
        # Rows came with their ids: the identity's next value goes past them.
        if table.key == ("id",) and table.name in ("users", "audit_events"):
            self._execute(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                          f"(SELECT COALESCE(MAX(id), 0) + 1 FROM {table.name}), false)")

    def _has_table(self, name: str) -> bool:
        row = self._one("SELECT to_regclass(?) IS NOT NULL AS found", [name])
        return bool(row and row["found"])

    def _is_unique_violation(self, exc: Exception) -> bool:
        return isinstance(exc, psycopg.errors.UniqueViolation)

    def migrate(self) -> int:
        """Apply the pending migrations, each in a transaction of its own, under an
        advisory lock: instances starting together apply each one once."""
        try:
            with self._transaction():
                # Under the lock too: two CREATE ... IF NOT EXISTS at once can
                # both try to create the table's type.
                self._execute("SELECT pg_advisory_xact_lock(?)", [_MIGRATION_LOCK])
                self._execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                              "(version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)")
            for version, script in enumerate(POSTGRES_MIGRATIONS, start=1):
                if version <= self.schema_version():
                    continue
                with self._transaction():
                    self._execute("SELECT pg_advisory_xact_lock(?)", [_MIGRATION_LOCK])
                    if version <= self.schema_version():
                        continue  # another instance applied it meanwhile
                    # Whole, without parameters: PostgreSQL parses the statements
                    # (a function's body holds semicolons of its own).
                    self._local.conn.execute(script)
                    self._execute("INSERT INTO schema_migrations (version, applied_at) "
                                  "VALUES (?, ?)", [version, utcnow()])
        except psycopg.Error as exc:
            raise StoreError(f"cannot prepare database {self.where}: {exc}") from None
        return len(POSTGRES_MIGRATIONS)
