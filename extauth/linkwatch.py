"""Waking the requests that wait for a link: one watcher per process.

A ``listen`` request of the token hand-off waits until the user's link with a
provider changes. Waiting costs neither a worker thread nor a database read
per waiter: a waiter is an ``asyncio.Event`` filed under its (user, provider),
and one task per process reads, while anyone waits, which links were written
since its last look, and wakes the waiters of those. It looks once a second
for one waiter, more often for more (never more than one read per second per
waiter, nor more than four a second), so that with many waiters a link
written elsewhere is seen well within a second. A link
stored by this process wakes its waiters at once (``notify``); the reads catch
what other workers and processes sharing the database wrote. The same task
wakes each waiter at its deadline: a waiter holds no timer of its own (a
timer, even cancelled, keeps the request's context in the loop until it
falls due).

A write's ``updated_at`` is taken before it waits for the database's write
lock, so it may commit some seconds after the time it carries (up to
SQLite's busy timeout; on PostgreSQL, the clocks of the instances may also
differ a little). Each look therefore reaches ``MARGIN`` back, and the watcher remembers the writes
it has announced (a link's version and time), so that a late commit is still
seen and no write is announced twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import heapq
import itertools
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from extauth._threads import off_loop
from extauth.store import Store, StoreError, utcnow

log = logging.getLogger("extauth.linkwatch")
POLL_S = 1.0
# The more waiters share a look, the more often it may come: at most one read
# per second per waiter, and never more than four a second.
FASTEST_LOOK_S = 0.25
# SQLite's busy timeout (10 s), and then some.
MARGIN = timedelta(seconds=15)

Key = tuple[int, str]


class LinkWatcher:
    """Events for the waiters of links, set when those links are written."""

    def __init__(self, store: Store, poll: float | None = None) -> None:
        self.store = store
        self.poll = POLL_S if poll is None else poll
        self._waiters: dict[Key, set[asyncio.Event]] = {}
        # [deadline, tie-breaker, event]: each waiter is woken at its deadline too.
        # A waiter that leaves blanks its event; the heap is rebuilt without the
        # blanks once they are half of it.
        self._deadlines: list[list[Any]] = []
        self._blanks = 0
        self._order = itertools.count()
        self._task: asyncio.Task[None] | None = None
        # How many times the database was asked, for the tests and benchmarks.
        self.reads = 0

    @property
    def waiting(self) -> int:
        """How many waiters there are right now."""
        return sum(len(events) for events in self._waiters.values())

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @contextmanager
    def watch(self, user_id: int, provider_id: str,
              deadline: float) -> Iterator[asyncio.Event]:
        """An event set whenever the user's link with the provider is written, and
        at ``deadline`` (``time.monotonic``, give or take a poll), for as long as
        the ``with`` block lasts. Enter it before reading the link, so that no
        write after the read goes unnoticed."""
        key = (user_id, provider_id)
        event = asyncio.Event()
        self._waiters.setdefault(key, set()).add(event)
        entry = [deadline, next(self._order), event]
        heapq.heappush(self._deadlines, entry)
        if not self.running:
            # A context of its own: the request that starts it must not live as
            # long as the look-out (the request's context holds the request).
            self._task = asyncio.get_running_loop().create_task(
                self._run(), context=contextvars.Context())
        try:
            yield event
        finally:
            events = self._waiters.get(key)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._waiters[key]
            if entry[2] is not None:
                entry[2] = None
                self._blanks += 1
                if self._blanks * 2 > len(self._deadlines):
                    self._deadlines = [d for d in self._deadlines if d[2] is not None]
                    heapq.heapify(self._deadlines)
                    self._blanks = 0

    def notify(self, user_id: int, provider_id: str) -> None:
        """This process wrote the link: wake its waiters now."""
        for event in self._waiters.get((user_id, provider_id), ()):
            event.set()

    def _period(self) -> float:
        """Seconds until the next look: ``poll`` shared by the waiters."""
        return max(min(FASTEST_LOOK_S, self.poll), self.poll / max(1, self.waiting))

    def _expire(self) -> None:
        """Wake the waiters whose deadline has come (a waiter that left is dropped)."""
        now = time.monotonic()
        while self._deadlines and self._deadlines[0][0] <= now:
            entry = heapq.heappop(self._deadlines)
            if entry[2] is None:
                self._blanks -= 1
            else:
                entry[2].set()
                entry[2] = None  # its waiter will not blank it again

    async def _run(self) -> None:
        announced: dict[Key, str] = {}
        since = utcnow() - MARGIN
        next_look = time.monotonic() + self._period()
        while True:
            wake = min(next_look, self._deadlines[0][0]) if self._deadlines else next_look
            await asyncio.sleep(max(0.0, wake - time.monotonic()))
            self._expire()
            if not self._waiters:
                self._deadlines, self._blanks = [], 0
                return  # the next waiter starts a new look-out
            if time.monotonic() < next_look:
                continue
            next_look = time.monotonic() + self._period()
            started = utcnow()
            try:
                self.reads += 1
                rows = await off_loop(self.store.links_changed_since, since)
            except StoreError as exc:
                log.warning("cannot read which links changed: %s", exc)
                continue
            except Exception:
                # Anything else is a bug, but this look-out must go on: the
                # waiters' deadlines are kept by it.
                log.exception("cannot read which links changed")
                continue
            since = started - MARGIN
            seen: dict[Key, str] = {}
            for user_id, provider_id, mark in rows:
                key = (user_id, provider_id)
                seen[key] = mark
                if announced.get(key) != mark:
                    self.notify(user_id, provider_id)
            announced = seen

    async def aclose(self) -> None:
        """Stop looking (at shutdown)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):  # what cancel() asked for
                await task
