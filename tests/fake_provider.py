"""A scriptable OAuth provider served by uvicorn on 127.0.0.1, for fault tests.

By default it behaves like a well-mannered device-flow provider: the device
endpoint hands out codes, the token endpoint answers ``authorization_pending``
until ``approve()`` is called, ``/user`` validates issued tokens and
``/revoke`` revokes them (RFC 7009). ``script(endpoint, Answer(...))`` queues
canned answers (status, JSON or text, content type, headers, delay) that take
precedence, one per request, to drive every fault: GitHub's HTTP-200 errors,
form-encoded bodies, 5xx, timeouts, rate limits. Every request is recorded.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import socket
import threading
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote, urlencode

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

ENDPOINTS = ("authorize", "device", "token", "validate", "revoke", "installations")


@dataclass
class Answer:
    """One canned answer. ``form`` sends the dict form-encoded, as GitHub does;
    ``raw`` sends bytes as they are (with whatever ``headers`` describe them)."""

    status: int = 200
    json: Any = None
    form: dict[str, str] | None = None
    text: str | None = None
    raw: bytes | None = None
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    # Seconds between the body's bytes: a provider that answers at once and
    # then drips its body, each read well within a per-read timeout.
    drip: float = 0.0

    def response(self, request: Request | None = None) -> Response:
        if self.drip and request is not None:
            plain = replace(self, drip=0.0).response()
            return StreamingResponse(_dripped(plain.body, self.drip, request), self.status,
                                     {k: v for k, v in plain.headers.items()
                                      if k.lower() != "content-length"})
        if self.raw is not None:
            return Response(self.raw, self.status, self.headers, media_type=self.content_type)
        if self.form is not None:
            return Response(urlencode(self.form), self.status, self.headers,
                             media_type=self.content_type or "application/x-www-form-urlencoded")
        if self.text is not None:
            return Response(self.text, self.status, self.headers,
                            media_type=self.content_type or "text/plain")
        if self.json is None:
            return Response(b"", self.status, self.headers, media_type=self.content_type)
        return JSONResponse(self.json, self.status, self.headers,
                            media_type=self.content_type or "application/json")


async def _dripped(body: bytes, pause: float, request: Request) -> AsyncIterator[bytes]:
    for i in range(len(body)):
        await asyncio.sleep(pause)
        if await request.is_disconnected():  # the caller gave up: so does the fake
            return
        yield body[i:i + 1]


@dataclass
class Seen:
    """A request the fake received."""

    endpoint: str
    method: str
    headers: dict[str, str]
    form: dict[str, str]
    query: dict[str, str]
    json: Any = None
    # When it arrived (time.monotonic()).
    at: float = field(default_factory=time.monotonic)


class FakeProvider:
    CLIENT_ID = "fake-client"
    CLIENT_SECRET = "fake-client-secret-5f3a9c"

    def __init__(self, tls: tuple[str, str] | None = None) -> None:
        self.tls = tls  # (certificate file, key file): serve https
        self.requests: list[Seen] = []
        self.scripts: dict[str, deque[Answer]] = defaultdict(deque)
        self.devices: dict[str, bool] = {}  # device_code -> approved
        self.access: dict[str, str] = {}  # access token -> login
        self.refresh: dict[str, str] = {}  # refresh token -> access token
        # Rotation with reuse detection, as oidc-provider and GitHub Apps do: every
        # token belongs to a grant; presenting a rotated-out refresh token again
        # revokes the whole grant.
        self.grant_of: dict[str, str] = {}  # any token -> grant id
        self.used_refresh: set[str] = set()
        # Seconds between issuing a refreshed pair and answering with it.
        self.refresh_delay = 0.0
        # Check the client's credentials at the token endpoint (invalid_client).
        self.require_client_secret = False
        # Requests being answered right now, and the most ever at once, per endpoint.
        self.in_flight: dict[str, int] = defaultdict(int)
        self.most_in_flight: dict[str, int] = defaultdict(int)
        self.revoked: set[str] = set()
        self.codes: dict[str, tuple[str, str]] = {}  # code -> (redirect_uri, challenge)
        self.expires_in: int | None = 3600
        # Approve every device code as soon as it is issued (for fuzzing).
        self.auto_approve = False
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- test API ----------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def script(self, endpoint: str, *answers: Answer) -> None:
        assert endpoint in ENDPOINTS, endpoint
        self.scripts[endpoint].extend(answers)

    def approve(self, device_code: str) -> None:
        self.devices[device_code] = True

    def issue(self, login: str = "octocat", grant: str = "") -> tuple[str, str]:
        access, refresh = "fake_at_" + secrets.token_hex(12), "fake_rt_" + secrets.token_hex(12)
        self.access[access] = login
        self.refresh[refresh] = access
        grant = grant or "grant_" + secrets.token_hex(6)
        self.grant_of[access] = self.grant_of[refresh] = grant
        return access, refresh

    def revoke_grant(self, grant: str) -> None:
        self.revoked.update(t for t, g in self.grant_of.items() if g == grant)

    @property
    def refreshes(self) -> int:
        """How many refresh requests reached the token endpoint."""
        return sum(1 for r in self.seen("token") if r.form.get("grant_type") == "refresh_token")

    def seen(self, endpoint: str) -> list[Seen]:
        return [r for r in self.requests if r.endpoint == endpoint]

    def config(self, **overrides: Any) -> dict[str, Any]:
        """A raw provider config (Coder's keys) pointing at this fake."""
        raw: dict[str, Any] = {
            "id": "fake",
            "type": "fake-oauth",
            "client_id": self.CLIENT_ID,
            "client_secret": self.CLIENT_SECRET,
            "auth_url": f"{self.url}/authorize",
            "token_url": f"{self.url}/token",
            "validate_url": f"{self.url}/user",
            "device_flow": True,
            "device_code_url": f"{self.url}/device/code",
            "revoke_url": f"{self.url}/revoke",
            "app_installations_url": f"{self.url}/installations",
            "scopes": ["repo", "read:user"],
        }
        raw.update(overrides)
        return {k: v for k, v in raw.items() if v is not None}

    # -- the app -------------------------------------------------------------------

    async def _record(self, endpoint: str, request: Request) -> Answer | None:
        form = dict(await request.form()) if request.method == "POST" else {}
        body = await request.json() if request.method == "DELETE" else None
        self.requests.append(Seen(endpoint, request.method, dict(request.headers),
                                  {k: str(v) for k, v in form.items()},
                                  dict(request.query_params), body))
        if self.scripts[endpoint]:
            answer = self.scripts[endpoint].popleft()
            if answer.delay:
                await asyncio.sleep(answer.delay)
            return answer
        return None

    def _tokens(self, grant: str = "") -> dict[str, Any]:
        access, refresh = self.issue(grant=grant)
        body: dict[str, Any] = {"access_token": access, "refresh_token": refresh,
                                "token_type": "bearer", "scope": "repo"}
        if self.expires_in:
            body["expires_in"] = self.expires_in
        return body

    def _client_authenticated(self, request: Request, form: dict[str, str]) -> bool:
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            _, _, secret = base64.b64decode(encoded).decode().partition(":")
            return unquote(secret) == self.CLIENT_SECRET
        return form.get("client_secret") == self.CLIENT_SECRET

    def _code_grant(self, form: dict[str, str]) -> Response:
        redirect_uri, challenge = self.codes.pop(form.get("code", ""), ("", ""))
        if not redirect_uri or redirect_uri != form.get("redirect_uri"):
            return JSONResponse({"error": "invalid_grant",
                                 "error_description": "unknown code or redirect_uri"}, 400)
        verifier = form.get("code_verifier", "")
        digest = hashlib.sha256(verifier.encode()).digest()
        if challenge and base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != challenge:
            return JSONResponse({"error": "invalid_grant",
                                 "error_description": "PKCE verification failed"}, 400)
        return JSONResponse(self._tokens())

    def _app(self) -> ASGIApp:
        async def authorize(request: Request) -> Response:
            answer = await self._record("authorize", request)
            if answer:
                return answer.response(request)
            q = request.query_params
            code = "code_" + secrets.token_hex(10)
            self.codes[code] = (q.get("redirect_uri", ""), q.get("code_challenge", ""))
            sep = "&" if "?" in q.get("redirect_uri", "") else "?"
            answer = urlencode({"code": code, "state": q.get("state", "")})
            return RedirectResponse(f"{q.get('redirect_uri')}{sep}{answer}", status_code=302)

        async def github_grant(request: Request) -> Response:
            answer = await self._record("revoke", request)
            if answer:
                return answer.response(request)
            body = self.requests[-1].json or {}
            self.revoked.add(str(body.get("access_token", "")))
            return Response(status_code=204)

        async def device(request: Request) -> Response:
            answer = await self._record("device", request)
            if answer:
                return answer.response(request)
            code = "dc_" + secrets.token_hex(10)
            self.devices[code] = self.auto_approve
            return JSONResponse({"device_code": code, "user_code": "WDJB-MJHT",
                                 "verification_uri": f"{self.url}/device",
                                 "expires_in": 900, "interval": 5})

        async def token(request: Request) -> Response:
            answer = await self._record("token", request)
            if answer:
                return answer.response(request)
            form = self.requests[-1].form
            if self.require_client_secret and not self._client_authenticated(request, form):
                return JSONResponse({"error": "invalid_client",
                                     "error_description": "client authentication failed"}, 401)
            if form.get("grant_type") == "refresh_token":
                presented = form.get("refresh_token", "")
                grant = self.grant_of.get(presented, "")
                if presented in self.used_refresh or presented in self.revoked:
                    self.revoke_grant(grant)  # reuse: the grant is compromised
                    return JSONResponse({"error": "invalid_grant",
                                         "error_description": "refresh token reused"}, 400)
                old = self.refresh.pop(presented, None)
                if old is None:
                    return JSONResponse({"error": "invalid_grant"}, 400)
                self.used_refresh.add(presented)
                self.revoked.add(old)
                issued = self._tokens(grant)
                await asyncio.sleep(self.refresh_delay)  # issued, not yet answered
                return JSONResponse(issued)
            if form.get("grant_type") == "authorization_code":
                return self._code_grant(form)
            code = form.get("device_code", "")
            if code not in self.devices:
                return JSONResponse({"error": "invalid_grant",
                                     "error_description": "unknown device code"}, 400)
            if not self.devices[code]:
                return JSONResponse({"error": "authorization_pending"}, 400)
            del self.devices[code]
            return JSONResponse(self._tokens())

        async def user(request: Request) -> Response:
            answer = await self._record("validate", request)
            if answer:
                return answer.response(request)
            token = request.headers.get("authorization", "").removeprefix("Bearer ")
            login = self.access.get(token)
            if login is None or token in self.revoked:
                return JSONResponse({"message": "Bad credentials"}, 401)
            # Rate-limit headers as GitHub's API sends them: one call fewer left
            # per validation, the window ending at the next full hour.
            limits = {"X-RateLimit-Limit": "5000",
                      "X-RateLimit-Remaining": str(5000 - len(self.seen("validate"))),
                      "X-RateLimit-Reset": str(int(time.time()) // 3600 * 3600 + 3600),
                      "X-RateLimit-Resource": "core"}
            return JSONResponse({"id": 583231, "login": login, "name": "The Octocat",
                                 "avatar_url": "https://example.test/a.png",
                                 "html_url": f"https://example.test/{login}"}, headers=limits)

        async def revoke(request: Request) -> Response:
            answer = await self._record("revoke", request)
            if answer:
                return answer.response(request)
            token = self.requests[-1].form.get("token", "")
            self.revoked.add(token)
            self.revoked.add(self.refresh.get(token, ""))
            return Response(status_code=200)

        async def installations(request: Request) -> Response:
            answer = await self._record("installations", request)
            if answer:
                return answer.response(request)
            return JSONResponse({"installations": []})

        return self._counted(Starlette(routes=[
            Route("/authorize", authorize, methods=["GET"]),
            Route("/applications/{client_id}/grant", github_grant, methods=["DELETE"]),
            Route("/device/code", device, methods=["POST"]),
            Route("/token", token, methods=["POST"]),
            Route("/user", user, methods=["GET"]),
            Route("/revoke", revoke, methods=["POST"]),
            Route("/installations", installations, methods=["GET"]),
        ]))

    def _counted(self, app: ASGIApp) -> ASGIApp:
        """Count the requests being answered, per path, until their answer is over."""

        async def counted(scope: Scope, receive: Receive, send: Send) -> None:
            path = scope.get("path", "")
            self.in_flight[path] += 1
            self.most_in_flight[path] = max(self.most_in_flight[path], self.in_flight[path])
            try:
                await app(scope, receive, send)
            finally:
                self.in_flight[path] -= 1

        return counted

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> FakeProvider:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        certfile, keyfile = self.tls or (None, None)
        config = uvicorn.Config(self._app(), log_level="warning", lifespan="off",
                                ssl_certfile=certfile, ssl_keyfile=keyfile)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._server.serve(sockets=[sock])),  # type: ignore[union-attr]
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake provider did not start within 10 s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
