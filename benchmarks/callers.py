"""Callers of the benchmark's own, besides wrk: slow provider calls kept in
flight (scenario 7), and listeners of the token hand-off held open (scenario 11)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import statistics
import threading
import time
from typing import Any

from benchmarks.fixture import API, HANDOFF, SLOW_DELAY
from benchmarks.servers import get


class SlowCalls:
    """``n`` threads, each looping on GET /external-auth/slow (the provider takes 2 s)."""

    def __init__(self, port: int, token: str, n: int) -> None:
        self.port, self.token, self.n = port, token, n
        self.stop_event = threading.Event()
        self.done: list[tuple[int, float]] = []
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(n)]

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            t0 = time.monotonic()
            try:
                status, _ = get(self.port, f"{API}/slow", {"Coder-Session-Token": self.token},
                                timeout=30)
            except OSError:
                status = 0
            self.done.append((status, time.monotonic() - t0))

    def __enter__(self) -> SlowCalls:
        for t in self.threads:
            t.start()
        time.sleep(0.5)  # let them reach the provider
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=SLOW_DELAY + 10)

    def summary(self) -> dict[str, Any]:
        times = sorted(d for _, d in self.done)
        return {
            "concurrent": self.n,
            "completed": len(self.done),
            "ok": sum(1 for s, _ in self.done if s == 200),
            "median_s": statistics.median(times) if times else None,
            "max_s": times[-1] if times else None,
        }


# -- listeners held open (scenario 11) ------------------------------------------------------------


class Listeners:
    """Listen requests of the hand-off, one connection each, from an event loop in a
    thread of this process; ``answers[i]`` = (when, status, whether it held a token)."""

    def __init__(self, port: int, tokens: list[str]) -> None:
        self.port, self.tokens = port, tokens
        self.answers: dict[int, tuple[float, int, bool]] = {}
        self.sent = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.futures: list[Any] = []

    def open(self, timeout: float = 60.0) -> float:
        """Send them all; the seconds it took."""
        t0 = time.monotonic()
        self.thread.start()
        self.futures = [asyncio.run_coroutine_threadsafe(self._one(i, token), self.loop)
                        for i, token in enumerate(self.tokens)]
        while self.sent < len(self.tokens):
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"only {self.sent} of {len(self.tokens)} listeners sent")
            time.sleep(0.05)
        return time.monotonic() - t0

    async def _one(self, i: int, token: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(f"GET {HANDOFF}?id=fake&match=&listen=true HTTP/1.1\r\n"
                         f"Host: bench\r\nCoder-Session-Token: {token}\r\n\r\n".encode())
            await writer.drain()
            self.sent += 1
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            body = await reader.readexactly(int(length.group(1))) if length else b""
            self.answers[i] = (time.monotonic(), int(head.split(b" ", 2)[1]),
                               b'"access_token": ""' not in body and b"access_token" in body)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            self.answers[i] = (time.monotonic(), 0, False)
        finally:
            writer.close()

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for future in self.futures:
            with contextlib.suppress(Exception):  # counted as unanswered below
                future.result(timeout=max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        for future in self.futures:
            future.cancel()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
