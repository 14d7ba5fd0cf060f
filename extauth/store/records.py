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
