"""Waking the requests that wait for a link: one watcher per process.

A ``listen`` request of the token hand-off waits until the user's link with a
provider changes. Waiting costs neither a worker thread nor a database read
per waiter: a waiter is an ``asyncio.Event`` filed under its (user, provider),
and one task per process reads, once per second while anyone waits, which
links were written since its last look, and wakes the waiters of those. A link
stored by this process wakes its waiters at once (``notify``); the reads catch
what other workers and processes sharing the database wrote.

A write's ``updated_at`` is taken before it waits for the database's write
lock, so it may commit up to the busy timeout after the time it carries. Each
look therefore reaches ``MARGIN`` back, and the watcher remembers the writes
it has announced (a link's version and time), so that a late commit is still
seen and no write is announced twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from extauth._threads import off_loop
from extauth.store import Store, StoreError, utcnow
from extauth.store._base import BUSY_TIMEOUT_S

log = logging.getLogger("extauth.linkwatch")
POLL_S = 1.0
MARGIN = timedelta(seconds=BUSY_TIMEOUT_S + 5)

Key = tuple[int, str]


class LinkWatcher:
    """Events for the waiters of links, set when those links are written."""

    def __init__(self, store: Store, poll: float | None = None) -> None:
        self.store = store
        self.poll = POLL_S if poll is None else poll
        self._waiters: dict[Key, set[asyncio.Event]] = {}
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
    def watch(self, user_id: int, provider_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever the user's link with the provider is written,
        for as long as the ``with`` block lasts. Enter it before reading the
        link, so that no write after the read goes unnoticed."""
        key = (user_id, provider_id)
        event = asyncio.Event()
        self._waiters.setdefault(key, set()).add(event)
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

    def notify(self, user_id: int, provider_id: str) -> None:
        """This process wrote the link: wake its waiters now."""
        for event in self._waiters.get((user_id, provider_id), ()):
            event.set()

    async def _run(self) -> None:
        announced: dict[Key, str] = {}
        since = utcnow() - MARGIN
        while True:
            await asyncio.sleep(self.poll)
            if not self._waiters:
                return  # the next waiter starts a new look-out
            started = utcnow()
            try:
                self.reads += 1
                rows = await off_loop(self.store.links_changed_since, since)
            except (sqlite3.Error, StoreError) as exc:
                log.warning("cannot read which links changed: %s", exc)
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
