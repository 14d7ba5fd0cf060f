"""Refresh that never loses a rotating refresh token.

Providers that rotate refresh tokens (GitHub Apps, GitLab, any OAuth server
with rotation) invalidate the old one when they issue a new one, and some
revoke the whole grant when an old one is presented again. So:

- at most one refresh per link is in flight: within a process, callers share
  one task (each waiter gets the holder's outcome, success or failure);
  across workers, processes and instances, a lease on the link's row, taken
  by the process, renewed while the refresh runs, and expiring on its own if
  the process dies;
- a provider call is bounded by a deadline (the transport's), so a refresh
  lasts at most the retry budget plus one call; the lease is longer, and
  renewed besides;
- before refreshing, the link is read again under the lease: if someone
  already refreshed, theirs is used;
- the new pair is written first, in a transaction that checks the row is
  still the one that was read (compare-and-swap on its version and creation
  time: a link deleted and made again starts at version 1 again);
- a token is due some time before it expires: 30 seconds, or a third of the
  lifetime it was issued with when that is shorter, so a fresh token is
  never due;
- failures are classified (``classify``): only an answer about the token
  itself retires the refresh token; a provider refusing our client's
  credentials pauses refreshes at that provider, keeping every token, until
  the config changes or a backoff passes; anything else is transient,
  retried within the budget and then remembered on the link for as long
  again, so a failing provider sees one caller per link, not one per
  request.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import hashlib
import itertools
import logging
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from extauth._threads import off_loop
from extauth.errors import ExtauthError, ProviderError, ProviderRateLimitedError
from extauth.providers.oauth import OAuthClient, OAuthError, TokenSet
from extauth.sessions import Session
from extauth.settings import ProviderConfig
from extauth.store import Link, ProviderRefusal, Store, StoreError, utcnow

log = logging.getLogger("extauth.refresh")

# Refresh at most this long before the stored expiry...
LEEWAY = timedelta(seconds=30)
# ...and at most this share of the token's lifetime before it.
LEEWAY_SHARE = 3


class Failure(enum.Enum):
    """What a failed refresh says about the future."""

    TOKEN = "the refresh token is dead"  # record it, clear it; the user links again
    CLIENT = "the provider refuses our client"  # keep the token; fix the config
    TRANSIENT = "it may pass"  # keep the token; try again later


# Answers about the refresh token itself (RFC 6749 5.2, GitHub's HTTP-200 code).
TOKEN_CODES = frozenset({"invalid_grant", "bad_refresh_token"})
# Provider-specific answers about the token, by provider type.
TOKEN_CODES_BY_TYPE: dict[str, frozenset[str]] = {
    # Gitea answers unauthorized_client for a refresh token it cannot parse.
    "gitea": frozenset({"unauthorized_client"}),
    "slack": frozenset({"invalid_refresh_token"}),
}
# Answers about our client: its id, secret or permissions at the provider.
CLIENT_CODES = frozenset({
    "invalid_client", "unauthorized_client", "incorrect_client_credentials",
    "unsupported_grant_type",
})
BACKOFF = (0.25, 0.5, 1.0, 2.0)
LEASE_POLL_S = 0.05
# A transient failure is remembered on the link for the retry budget, at
# least this long (or as long as the provider's Retry-After asks).
SHORTEST_MEMORY = timedelta(seconds=1)
# A provider refusing our client is asked again after this, doubling per
# failure up to the maximum.
REFUSAL_BACKOFF = timedelta(seconds=30)
REFUSAL_BACKOFF_MAX = timedelta(minutes=15)

Record = Callable[[Session, str, str, str, str], Awaitable[None]]
Orphaned = Callable[[Session, ProviderConfig, Link, TokenSet], Awaitable[None]]


def leeway(link: Link) -> timedelta:
    """How long before its expiry a link's token is due for a refresh."""
    if link.lifetime:
        return min(LEEWAY, timedelta(seconds=link.lifetime / LEEWAY_SHARE))
    return LEEWAY


def needs_refresh(link: Link, now: datetime | None = None) -> bool:
    """The token expires within its leeway (a link without expiry never does)."""
    return (link.expires_at is not None
            and link.expires_at <= (now or utcnow()) + leeway(link))


def classify(p: ProviderConfig, exc: Exception) -> Failure:
    """The refresh decision table: what a failed refresh means."""
    if isinstance(exc, OAuthError):
        if exc.code in TOKEN_CODES or exc.code in TOKEN_CODES_BY_TYPE.get(p.type, ()):
            return Failure.TOKEN
        if exc.code in CLIENT_CODES:
            return Failure.CLIENT
        return Failure.TRANSIENT
    if isinstance(exc, ProviderError) and exc.upstream_status == 401:
        # 401 without an OAuth error: our client was not let in (a proxy's
        # login page, a gateway's own authentication).
        return Failure.CLIENT
    return Failure.TRANSIENT


