"""Running blocking work (SQLite) off the event loop."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread

T = TypeVar("T")


async def off_loop(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a worker thread; the context (request id) goes along."""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args))
