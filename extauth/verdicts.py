"""The provider's verdicts on stored tokens: coalesced and briefly remembered.

Validating a link costs a provider round trip (20 ms or more, and a share of
the provider's rate limit). Identical validations in flight at once share one
call, and a verdict is reused for a short window. The key includes a hash of
the access token itself, so a relink or a refresh never reuses an old
verdict (a row's version would not do: it restarts when a link is deleted
and made again); and the link is read from the database on every request first, so
an unlinked token is never reported at all, whatever is remembered here.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Verdicts(Generic[T]):
    """Single-flight calls with results kept for ``ttl`` seconds (0: not kept)."""

    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._kept: dict[Hashable, tuple[float, T]] = {}
        self._pending: dict[Hashable, asyncio.Task[T]] = {}

    async def get(self, key: Hashable, compute: Callable[[], Awaitable[T]]) -> T:
        hit = self._kept.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        task = self._pending.get(key)
        if task is None:
            task = asyncio.ensure_future(compute())
            self._pending[key] = task
            task.add_done_callback(functools.partial(self._settle, key))
        # Shielded: one caller going away does not cancel the others' answer.
        return await asyncio.shield(task)

    def _settle(self, key: Hashable, task: asyncio.Task[Any]) -> None:
        self._pending.pop(key, None)
        if self.ttl <= 0 or task.cancelled() or task.exception() is not None:
            return
        now = time.monotonic()
        if len(self._kept) >= self.max_entries:
            self._kept = {k: v for k, v in self._kept.items() if v[0] > now}
            if len(self._kept) >= self.max_entries:
                self._kept.clear()
        self._kept[key] = (now + self.ttl, task.result())