def client_fingerprint(p: ProviderConfig) -> str:
    """Identifies the client config a provider refused: a refusal of another
    config (the operator fixed it) no longer holds."""
    material = "\0".join((p.client_id, p.client_secret, p.token_url))
    return hashlib.sha256(material.encode()).hexdigest()[:16]


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


def refusal_text(refusal: ProviderRefusal) -> str:
    """What a link waiting on a provider that refuses our client shows."""
    return (f"the provider refuses our client (since {_ago(refusal.refused_at)}: "
            f"{refusal.reason}); check its client_id and client_secret: the link "
            "is kept and refreshes once the provider accepts the client again")


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
                 call_timeout: float, orphaned: Orphaned) -> None:
        self.store = store
        self.client = client
        self.record = record
        self.redirect_uri = redirect_uri
        self.retry_budget = retry_budget
        # The longest a refresh can take is the budget plus one call; the
        # lease outlasts it with margin, and is renewed while it runs.
        self.lease_ttl = retry_budget + 2 * call_timeout + 5.0
        self.orphaned = orphaned
        # (user, provider) -> the refresh in flight in this process.
        self._flights: dict[tuple[int, str], asyncio.Task[Outcome]] = {}
        # The lease belongs to the process: its callers coordinate through
        # ``_flights``, so two of them never both believe they hold it.
        self._owner = f"{os.getpid()}-{os.urandom(4).hex()}"
        # Set when the server stops: no new provider call is started.
        self._stopping = asyncio.Event()

    async def fresh(self, session: Session, p: ProviderConfig, link: Link) -> Outcome:
        """The link, refreshed first when it is due. Provider trouble never
        raises: it is in the outcome's note or recorded on the link."""
        if not self._due(p, link):
            return Outcome(link)
        key = (link.user_id, p.id)
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.ensure_future(self._refresh_once(session, p))
            self._flights[key] = flight
            flight.add_done_callback(functools.partial(self._landed, key))
        # Shielded: a caller that goes away does not cancel the others' refresh.
        return await asyncio.shield(flight)

    async def drain(self, seconds: float) -> int:
        """Stop starting provider calls (a refresh between attempts ends now, its
        failure remembered as transient: a call cut short could lose a rotated
        pair, one not made loses nothing), wait up to ``seconds`` for the
        refreshes in flight, then stop those still running (each releases its
        lease on the way out); return how many were stopped."""
        self._stopping.set()
        flights = list(self._flights.values())
        if not flights:
            return 0
        _, running = await asyncio.wait(flights, timeout=seconds)
        for flight in running:
            flight.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        return len(running)

    def _landed(self, key: tuple[int, str], flight: asyncio.Task[Outcome]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]

    @staticmethod
    def _due(p: ProviderConfig, link: Link) -> bool:
        return (needs_refresh(link) and not p.no_refresh and bool(link.refresh_token)
                and not link.refresh_failure_reason and not link.decrypt_error)

    async def _settled(self, p: ProviderConfig, link: Link | None) -> Outcome | None:
        """An outcome without calling the provider, when there is one: the link is
        gone or no longer due, or a recent failure says not to try yet."""
        if link is None or not self._due(p, link):
            return Outcome(link)
        now = utcnow()
        if link.refresh_retry_at is not None and link.refresh_retry_at > now:
            return Outcome(link, "refreshing failed and will be retried: "
                           + link.refresh_retry_reason)
        refusal = await off_loop(self.store.provider_refusal, p.id)
        if (refusal is not None and refusal.client_fingerprint == client_fingerprint(p)
                and refusal.retry_at > now):
            return Outcome(link, refusal_text(refusal))
        return None

    async def _refresh_once(self, session: Session, p: ProviderConfig) -> Outcome:
        link = await off_loop(self.store.get_link, session.user_id, p.id)
        settled = await self._settled(p, link)
        if settled is not None:
            return settled
        assert link is not None
        give_up = time.monotonic() + self.lease_ttl + 1.0
        while not await self._take_lease(link):
            # Another process is refreshing this link: wait for its result.
            if time.monotonic() > give_up:
                return Outcome(link, "a refresh of this link is in progress elsewhere")
            await asyncio.sleep(LEASE_POLL_S)
            link = await off_loop(self.store.get_link, session.user_id, p.id)
            settled = await self._settled(p, link)
            if settled is not None:
                return settled
            assert link is not None
        renewing = asyncio.ensure_future(self._renew(link))
        try:
            current = await off_loop(self.store.get_link, session.user_id, p.id)
            settled = await self._settled(p, current)
            if settled is not None:
                return settled
            assert current is not None
            return await self._refresh(session, p, current)
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
            try:
                await off_loop(self.store.release_lease, link.user_id, p.id, self._owner)
            except (sqlite3.Error, StoreError):  # it expires by itself
                log.warning("cannot release the refresh lease of a %s link; it expires "
                            "in %gs", p.id, self.lease_ttl, exc_info=True)

    async def _take_lease(self, link: Link) -> bool:
        until = utcnow() + timedelta(seconds=self.lease_ttl)
        return await off_loop(self.store.take_lease, link.user_id, link.provider_id,
                              self._owner, until)

    async def _renew(self, link: Link) -> None:
        """Keep the lease while the refresh runs, however long its writes take. A
        renewal that fails is tried again at the next turn: the lease is long
        enough to outlive two misses."""
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            try:
                if not await self._take_lease(link):
                    log.error("the refresh lease of a %s link was taken over while its "
                              "refresh ran", link.provider_id)
            except (sqlite3.Error, StoreError):
                log.warning("cannot renew the refresh lease of a %s link",
                            link.provider_id, exc_info=True)

    async def _refresh(self, session: Session, p: ProviderConfig, link: Link) -> Outcome:
        try:
            tokens = await self._with_retries(p, link.refresh_token)
        except (OAuthError, ProviderError, ProviderRateLimitedError) as exc:
            return await self._failed(session, p, link, exc)
        # Write before anything else is done with the new pair: it may be the
        # only valid refresh token in existence.
        stored = await self._store_pair(p, link, tokens)
        await off_loop(self.store.clear_provider_refusal, p.id)
        await self.record(session, p.id, "refresh", "ok" if stored else "superseded", "")
        if stored is not None:
            return Outcome(stored)
        current = await off_loop(self.store.get_link, link.user_id, p.id)
        if current is None:
            # Unlinked while the refresh ran: nobody will use this pair, and
            # the provider must not keep it alive.
            await self.orphaned(session, p, link, tokens)
        return Outcome(current)

    async def _store_pair(self, p: ProviderConfig, link: Link, tokens: TokenSet) -> Link | None:
        """Write the new pair, trying again while the database has a bad moment (the
        lease is still ours): the provider may already have retired the old one."""
        deadline = time.monotonic() + self.lease_ttl / 3
        for attempt in itertools.count():
            try:
                return await off_loop(
                    self.store.replace_tokens, link, tokens.access_token,
                    tokens.refresh_token or link.refresh_token,
                    utcnow() + timedelta(seconds=tokens.expires_in) if tokens.expires_in
                    else None,
                    tokens.expires_in)
            except (sqlite3.Error, StoreError):
                delay = BACKOFF[min(attempt, len(BACKOFF) - 1)]
                if time.monotonic() + delay > deadline:
                    log.error("cannot store the refreshed tokens of a %s link: the provider "
                              "may have retired the stored refresh token", p.id)
                    raise
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _failed(self, session: Session, p: ProviderConfig, link: Link,
                      exc: Exception) -> Outcome:
        reason, kind = str(exc), classify(p, exc)
        if kind is Failure.TOKEN:
            await off_loop(self.store.record_refresh_failure, link, reason)
            await self.record(session, p.id, "refresh", "permanent", reason)
            # If the row changed meanwhile (someone relinked), theirs stands.
            return Outcome(await off_loop(self.store.get_link, link.user_id, p.id))
        if kind is Failure.CLIENT:
            refusal = await off_loop(self.store.record_provider_refusal, p.id,
                                     client_fingerprint(p), reason, REFUSAL_BACKOFF,
                                     REFUSAL_BACKOFF_MAX)
            await self.record(session, p.id, "refresh", "refused", reason)
            return Outcome(link, refusal_text(refusal))
        wait = max(SHORTEST_MEMORY, timedelta(seconds=self.retry_budget))
        if isinstance(exc, ProviderRateLimitedError):
            wait = max(wait, timedelta(seconds=int(exc.headers.get("Retry-After", "0"))))
        await off_loop(self.store.defer_refresh, link, utcnow() + wait, reason)
        await self.record(session, p.id, "refresh", "transient", reason)
        return Outcome(link, f"refreshing failed and will be retried: {reason}",
                       exc if isinstance(exc, ExtauthError) else None)

    async def _with_retries(self, p: ProviderConfig, refresh_token: str) -> TokenSet:
        deadline = time.monotonic() + self.retry_budget
        for attempt in itertools.count():
            try:
                return await self.client.refresh(p, refresh_token, self.redirect_uri(p))
            except (OAuthError, ProviderError, ProviderRateLimitedError) as exc:
                if classify(p, exc) is not Failure.TRANSIENT or _is_answer(exc):
                    raise
                delay = BACKOFF[min(attempt, len(BACKOFF) - 1)]
                if isinstance(exc, ProviderRateLimitedError):
                    delay = max(delay, float(exc.headers.get("Retry-After", delay)))
                if time.monotonic() + delay > deadline:
                    raise
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                if self._stopping.is_set():  # the server stops: no new call
                    raise
        raise AssertionError("unreachable")


def _is_answer(exc: Exception) -> bool:
    """A 4xx answer that is not about rate limits: asking again at once would get
    the same answer, so it is not retried within the request."""
    if isinstance(exc, OAuthError):
        return 400 <= exc.status < 500 and exc.code not in _RETRYABLE_CODES
    return isinstance(exc, ProviderError) and 400 <= exc.upstream_status < 500 \
        and exc.upstream_status != 403


_RETRYABLE_CODES = frozenset({"temporarily_unavailable", "server_error", "slow_down"})
