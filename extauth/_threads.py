"""Running blocking work (SQLite) off the event loop."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def off_loop(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in the loop's thread pool, with the caller's context.

    The loop's executor, not anyio's ``to_thread``: measured under load, the
    latter's capacity limiter and task bookkeeping cost a quarter of a simple
    list request's CPU.
    """
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, fn, *args)
    return await loop.run_in_executor(None, call)
