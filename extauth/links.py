"""The token lifecycle: the one place that decides the state of a link.

``Links`` joins the store (run in worker threads, so the event loop never
waits on SQLite) and the OAuth client (async). Handlers call it and nothing
else.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from extauth import readiness
from extauth._threads import off_loop
from extauth.audit import Audit
from extauth.errors import (
    BadRequestError,
    ExtauthError,
    NotFoundError,
    ProviderError,
    ProviderRateLimitedError,
    UnauthorizedError,
    UnavailableError,
    database_unreachable,
)
from extauth.logs import note_user
from extauth.providers.oauth import (
    DeviceAuthorization,
    Installation,
    OAuthClient,
    OAuthError,
    ProviderUser,
    TokenCheck,
    TokenSet,
)
from extauth.refresh import Refresher, failure_text
from extauth.revocations import Revocations
from extauth.sessions import (
    Credential,
    Session,
    authenticate,
    authenticate_reading,
    hash_secret,
)
from extauth.settings import ProviderConfig, Settings
from extauth.store import DeviceGrant, Link, OAuthState, Store, StoreError, utcnow
from extauth.verdicts import Verdicts
from extauth.webflow import STATE_TTL, hash_state, pkce_challenge, same_site

log = logging.getLogger("extauth.links")

# How long a device code is honoured when the provider does not say (RFC 8628
# leaves expires_in required; GitHub's is 900 seconds).
DEVICE_CODE_TTL_S = 900


@dataclass(frozen=True)
class LinkState:
    """A stored link and what we know of it right now."""

    link: Link
    authenticated: bool
    validate_error: str = ""
    # The provider-side user, when the provider was asked and told.
    user: ProviderUser | None = None
    # The provider could not be asked (down, slow): the token may still be fine.
    unchecked: bool = False


@dataclass(frozen=True)
class ProviderState:
    """One provider as the caller sees it (``GET /external-auth/{id}``)."""

    provider: ProviderConfig
    authenticated: bool = False
    user: ProviderUser | None = None
    app_installable: bool = False
    installations: list[Installation] = field(default_factory=list)


@dataclass(frozen=True)
class Unlinked:
    token_revoked: bool
    token_revocation_error: str = ""


def expires_at(expires_in: int | None) -> datetime | None:
    return utcnow() + timedelta(seconds=expires_in) if expires_in else None


def is_expired(link: Link) -> bool:
    return link.expires_at is not None and link.expires_at <= utcnow()


def read_as(store: Store, who: Session | Credential,
            provider_id: str | None = None) -> tuple[Session, list[Link]]:
    """Who is calling, and their links (only their link to ``provider_id``, when
    given): a credential is looked up in the same statement as the links."""
    if isinstance(who, Credential):
        return authenticate_reading(store, who, provider_id)
    if provider_id is None:
        return who, store.links_for_user(who.user_id)
    link = store.get_link(who.user_id, provider_id)
    return who, [link] if link else []


class Links:
    """The operations of the external-auth API, for an authenticated caller."""

    def __init__(self, settings: Settings, store: Store, client: OAuthClient) -> None:
        self.settings = settings
        self.store = store
        self.client = client
        self.audit = Audit(store, timedelta(days=settings.audit_retention_days))
        self.refresher = Refresher(
            store, client, self.audit.record, self.callback_url,
            retry_budget=settings.refresh_retry_seconds,
            call_timeout=settings.provider_timeout,
            orphaned=self._orphaned,
        )
        self.revocations = Revocations(settings, store, client, self.audit)
        self._db = off_loop
        self.verdicts: Verdicts[TokenCheck] = Verdicts(settings.validate_cache_seconds)
        self.installations: Verdicts[tuple[bool, list[Installation]]] = Verdicts(
            settings.validate_cache_seconds)
        # Called with every link a user links (device or web flow), once stored.
        self.link_stored: list[Callable[[Link], None]] = []

    def provider(self, provider_id: str) -> ProviderConfig:
        """The configured provider, usable or not; 404 when there is none."""
        p = self.settings.provider(provider_id)
        if p is None:
            raise NotFoundError()
        return p

    def usable(self, provider_id: str) -> ProviderConfig:
        """The configured provider; 404 when there is none, 503 when its config
        leaves it unable to work."""
        p = self.provider(provider_id)
        if p.unusable:
            raise UnavailableError(f"Provider {p.id!r} cannot be used as configured.",
                                   detail=p.unusable)
        return p

    async def authenticate(self, token: str | None) -> Session:
        if not token:
            return authenticate(self.store, token)  # raises: no DB work needed
        return await self._db(authenticate, self.store, token)

    async def caller(self, who: Session | Credential,
                     provider_id: str | None = None) -> tuple[Session, list[Link]]:
        """The caller's session and links (only the link to ``provider_id``, when
        given): one trip to a worker thread, and one statement for a credential,
        which raises ``UnauthorizedError`` unless it opens a session."""
        session, links = await self._db(read_as, self.store, who, provider_id)
        note_user(session.user_id)
        return session, links

    async def ping(self) -> None:
        """Raise ``UnavailableError`` unless the database answers."""
        try:
            await self._db(self.store.ping)
        except (sqlite3.Error, StoreError) as exc:
            log.warning("the database does not answer: %s", exc)
            raise database_unreachable() from None

    async def ready(self) -> None:
        """Raise ``UnavailableError`` saying why, unless the database answers, its
        schema is current and the configured keys decrypt the stored tokens."""
        await self._db(readiness.check, self.store)

    def state_of(self, link: Link, note: str = "") -> LinkState:
        """What a stored link is worth right now, without asking the provider
        (``note``: why a refresh that was due did not happen just now)."""
        p = self.settings.provider(link.provider_id)
        if p is None:
            return LinkState(link, False, "The provider of this link is no longer configured.")
        if p.unusable:
            return LinkState(link, False,
                             f"The provider cannot be used as configured: {p.unusable}.")
        if link.decrypt_error:
            return LinkState(link, False, f"{link.decrypt_error}; link again or add the key.")
        if not link.access_token:
            return LinkState(link, False, "The link holds no access token; link again.")
        if is_expired(link):
            if link.refresh_failure_reason:
                return LinkState(link, False, failure_text(link))
            if note:
                return LinkState(link, False, f"The token expired and {note}.")
            why = "refreshing is disabled" if p.no_refresh else "there is no refresh token"
            return LinkState(
                link, False,
                f"The token expired at {link.expires_at:%Y-%m-%d %H:%M:%S} UTC and {why}; "
                "link again.",
            )
        return LinkState(link, True)

    async def _fresh_state(self, session: Session, link: Link) -> LinkState | None:
        p = self.settings.provider(link.provider_id)
        if p is None or p.unusable:
            return self.state_of(link)
        outcome = await self.refresher.fresh(session, p, link)
        return self.state_of(outcome.link, outcome.note) if outcome.link else None

    async def list_links(self, who: Session | Credential) -> list[LinkState]:
        """The caller's links, each refreshed first when it is about to expire, then
        validated at its provider, as Coder does; all of them at once."""
        session, links = await self.caller(who)
        states = await asyncio.gather(*(self.check(session, link) for link in links))
        return [s for s in states if s is not None]

    async def link_state(self, who: Session | Credential,
                         provider_id: str) -> tuple[ProviderConfig, LinkState | None]:
        """The usable provider and the caller's link to it as ``check`` finds it
        (None when there is no link)."""
        session, found = await self.caller(who, provider_id)
        p = self.usable(provider_id)
        return p, await self.check(session, found[0]) if found else None

    async def check(self, session: Session, link: Link) -> LinkState | None:
        """A link refreshed when due, then judged by its provider within the
        provider timeout (None when the refresh found it gone). A provider that
        fails is the link's ``validate_error`` (``unchecked``), never an error."""
        state = await self._fresh_state(session, link)
        p = self.settings.provider(link.provider_id)
        if state is None or not state.authenticated or p is None:
            return state
        timeout = self.settings.provider_timeout
        try:
            check = await asyncio.wait_for(self.verdict(session, p, state.link), timeout)
        except TimeoutError:
            return LinkState(state.link, False, f"Provider {p.id!r} did not answer the token "
                             f"validation within {timeout:g}s.", unchecked=True)
        except (ProviderError, ProviderRateLimitedError) as exc:
            return LinkState(state.link, False, exc.message, unchecked=True)
        if not check.valid:
            return LinkState(state.link, False,
                             f"The token failed to validate: {check.reason}; link again.")
        return LinkState(state.link, True, user=check.user)

    async def status(self, who: Session | Credential, provider_id: str) -> ProviderState:
        """Refresh if needed, then validate the caller's link at the provider, with
        app installations."""
        # The caller first: without a session, an unknown provider is not news.
        session, found = await self.caller(who, provider_id)
        p = self.usable(provider_id)
        link = found[0] if found else None
        state = await self._fresh_state(session, link) if link else None
        if state is None or not state.authenticated:
            return ProviderState(p)
        check, (installable, installations) = await asyncio.gather(
            self.verdict(session, p, state.link), self.app_installations(p, state.link))
        return ProviderState(
            p,
            authenticated=check.valid,
            user=check.user if check.valid else None,
            app_installable=installable,
            installations=installations,
        )

    @staticmethod
    def _token_key(p: ProviderConfig, link: Link) -> tuple[int, str, bytes]:
        # Keyed by the token itself (hashed): a row's version restarts at 1 when
        # a link is deleted and made again, a token never comes back.
        return link.user_id, p.id, hashlib.sha256(link.access_token.encode()).digest()

    async def verdict(self, session: Session, p: ProviderConfig, link: Link) -> TokenCheck:
        """The provider's verdict on the link's access token: one call in flight per
        token, whoever asks (the list, a get), reused within the verdict window."""
        return await self.verdicts.get(
            self._token_key(p, link), lambda: self._validate(session, p, link.access_token))

    async def _validate(self, session: Session, p: ProviderConfig, token: str) -> TokenCheck:
        check = await self.client.validate(p, token)
        if not check.valid:
            await self.audit.record(session, p.id, "validate", "invalid", check.reason)
        return check

    async def app_installations(
        self, p: ProviderConfig, link: Link
    ) -> tuple[bool, list[Installation]]:
        """The GitHub App installations the token sees (a get needs them, the list
        does not): shared and reused like the verdict."""
        return await self.installations.get(
            self._token_key(p, link), lambda: self.client.installations(p, link.access_token))

    async def unlink(self, session: Session, provider_id: str) -> Unlinked:
        """Delete the caller's link, then revoke its grant at the provider (and keep
        trying in the background until the provider confirms)."""
        p = self.settings.provider(provider_id)
        link, pending = await self.revocations.unlink(session, p, provider_id)
        if link is None:
            raise NotFoundError()
        await self.audit.record(session, provider_id, "unlink")
        if pending and p is not None:
            revocation = await self.revocations.first_attempt(
                session, p, pending, link.access_token, link.refresh_token)
            return Unlinked(revocation.revoked, revocation.error)
        if p is None:
            why = "The provider is no longer configured; nothing was revoked."
        elif link.decrypt_error:
            why = f"{link.decrypt_error}; nothing was revoked."
        else:
            why = ""  # the provider has no revocation endpoint
        await self.audit.record(session, provider_id, "revoke", "skipped", why)
        return Unlinked(False, why)

    async def _orphaned(self, session: Session, p: ProviderConfig, link: Link,
                        tokens: TokenSet) -> None:
        await self.revocations.orphaned(session, p, tokens.access_token,
                                        tokens.refresh_token or link.refresh_token)

    async def start_device(self, session: Session, provider_id: str) -> DeviceAuthorization:
        """Start a device authorization at the provider, bound to the caller."""
        p = self.usable(provider_id)
        if not p.device_flow:
            raise BadRequestError("Git auth device flow not supported.")
        device = await self.client.device_authorize(p)
        if device.expires_in <= 0:  # not said: the caller learns the lifetime we keep
            device = replace(device, expires_in=DEVICE_CODE_TTL_S)
        await self._db(self.store.insert_device_grant, hash_secret(device.device_code),
                       DeviceGrant(session.user_id, p.id,
                                   utcnow() + timedelta(seconds=device.expires_in)))
        return device

    async def exchange_device(self, session: Session, provider_id: str, device_code: str) -> Link:
        """Poll the provider once with a device code the caller started; on success
        store the link."""
        p = self.usable(provider_id)
        if not p.device_flow:
            raise BadRequestError("Git auth provider does not support device flow.")
        code_hash = hash_secret(device_code)
        grant = await self._db(self.store.device_grant, code_hash)
        if grant is None or grant.user_id != session.user_id or grant.provider_id != p.id:
            # Unknown, or started by someone else (or for another provider): all
            # look alike, and the provider is not asked.
            raise BadRequestError("Failed to exchange device code.", detail="invalid_grant")
        if grant.expires_at <= utcnow():
            raise BadRequestError("Failed to exchange device code.", detail="expired_token")
        try:
            tokens = await self.client.device_exchange(p, device_code)
        except OAuthError as exc:
            # The detail is exactly the OAuth error code: clients poll on it. A
            # slow_down's new interval (GitHub sends one) becomes Retry-After.
            headers = {"Retry-After": str(exc.interval)} if exc.interval else {}
            raise BadRequestError(
                "Failed to exchange device code.", detail=exc.code, headers=headers
            ) from None
        await self._db(self.store.delete_device_grant, code_hash)
        return await self._store_tokens(session, p, tokens, "device")

    async def _store_tokens(self, session: Session, p: ProviderConfig, tokens: TokenSet,
                            flow: str) -> Link:
        link = await self._db(
            self.store.upsert_link,
            session.user_id,
            p.id,
            tokens.access_token,
            tokens.refresh_token,
            expires_at(tokens.expires_in),
            tokens.extra,
            tokens.expires_in,
        )
        for listener in self.link_stored:
            listener(link)
        await self.audit.record(session, p.id, "link", flow)
        await self.revocations.linked_again(session, p)
        return link

    # -- the web flow (authorization code with PKCE) ----------------------------------

    def callback_url(self, p: ProviderConfig) -> str:
        """The redirect URI to register at the provider."""
        return f"{self.settings.base_url()}/external-auth/{p.id}/callback"

    async def start_web(self, session: Session, provider_id: str, redirect: str | None) -> str:
        """Remember a new state (and PKCE verifier) for the caller; return the authorize URL."""
        p = self.usable(provider_id)
        if not p.auth_url:
            raise BadRequestError(
                f"Provider {p.id!r} has no web flow.", detail="its auth_url is not set"
            )
        state = secrets.token_urlsafe(32)
        verifier = challenge = ""
        if "S256" in p.pkce_methods:
            verifier = secrets.token_urlsafe(48)
            challenge = pkce_challenge(verifier)
        pending = OAuthState(session.user_id, p.id, verifier, same_site(redirect),
                             utcnow() + STATE_TTL)
        await self._db(self.store.insert_oauth_state, hash_state(state), pending)
        return self.client.authorize_url(p, self.callback_url(p), state, challenge or None)

    async def finish_web(
        self, session: Session, provider_id: str, code: str, state: str | None
    ) -> tuple[Link, str]:
        """Check the state, exchange the code, store the link; return it and where to go."""
        p = self.usable(provider_id)
        if not state:
            raise BadRequestError("State must be provided.")
        pending = await self._db(self.store.take_oauth_state, hash_state(state))
        if (
            pending is None
            or pending.user_id != session.user_id
            or pending.provider_id != p.id
            or pending.expires_at <= utcnow()
        ):
            # Unknown, used, expired, or started by someone else: all look alike.
            raise UnauthorizedError(
                "State mismatched.",
                detail="The state is unknown, used, expired or not yours; start again.",
            )
        try:
            tokens = await self.client.exchange_code(
                p, code, self.callback_url(p), pending.code_verifier or None
            )
        except OAuthError as exc:
            raise ExtauthError(
                "Internal error exchanging Oauth code.",
                detail=str(exc),
            ) from None
        link = await self._store_tokens(session, p, tokens, "web")
        # Coder's default: the provider's page, told it was reached from the flow.
        return link, pending.redirect or f"/external-auth/{p.id}?redirected=true"
