"""The reference that reuses extauth's domain: extauth without the OpenAPI layer,
as a plain Starlette app.

It answers the same routes as extauth with the same work per request, so that
the benchmark's extauth/reference ratio is the cost of connexion (routing from
the spec, the security middleware, parameter and body validation, its
response handling) and of nothing else (``benchmarks/bare_app.py`` is the
other reference, which shares no code with extauth):

    GET  /api/v2/external-auth                  list (scenarios 1, 5, 6, 12)
    GET  /api/v2/external-auth/{id}             status, validated at the provider (2, 3)
    GET  /api/v2/external-auth/{id}/device      device start (4)
    POST /api/v2/external-auth/{id}/device      device exchange (4)
    GET  /api/v2/workspaceagents/me/external-auth   the token hand-off (10), with listen
    GET  /healthz

Reused from extauth, unchanged: ``Settings`` (the same YAML config),
``Store`` (the same queries on the same database, with the same ``Cipher``
for tokens at rest), ``Links`` (with its audit trail and refresher; it runs
every store call in a worker thread, the token looked up with what the list,
the get by id and the hand-off read, as extauth's handlers ask it to, and
calls providers with the same ``OAuthClient``), ``sessions.credential`` (the
token's shape, checked as extauth's security layer checks it),
``handlers.security.pick_token`` (Coder's token order), ``TokenHandoff`` (the
hand-off's domain, with its link watcher) and the JSON-shaping helpers of
``handlers/external_auth.py`` and ``handlers/agents.py`` (pure functions;
importing them imports connexion, which costs memory but nothing per
request). Bodies are serialized the way connexion does
(``json.dumps(...) + "\\n"``) and errors carry the same ``Response`` body and
``WWW-Authenticate`` header, so both servers send byte-identical answers.

Like extauth's ``Edge``, it sets the audit trail's request id for every
request. Not replicated (microseconds, or not on a benchmarked path): the
rest of ``Edge`` (demo mount, encoded-slash 404, spec files, body-size
limit), 405/415 details, DELETE, the web flow.

Run: ``python -m benchmarks.reference_app --db DB --config YAML --port PORT``
(uvicorn, one worker, log level warning, no access log).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from extauth.audit import REQUEST_ID, new_request_id
from extauth.crypto import Cipher
from extauth.errors import (
    BadRequestError,
    ClientClosedError,
    ExtauthError,
    UnauthorizedError,
    Validation,
)
from extauth.handoff import TokenHandoff
from extauth.links import Links
from extauth.providers.oauth import OAuthClient
from extauth.sessions import MISSING_DETAIL, Credential, Session, credential
from extauth.settings import Settings, load_settings
from extauth.store import open_store
from handlers.agents import _body as handoff_body
from handlers.external_auth import _external_auth, _link, _provider
from handlers.security import pick_token

HANDOFF_PATH = "/api/v2/workspaceagents/me/external-auth"
NO_STORE = {"Cache-Control": "no-store"}

log = logging.getLogger("extauth.reference")

WWW_AUTHENTICATE = (
    'Bearer realm="extauth", error="invalid_token", '
    'error_description="The access token is invalid"'
)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # connexion's Jsonifier: json.dumps with default separators, plus a newline.
    return Response(json.dumps(body) + "\n", status, headers, media_type="application/json")


def _error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, ExtauthError):
        log.exception("unexpected error at %s", request.url.path, exc_info=exc)
        exc = ExtauthError("An internal server error occurred.", status=500)
    headers = dict(exc.headers)
    if exc.status == 401:
        headers.setdefault("WWW-Authenticate", WWW_AUTHENTICATE)
    if request.url.path == HANDOFF_PATH:
        headers.update(NO_STORE)
    # extauth's error handler uses json.dumps without the trailing newline.
    return Response(json.dumps(exc.body()), exc.status, headers, media_type="application/json")


class RequestId:
    """What extauth's Edge does first for every request: set the audit request id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"x-request-id", b"")
            REQUEST_ID.set(new_request_id(given.decode("latin-1")))
        await self.app(scope, receive, send)


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        continue


