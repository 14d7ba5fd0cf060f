"""Copying a deployment from one database to another (``extauth db copy``).

What is copied: users, session and agent tokens (their hashes), links and
pending revocations (their sealed values as they are: the keys stay with
the operator, and a value stays bound to the same row), providers refusing
our client, and the audit trail. Web and device authorizations in progress
live for minutes and are not copied; the link counts are kept by the
target's own triggers.

Each table is copied in key order, a batch per transaction, after the
largest key the target already holds: a copy that stops part-way goes on
where it stopped when run again on the same, unchanged source. A target
holding rows that are not the start of the source's is refused. Times are
carried as times, whatever each database stores them as.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from extauth.store._base import Row, StoreBase, _dt


@dataclass(frozen=True)
class Table:
    name: str
    key: tuple[str, ...]
    columns: tuple[str, ...]
    times: tuple[str, ...] = ()


# In the order their rows depend on each other (users first).
TABLES = (
    Table("users", ("id",), ("id", "name", "created_at"), ("created_at",)),
    Table("api_keys", ("id",), ("id", "user_id", "secret_hash", "created_at", "expires_at"),
          ("created_at", "expires_at")),
    Table("agent_tokens", ("id",),
          ("id", "user_id", "name", "token_hash", "created_at", "expires_at"),
          ("created_at", "expires_at")),
    Table("external_auth_links", ("user_id", "provider_id"),
          ("user_id", "provider_id", "access_token", "refresh_token", "expires_at", "extra",
           "refresh_failure_reason", "created_at", "updated_at", "token_key_id", "version",
           "refresh_failed_at", "lease_owner", "lease_until", "token_lifetime",
           "refresh_retry_at", "refresh_retry_reason"),
          ("expires_at", "created_at", "updated_at", "refresh_failed_at", "lease_until",
           "refresh_retry_at")),
    Table("pending_revocations", ("id",),
          ("id", "user_id", "user_name", "provider_id", "access_token", "refresh_token",
           "token_key_id", "reason", "created_at", "attempts", "next_attempt_at", "last_error",
           "expires_at"),
          ("created_at", "next_attempt_at", "expires_at")),
    Table("provider_refusals", ("provider_id",),
          ("provider_id", "client_fingerprint", "reason", "failures", "refused_at", "retry_at"),
          ("refused_at", "retry_at")),
    Table("audit_events", ("id",),
          ("id", "at", "user_id", "user_name", "provider_id", "action", "outcome", "detail",
           "request_id"),
          ("at",)),
)


class CopyQueries(StoreBase):
    def table_count(self, table: Table) -> int:
        row = self._one(f"SELECT COUNT(*) AS n FROM {table.name}")
        return int(row["n"]) if row else 0

    def last_key(self, table: Table) -> tuple[Any, ...] | None:
        """The largest key of ``table`` here (None when it is empty)."""
        return self._end_key(table, "DESC")

    def first_key(self, table: Table) -> tuple[Any, ...] | None:
        """The smallest key of ``table`` here (None when it is empty)."""
        return self._end_key(table, "ASC")

    def _end_key(self, table: Table, order: str) -> tuple[Any, ...] | None:
        row = self._one(f"SELECT {', '.join(table.key)} FROM {table.name} "
                        f"ORDER BY {', '.join(f'{k} {order}' for k in table.key)} LIMIT 1")
        return tuple(row[k] for k in table.key) if row else None

    def row_at(self, table: Table, key: tuple[Any, ...]) -> Row | None:
        """The row of ``table`` with that key, times as datetimes."""
        row = self._one(f"SELECT {', '.join(table.columns)} FROM {table.name} WHERE "
                        f"({', '.join(table.key)}) = ({', '.join('?' for _ in table.key)})",
                        list(key))
        if row is not None:
            for column in table.times:
                row[column] = _dt(row[column])
        return row

    def count_through(self, table: Table, key: tuple[Any, ...]) -> int:
        """How many rows of ``table`` have a key up to ``key``, included."""
        row = self._one(f"SELECT COUNT(*) AS n FROM {table.name} WHERE "
                        f"({', '.join(table.key)}) <= ({', '.join('?' for _ in table.key)})",
                        list(key))
        return int(row["n"]) if row else 0

    def rows_after(self, table: Table, after: tuple[Any, ...] | None,
                   size: int) -> Iterator[list[Row]]:
        """The rows of ``table`` after the key ``after``, in key order, ``size`` at
        a time, with their times as datetimes."""
        while True:
            where, args = "", []
            if after is not None:
                where = (f"WHERE ({', '.join(table.key)}) > "
                         f"({', '.join('?' for _ in table.key)})")
                args = list(after)
            rows = self._rows(f"SELECT {', '.join(table.columns)} FROM {table.name} {where} "
                              f"ORDER BY {', '.join(table.key)} LIMIT ?", [*args, size])
            if not rows:
                return
            for row in rows:
                for column in table.times:
                    row[column] = _dt(row[column])
            yield rows
            after = tuple(rows[-1][k] for k in table.key)

    def insert_rows(self, table: Table, rows: list[Row]) -> None:
        """Add ``rows`` to ``table`` in one transaction (rows already here stay)."""
        sql = (f"INSERT INTO {table.name} ({', '.join(table.columns)}) "
               f"VALUES ({', '.join('?' for _ in table.columns)}) "
               f"ON CONFLICT ({', '.join(table.key)}) DO NOTHING")
        with self._transaction():
            for row in rows:
                self._execute(sql, [self._ts(row[c]) if c in table.times else row[c]
                                    for c in table.columns])
            self._rows_copied(table)

    def _rows_copied(self, table: Table) -> None:  # noqa: B027 - most databases need nothing
        """After rows came in with their own ids: what the database must adjust."""
