"""External auth links: tokens (sealed when a key is configured), compare-and-swap
writes, refresh leases, and re-encryption."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from extauth.crypto import DecryptError
from extauth.store._base import StoreBase, _dt, _ts, utcnow
from extauth.store.records import Link

_LINK_COLUMNS = (
    "user_id, provider_id, access_token, refresh_token, expires_at, extra, "
    "refresh_failure_reason, created_at, updated_at, refresh_failed_at, version, token_key_id"
)
_TOKEN_FIELDS = ("access_token", "refresh_token", "extra")


def _context(user_id: int, provider_id: str, column: str) -> str:
    """Associated data binding an encrypted value to its row and column."""
    return f"external_auth_links/{user_id}/{provider_id}/{column}"


class LinksStore(StoreBase):
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

    def links_changed_since(self, since: datetime) -> list[tuple[int, str, str]]:
        """(user id, provider id, mark) of the links written at or after ``since``; the
        mark (version and time of the write) differs between any two writes of a link."""
        cur = self.db.execute(
            "SELECT user_id, provider_id, version, updated_at FROM external_auth_links "
            "WHERE updated_at >= ?",
            [_ts(since)],
        )
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        return [(r["user_id"], r["provider_id"], f"{r['version']}@{r['updated_at']}")
                for r in rows]

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
