"""The demo OAuth provider of ``extauth serve --demo``: NOT a real OAuth server.

A tiny in-memory OAuth 2.0 server, mounted at ``/demo/`` in the same process,
so that a newcomer without an OAuth app can link an account in a minute. It
speaks the RFC 8628 device flow (authorization, polling with
``authorization_pending`` / ``slow_down`` / ``expired_token``), the
authorization code flow with PKCE (a consent page with Approve and Deny), a
userinfo-style validate endpoint and RFC 7009 revocation. Opening the
verification link with the user code approves it. Everything lives in memory
and is lost when the server stops; ``--demo`` therefore runs one worker.
"""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
import time
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlencode

from markupsafe import Markup
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from extauth import pages
from extauth.settings import ProviderConfig, Settings

PROVIDER_ID = "demo"
CLIENT_ID = "extauth-demo"
DEVICE_TTL = 600
INTERVAL = 2
TOKEN_TTL = 8 * 3600
LOGIN = "demo-user"


@dataclass
class _Device:
    user_code: str
    expires: float
    approved: bool = False
    last_poll: float = 0.0


@dataclass
class _Grant:
    redirect_uri: str
    challenge: str
    expires: float


@dataclass
class _State:
    secret: str
    devices: dict[str, _Device] = field(default_factory=dict)
    codes: dict[str, _Grant] = field(default_factory=dict)
    access: dict[str, float] = field(default_factory=dict)  # token -> expiry
    refresh: dict[str, str] = field(default_factory=dict)  # refresh -> access


def _user_code() -> str:
    letters = "".join(secrets.choice("BCDFGHJKLMNPQRSTVWXZ") for _ in range(8))
    return f"{letters[:4]}-{letters[4:]}"


def _client_ok(state: _State, request: Request, form: Any) -> bool:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("basic "):
        try:
            cid, _, sec = base64.b64decode(auth[6:]).decode().partition(":")
        except ValueError:
            return False
        return cid == CLIENT_ID and secrets.compare_digest(sec, state.secret)
    return form.get("client_id") == CLIENT_ID and secrets.compare_digest(
        str(form.get("client_secret", "")), state.secret
    )


