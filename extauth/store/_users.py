"""Users, session keys, and pending web and device authorizations."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from extauth.crypto import DecryptError
from extauth.store._base import DuplicateError, StoreBase, _dt, _named, _ts, utcnow
from extauth.store.records import ApiKey, DeviceGrant, OAuthState, User


def _verifier_context(state_hash: str) -> str:
    return f"oauth_states/{state_hash}/code_verifier"


class UsersStore(StoreBase):
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

    # -- pending web authorizations ---------------------------------------------------

    def insert_oauth_state(self, state_hash: str, state: OAuthState) -> None:
        """Remember a pending authorization (and forget the expired ones). The PKCE
        verifier is sealed like tokens: with it and the code, anyone could finish
        the flow."""
        verifier = self.cipher.encrypt(state.code_verifier, _verifier_context(state_hash))
        with self.immediate() as db:
            db.execute("DELETE FROM oauth_states WHERE expires_at < ?", [_ts(utcnow())])
            db.execute(
                "INSERT INTO oauth_states (state_hash, user_id, provider_id, code_verifier, "
                "verifier_key_id, redirect, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [state_hash, state.user_id, state.provider_id, verifier,
                 self.cipher.primary_id if state.code_verifier else "", state.redirect,
                 _ts(state.expires_at)],
            )

    def take_oauth_state(self, state_hash: str) -> OAuthState | None:
        """Remove and return a pending authorization: each state is used once. A
        verifier that cannot be decrypted (its key is gone) is returned empty, and
        the provider refuses the code."""
        with self.immediate() as db:
            rows = _named(db.execute(
                "SELECT user_id, provider_id, code_verifier, verifier_key_id, redirect, "
                "expires_at FROM oauth_states WHERE state_hash = ?",
                [state_hash],
            ))
            if not rows:
                return None
            db.execute("DELETE FROM oauth_states WHERE state_hash = ?", [state_hash])
        row = rows[0]
        try:
            verifier = self.cipher.decrypt(row["code_verifier"], row["verifier_key_id"],
                                           _verifier_context(state_hash))
        except DecryptError:
            verifier = ""
        return OAuthState(row["user_id"], row["provider_id"], verifier, row["redirect"],
                          _dt(row["expires_at"]) or utcnow())

    # -- device authorizations --------------------------------------------------------

    def insert_device_grant(self, code_hash: str, grant: DeviceGrant) -> None:
        """Remember who started a device authorization (and forget the expired ones)."""
        with self.immediate() as db:
            db.execute("DELETE FROM device_authorizations WHERE expires_at < ?", [_ts(utcnow())])
            db.execute(
                "INSERT OR REPLACE INTO device_authorizations (code_hash, user_id, provider_id, "
                "expires_at) VALUES (?, ?, ?, ?)",
                [code_hash, grant.user_id, grant.provider_id, _ts(grant.expires_at)],
            )

    def device_grant(self, code_hash: str) -> DeviceGrant | None:
        row = self.db.execute(
            "SELECT user_id, provider_id, expires_at FROM device_authorizations "
            "WHERE code_hash = ?", [code_hash]).fetchone()
        return DeviceGrant(row[0], row[1], _dt(row[2]) or utcnow()) if row else None

    def delete_device_grant(self, code_hash: str) -> None:
        self.db.execute("DELETE FROM device_authorizations WHERE code_hash = ?", [code_hash])
