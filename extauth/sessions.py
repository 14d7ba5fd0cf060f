"""Users, session tokens and agent tokens: the API's own authentication.

A session token is ``<10-char id>-<22-char secret>``. Only the SHA-256 of the
secret is stored; it is compared in constant time. An agent token is a UUIDv4,
bound to one user like a session token, that opens only the token hand-off
(Coder's workspace-agent endpoint); only its SHA-256 is stored. Failures
raise ``UnauthorizedError`` with Coder's messages.

A token is looked up either on its own (``authenticate``), or, where the
request goes on to read the caller's links, as a ``Credential`` together with
them, in one statement (``authenticate_reading``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from extauth.errors import UnauthorizedError
from extauth.store import AgentToken, ApiKey, Link, Store, User, utcnow

ID_LENGTH = 10
SECRET_LENGTH = 22
_ALPHABET = string.ascii_letters + string.digits
MISSING_DETAIL = 'Cookie "coder_session_token" or query parameter must be provided.'
# A hash to compare against when the key id is unknown, so that both failure
# paths do the same work.
_DUMMY_HASH = hashlib.sha256(b"extauth-unknown-key").hexdigest()
# What Coder's agents send: a UUID, version 4, in its canonical text form.
_AGENT_TOKEN = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$", re.IGNORECASE)
AGENT_INVALID = "Workspace agent token invalid."
AGENT_UNAUTHORIZED = "Workspace agent not authorized."


@dataclass(frozen=True)
class Session:
    """Who is calling: the user behind a valid token."""

    user_id: int
    user_name: str
    key_id: str
    # "session", or "agent" for an agent token (it opens only the token hand-off).
    kind: str = "session"


def _random(n: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(n))


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def parse_lifetime(text: str) -> timedelta:
    """Parse ``30d``, ``12h``, ``90m``, ``45s`` (or a sum like ``1d12h``)."""
    m = re.fullmatch(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text.strip())
    if not text.strip() or m is None:
        raise ValueError(f"lifetime {text!r} is not valid: use e.g. 30d, 12h, 90m or 1d12h")
    d, h, mi, s = (int(g or 0) for g in m.groups())
    value = timedelta(days=d, hours=h, minutes=mi, seconds=s)
    if value <= timedelta(0):
        raise ValueError(f"lifetime {text!r} must be longer than zero")
    return value


def create_token(store: Store, user: User, lifetime: timedelta | None = None) -> str:
    """Create a session token for ``user``; the plain token is returned only here."""
    key_id, secret = _random(ID_LENGTH), _random(SECRET_LENGTH)
    expires_at = utcnow() + lifetime if lifetime else None
    store.insert_api_key(key_id, user.id, hash_secret(secret), expires_at)
    return f"{key_id}-{secret}"


def _expired_text(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S.%f +0000 UTC")


def check_format(token: str) -> tuple[str, str]:
    """Split a token into id and secret, or raise with Coder's format messages."""
    parts = token.split("-")
    if len(parts) != 2:
        raise UnauthorizedError(
            detail=f"Invalid API key format: incorrect amount of API key parts, "
            f"expected 2 got {len(parts)}"
        )
    key_id, secret = parts
    if len(key_id) != ID_LENGTH:
        raise UnauthorizedError(
            detail=f"Invalid API key format: invalid API key ID length, "
            f"expected {ID_LENGTH} got {len(key_id)}"
        )
    if len(secret) != SECRET_LENGTH:
        raise UnauthorizedError(
            detail=f"Invalid API key format: invalid API key secret length, "
            f"expected {SECRET_LENGTH} got {len(secret)}"
        )
    return key_id, secret


def authenticate(store: Store, token: str | None) -> Session:
    """The session behind ``token``, or ``UnauthorizedError`` saying why not."""
    if not token:
        raise UnauthorizedError(detail=MISSING_DETAIL)
    key_id, secret = check_format(token)
    return _session(store.get_api_key(key_id), secret)


def _session(key: ApiKey | None, secret: str) -> Session:
    """The session of ``key`` if ``secret`` is its secret and it has not expired."""
    expected = key.secret_hash if key else _DUMMY_HASH
    matches = hmac.compare_digest(expected, hash_secret(secret))
    if key is None:
        raise UnauthorizedError(detail="API key is invalid.")
    if not matches:
        raise UnauthorizedError(detail="API key secret is invalid.")
    if key.expires_at is not None and key.expires_at <= utcnow():
        raise UnauthorizedError(detail=f'API key expired at "{_expired_text(key.expires_at)}".')
    return Session(user_id=key.user_id, user_name=key.user_name, key_id=key.id)


# -- agent tokens ---------------------------------------------------------------------


def create_agent_token(store: Store, user: User, name: str = "",
                       lifetime: timedelta | None = None) -> str:
    """Create an agent token for ``user``; the token (a UUIDv4) is returned only here."""
    token = str(uuid.uuid4())
    expires_at = utcnow() + lifetime if lifetime else None
    store.insert_agent_token(_random(ID_LENGTH), user.id, name, hash_secret(token), expires_at)
    return token


def _check_agent_format(token: str) -> None:
    if not _AGENT_TOKEN.match(token):
        raise UnauthorizedError(
            AGENT_INVALID, detail=f"An agent token must be a valid UUIDv4. (len {len(token)})")


def _agent_session(agent: AgentToken | None) -> Session:
    if agent is None:
        raise UnauthorizedError(AGENT_UNAUTHORIZED,
                                detail="The agent token is unknown or was deleted.")
    if agent.expires_at is not None and agent.expires_at <= utcnow():
        raise UnauthorizedError(
            AGENT_UNAUTHORIZED,
            detail=f'The agent token expired at "{_expired_text(agent.expires_at)}".')
    return Session(user_id=agent.user_id, user_name=agent.user_name, key_id=agent.id,
                   kind="agent")


def _is_agent_token(token: str) -> bool:
    """Where both are accepted (the token hand-off): a session token is
    ``<id>-<secret>``, one dash; anything else is an agent token (a UUID has four)."""
    return token.count("-") != 1


# -- a token checked together with what the request reads -------------------------------


@dataclass(frozen=True)
class Credential:
    """A token as the caller presented it, its shape checked but not yet looked up:
    the operation looks it up in the same trip to the database as its own read
    (``authenticate_reading``). ``agents``: an agent token may open it too."""

    token: str
    agents: bool = False

    def __repr__(self) -> str:  # never print the token
        return f"Credential(agents={self.agents})"


def credential(token: str, agents: bool = False) -> Credential:
    """The token, once its shape is right; ``UnauthorizedError`` with Coder's
    format messages otherwise (no database needed to say so)."""
    if agents and _is_agent_token(token):
        _check_agent_format(token)
    else:
        check_format(token)
    return Credential(token, agents)


def authenticate_reading(store: Store, presented: Credential,
                         provider_id: str | None = None) -> tuple[Session, list[Link]]:
    """The session behind a credential, and its user's links (only the link to
    ``provider_id``, when given), read in one statement; ``UnauthorizedError``
    with Coder's messages (its agent messages for an agent token) otherwise."""
    token = presented.token
    if presented.agents and _is_agent_token(token):
        _check_agent_format(token)
        # Looked up by its hash: the token is 122 random bits, so where a lookup
        # stops in the index tells nothing about any stored token.
        agent, links = store.agent_token_and_links(hash_secret(token.lower()), provider_id)
        return _agent_session(agent), links
    key_id, secret = check_format(token)
    key, links = store.api_key_and_links(key_id, provider_id)
    return _session(key, secret), links
