"""Revocation that really happens.

Unlinking deletes the link and, in the same transaction, keeps its tokens
(sealed like link tokens) as a pending revocation. The first attempt is
made at once and its result answers the request; until the provider
confirms, a background task in every server process tries again with a
doubling backoff, until the record expires (after ``KEEP_TRYING``). Tokens that a refresh
obtained while its link was being unlinked are kept and revoked the same
way. ``extauth revocations`` lists what is pending.

Providers whose revocation ends the whole app authorization (GitHub's
``DELETE /applications/{client_id}/grant``) would also end a link made again
since: their pending revocations are dropped when the user links again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from extauth._threads import off_loop
from extauth.audit import Audit
from extauth.providers.oauth import OAuthClient, Revocation
from extauth.sessions import Session
from extauth.settings import ProviderConfig, Settings
from extauth.store import Link, PendingRevocation, Store, utcnow

log = logging.getLogger("extauth.revocations")

KEEP_TRYING = timedelta(days=30)
LONGEST_WAIT = timedelta(hours=1)
# A claimed record is not tried by another process for this long.
CLAIM = timedelta(minutes=2)
# The background task looks for due records at least this often.
IDLE_POLL_S = 30.0
# Revocation styles that end every token of the user's app authorization.
GRANT_WIDE = frozenset({"github"})
SUPERSEDED = "linked again before the provider confirmed revocation"


def _session(pending: PendingRevocation) -> Session:
    return Session(user_id=pending.user_id, user_name=pending.user_name, key_id="")


class Revocations:
    """Keeps and retries revocations until the provider confirms them."""

    def __init__(self, settings: Settings, store: Store, client: OAuthClient,
                 audit: Audit) -> None:
        self.settings = settings
        self.store = store
        self.client = client
        self.audit = audit
        self.first_wait = timedelta(seconds=settings.revoke_retry_seconds)
        self._wake = asyncio.Event()
        self._stopping = False

    def _wait(self, attempts: int) -> timedelta:
        wait: timedelta = self.first_wait * 2 ** min(attempts, 16)
        return min(wait, LONGEST_WAIT)

    async def unlink(self, session: Session, p: ProviderConfig | None,
                     provider_id: str) -> tuple[Link | None, str]:
        """Delete the caller's link and, when its grant can be revoked, keep its
        tokens for that in the same transaction. Returns the link (None: there
        was none) and the pending revocation's id ("": nothing to revoke)."""
        keep = None
        if p is not None and p.revoke_url:
            keep = (utcnow() + self._wait(0), utcnow() + KEEP_TRYING)
        return await off_loop(self.store.unlink, session.user_id, provider_id,
                              session.user_name, keep)

    async def orphaned(self, session: Session, p: ProviderConfig, access_token: str,
                       refresh_token: str) -> None:
        """Revoke tokens that nobody holds any more (a refresh that finished after
        its link was unlinked)."""
        if not p.revoke_url:
            return
        rid = await off_loop(self.store.add_pending_revocation, session.user_id,
                             session.user_name, p.id, access_token, refresh_token,
                             "refreshed while unlinking", utcnow() + self._wait(0),
                             utcnow() + KEEP_TRYING)
        await self.first_attempt(session, p, rid, access_token, refresh_token)

    async def linked_again(self, session: Session, p: ProviderConfig) -> None:
        """A new link replaces pending revocations that would end it too."""
        if p.revoke_style not in GRANT_WIDE:
            return
        dropped = await off_loop(self.store.drop_pending_revocations, session.user_id, p.id)
        if dropped:
            await self.audit.record(session, p.id, "revoke", "superseded", SUPERSEDED)

    async def first_attempt(self, session: Session, p: ProviderConfig, rid: str,
                            access_token: str, refresh_token: str) -> Revocation:
        """Revoke at once; what the provider says is the answer to give the user."""
        result = await self.client.revoke(p, access_token, refresh_token)
        if result.revoked:
            await off_loop(self.store.revocation_done, rid)
            await self.audit.record(session, p.id, "revoke", "ok", "")
            return result
        await off_loop(self.store.revocation_failed, rid, result.error,
                       utcnow() + self._wait(1))
        self._wake.set()
        await self.audit.record(session, p.id, "revoke", "failed", result.error)
        return Revocation(False, f"{result.error}; extauth keeps trying until the provider "
                          "confirms")

    # -- the background task ---------------------------------------------------------

    def stop(self) -> None:
        """End ``run`` once the attempt in flight, if any, is over. Records it
        claimed but did not try yet are tried once their claim runs out."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Retry due revocations until ``stop``."""
        while not self._stopping:
            try:
                await self.run_due()
                due = await off_loop(self.store.next_revocation_due)
            except Exception:  # the task must outlive a bad moment of the database
                log.exception("cannot retry pending revocations")
                due = None
            wait = IDLE_POLL_S
            if due is not None:
                wait = max(0.05, min(wait, (due - utcnow()).total_seconds()))
            self._wake.clear()
            if self._stopping:  # asked while trying: its wake-up was just cleared
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def run_due(self) -> int:
        """Try every due revocation once; return how many were tried."""
        claimed = await off_loop(self.store.claim_due_revocations, CLAIM)
        for pending in claimed:
            if self._stopping:
                break
            await self._retry(pending)
        return len(claimed)

    async def _retry(self, pending: PendingRevocation) -> None:
        session = _session(pending)
        p = self.settings.provider(pending.provider_id)
        if pending.expires_at <= utcnow():
            await off_loop(self.store.revocation_done, pending.id)
            await self.audit.record(session, pending.provider_id, "revoke", "expired",
                                    f"gave up after {pending.attempts} attempts: "
                                    f"{pending.last_error}")
            return
        if p is None or not p.revoke_url or pending.decrypt_error:
            error = pending.decrypt_error or "the provider is not configured to revoke"
            await off_loop(self.store.revocation_failed, pending.id, error,
                           utcnow() + self._wait(pending.attempts + 1))
            return
        if p.revoke_style in GRANT_WIDE and await off_loop(
                self.store.get_link, pending.user_id, p.id) is not None:
            # Linked again after this record was claimed (or by a path that did
            # not drop it): revoking the grant would end the new link.
            await off_loop(self.store.revocation_done, pending.id)
            await self.audit.record(session, p.id, "revoke", "superseded", SUPERSEDED)
            return
        result = await self.client.revoke(p, pending.access_token, pending.refresh_token)
        if result.revoked:
            await off_loop(self.store.revocation_done, pending.id)
            await self.audit.record(session, p.id, "revoke", "ok",
                                    f"after {pending.attempts + 1} attempts")
            return
        await off_loop(self.store.revocation_failed, pending.id, result.error,
                       utcnow() + self._wait(pending.attempts + 1))