def create_app(settings: Settings) -> ASGIApp:
    store = open_store(settings.database, Cipher(settings.encryption_keys))
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store.migrate()
        client = OAuthClient(timeout=settings.provider_timeout)
        links = Links(settings, store, client)
        links.audit.purge()
        state["links"] = links
        state["handoff"] = TokenHandoff(links)
        try:
            yield
        finally:
            await state["handoff"].watcher.aclose()
            await client.aclose()
            store.close()

    def picked(request: Request) -> str | None:
        return pick_token(request)[0]

    async def session(request: Request) -> tuple[Links, Session]:
        links: Links = state["links"]
        return links, await links.authenticate(picked(request))

    def presented(request: Request, agents: bool = False) -> Credential:
        # As extauth's security layer does for the operations that look the token
        # up themselves, with their read.
        token = picked(request)
        if not token:
            raise UnauthorizedError(detail=MISSING_DETAIL)
        return credential(token, agents)

    async def list_user_external_auths(request: Request) -> Response:
        links: Links = state["links"]
        states = await links.list_links(presented(request))
        return _json({
            "providers": [_provider(p) for p in links.settings.providers],
            "links": [_link(s) for s in states],
        })

    async def get_external_auth_by_id(request: Request) -> Response:
        links: Links = state["links"]
        status = await links.status(presented(request), request.path_params["externalauth"])
        return _json(_external_auth(status))

    async def get_external_auth_device_by_id(request: Request) -> Response:
        links, who = await session(request)
        device = await links.start_device(who, request.path_params["externalauth"])
        return _json({
            "device_code": device.device_code,
            "user_code": device.user_code,
            "verification_uri": device.verification_uri,
            "expires_in": device.expires_in,
            "interval": device.interval,
        })

    async def post_external_auth_device_by_id(request: Request) -> Response:
        # connexion checks security before the body; so does this.
        links, who = await session(request)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return _error(request, ExtauthError(
                "Unsupported Content-Type.",
                detail="Send the body as application/json.", status=415))
        raw = await request.body()
        try:
            body = json.loads(raw.decode("utf-8")) if raw else None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadRequestError("Request body must be valid JSON.", detail=str(exc)) from None
        if body is None:
            raise BadRequestError("Request body must be valid JSON.", detail="the body is empty")
        code = body.get("device_code") if isinstance(body, dict) else None
        if not isinstance(code, str) or not code:
            raise BadRequestError("Validation failed.", validations=[
                Validation("device_code", "'device_code' is required")])
        await links.exchange_device(who, request.path_params["externalauth"], code)
        return Response(status_code=204)

    async def workspace_agent_external_auth(request: Request) -> Response:
        handoff = state["handoff"]
        who = presented(request, agents=True)
        q = request.query_params
        work = asyncio.ensure_future(handoff.hand_off(
            who, q.get("id") or "", q.get("match") or q.get("url") or "", "listen" in q))
        if "listen" in q:
            # As extauth's handler: the wait ends when the client goes away.
            gone = asyncio.ensure_future(_disconnected(request))
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
            for pending in (work, gone):
                pending.cancel()
            await asyncio.wait({work, gone})
            if work.cancelled():
                raise ClientClosedError()
        return _json(handoff_body(await work), headers=NO_STORE)

    async def healthz(request: Request) -> Response:
        await state["links"].ping()
        return _json({"status": "ok"})

    prefix = "/api/v2/external-auth"
    return RequestId(Starlette(
        routes=[
            Route(prefix, list_user_external_auths, methods=["GET"]),
            Route(prefix + "/{externalauth}", get_external_auth_by_id, methods=["GET"]),
            Route(prefix + "/{externalauth}/device", get_external_auth_device_by_id,
                  methods=["GET"]),
            Route(prefix + "/{externalauth}/device", post_external_auth_device_by_id,
                  methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route(HANDOFF_PATH, workspace_agent_external_auth, methods=["GET"]),
        ],
        exception_handlers={Exception: _error, ExtauthError: _error},
        lifespan=lifespan,
    ))


def main() -> None:
    parser = argparse.ArgumentParser(description="extauth's work as a plain Starlette app")
    parser.add_argument("--db", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args()
    settings = load_settings(database=args.db, config=args.config, host=args.host,
                             port=args.port)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, workers=1,
                log_level="warning", access_log=False, server_header=False,
                timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main()
