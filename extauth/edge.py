"""What runs before connexion, as plain ASGI: the request id, the demo
provider's mount, the spec files, the Swagger UI (its own small app, so that
API requests do not walk its router), ``Cache-Control: no-store`` on every
answer of the token hand-off, and the shape of what connexion may see.

connexion decides "no body" from Content-Length, reads bodies on operations
that have none, routes an encoded slash and a trailing slash where they do
not belong, and trips over a JSON media type that is not lower case. Here
those requests are either answered (404, 413, 415, in Coder's error shape)
or normalised, so that every answer stays the one ``openapi.yaml`` declares.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from extauth.audit import REQUEST_ID, new_request_id
from extauth.errors import ExtauthError, PayloadTooLargeError

API_PREFIX = "/api/v2"
UI_PREFIX = f"{API_PREFIX}/ui/"
# Answers here may carry a token: no cache may keep any of them.
NO_STORE_PREFIX = f"{API_PREFIX}/workspaceagents/"
BODYLESS = {"GET", "HEAD", "DELETE", "OPTIONS"}
_ROUTE_NOT_FOUND = ExtauthError("Route not found.", status=404)


class Edge:
    """The outermost ASGI layer around the connexion app."""

    def __init__(self, api: ASGIApp, max_body: int, spec_text: str, spec_json: bytes,
                 ui: Callable[[], ASGIApp], demo: ASGIApp | None = None) -> None:
        self.api = api
        # The Swagger UI is built on its first request: building it validates the
        # spec again, a tenth of a second at every start for a page few open.
        self._make_ui = ui
        self._ui: ASGIApp | None = None
        self.demo = demo
        self.max_body = max_body
        # The spec is served as written (connexion would serve its own rewrite,
        # with servers changed and every $ref inlined).
        self.spec_files = {
            f"{API_PREFIX}/openapi.json": (spec_json, b"application/json"),
            f"{API_PREFIX}/openapi.yaml": (spec_text.encode(), b"application/yaml"),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.api(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        REQUEST_ID.set(new_request_id(headers.get(b"x-request-id", b"").decode("latin-1")))
        path, method = scope["path"], scope["method"]
        if self.demo is not None and path.startswith("/demo/"):
            await self.demo(scope, receive, send)
            return
        spec_file = self.spec_files.get(path)
        if spec_file is not None and method in ("GET", "HEAD"):
            await _send(send, 200, *spec_file, head=method == "HEAD")
            return
        if b"%2f" in (scope.get("raw_path") or b"").lower() or (
            path != "/" and path.endswith("/") and not path.startswith(UI_PREFIX)
        ):
            # An encoded slash is never part of an id, and no route ends in a
            # slash: routing either would reach another operation or a redirect.
            await _error(send, _ROUTE_NOT_FOUND)
            return
        if path.startswith(UI_PREFIX) or path == UI_PREFIX[:-1]:
            if self._ui is None:
                self._ui = self._make_ui()
            await self._ui(scope, receive, send)
            return
        if path.startswith(NO_STORE_PREFIX):
            send = _no_store(send)
        if method in BODYLESS:
            # These operations take no body: whatever came is not read.
            scope = _with_headers(scope, {b"content-type": None, b"content-length": None})
            await self.api(scope, receive, send)
            return
        await self._with_body(scope, headers, receive, send)

    async def _with_body(self, scope: Scope, headers: dict[bytes, bytes], receive: Receive,
                         send: Send) -> None:
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await _error(send, self._too_large(), close=True)
            return
        if length is None:
            # Chunked: read it here, within the limit, and hand it on with a length.
            body, too_large = await _read(receive, self.max_body)
            if too_large:
                await _error(send, self._too_large(), close=True)
                return
            scope = _with_headers(scope, {b"content-length": str(len(body)).encode()})
            receive = _replay(body)
            length = str(len(body)).encode()
        ctype = headers.get(b"content-type")
        if ctype is None:
            if length not in (b"0", b""):
                await _error(send, ExtauthError(
                    "Unsupported Content-Type.",
                    detail="The body has no Content-Type. Send it as application/json.",
                    status=415))
                return
        else:
            media, sep, params = ctype.partition(b";")
            scope = _with_headers(scope, {b"content-type": media.strip().lower() + sep + params})
        await self.api(scope, receive, send)

    def _too_large(self) -> ExtauthError:
        return PayloadTooLargeError("Request body is too large.",
                                    detail=f"the limit is {self.max_body} bytes")


def _no_store(send: Send) -> Send:
    """``send``, adding ``Cache-Control: no-store`` to the answer."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", [])
                       if k.lower() != b"cache-control"]
            message = {**message, "headers": [*headers, (b"cache-control", b"no-store")]}
        await send(message)

    return sending


def _with_headers(scope: Scope, changes: dict[bytes, bytes | None]) -> Scope:
    """A copy of ``scope`` with headers replaced (value) or removed (None)."""
    kept = [(k, v) for k, v in scope.get("headers") or [] if k not in changes]
    kept += [(k, v) for k, v in changes.items() if v is not None]
    return {**scope, "headers": kept}


async def _read(receive: Receive, limit: int) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"", False
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", True
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), False


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _error(send: Send, err: ExtauthError, close: bool = False) -> None:
    await _send(send, err.status, json.dumps(err.body()).encode(), b"application/json",
                close=close)


async def _send(send: Send, status: int, body: bytes, content_type: bytes, *,
                head: bool = False, close: bool = False) -> None:
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    message: dict[str, Any] = {"type": "http.response.start", "status": status,
                               "headers": headers}
    await send(message)
    await send({"type": "http.response.body", "body": b"" if head else body})
