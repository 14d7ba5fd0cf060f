"""External auth links: tokens (sealed when a key is configured), compare-and-swap
writes, refresh leases, and re-encryption."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from extauth.crypto import DecryptError
from extauth.store._base import Row, StoreBase, _dt, utcnow
from extauth.store.records import Link

LINK_FIELDS = (
    "user_id", "provider_id", "access_token", "refresh_token", "expires_at", "extra",
    "refresh_failure_reason", "created_at", "updated_at", "refresh_failed_at", "version",
    "token_key_id", "token_lifetime", "refresh_retry_at", "refresh_retry_reason",
)
_LINK_COLUMNS = ", ".join(LINK_FIELDS)
_TOKEN_FIELDS = ("access_token", "refresh_token", "extra")


def _context(user_id: int, provider_id: str, column: str) -> str:
    """Associated data binding an encrypted value to its row and column."""
    return f"external_auth_links/{user_id}/{provider_id}/{column}"


# The row a write depends on: its version, and its creation time, since a link
# deleted and made again starts at version 1 again.
_SAME_ROW = "user_id = ? AND provider_id = ? AND version = ? AND created_at = ?"


class LinksQueries(StoreBase):
    def _same_row(self, link: Link) -> list[Any]:
        return [link.user_id, link.provider_id, link.version, self._ts(link.created_at)]

    # -- external auth links ----------------------------------------------------

    def _link(self, row: Row) -> Link:
        user_id, provider_id, key = row["user_id"], row["provider_id"], row["token_key_id"]
        plain: dict[str, str] = {name: row[name] for name in _TOKEN_FIELDS}
        error = ""
        try:
            if key:  # stored sealed ("" = plain)
                for name in _TOKEN_FIELDS:
                    plain[name] = self.cipher.decrypt(row[name], key,
                                                      _context(user_id, provider_id, name))
        except DecryptError as exc:
            plain, error = {"access_token": "", "refresh_token": "", "extra": ""}, str(exc)
        return Link(
            user_id=user_id,
            provider_id=provider_id,
            access_token=plain["access_token"],
            refresh_token=plain["refresh_token"],
            expires_at=_dt(row["expires_at"]),
            # Most links carry no extra token data: "{}" needs no parser.
            extra=json.loads(plain["extra"]) if plain["extra"] not in ("", "{}") else {},
            refresh_failure_reason=row["refresh_failure_reason"],
            created_at=_dt(row["created_at"]) or utcnow(),
            updated_at=_dt(row["updated_at"]) or utcnow(),
            refresh_failed_at=_dt(row["refresh_failed_at"]),
            version=row["version"],
            key_id=key,
            decrypt_error=error,
            lifetime=row["token_lifetime"],
            refresh_retry_at=_dt(row["refresh_retry_at"]),
            refresh_retry_reason=row["refresh_retry_reason"],
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
        row = self._one(
            f"SELECT {_LINK_COLUMNS} FROM external_auth_links "
            "WHERE user_id = ? AND provider_id = ?",
            [user_id, provider_id],
        )
        return self._link(row) if row else None

    def links_for_user(self, user_id: int) -> list[Link]:
        rows = self._rows(
            f"SELECT {_LINK_COLUMNS} FROM external_auth_links WHERE user_id = ? "
            "ORDER BY provider_id",
            [user_id],
        )
        return [self._link(r) for r in rows]

    def upsert_link(
        self,
        user_id: int,
        provider_id: str,
        access_token: str,
        refresh_token: str,
        expires_at: datetime | None,
        extra: dict[str, Any] | None = None,
        lifetime: int | None = None,
    ) -> Link:
        """Insert or replace the tokens of a link (a new link: any refresh failure is
        forgotten), keeping its creation time. ``lifetime``: the seconds the access
        token was issued for."""
        now = self._ts(utcnow())
        sealed = self._sealed(user_id, provider_id, access_token, refresh_token, extra)
        with self._transaction():
            self._execute(
                "INSERT INTO external_auth_links (user_id, provider_id, access_token, "
                "refresh_token, expires_at, extra, refresh_failure_reason, created_at, "
                "updated_at, token_key_id, token_lifetime) "
                "VALUES (?, ?, ?, ?, ?, ?, '', ?, ?, ?, ?) "
                "ON CONFLICT (user_id, provider_id) DO UPDATE SET "
                "access_token = excluded.access_token, refresh_token = excluded.refresh_token, "
                "expires_at = excluded.expires_at, extra = excluded.extra, "
                "refresh_failure_reason = '', refresh_failed_at = NULL, "
                "refresh_retry_at = NULL, refresh_retry_reason = '', "
                "token_key_id = excluded.token_key_id, version = external_auth_links.version + 1, "
                "token_lifetime = excluded.token_lifetime, updated_at = excluded.updated_at",
                [user_id, provider_id, sealed[0], sealed[1], self._ts(expires_at), sealed[2],
                 now, now, self.cipher.primary_id, lifetime],
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
        lifetime: int | None = None,
    ) -> Link | None:
        """Store refreshed tokens if the row is still the one ``link`` was read from
        (compare-and-swap on its version and creation time); None when someone else
        wrote first."""
        sealed = self._sealed(link.user_id, link.provider_id, access_token, refresh_token,
                              link.extra)
        with self._transaction():
            changed = self._execute(
                "UPDATE external_auth_links SET access_token = ?, refresh_token = ?, "
                "expires_at = ?, extra = ?, token_key_id = ?, version = version + 1, "
                "token_lifetime = ?, refresh_retry_at = NULL, refresh_retry_reason = '', "
                "updated_at = ? "
                f"WHERE {_SAME_ROW}",
                [sealed[0], sealed[1], self._ts(expires_at), sealed[2], self.cipher.primary_id,
                 lifetime, self._ts(utcnow()), *self._same_row(link)],
            )
            return self.get_link(link.user_id, link.provider_id) if changed else None

    def record_refresh_failure(self, link: Link, reason: str) -> bool:
        """Mark a permanent refresh failure (the refresh token is dropped), if the row
        is still the one ``link`` was read from."""
        return self._execute(
            "UPDATE external_auth_links SET refresh_token = '', "
            "refresh_failure_reason = ?, refresh_failed_at = ?, version = version + 1, "
            "refresh_retry_at = NULL, refresh_retry_reason = '' "
            f"WHERE {_SAME_ROW}",
            [reason[:400], self._ts(utcnow()), *self._same_row(link)],
        ) > 0

    def defer_refresh(self, link: Link, until: datetime, reason: str) -> None:
        """Remember a refresh failure that may pass (the provider is down, slow or
        refuses for a reason not about the token): no attempt before ``until``.
        The tokens, and so the version, are untouched."""
        self._execute(
            "UPDATE external_auth_links SET refresh_retry_at = ?, refresh_retry_reason = ? "
            f"WHERE {_SAME_ROW}",
            [self._ts(until), reason[:400], *self._same_row(link)],
        )

    def take_lease(self, user_id: int, provider_id: str, owner: str, until: datetime) -> bool:
        """Take (or renew) the refresh lease of a link unless another owner holds it."""
        return self._execute(
            "UPDATE external_auth_links SET lease_owner = ?, lease_until = ? "
            "WHERE user_id = ? AND provider_id = ? AND "
            "(lease_until IS NULL OR lease_until < ? OR lease_owner = ?)",
            [owner, self._ts(until), user_id, provider_id, self._ts(utcnow()), owner],
        ) > 0

    def release_lease(self, user_id: int, provider_id: str, owner: str) -> None:
        self._execute(
            "UPDATE external_auth_links SET lease_owner = '', lease_until = NULL "
            "WHERE user_id = ? AND provider_id = ? AND lease_owner = ?",
            [user_id, provider_id, owner],
        )

    def delete_link(self, user_id: int, provider_id: str) -> Link | None:
        """Delete a link and return what it held, or None when there was none."""
        row = self._one(
            f"DELETE FROM external_auth_links WHERE user_id = ? AND provider_id = ? "
            f"RETURNING {_LINK_COLUMNS}",
            [user_id, provider_id],
        )
        return self._link(row) if row else None

    def links_changed_since(self, since: datetime) -> list[tuple[int, str, str]]:
        """(user id, provider id, mark) of the links written at or after ``since``; the
        mark (version and time of the write) differs between any two writes of a link."""
        rows = self._rows(
            "SELECT user_id, provider_id, version, updated_at FROM external_auth_links "
            "WHERE updated_at >= ?",
            [self._ts(since)],
        )
        return [(r["user_id"], r["provider_id"], f"{r['version']}@{_dt(r['updated_at'])}")
                for r in rows]

    # -- encryption keys ----------------------------------------------------------------

    def key_counts(self) -> dict[str, int]:
        """How many links are stored under each key id ("" = plain)."""
        rows = self._rows("SELECT token_key_id, COUNT(*) AS n FROM external_auth_links "
                          "GROUP BY token_key_id")
        return {r["token_key_id"]: int(r["n"]) for r in rows}

    def reseal_batch(self, batch: int = 100,
                     after: tuple[int, str] = (0, "")) -> tuple[int, list[tuple[int, str]],
                                                                tuple[int, str] | None]:
        """Re-encrypt up to ``batch`` links not under the primary key (or decrypt them
        when there is no key), in key order after ``after`` (user id, provider id).

        Returns (rewritten, the keys of links that cannot be decrypted, where the next
        batch starts or None when this was the last). The tokens do not change, so
        neither does the row's version: a refresh in flight still writes its new pair.
        """
        target = self.cipher.primary_id
        failed: list[tuple[int, str]] = []
        with self._transaction():
            rows = self._rows(
                f"SELECT {_LINK_COLUMNS} FROM external_auth_links WHERE token_key_id != ? "
                "AND (user_id, provider_id) > (?, ?) ORDER BY user_id, provider_id "
                f"LIMIT ?{self.for_update}",
                [target, after[0], after[1], batch],
            )
            for row in rows:
                link = self._link(row)
                if link.decrypt_error:
                    failed.append((link.user_id, link.provider_id))
                    continue
                sealed = self._sealed(link.user_id, link.provider_id, link.access_token,
                                      link.refresh_token, link.extra)
                self._execute(
                    "UPDATE external_auth_links SET access_token = ?, refresh_token = ?, "
                    f"extra = ?, token_key_id = ? WHERE {_SAME_ROW}",
                    [*sealed, target, *self._same_row(link)],
                )
        last = (rows[-1]["user_id"], rows[-1]["provider_id"]) if len(rows) == batch else None
        return len(rows) - len(failed), failed, last

    def links_to_reseal(self) -> int:
        """How many links are not under the primary key (what a rotation rewrites)."""
        row = self._one("SELECT COUNT(*) AS n FROM external_auth_links WHERE token_key_id != ?",
                        [self.cipher.primary_id])
        return int(row["n"]) if row else 0

    def sealed_link(self, key_id: str) -> Link | None:
        """One link stored under ``key_id`` (any), decrypted as far as the configured
        keys allow; a key id of "" is never looked up. One index lookup."""
        row = self._one(
            f"SELECT {_LINK_COLUMNS} FROM external_auth_links WHERE token_key_id = ? "
            "AND token_key_id != '' LIMIT 1", [key_id])
        return self._link(row) if row else None

    def any_sealed_key_id(self) -> str | None:
        """The key id of some encrypted link, or None when no link is encrypted."""
        row = self._one("SELECT token_key_id FROM external_auth_links "
                        "WHERE token_key_id > '' LIMIT 1")
        return str(row["token_key_id"]) if row else None

    # -- counts for metrics ----------------------------------------------------------------

    def link_counts(self) -> dict[tuple[str, str], int]:
        """Links per (provider id, state), as the triggers keep them: ``active``,
        or ``refresh_failed`` (the provider refused the refresh token for good)."""
        rows = self._rows("SELECT provider_id, state, links FROM link_counts")
        return {(r["provider_id"], r["state"]): int(r["links"]) for r in rows}
