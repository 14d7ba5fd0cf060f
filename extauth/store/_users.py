"""Users, session keys, and pending web and device authorizations."""

from __future__ import annotations

import abc
from datetime import datetime

from extauth.crypto import DecryptError
from extauth.store._base import DuplicateError, Row, StoreBase, _dt, utcnow
from extauth.store.records import ApiKey, DeviceGrant, OAuthState, User

_API_KEY = ("SELECT k.id, k.user_id, u.name AS user_name, k.secret_hash, k.created_at, "
            "k.expires_at FROM api_keys k JOIN users u ON u.id = k.user_id")


def _verifier_context(state_hash: str) -> str:
    return f"oauth_states/{state_hash}/code_verifier"


def _user(row: Row) -> User:
    return User(row["id"], row["name"], _dt(row["created_at"]) or utcnow())


def _api_key(row: Row) -> ApiKey:
    return ApiKey(row["id"], row["user_id"], row["user_name"], row["secret_hash"],
                  _dt(row["created_at"]) or utcnow(), _dt(row["expires_at"]))


class UsersQueries(StoreBase):
    @abc.abstractmethod
    def _is_unique_violation(self, exc: Exception) -> bool:
        """The error says a unique key is already taken."""

    # -- users and API keys ---------------------------------------------------

    def create_user(self, name: str) -> User:
        now = utcnow()
        try:
            row = self._one("INSERT INTO users (name, created_at) VALUES (?, ?) RETURNING id",
                            [name, self._ts(now)])
        except Exception as exc:
            if self._is_unique_violation(exc):
                raise DuplicateError(f"user {name!r} already exists") from None
            raise
        assert row is not None
        return User(id=int(row["id"]), name=name, created_at=now)

    def get_user(self, name: str) -> User | None:
        row = self._one("SELECT id, name, created_at FROM users WHERE name = ?", [name])
        return _user(row) if row else None

    def list_users(self) -> list[User]:
        return [_user(r) for r in self._rows("SELECT id, name, created_at FROM users "
                                            "ORDER BY name")]

    def insert_api_key(
        self, key_id: str, user_id: int, secret_hash: str, expires_at: datetime | None
    ) -> None:
        self._execute(
            "INSERT INTO api_keys (id, user_id, secret_hash, created_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?)",
            [key_id, user_id, secret_hash, self._ts(utcnow()), self._ts(expires_at)],
        )

    def get_api_key(self, key_id: str) -> ApiKey | None:
        row = self._one(f"{_API_KEY} WHERE k.id = ?", [key_id])
        return _api_key(row) if row else None

    def api_keys_for_user(self, user_id: int) -> list[ApiKey]:
        rows = self._rows(f"{_API_KEY} WHERE k.user_id = ? ORDER BY k.created_at", [user_id])
        return [_api_key(r) for r in rows]

    def delete_api_key(self, key_id: str) -> bool:
        return self._execute("DELETE FROM api_keys WHERE id = ?", [key_id]) > 0

    # -- pending web authorizations ---------------------------------------------------

    def insert_oauth_state(self, state_hash: str, state: OAuthState) -> None:
        """Remember a pending authorization (and forget the expired ones). The PKCE
        verifier is sealed like tokens: with it and the code, anyone could finish
        the flow."""
        verifier = self.cipher.encrypt(state.code_verifier, _verifier_context(state_hash))
        with self._transaction():
            self._execute("DELETE FROM oauth_states WHERE expires_at < ?",
                          [self._ts(utcnow())])
            self._execute(
                "INSERT INTO oauth_states (state_hash, user_id, provider_id, code_verifier, "
                "verifier_key_id, redirect, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [state_hash, state.user_id, state.provider_id, verifier,
                 self.cipher.primary_id if state.code_verifier else "", state.redirect,
                 self._ts(state.expires_at)],
            )

    def take_oauth_state(self, state_hash: str) -> OAuthState | None:
        """Remove and return a pending authorization: each state is used once. A
        verifier that cannot be decrypted (its key is gone) is returned empty, and
        the provider refuses the code."""
        row = self._one(
            "DELETE FROM oauth_states WHERE state_hash = ? RETURNING user_id, provider_id, "
            "code_verifier, verifier_key_id, redirect, expires_at",
            [state_hash],
        )
        if row is None:
            return None
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
        with self._transaction():
            self._execute("DELETE FROM device_authorizations WHERE expires_at < ?",
                          [self._ts(utcnow())])
            self._execute(
                "INSERT INTO device_authorizations (code_hash, user_id, provider_id, "
                "expires_at) VALUES (?, ?, ?, ?) ON CONFLICT (code_hash) DO UPDATE SET "
                "user_id = excluded.user_id, provider_id = excluded.provider_id, "
                "expires_at = excluded.expires_at",
                [code_hash, grant.user_id, grant.provider_id, self._ts(grant.expires_at)],
            )

    def device_grant(self, code_hash: str) -> DeviceGrant | None:
        row = self._one("SELECT user_id, provider_id, expires_at FROM device_authorizations "
                        "WHERE code_hash = ?", [code_hash])
        if row is None:
            return None
        return DeviceGrant(row["user_id"], row["provider_id"], _dt(row["expires_at"]) or utcnow())

    def delete_device_grant(self, code_hash: str) -> None:
        self._execute("DELETE FROM device_authorizations WHERE code_hash = ?", [code_hash])
