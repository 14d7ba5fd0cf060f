"""The token hand-off: a user's stored token, given to the tool acting for them.

This is Coder's workspace-agent endpoint (``coder gitaskpass``, ``coder
external-auth access-token``, and our own ``extauth access-token`` and
``extauth git-credential`` ask it): the provider is chosen by id, or by
matching a URL against each provider's regex; the link is refreshed when due
(the one single-flight refresh, ``Links.refresher``) and validated at the
provider (the one coalesced verdict, ``Links.verdict``); the answer is the
token, or the page where the user links. With ``listen``, a missing or
invalid link is waited for (``LinkWatcher``) until it becomes valid, up to
``listen_seconds``. Every token handed out is a ``token read`` audit event.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from extauth._threads import off_loop
from extauth.errors import (
    BadRequestError,
    ConflictError,
    ExtauthError,
    NotFoundError,
    ProviderError,
    WaitTimeoutError,
)
from extauth.links import Links
from extauth.linkwatch import LinkWatcher
from extauth.sessions import Credential, Session
from extauth.settings import ProviderConfig
from extauth.store import Link

# Coder's deprecated username/password fields, per provider type.
_USERNAMES = {"gitlab": "oauth2", "bitbucket-cloud": "x-token-auth",
              "bitbucket-server": "x-token-auth"}
_ECHO = 200  # characters of a caller's URL quoted back in a message
# What a caller's URL may weigh: every provider's regex is tried on it, on the
# event loop. (A URL is far shorter; Coder's RE2 is linear where Python's
# backtracking engine need not be, so this also keeps an unlucky regex cheap.)
MAX_MATCH = 4096


@dataclass(frozen=True)
class HandedToken:
    """What the hand-off answers: the token, or where the user links."""

    provider: ProviderConfig
    access_token: str = field(default="", repr=False)
    token_extra: dict[str, Any] | None = field(default=None, repr=False)
    # The page where the user links; "" when there is a token.
    url: str = ""
    expires_at: datetime | None = None

    @property
    def username(self) -> str:
        """git's username for the token, as Coder gives it per provider type."""
        if not self.access_token:
            return ""
        return _USERNAMES.get(self.provider.type, self.access_token)

    @property
    def password(self) -> str:
        if not self.access_token or self.provider.type not in _USERNAMES:
            return ""
        return self.access_token


def _mark(link: Link | None) -> tuple[int, datetime] | None:
    """What tells one write of a link from another."""
    return None if link is None else (link.version, link.updated_at)


def _echo(text: str) -> str:
    return text if len(text) <= _ECHO else text[:_ECHO] + "..."


