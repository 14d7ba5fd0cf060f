"""The audit trail: who linked, exchanged, refreshed, failed validation,
unlinked and revoked, per user and provider, with time and request id.

Events never carry a token; details are short reasons. The request id comes
from the ``X-Request-Id`` header when it is sane, else a new one (see app.py).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Callable
from datetime import datetime, timedelta

from extauth import logs, metrics
from extauth._threads import off_loop
from extauth.logs import REQUEST_ID
from extauth.sessions import Session
from extauth.store import AuditEvent, Store, utcnow

__all__ = ["REQUEST_ID", "Audit", "new_request_id"]

log = logging.getLogger("extauth.audit")
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def new_request_id(given: str | None) -> str:
    """The caller's request id if it is sane, else a fresh one."""
    if given and _SANE_ID.match(given):
        return given
    # Not uuid4: it reads os.urandom, which lets go of the GIL, and under load
    # the event loop then waits for the worker threads to hand it back (about
    # 50 us per request, measured). An id to follow a request by needs no
    # secrecy; the module's generator is reseeded in a forked child.
    return f"{random.getrandbits(64):016x}"


class Audit:
    """Records events into the store, off the event loop.

    Events recorded in the same turn of the event loop are written together,
    in one transaction and one trip to a worker thread (under load, requests
    that shared one provider verdict finish together); each caller still
    returns only once its event is written.
    """

    def __init__(self, store: Store, retention: timedelta) -> None:
        self.store = store
        self.retention = retention
        self._batch: list[AuditEvent] = []
        self._written: asyncio.Future[None] | None = None

    async def record(self, session: Session, provider_id: str, action: str,
                     outcome: str = "", detail: str = "") -> None:
        self._batch.append(AuditEvent(
            action=action, outcome=outcome, user_id=session.user_id,
            user_name=session.user_name, provider_id=provider_id, detail=detail,
            request_id=REQUEST_ID.get()))
        logs.audit_event(action, outcome, provider_id, session.user_id, detail)
        metrics.audit_event(action, outcome, provider_id)
        if self._written is None:
            self._written = asyncio.ensure_future(self._write_batch())
        # Shielded: a caller going away does not cancel the others' events.
        await asyncio.shield(self._written)

    async def _write_batch(self) -> None:
        await asyncio.sleep(0)  # the events of this turn of the loop join the batch
        events, self._batch, self._written = self._batch, [], None
        try:
            await off_loop(self.store.insert_audit, *events)
        except Exception:  # an audit failure must not fail the user's request
            log.exception("cannot record %d audit event(s): %s", len(events),
                          ", ".join(sorted({f"{e.action}/{e.outcome}" for e in events})))

    def cutoff(self) -> datetime:
        """Events before this are past the retention period."""
        return utcnow() - self.retention

    def purge(self, progress: Callable[[int], None] | None = None,
              before: datetime | None = None) -> int:
        """Delete events older than ``before`` (default: the retention period), a
        batch at a time; ``progress`` is told how many each batch deleted. Returns
        the total."""
        before = before or self.cutoff()
        total = 0
        while deleted := self.store.purge_audit(before):
            total += deleted
            if progress is not None:
                progress(deleted)
        return total
