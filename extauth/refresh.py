"""Refresh that never loses a rotating refresh token.

Providers that rotate refresh tokens (GitHub Apps, GitLab, any OAuth server
with rotation) invalidate the old one when they issue a new one, and some
revoke the whole grant when an old one is presented again. So:

- at most one refresh per (user, provider) is in flight: an asyncio lock
  within a process, and a lease on the link's row in SQLite (with an expiry,
  so a crashed holder does not block forever) across workers and processes;
  the others wait for and reuse the winner's result;
- before refreshing, the link is read again: if someone already refreshed,
  theirs is used;
- the new pair is written first, in a transaction that checks the row is
  still the one that was read (compare-and-swap on its version);
- failures are classified: permanent ones (the provider says the grant is
  gone) are recorded on the link and stop further attempts until the user
  links again; transient ones (5xx, 429, rate-limited 403, network, timeouts)
  are retried with bounded backoff and never clear anything.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from extauth._threads import off_loop
from extauth.errors import ExtauthError, ProviderError, ProviderRateLimitedError
from extauth.providers.oauth import OAuthClient, OAuthError, TokenSet
from extauth.sessions import Session
from extauth.settings import ProviderConfig
from extauth.store import Link, Store, utcnow

# Refresh this long before the stored expiry.
LEEWAY = timedelta(seconds=30)
# Errors after which the refresh token will never work again.
PERMANENT_CODES = frozenset({
    "invalid_grant", "bad_refresh_token", "unauthorized_client", "unsupported_grant_type",
    "incorrect_client_credentials", "invalid_client",
})
TRANSIENT_CODES = frozenset({"temporarily_unavailable", "server_error", "slow_down"})
BACKOFF = (0.25, 0.5, 1.0, 2.0)
LEASE_POLL_S = 0.05

Record = Callable[[Session, str, str, str, str], Awaitable[None]]


def needs_refresh(link: Link, now: datetime | None = None) -> bool:
    """The token expires within the leeway (a link without expiry never does)."""
    return link.expires_at is not None and link.expires_at <= (now or utcnow()) + LEEWAY


def is_permanent(exc: Exception) -> bool:
    """The refresh decision table: True when retrying can never succeed."""
    if isinstance(exc, OAuthError):
        if exc.code in PERMANENT_CODES:
            return True
        if exc.code in TRANSIENT_CODES:
            return False
        return exc.status in (200, 400, 401)
    if isinstance(exc, ProviderRateLimitedError):
        return False
    if isinstance(exc, ProviderError):
        return exc.upstream_status in (400, 401)
    return False


def describe(exc: Exception) -> str:
    if isinstance(exc, OAuthError):
        return f"{exc.code}: {exc.description}" if exc.description else exc.code
    return str(exc)


def _ago(then: datetime | None) -> str:
    if then is None:
        return ""
    seconds = int((utcnow() - then).total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "just now"


def failure_text(link: Link) -> str:
    """What a link whose refresh failed for good shows as ``validate_error``."""
    return (f"token expired and refreshing failed {_ago(link.refresh_failed_at)} with: "
            f"{link.refresh_failure_reason}; link again")


@dataclass(frozen=True)
class Outcome:
    """The link after trying to make it fresh; ``note`` says why it may not be."""

    link: Link | None
    note: str = ""
    # The provider's failure behind a transient ``note``, when it was one of ours
    # (a rate limit keeps its Retry-After).
    error: ExtauthError | None = None


class Refresher:
    """Single-flight refresh for one server process."""

    def __init__(self, store: Store, client: OAuthClient, record: Record,
                 redirect_uri: Callable[[ProviderConfig], str], retry_budget: float,
                 lease_ttl: float) -> None:
        self.store = store
        self.client = client
        self.record = record
        self.redirect_uri = redirect_uri
        self.retry_budget = retry_budget
        self.lease_ttl = lease_ttl
        # (user, provider) -> (lock, how many requests use it)
        self._locks: dict[tuple[int, str], tuple[asyncio.Lock, int]] = {}
        self._owner = f"{os.getpid()}-{os.urandom(4).hex()}"
        self._counter = itertools.count()

    async def fresh(self, session: Session, p: ProviderConfig, link: Link) -> Outcome:
        """The link, refreshed first when it is about to expire. Provider trouble
        never raises: it is in the outcome's note or recorded on the link."""
        if not self._refreshable(p, link):
            return Outcome(link)
        key = (link.user_id, p.id)
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                current = await off_loop(self.store.get_link, link.user_id, p.id)
                if current is None or not self._refreshable(p, current):
                    return Outcome(current)
                return await self._under_lease(session, p, current)
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    @staticmethod
    def _refreshable(p: ProviderConfig, link: Link) -> bool:
        return (needs_refresh(link) and not p.no_refresh and bool(link.refresh_token)
                and not link.refresh_failure_reason and not link.decrypt_error)

    async def _under_lease(self, session: Session, p: ProviderConfig, link: Link) -> Outcome:
        owner = f"{self._owner}-{next(self._counter)}"
        deadline = time.monotonic() + self.lease_ttl
        while not await off_loop(self.store.take_lease, link.user_id, p.id, owner,
                                 utcnow() + timedelta(seconds=self.lease_ttl)):
            # Another process is refreshing this link: wait for its result.
            if time.monotonic() > deadline:
                return Outcome(link, "a refresh of this link is in progress elsewhere")
            await asyncio.sleep(LEASE_POLL_S)
            current = await off_loop(self.store.get_link, link.user_id, p.id)
            if current is None or not self._refreshable(p, current):
                return Outcome(current)
        try:
            current = await off_loop(self.store.get_link, link.user_id, p.id)
            if current is None or not self._refreshable(p, current):
                return Outcome(current)
            return await self._refresh(session, p, current)
        finally:
            await off_loop(self.store.release_lease, link.user_id, p.id, owner)

    async def _refresh(self, session: Session, p: ProviderConfig, link: Link) -> Outcome:
        try:
            tokens = await self._with_retries(p, link.refresh_token)
        except (OAuthError, ProviderError, ProviderRateLimitedError) as exc:
            if not is_permanent(exc):
                await self.record(session, p.id, "refresh", "transient", describe(exc))
                return Outcome(link, f"refreshing failed and will be retried: {describe(exc)}",
                               exc if isinstance(exc, ExtauthError) else None)
            await off_loop(self.store.record_refresh_failure, link, describe(exc))
            await self.record(session, p.id, "refresh", "permanent", describe(exc))
            # If the row changed meanwhile (someone relinked), theirs stands.
            return Outcome(await off_loop(self.store.get_link, link.user_id, p.id))
        # Write before anything else is done with the new pair: it may be the
        # only valid refresh token in existence.
        stored = await off_loop(
            self.store.replace_tokens,
            link,
            tokens.access_token,
            tokens.refresh_token or link.refresh_token,
            utcnow() + timedelta(seconds=tokens.expires_in) if tokens.expires_in else None,
        )
        await self.record(session, p.id, "refresh", "ok" if stored else "superseded", "")
        if stored is None:
            return Outcome(await off_loop(self.store.get_link, link.user_id, p.id))
        return Outcome(stored)

    async def _with_retries(self, p: ProviderConfig, refresh_token: str) -> TokenSet:
        deadline = time.monotonic() + self.retry_budget
        for attempt in itertools.count():
            try:
                return await self.client.refresh(p, refresh_token, self.redirect_uri(p))
            except (OAuthError, ProviderError, ProviderRateLimitedError) as exc:
                if is_permanent(exc):
                    raise
                delay = BACKOFF[min(attempt, len(BACKOFF) - 1)]
                if isinstance(exc, ProviderRateLimitedError):
                    delay = max(delay, float(exc.headers.get("Retry-After", delay)))
                if time.monotonic() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")