class TokenHandoff:
    """The hand-off's operations, over the ``Links`` service."""

    def __init__(self, links: Links, watcher: LinkWatcher | None = None) -> None:
        self.links = links
        self.watcher = watcher or LinkWatcher(links.store)
        self.listen_seconds = links.settings.listen_seconds
        self._regexes = [(p, re.compile(p.regex)) for p in links.settings.providers if p.regex]
        # A link stored by this process wakes its waiters at once.
        links.link_stored.append(lambda link: self.watcher.notify(link.user_id,
                                                                  link.provider_id))
        # Answers still being worked out for a listener that went away.
        self._orphans: set[asyncio.Task[tuple[HandedToken, Link | None]]] = set()
        # Listeners waiting for their link to change right now.
        self.waiting = 0

    def choose(self, provider_id: str, match: str) -> ProviderConfig:
        """The provider with this id, or the one whose regex matches ``match``; 503
        when its config leaves it unable to work (no page could link it)."""
        if provider_id and match:
            raise BadRequestError("'url' and 'id' cannot be provided together!")
        if not provider_id and not match:
            raise BadRequestError("'url' or 'id' must be provided!")
        if len(match) > MAX_MATCH:
            raise BadRequestError("'url' is too long.",
                                  detail=f"at most {MAX_MATCH} characters, got {len(match)}")
        configured = self.links.settings.providers
        if provider_id:
            p = self.links.settings.provider(provider_id)
            if p is None:
                raise NotFoundError(
                    f"No external auth provider found with the id {_echo(provider_id)!r}.",
                    detail="Configured providers: "
                    + (", ".join(c.id for c in configured) or "none"))
            return self.links.usable(p.id)
        found = [p for p, regex in self._regexes if regex.search(match)]
        if len(found) == 1:
            return self.links.usable(found[0].id)
        pairs = ", ".join(f"{p.id}={json.dumps(p.regex)}"
                          for p in (found or configured))
        if found:
            raise ConflictError(
                f"Multiple external auth providers match the url {json.dumps(_echo(match))}.",
                detail=f"Matching providers: {pairs}. Give each provider a regex that "
                "matches only its own URLs, or ask by id.")
        raise NotFoundError(
            "No matching external auth provider found in Coder for the url "
            f"{json.dumps(_echo(match))}.",
            detail=(f"The configured providers' regexes do not match it: {pairs}."
                    if configured else "No external auth provider is configured."))

    async def hand_off(self, who: Session | Credential, provider_id: str, match: str,
                       listen: bool = False) -> HandedToken:
        """The caller's token for the chosen provider, refreshed and validated; or,
        when there is no valid link, the URL where the caller links. With
        ``listen``, wait for a valid link instead (``WaitTimeoutError`` after
        ``listen_seconds``)."""
        chosen: ProviderConfig | ExtauthError
        try:
            chosen = self.choose(provider_id, match)
        except ExtauthError as exc:
            chosen = exc
        # The caller first (with the link, in the same trip): to a caller without
        # a session, a request that names no provider is still a 401.
        session, found = await self.links.caller(
            who, chosen.id if isinstance(chosen, ProviderConfig) else "")
        if isinstance(chosen, ExtauthError):
            raise chosen
        p = chosen
        if listen:
            answer = await self._listen(session, p)
        else:
            answer, _ = await self._answer(session, p, found[0] if found else None)
        if answer.access_token:
            await self.links.audit.record(session, p.id, "token read", session.kind,
                                          f"{session.kind} token {session.key_id}")
        return answer

    def link_url(self, p: ProviderConfig) -> str:
        """The page where the user links this provider."""
        return f"{self.links.settings.base_url()}/external-auth/{p.id}"

    async def _read(self, session: Session, p: ProviderConfig) -> Link | None:
        return await off_loop(self.links.store.get_link, session.user_id, p.id)

    async def _answer(self, session: Session, p: ProviderConfig,
                      link: Link | None) -> tuple[HandedToken, Link | None]:
        """The answer for ``link`` as read, and the link it was judged on (after a
        refresh, the refreshed one)."""
        unlinked = HandedToken(p, url=self.link_url(p))
        if link is None:
            return unlinked, None
        outcome = await self.links.refresher.fresh(session, p, link)
        if outcome.link is None:
            return unlinked, None
        state = self.links.state_of(outcome.link, outcome.note)
        if not state.authenticated:
            if outcome.note:
                # The provider could not refresh it just now: the user need not
                # link again, the client should ask again.
                raise outcome.error or ProviderError(
                    f"Provider {p.id!r} could not refresh the token; try again.",
                    detail=outcome.note)
            return unlinked, state.link
        check = await self.links.verdict(session, p, state.link)
        if not check.valid:
            return unlinked, state.link
        extra = ({key: state.link.extra.get(key) for key in p.extra_token_keys}
                 if p.extra_token_keys else None)
        return HandedToken(p, state.link.access_token, extra, "",
                           state.link.expires_at), state.link

    async def _listen(self, session: Session, p: ProviderConfig) -> HandedToken:
        deadline = time.monotonic() + self.listen_seconds
        with self.watcher.watch(session.user_id, p.id, deadline) as written:
            link = await self._read(session, p)
            while True:
                answer, judged = await self._shielded(self._answer(session, p, link))
                if answer.access_token:
                    return answer
                # Wait for a write that changes the link (our own refresh of it
                # is what was just judged).
                link = judged
                while _mark(link) == _mark(judged):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise self._timeout(p)
                    self.waiting += 1
                    try:
                        # Woken by a write, or by the watcher at the deadline: no
                        # timer of its own, which would hold this request's context
                        # in the loop until it fell due, cancelled or not.
                        await written.wait()
                    finally:
                        self.waiting -= 1
                    written.clear()
                    link = await self._read(session, p)

    async def _shielded(self, work: Coroutine[Any, Any, tuple[HandedToken, Link | None]]
                        ) -> tuple[HandedToken, Link | None]:
        """``work`` carried to its end even if the listener goes away meanwhile: a
        refresh cut short could lose a rotated refresh token."""
        task = asyncio.ensure_future(work)
        self._orphans.add(task)
        task.add_done_callback(self._orphans.discard)
        return await asyncio.shield(task)

    def _timeout(self, p: ProviderConfig) -> WaitTimeoutError:
        return WaitTimeoutError(
            f"Provider {p.id!r} was not linked within {self.listen_seconds:g} seconds.",
            detail=f"Link at {self.link_url(p)}, then ask again (with listen to wait).")
