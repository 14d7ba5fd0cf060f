"""extauth's app under uvicorn in a thread of the test process: a real server
on 127.0.0.1 whose event loop, tasks, threads and services the test can see."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import uvicorn

from extauth.app import create_app
from extauth.handoff import TokenHandoff
from extauth.settings import Settings


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Block until ``condition()`` holds, or fail saying ``what`` did not happen."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.002)


EXECUTOR_NAME = "served-executor"
EXECUTOR_THREADS = 4


class Served:
    """create_app under uvicorn in a thread of this process, so that its event loop,
    tasks and threads can be looked at from the test."""

    def __init__(self, settings: Settings) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.executor = f"{EXECUTOR_NAME}-{self.port}"
        # Its own address is its access URL, unless the test says otherwise.
        self.settings = settings if settings.access_url else replace(settings, access_url=self.url)
        settings = self.settings
        config = uvicorn.Config(create_app(settings), log_level="warning", access_log=False,
                                timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        # The database calls' threads, told apart from every other thread here.
        self.loop.set_default_executor(ThreadPoolExecutor(EXECUTOR_THREADS,
                                                          thread_name_prefix=self.executor))
        try:
            self.loop.run_until_complete(self.server.serve(sockets=[self.sock]))
        finally:
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()

    def __enter__(self) -> Served:
        self.thread.start()
        wait_until(lambda: self.server.started, "uvicorn starts")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    @property
    def handoff(self) -> TokenHandoff:
        handoff: TokenHandoff = self.server.lifespan.state["handoff"]
        return handoff

    def settle(self) -> None:
        """Wait until every request has finished and the watcher rests (nobody waits)."""
        state = self.server.server_state
        wait_until(lambda: not state.connections and not state.tasks, "requests finish")
        wait_until(lambda: not self.handoff.watcher.running, "the watcher rests")

    def nudge(self) -> None:
        """Let the server's loop turn once. A listener's wait leaves a cancelled
        timer, holding the request's context, in the loop's heap; the loop drops
        cancelled timers when it next turns (they are most of the heap by then),
        which a busy server does all the time and an idle one in a test does not."""
        self.tasks()

    def tasks(self) -> int:
        """How many tasks the server's loop has (asked from within it)."""
        assert self.loop is not None

        async def count() -> int:
            return len(asyncio.all_tasks()) - 1  # not this one

        return asyncio.run_coroutine_threadsafe(count(), self.loop).result(timeout=10)
