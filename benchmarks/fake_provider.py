"""A minimal OAuth provider for the benchmarks: fixed answers after a fixed delay.

Unlike ``tests/fake_provider.py`` (Starlette, scriptable, records every
request), this one is a bare asyncio HTTP/1.1 server so that it costs as
little CPU as possible and never becomes the bottleneck of a load test. It
answers every request after ``--delay`` seconds (default 0.020), except
``/slow/...`` paths, which answer after ``--slow-delay`` (default 2.0):

    GET  /user, /slow/user      a GitHub-style user (token validation)
    POST /device/code           a device authorization
    POST /token                 a token set, for any device code (always approved)
    POST /revoke                200
    GET  /__stats               {"METHOD /path": count, ...} since the last reset
    POST /__reset               zero the counters

Run: ``python -m benchmarks.fake_provider --port 9000``. Binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
from collections import Counter
from collections.abc import Callable
from typing import Any

USER = json.dumps({
    "id": 583231, "login": "octocat", "name": "The Octocat",
    "avatar_url": "https://example.test/a.png", "html_url": "https://example.test/octocat",
}).encode()


class Provider:
    def __init__(self, delay: float, slow_delay: float) -> None:
        self.delay = delay
        self.slow_delay = slow_delay
        self.counts: Counter[str] = Counter()
        self.port = 0

    def answer(self, method: str, path: str) -> tuple[int, bytes, float]:
        """(status, JSON body, delay) for one request."""
        path = path.split("?", 1)[0]
        if path == "/__stats":
            return 200, json.dumps(dict(self.counts)).encode(), 0.0
        if path == "/__reset" and method == "POST":
            self.counts.clear()
            return 200, b"{}", 0.0
        self.counts[f"{method} {path}"] += 1
        delay = self.slow_delay if path.startswith("/slow/") else self.delay
        route = path.removeprefix("/slow")
        if method == "GET" and route == "/user":
            return 200, USER, delay
        if method == "POST" and route == "/device/code":
            body = {"device_code": "dc_" + secrets.token_hex(10), "user_code": "WDJB-MJHT",
                    "verification_uri": f"http://127.0.0.1:{self.port}/device",
                    "expires_in": 900, "interval": 5}
            return 200, json.dumps(body).encode(), delay
        if method == "POST" and route == "/token":
            body = {"access_token": "fake_at_" + secrets.token_hex(12),
                    "refresh_token": "fake_rt_" + secrets.token_hex(12),
                    "token_type": "bearer", "scope": "repo", "expires_in": 3600}
            return 200, json.dumps(body).encode(), delay
        if method == "POST" and route == "/revoke":
            return 200, b"{}", delay
        return 404, b'{"error":"not_found"}', 0.0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                length = int(headers.get("content-length", "0") or 0)
                if length:
                    await reader.readexactly(length)
                status, body, delay = self.answer(method, path)
                if delay:
                    await asyncio.sleep(delay)
                close = headers.get("connection", "").lower() == "close"
                writer.write(
                    b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n%s\r\n"
                    % (status, b"OK" if status == 200 else b"Not Found", len(body),
                       b"connection: close\r\n" if close else b"")
                    + body
                )
                await writer.drain()
                if close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()


async def serve(port: int, delay: float, slow_delay: float) -> None:
    provider = Provider(delay, slow_delay)
    server = await asyncio.start_server(provider.handle, "127.0.0.1", port, backlog=1024)
    provider.port = server.sockets[0].getsockname()[1]
    print(f"fake provider on 127.0.0.1:{provider.port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.020)
    parser.add_argument("--slow-delay", type=float, default=2.0)
    args = parser.parse_args()
    run: Callable[..., Any]
    try:
        import uvloop  # uvicorn[standard] brings it

        run = uvloop.run
    except ImportError:  # pragma: no cover
        run = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends it quietly
        run(serve(args.port, args.delay, args.slow_delay))


if __name__ == "__main__":
    main()