def _error(code: str, description: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": code, "error_description": description}, status_code=status)


def create(base_url: str) -> tuple[Starlette, ProviderConfig]:
    """The demo provider app and the provider config that points at it."""
    state = _State(secret=secrets.token_urlsafe(24))
    root = f"{base_url}/demo"

    async def device_code(request: Request) -> Response:
        form = await request.form()
        if not _client_ok(state, request, form):
            return _error("invalid_client", "unknown client or wrong secret", 401)
        code = secrets.token_urlsafe(24)
        user_code = _user_code()
        state.devices[code] = _Device(user_code=user_code, expires=time.time() + DEVICE_TTL)
        return JSONResponse({
            "device_code": code,
            "user_code": user_code,
            "verification_uri": f"{root}/device",
            "verification_uri_complete": f"{root}/device?user_code={user_code}",
            "expires_in": DEVICE_TTL,
            "interval": INTERVAL,
        })

    async def verify(request: Request) -> Response:
        form = await request.form() if request.method == "POST" else request.query_params
        entered = str(form.get("user_code", "")).strip().upper()
        message = ""
        if entered:
            found = next((d for d in state.devices.values() if d.user_code == entered), None)
            if found is None or found.expires < time.time():
                message = f"No pending device authorization has the code {entered}."
            else:
                found.approved = True
                return _html(_page(
                    "Approved",
                    f"<p>The code <b>{html.escape(entered)}</b> is approved for the demo "
                    f"account <b>{LOGIN}</b>. You can close this tab: extauth finishes the link "
                    "by itself (or exchange the device code, with curl).</p>",
                ))
        return _html(_page(
            "Approve a device",
            (f'<p class="alert" role="alert">{html.escape(message)}</p>' if message else "")
            + "<p>Enter the code the application shows you.</p>"
            '<form method="post" class="stack"><label for="user_code">User code</label>'
            '<input id="user_code" name="user_code" type="text" autocomplete="off" '
            'spellcheck="false" autofocus><button class="primary">Approve</button></form>',
        ))

    async def authorize(request: Request) -> Response:
        """The web flow's consent page; approving sends the browser back with a code."""
        q = request.query_params if request.method == "GET" else await request.form()
        redirect_uri = str(q.get("redirect_uri", ""))
        if q.get("client_id") != CLIENT_ID or not redirect_uri.startswith(base_url + "/"):
            return _html(_page("Unknown client", "<p>Unknown client or redirect URI.</p>"), 400)
        if request.method == "GET":
            hidden = "".join(
                f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(str(v))}">'
                for k, v in q.items()
            )
            return _html(_page(
                "Authorize extauth",
                f"<p>extauth asks to link the demo account <b>{LOGIN}</b>.</p>"
                f'<form method="post" class="actions">{hidden}<button class="primary" '
                'name="decision" value="approve">Approve</button> '
                '<button name="decision" value="deny">Deny</button></form>',
            ))
        params = {"state": str(q.get("state", ""))}
        if q.get("decision") == "approve":
            code = secrets.token_urlsafe(24)
            state.codes[code] = _Grant(redirect_uri, str(q.get("code_challenge", "")),
                                       time.time() + 300)
            params["code"] = code
        else:
            params.update(error="access_denied", error_description="The user denied access.")
        return RedirectResponse(f"{redirect_uri}?{urlencode(params)}", status_code=303)

    def _code_ok(form: Any) -> bool:
        grant = state.codes.pop(str(form.get("code", "")), None)
        if grant is None or grant.expires < time.time():
            return False
        if grant.redirect_uri != form.get("redirect_uri"):
            return False
        if grant.challenge:
            digest = hashlib.sha256(str(form.get("code_verifier", "")).encode()).digest()
            return base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == grant.challenge
        return True

    def _issue() -> dict[str, Any]:
        access = "demo_at_" + secrets.token_urlsafe(24)
        refresh = "demo_rt_" + secrets.token_urlsafe(24)
        state.access[access] = time.time() + TOKEN_TTL
        state.refresh[refresh] = access
        return {"access_token": access, "refresh_token": refresh, "token_type": "bearer",
                "expires_in": TOKEN_TTL, "scope": "read"}

    async def token(request: Request) -> Response:
        form = await request.form()
        if not _client_ok(state, request, form):
            return _error("invalid_client", "unknown client or wrong secret", 401)
        grant = form.get("grant_type")
        if grant == "urn:ietf:params:oauth:grant-type:device_code":
            device = state.devices.get(str(form.get("device_code", "")))
            now = time.time()
            if device is None:
                return _error("invalid_grant", "unknown device code")
            if device.expires < now:
                state.devices.pop(str(form.get("device_code")), None)
                return _error("expired_token", "the device code has expired")
            if not device.approved:
                too_fast = now - device.last_poll < INTERVAL - 0.5
                device.last_poll = now
                if too_fast:
                    return _error("slow_down", f"poll at most every {INTERVAL} seconds")
                return _error("authorization_pending", "the user has not approved yet")
            state.devices.pop(str(form.get("device_code")), None)
            return JSONResponse(_issue())
        if grant == "authorization_code":
            if not _code_ok(form):
                return _error("invalid_grant", "unknown code, wrong redirect_uri or PKCE verifier")
            return JSONResponse(_issue())
        if grant == "refresh_token":
            old = state.refresh.pop(str(form.get("refresh_token", "")), None)
            if old is None:
                return _error("invalid_grant", "unknown refresh token")
            state.access.pop(old, None)
            return JSONResponse(_issue())
        return _error("unsupported_grant_type", f"grant type {grant!r} is not supported")

    async def userinfo(request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else ""
        if state.access.get(token, 0) < time.time():
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        return JSONResponse({
            "id": 1,
            "login": LOGIN,
            "name": "Demo User",
            "avatar_url": "",
            "html_url": f"{root}/users/{LOGIN}",
        })

    async def revoke(request: Request) -> Response:
        form = await request.form()
        if not _client_ok(state, request, form):
            return _error("invalid_client", "unknown client or wrong secret", 401)
        value = str(form.get("token", ""))
        state.access.pop(state.refresh.pop(value, ""), None)
        state.access.pop(value, None)
        return Response(status_code=200)

    app = Starlette(routes=[
        Route("/demo/oauth/device/code", device_code, methods=["POST"]),
        Route("/demo/device", verify, methods=["GET", "POST"]),
        Route("/demo/oauth/authorize", authorize, methods=["GET", "POST"]),
        Route("/demo/oauth/token", token, methods=["POST"]),
        Route("/demo/oauth/userinfo", userinfo, methods=["GET"]),
        Route("/demo/oauth/revoke", revoke, methods=["POST"]),
    ])
    provider = ProviderConfig(
        id=PROVIDER_ID,
        type="demo",
        client_id=CLIENT_ID,
        client_secret=state.secret,
        auth_url=f"{root}/oauth/authorize",
        token_url=f"{root}/oauth/token",
        validate_url=f"{root}/oauth/userinfo",
        device_flow=True,
        device_code_url=f"{root}/oauth/device/code",
        revoke_url=f"{root}/oauth/revoke",
        scopes=("read",),
        display_name="Demo provider (not a real OAuth server)",
        display_icon="/emojis/1f511.png",
        pkce_methods=("S256",),
    )
    return app, provider


def with_demo_provider(settings: Settings, provider: ProviderConfig) -> Settings:
    """Settings with the demo provider added (it replaces any provider named ``demo``)."""
    others = tuple(p for p in settings.providers if p.id != provider.id)
    return replace(settings, providers=(*others, provider))


def _page(title: str, body: str) -> str:
    """A page of the demo provider, in extauth's look; ``body`` is already escaped."""
    return pages.render("demo.html", title=title, body=Markup(body))


def _html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers=pages.SECURITY_HEADERS)

