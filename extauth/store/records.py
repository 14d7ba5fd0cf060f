"""What the store hands out: plain frozen values, never a live row."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


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
class AgentToken:
    """An agent token's record: who it acts for, until when. Never its secret."""

    id: str
    user_id: int
    user_name: str
    name: str
    created_at: datetime
    expires_at: datetime | None


@dataclass(frozen=True)
class OAuthState:
    """A pending web authorization: who started it, for which provider, until when."""

    user_id: int
    provider_id: str
    code_verifier: str = field(repr=False)
    redirect: str
    expires_at: datetime


@dataclass(frozen=True)
class DeviceGrant:
    """A device authorization this server started: whose, at which provider, until when."""

    user_id: int
    provider_id: str
    expires_at: datetime


@dataclass(frozen=True)
class Link:
    """A user's stored link to one provider. ``expires_at`` None = never expires."""

    user_id: int
    provider_id: str
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    refresh_failure_reason: str = ""
    refresh_failed_at: datetime | None = None
    # Bumped by every write of the tokens: a write that depends on what was
    # read checks it. Re-encrypting the same tokens does not bump it.
    version: int = 1
    # Seconds the access token was issued for (None: unknown, or no expiry).
    lifetime: int | None = None
    # After a failed refresh that may succeed later: no attempt before this.
    refresh_retry_at: datetime | None = None
    refresh_retry_reason: str = ""
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


@dataclass(frozen=True)
class ProviderRefusal:
    """A provider refused our client's credentials on a refresh: refreshes at
    it pause until ``retry_at``, for the client config it refused."""

    provider_id: str
    client_fingerprint: str
    reason: str
    failures: int
    refused_at: datetime
    retry_at: datetime


@dataclass(frozen=True)
class PendingRevocation:
    """Tokens of a grant that must be revoked at the provider, kept (sealed like
    link tokens) until the provider confirms or the record expires."""

    id: str
    user_id: int
    user_name: str
    provider_id: str
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    reason: str
    created_at: datetime
    attempts: int
    next_attempt_at: datetime
    last_error: str
    expires_at: datetime
    key_id: str = ""
    decrypt_error: str = ""

    def __repr__(self) -> str:  # never print tokens
        return f"PendingRevocation(id={self.id!r}, provider_id={self.provider_id!r})"
