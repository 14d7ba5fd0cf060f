"""Pending revocations: a deleted link's tokens, sealed, until the provider
confirms their revocation or the record expires."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from extauth.crypto import DecryptError
from extauth.store._base import Row, _dt, utcnow
from extauth.store._links import LinksQueries
from extauth.store.records import Link, PendingRevocation

_SEALED = ("access_token", "refresh_token")


def _context(revocation_id: str, column: str) -> str:
    return f"pending_revocations/{revocation_id}/{column}"


class RevocationsQueries(LinksQueries):
    def _pending(self, row: Row) -> PendingRevocation:
        plain = {"access_token": "", "refresh_token": ""}
        error = ""
        try:
            for name in _SEALED:
                plain[name] = self.cipher.decrypt(row[name], row["token_key_id"],
                                                  _context(row["id"], name))
        except DecryptError as exc:
            plain, error = {"access_token": "", "refresh_token": ""}, str(exc)
        return PendingRevocation(
            id=row["id"], user_id=row["user_id"], user_name=row["user_name"],
            provider_id=row["provider_id"], access_token=plain["access_token"],
            refresh_token=plain["refresh_token"], reason=row["reason"],
            created_at=_dt(row["created_at"]) or utcnow(), attempts=row["attempts"],
            next_attempt_at=_dt(row["next_attempt_at"]) or utcnow(),
            last_error=row["last_error"], expires_at=_dt(row["expires_at"]) or utcnow(),
            key_id=row["token_key_id"], decrypt_error=error,
        )

    def add_pending_revocation(self, user_id: int, user_name: str, provider_id: str,
                               access_token: str, refresh_token: str, reason: str,
                               first_retry: datetime, expires_at: datetime) -> str:
        """Keep tokens to revoke; the first retry is due at ``first_retry``."""
        rid = uuid.uuid4().hex
        sealed = [self.cipher.encrypt(v, _context(rid, n))
                  for n, v in zip(_SEALED, (access_token, refresh_token), strict=True)]
        self._execute(
            "INSERT INTO pending_revocations (id, user_id, user_name, provider_id, "
            "access_token, refresh_token, token_key_id, reason, created_at, attempts, "
            "next_attempt_at, last_error, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, '', ?)",
            [rid, user_id, user_name, provider_id, *sealed, self.cipher.primary_id, reason,
             self._ts(utcnow()), self._ts(first_retry), self._ts(expires_at)],
        )
        return rid

    def unlink(self, user_id: int, provider_id: str, user_name: str,
               revoke: tuple[datetime, datetime] | None) -> tuple[Link | None, str]:
        """Delete a link; with ``revoke`` (first retry, expiry), keep its tokens for
        revocation in the same transaction. Returns what the link held and the
        pending revocation's id ("" when none was kept)."""
        with self._transaction():
            link = self.delete_link(user_id, provider_id)
            if link is None or revoke is None or link.decrypt_error or not link.access_token:
                return link, ""
            rid = self.add_pending_revocation(user_id, user_name, provider_id,
                                              link.access_token, link.refresh_token,
                                              "unlink", *revoke)
        return link, rid

    def claim_due_revocations(self, hold: timedelta, limit: int = 20) -> list[PendingRevocation]:
        """Due revocations, each held for ``hold`` so that no other process tries
        it meanwhile."""
        now = utcnow()
        with self._transaction():
            rows = self._rows(
                "SELECT * FROM pending_revocations WHERE next_attempt_at <= ? "
                f"ORDER BY next_attempt_at LIMIT ?{self.skip_locked}", [self._ts(now), limit])
            for row in rows:
                self._execute("UPDATE pending_revocations SET next_attempt_at = ? WHERE id = ?",
                              [self._ts(now + hold), row["id"]])
        return [self._pending(r) for r in rows]

    def revocation_failed(self, rid: str, error: str, next_attempt_at: datetime) -> None:
        self._execute(
            "UPDATE pending_revocations SET attempts = attempts + 1, last_error = ?, "
            "next_attempt_at = ? WHERE id = ?", [error[:400], self._ts(next_attempt_at), rid])

    def revocation_done(self, rid: str) -> None:
        self._execute("DELETE FROM pending_revocations WHERE id = ?", [rid])

    def drop_pending_revocations(self, user_id: int, provider_id: str) -> int:
        return self._execute(
            "DELETE FROM pending_revocations WHERE user_id = ? AND provider_id = ?",
            [user_id, provider_id])

    def pending_revocations(self) -> list[PendingRevocation]:
        rows = self._rows("SELECT * FROM pending_revocations ORDER BY created_at, id")
        return [self._pending(r) for r in rows]

    def next_revocation_due(self) -> datetime | None:
        row = self._one("SELECT MIN(next_attempt_at) AS due FROM pending_revocations")
        return _dt(row["due"]) if row else None

    def reseal_revocations(self) -> tuple[int, int]:
        """Re-encrypt pending revocations with the primary key (they are few);
        returns (rewritten, cannot be decrypted)."""
        target = self.cipher.primary_id
        done = failed = 0
        with self._transaction():
            rows = self._rows(
                f"SELECT * FROM pending_revocations WHERE token_key_id != ?{self.for_update}",
                [target])
            for row in rows:
                pending = self._pending(row)
                if pending.decrypt_error:
                    failed += 1
                    continue
                sealed = [self.cipher.encrypt(v, _context(pending.id, n)) for n, v in
                          zip(_SEALED, (pending.access_token, pending.refresh_token),
                              strict=True)]
                self._execute("UPDATE pending_revocations SET access_token = ?, "
                              "refresh_token = ?, token_key_id = ? WHERE id = ?",
                              [*sealed, target, pending.id])
                done += 1
        return done, failed
