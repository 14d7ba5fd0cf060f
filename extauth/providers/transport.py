"""Sending provider requests: httpx's request and response, aiohttp's wire.

Requests to providers are built as ``httpx.Request`` (form encoding, Basic
auth flow) and answered as ``httpx.Response`` (text, headers, JSON), so the
OAuth code reads the same either way. Timed against the benchmark's fake
provider (20 ms), a call through httpx's own client (httpx, httpcore, h11,
anyio) took 1.6 ms more than a bare asyncio request, through this module
about 0.8 ms more. Failures are raised as httpx's exceptions
(``TimeoutException``, ``HTTPError``).

Like httpx by default: no redirects followed; the environment's proxy
variables honoured (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``,
``NO_PROXY``), read once at start (aiohttp's own ``trust_env`` looks them up
and reads ``~/.netrc`` in a worker thread on every request: 0.7 ms each,
measured); certificates checked against certifi's bundle, or
``SSL_CERT_FILE`` / ``SSL_CERT_DIR``; gzip and deflate answers decoded.
Unlike httpx's default, the timeout is a deadline for the whole call
(connect, send, every read of the body): a provider dripping its answer a
byte at a time cannot hold a call, and a refresh lease, beyond it. Unlike httpx, an answer larger
than ``MAX_ANSWER_BYTES`` once decoded is refused.
"""

from __future__ import annotations

import asyncio
import urllib.request

import aiohttp
import httpx

USER_AGENT = "extauth"
# Provider answers are small JSON documents; a larger one is refused rather
# than held in memory (GitHub's installations page, the largest, is well under).
MAX_ANSWER_BYTES = 2 * 1024 * 1024
# Hop-by-hop or recomputed by aiohttp from the URL and the body.
_NOT_FORWARDED = {b"host", b"content-length", b"transfer-encoding", b"connection"}
# Not in typeshed's stubs, but in urllib.request since Python 3.0: NO_PROXY
# matching against a given snapshot of the proxy variables.
_bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
# The body handed on is already decoded and complete.
_NOT_RETURNED = {b"content-encoding", b"content-length", b"transfer-encoding"}


def request(method: str, url: str, *, headers: dict[str, str] | None = None,
            data: dict[str, str] | None = None, json: object = None) -> httpx.Request:
    """A provider request with extauth's default headers."""
    return httpx.Request(method, url, data=data, json=json, headers={
        "User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate", **(headers or {})})


class Transport:
    """One aiohttp session (a connection pool) for every provider call."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        # The deadline is asyncio.timeout's, around each whole call (send).
        self._timeout = aiohttp.ClientTimeout(total=None)
        self._session: aiohttp.ClientSession | None = None
        self._proxies = urllib.request.getproxies_environment()

    def _proxy(self, url: httpx.URL) -> str | None:
        if not self._proxies or _bypass(url.host, self._proxies):
            return None
        return self._proxies.get(url.scheme) or self._proxies.get("all")

    def _open(self) -> aiohttp.ClientSession:
        # Created on first use, inside the running loop, as aiohttp requires.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=httpx.create_ssl_context()),
                timeout=self._timeout,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
            )
        return self._session

    async def send(self, req: httpx.Request) -> httpx.Response:
        headers = [(k.decode("latin-1"), v.decode("latin-1"))
                   for k, v in req.headers.raw if k.lower() not in _NOT_FORWARDED]
        body = await req.aread()
        try:
            async with asyncio.timeout(self.timeout), self._open().request(
                    req.method, str(req.url), headers=headers, data=body or None,
                    allow_redirects=False, proxy=self._proxy(req.url)) as resp:
                content = await _read_limited(resp, req)
                kept = [(k, v) for k, v in resp.raw_headers if k.lower() not in _NOT_RETURNED]
                return httpx.Response(resp.status, headers=kept, content=content, request=req)
        except TimeoutError as exc:
            raise httpx.TimeoutException(f"no answer within {self.timeout:g}s",
                                         request=req) from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc), request=req) from exc
        except aiohttp.ClientError as exc:
            raise httpx.RemoteProtocolError(f"{type(exc).__name__}: {exc}", request=req) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _read_limited(resp: aiohttp.ClientResponse, req: httpx.Request) -> bytes:
    body = bytearray()
    async for chunk in resp.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            raise httpx.RemoteProtocolError(
                f"the answer is larger than {MAX_ANSWER_BYTES // 1024 // 1024} MiB", request=req)
    return bytes(body)
