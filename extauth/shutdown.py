"""Stopping within one grace period (``EXTAUTH_SHUTDOWN_SECONDS``).

On SIGTERM (or SIGINT) uvicorn stops accepting connections and lets the
requests in flight finish, for up to the grace period. A refresh in flight is
awaited by the request that started it, so it finishes with it. Then the
application's lifespan ends: whatever still runs (a refresh whose requests
were cut off at the end of the period, the background revocation task) gets
what is left of the same period, counted from the signal, and is then
stopped; a stopped refresh releases its lease on the way out, so that another
process can refresh that link at once.

The moment of the signal is noted by a handler chained in front of the
server's own, installed when the application starts (signals are delivered to
the main thread only: elsewhere, as under a test client, the period is
counted from the end of the lifespan instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from types import FrameType
from typing import Any

from extauth.links import Links

log = logging.getLogger("extauth.shutdown")
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class GracePeriod:
    """How much of the grace period is left since the server was asked to stop."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.asked_at: float | None = None
        self._previous: dict[int, Any] = {}

    def _noted(self, signum: int, frame: FrameType | None) -> None:
        if self.asked_at is None:
            self.asked_at = time.monotonic()
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)

    def watch(self) -> None:
        """Note the first stop signal, then hand it on to the server's handler."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in SIGNALS:
            previous = signal.getsignal(sig)
            # Only in front of a server's handler: a default one would have to be
            # re-raised, and that is the server's business.
            if callable(previous):
                self._previous[sig] = previous
                signal.signal(sig, self._noted)

    def unwatch(self) -> None:
        """Put the server's handlers back (they restore their own after that)."""
        for sig, previous in self._previous.items():
            if signal.getsignal(sig) == self._noted:
                signal.signal(sig, previous)
        self._previous.clear()

    def remaining(self) -> float:
        start = self.asked_at if self.asked_at is not None else time.monotonic()
        return max(0.0, start + self.seconds - time.monotonic())


async def finish(grace: GracePeriod, links: Links, revoking: asyncio.Future[None]) -> None:
    """Let the refreshes and the revocation in flight end within the grace
    period; stop them after it."""
    grace.unwatch()
    links.revocations.stop()
    stopped = await links.refresher.drain(grace.remaining())
    if stopped:
        log.warning("stopped %d refresh(es) still running after the grace period of %gs; "
                    "their leases are released", stopped, grace.seconds)
    try:
        await asyncio.wait_for(asyncio.shield(revoking), grace.remaining())
    except TimeoutError:
        log.warning("stopped a revocation attempt still running after the grace period; "
                    "it is tried again later")
        revoking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await revoking
