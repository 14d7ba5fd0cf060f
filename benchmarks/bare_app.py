"""The bare reference: extauth's answers from the least code that gives them.

It shares no code with extauth (nothing is imported from ``extauth`` or
``handlers``): Starlette routes, the ``sqlite3`` module (or psycopg for a
``postgresql://`` database, the same statements), aiohttp for the provider,
``json.dumps``. It reads extauth's database file and provider config as they
are, and answers the benchmark's requests with the same bytes as extauth
(``tests/test_benchmarks.py`` checks it), so that extauth/bare is what
extauth's whole stack costs over a plain implementation: the OpenAPI layer,
the domain's layers, the store's.

    GET  /api/v2/external-auth                      list: one indexed query for the
                                                    token, one for the links
    GET  /api/v2/external-auth/{id}                 one for the token, one for the link
    GET  /api/v2/external-auth/{id}/device          device start at the provider
    POST /api/v2/external-auth/{id}/device          device exchange at the provider
    GET  /api/v2/workspaceagents/me/external-auth   the token hand-off (an agent token)
    GET  /healthz

A plain implementation, not a careless one: the database is used from the
loop's worker threads (never on the event loop), one trip per request where
the work allows (the token and what the request reads, in one function); a
session token's secret is compared by hash in constant time; validations at
the provider are shared by concurrent requests for the same token (as
extauth's are); writes that belong together are one transaction.

Left out, because the benchmark never reaches them: encrypted tokens (the
benchmark configures no key), refreshing an expired token, provider presets
(the benchmark's providers are of a generic type), app installations, the
web flow, unlink, ``listen``.

Run: ``python -m benchmarks.bare_app --db DB --config YAML --port PORT``
(uvicorn, one worker, log level warning, no access log).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import re
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import uvicorn
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

# -- what extauth says, word for word (Coder's messages) ---------------------------------

SIGNED_OUT = "You are signed out or your session has expired. Please sign in again to continue."
NOT_FOUND = "Resource not found or you do not have access to this resource"
MISSING = 'Cookie "coder_session_token" or query parameter must be provided.'
AGENT_INVALID = "Workspace agent token invalid."
AGENT_UNAUTHORIZED = "Workspace agent not authorized."
WWW_AUTHENTICATE = ('Bearer realm="extauth", error="invalid_token", '
                    'error_description="The access token is invalid"')
ZERO_TIME = "0001-01-01T00:00:00Z"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
DEFAULT_ICON = "/emojis/1f511.png"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
HANDOFF = "/api/v2/workspaceagents/me/external-auth"
NO_STORE = {"Cache-Control": "no-store"}
AGENT_TOKEN = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$", re.IGNORECASE)


class Failure(Exception):
    """An answer other than 2xx: status, Coder's ``Response`` body, headers."""

    def __init__(self, status: int, message: str, detail: str = "",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.detail = status, message, detail
        self.headers = headers or {}


def unauthorized(detail: str, message: str = SIGNED_OUT) -> Failure:
    return Failure(401, message, detail, {"WWW-Authenticate": WWW_AUTHENTICATE})


# -- providers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Provider:
    id: str
    type: str
    client_id: str
    client_secret: str
    token_url: str
    validate_url: str
    device_code_url: str
    revoke_url: str
    app_install_url: str
    device: bool
    no_refresh: bool
    scopes: str
    display_name: str
    display_icon: str
    pkce: list[str]

    def listed(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "device": self.device,
                "display_name": self.display_name, "display_icon": self.display_icon,
                "allow_refresh": not self.no_refresh, "allow_validate": bool(self.validate_url),
                "supports_revocation": bool(self.revoke_url),
                "code_challenge_methods_supported": self.pkce}


def _words(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else str(value or "").split()


def load_providers(path: Path) -> dict[str, Provider]:
    """The config's providers, with extauth's defaults for a generic OAuth 2.0 server."""
    found: dict[str, Provider] = {}
    for raw in yaml.safe_load(path.read_text())["external_auth"]:
        written = str(raw.get("type", ""))
        if written.lower() in ("github", "gitlab", "bitbucket-cloud", "bitbucket-server",
                               "azure-devops", "azure-devops-entra", "gitea", "jfrog", "slack"):
            raise SystemExit(f"type {written!r} has a preset in extauth; the bare reference "
                             "knows only generic providers")
        pid = str(raw.get("id") or written)
        found[pid] = Provider(
            id=pid, type=written.lower(), client_id=str(raw["client_id"]),
            client_secret=str(raw.get("client_secret", "")),
            token_url=str(raw.get("token_url", "")),
            validate_url=str(raw.get("validate_url", "")),
            device_code_url=str(raw.get("device_code_url", "")),
            revoke_url=str(raw.get("revoke_url", "")),
            app_install_url=str(raw.get("app_install_url", "")),
            device=bool(raw.get("device_flow", False)), no_refresh=bool(raw.get("no_refresh")),
            scopes=" ".join(_words(raw.get("scopes"))),
            display_name=str(raw.get("display_name") or written or pid),
            display_icon=str(raw.get("display_icon") or DEFAULT_ICON),
            pkce=_words(raw.get("pkce_methods")) if "pkce_methods" in raw else ["S256"])
    return found


# -- the database -----------------------------------------------------------------------------


class Database:
    """One connection per worker thread; ``?`` placeholders on either driver."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.postgres = where.startswith(("postgresql://", "postgres://"))
        self.local = threading.local()
        self.all: list[Any] = []
        self.lock = threading.Lock()

    def conn(self) -> Any:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            if self.postgres:
                import psycopg

                conn = psycopg.connect(self.where, autocommit=True)
            else:
                path = self.where.removeprefix("sqlite://")
                # Used by this thread only; closed by another at the end.
                conn = sqlite3.connect(path, timeout=10, isolation_level=None,
                                       check_same_thread=False)
                conn.execute("PRAGMA foreign_keys = ON")
                conn.execute("PRAGMA synchronous = NORMAL")
            self.local.conn = conn
            with self.lock:
                self.all.append(conn)
        return conn

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.postgres:
            sql = sql.replace("?", "%s")
        cursor = self.conn().execute(sql, params)
        return cursor.fetchall() if cursor.description else []

    @contextmanager
    def transaction(self) -> Iterator[None]:
        conn = self.conn()
        if self.postgres:
            with conn.transaction():
                yield
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def stamp(self, at: datetime) -> Any:
        """A time as extauth stores it: ISO text on SQLite, timestamptz on PostgreSQL."""
        return at if self.postgres else at.strftime(TIME_FORMAT)

    def close(self) -> None:
        for conn in self.all:
            conn.close()


def when(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


def shown(value: Any) -> str:
    """A stored time as extauth answers it."""
    if value is None:
        return ZERO_TIME
    if isinstance(value, str) and value.endswith("Z"):
        return value  # stored in the very format of the answer
    at = when(value)
    assert at is not None
    return at.astimezone(UTC).strftime(TIME_FORMAT)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Caller:
    user_id: int
    user_name: str
    key_id: str
    kind: str


def session(db: Database, token: str) -> Caller:
    """The caller behind a session token (``<10-char id>-<22-char secret>``)."""
    parts = token.split("-")
    if len(parts) != 2:
        raise unauthorized("Invalid API key format: incorrect amount of API key parts, "
                           f"expected 2 got {len(parts)}")
    key_id, secret = parts
    if len(key_id) != 10:
        raise unauthorized("Invalid API key format: invalid API key ID length, "
                           f"expected 10 got {len(key_id)}")
    if len(secret) != 22:
        raise unauthorized("Invalid API key format: invalid API key secret length, "
                           f"expected 22 got {len(secret)}")
    found = db.rows("SELECT k.user_id, u.name, k.secret_hash, k.expires_at FROM api_keys k "
                    "JOIN users u ON u.id = k.user_id WHERE k.id = ?", (key_id,))
    if not found:
        raise unauthorized("API key is invalid.")
    user_id, name, secret_hash, expires = found[0]
    if not hmac.compare_digest(secret_hash, sha256(secret)):
        raise unauthorized("API key secret is invalid.")
    expires_at = when(expires)
    if expires_at is not None and expires_at <= datetime.now(UTC):
        raise unauthorized("API key expired at "
                           f"\"{expires_at.strftime('%Y-%m-%d %H:%M:%S.%f +0000 UTC')}\".")
    return Caller(user_id, name, key_id, "session")


def agent(db: Database, token: str) -> Caller:
    """The user an agent token (a UUIDv4) acts for."""
    if not AGENT_TOKEN.match(token):
        raise unauthorized(f"An agent token must be a valid UUIDv4. (len {len(token)})",
                           AGENT_INVALID)
    found = db.rows("SELECT a.id, a.user_id, u.name, a.expires_at FROM agent_tokens a "
                    "JOIN users u ON u.id = a.user_id WHERE a.token_hash = ?",
                    (sha256(token.lower()),))
    if not found:
        raise unauthorized("The agent token is unknown or was deleted.", AGENT_UNAUTHORIZED)
    token_id, user_id, name, expires = found[0]
    expires_at = when(expires)
    if expires_at is not None and expires_at <= datetime.now(UTC):
        raise unauthorized("The agent token expired at "
                           f"\"{expires_at.strftime('%Y-%m-%d %H:%M:%S.%f +0000 UTC')}\".",
                           AGENT_UNAUTHORIZED)
    return Caller(user_id, name, token_id, "agent")


LINK = ("SELECT provider_id, access_token, refresh_token, expires_at, created_at, updated_at, "
        "refresh_failure_reason FROM external_auth_links")


@dataclass(frozen=True)
class Link:
    provider_id: str
    access_token: str
    refresh_token: str
    expires_at: Any
    created_at: Any
    updated_at: Any
    refresh_failure_reason: str


def links_of(db: Database, caller: Caller) -> list[Link]:
    return [Link(*row) for row in db.rows(f"{LINK} WHERE user_id = ? ORDER BY provider_id",
                                          (caller.user_id,))]


def link_of(db: Database, caller: Caller, provider_id: str) -> Link | None:
    found = db.rows(f"{LINK} WHERE user_id = ? AND provider_id = ?",
                    (caller.user_id, provider_id))
    return Link(*found[0]) if found else None


def audit(db: Database, caller: Caller, provider_id: str, action: str, outcome: str,
          detail: str = "") -> None:
    db.rows("INSERT INTO audit_events (at, user_id, user_name, provider_id, action, outcome, "
            "detail, request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (db.stamp(datetime.now(UTC)), caller.user_id, caller.user_name, provider_id,
             action, outcome, detail, uuid.uuid4().hex[:16]))


# -- the provider ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    valid: bool
    user: dict[str, Any] | None = None
    reason: str = ""


def provider_user(data: dict[str, Any]) -> dict[str, Any] | None:
    def text(key: str) -> str:
        value = data.get(key)
        return value if isinstance(value, str) else ""

    login = next((text(k) for k in ("login", "username", "preferred_username", "nickname",
                                    "sub") if text(k)), "")
    uid = data.get("id")
    user = {"id": uid if isinstance(uid, int) and not isinstance(uid, bool) else 0,
            "login": login, "avatar_url": text("avatar_url") or text("picture"),
            "profile_url": text("html_url") or text("web_url") or text("profile"),
            "name": text("name")}
    return user if (user["login"] or user["name"] or user["id"]) else None


class Providers:
    """Calls to providers over one aiohttp session; one validation in flight per token."""

    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.http: aiohttp.ClientSession | None = None
        self.pending: dict[tuple[str, str], asyncio.Task[Verdict]] = {}

    def session(self) -> aiohttp.ClientSession:
        if self.http is None:
            self.http = aiohttp.ClientSession(timeout=self.timeout)
        return self.http

    async def verdict(self, p: Provider, token: str) -> Verdict:
        key = (p.id, token)
        task = self.pending.get(key)
        if task is None:
            task = asyncio.ensure_future(self._validate(p, token))
            self.pending[key] = task
            task.add_done_callback(lambda _: self.pending.pop(key, None))
        return await asyncio.shield(task)

    async def _validate(self, p: Provider, token: str) -> Verdict:
        if not p.validate_url:
            return Verdict(True)
        async with self.session().get(p.validate_url, headers={
                "Authorization": f"Bearer {token}", "Accept": "application/json"}) as resp:
            body = await resp.read()
        if resp.status == 200:
            data = json.loads(body)
            return Verdict(True, provider_user(data) if isinstance(data, dict) else None)
        if resp.status in (401, 403):
            return Verdict(False, reason=f"the provider rejected the token (HTTP {resp.status})")
        raise Failure(502, f"Failed to validate token with provider {p.id!r}: "
                           f"it answered HTTP {resp.status}.")

    async def post_form(self, p: Provider, url: str, form: dict[str, str]) -> dict[str, Any]:
        auth = base64.b64encode(f"{p.client_id}:{p.client_secret}".encode()).decode()
        async with self.session().post(url, data=form, headers={
                "Accept": "application/json", "Authorization": f"Basic {auth}"}) as resp:
            body = await resp.read()
        data = json.loads(body)
        if not isinstance(data, dict) or resp.status != 200 or data.get("error"):
            raise Failure(400, "Failed to exchange device code.",
                          str(data.get("error", "")) if isinstance(data, dict) else "")
        return data

    async def close(self) -> None:
        if self.http is not None:
            await self.http.close()


# -- the app ---------------------------------------------------------------------------------


def pick_token(request: Request) -> str | None:
    """Coder's order: cookie, query, header, bearer, ``access_token`` query."""
    for pair in request.headers.get("cookie", "").split(";"):
        name, _, value = pair.strip().partition("=")
        if name == "coder_session_token" and value.strip('"'):
            return value.strip('"')
    query = request.query_params
    for value in query.getlist("coder_session_token"):
        if value:
            return value
    header = request.headers.get("coder-session-token")
    if header:
        return header
    scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and bearer.strip():
        return bearer.strip()
    return next((v for v in query.getlist("access_token") if v), None)


def answer(body: Any, headers: dict[str, str] | None = None) -> Response:
    # connexion's jsonifier: json.dumps with its default separators, and a newline.
    return Response(json.dumps(body) + "\n", 200, headers, media_type="application/json")


def failed(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, Failure):
        exc = Failure(500, "An internal server error occurred.")
    body: dict[str, Any] = {"message": exc.message}
    if exc.detail:
        body["detail"] = exc.detail
    headers = {**exc.headers, **(NO_STORE if request.url.path == HANDOFF else {})}
    return Response(json.dumps(body), exc.status, headers, media_type="application/json")


def create_app(database: str, config: Path, base_url: str) -> Starlette:
    providers = load_providers(config)
    listed = [p.listed() for p in providers.values()]
    db = Database(database)
    calls = Providers()

    async def off_loop(fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    def caller_of(request: Request) -> str:
        token = pick_token(request)
        if not token:
            raise unauthorized(MISSING)
        return token

    def provider(pid: str) -> Provider:
        p = providers.get(pid)
        if p is None:
            raise Failure(404, NOT_FOUND)
        return p

    def state(link: Link) -> tuple[bool, str]:
        """What a stored link is worth without asking the provider."""
        p = providers.get(link.provider_id)
        if p is None:
            return False, "The provider of this link is no longer configured."
        if not link.access_token:
            return False, "The link holds no access token; link again."
        expires = when(link.expires_at)
        if expires is not None and expires <= datetime.now(UTC):
            why = "refreshing is disabled" if p.no_refresh else "there is no refresh token"
            return False, (f"The token expired at {expires:%Y-%m-%d %H:%M:%S} UTC and {why}; "
                           "link again.")
        return True, ""

    async def listed_link(link: Link) -> dict[str, Any]:
        ok, why = state(link)
        if ok:
            verdict = await calls.verdict(providers[link.provider_id], link.access_token)
            if not verdict.valid:
                ok, why = False, f"The token failed to validate: {verdict.reason}; link again."
        return {"provider_id": link.provider_id, "created_at": shown(link.created_at),
                "updated_at": shown(link.updated_at), "has_refresh_token": bool(link.refresh_token),
                "expires": shown(link.expires_at), "authenticated": ok, "validate_error": why}

    async def list_links(request: Request) -> Response:
        token = caller_of(request)

        def read() -> list[Link]:
            return links_of(db, session(db, token))

        links = await off_loop(read)
        return answer({"providers": listed,
                       "links": list(await asyncio.gather(*map(listed_link, links)))})

    async def get_by_id(request: Request) -> Response:
        token = caller_of(request)

        def read() -> Link | None:
            caller = session(db, token)
            provider(request.path_params["externalauth"])
            return link_of(db, caller, request.path_params["externalauth"])

        link = await off_loop(read)
        p = provider(request.path_params["externalauth"])
        user, ok = None, False
        if link is not None and state(link)[0]:
            verdict = await calls.verdict(p, link.access_token)
            ok, user = verdict.valid, verdict.user if verdict.valid else None
        return answer({"authenticated": ok, "device": p.device, "display_name": p.display_name,
                       "supports_revocation": bool(p.revoke_url), "user": user,
                       "app_installable": False, "installations": [],
                       "app_install_url": p.app_install_url})

    async def device_start(request: Request) -> Response:
        token = caller_of(request)
        caller = await off_loop(session, db, token)
        p = provider(request.path_params["externalauth"])
        if not p.device:
            raise Failure(400, "Git auth device flow not supported.")
        data = await calls.post_form(p, p.device_code_url, {"scope": p.scopes} if p.scopes else {})
        expires = datetime.now(UTC) + timedelta(seconds=int(data.get("expires_in") or 900))

        def remember() -> None:
            with db.transaction():
                db.rows("DELETE FROM device_authorizations WHERE expires_at < ?",
                        (db.stamp(datetime.now(UTC)),))
                db.rows("INSERT INTO device_authorizations (code_hash, user_id, provider_id, "
                        "expires_at) VALUES (?, ?, ?, ?)",
                        (sha256(data["device_code"]), caller.user_id, p.id, db.stamp(expires)))

        await off_loop(remember)
        return answer({"device_code": data["device_code"], "user_code": data["user_code"],
                       "verification_uri": data["verification_uri"],
                       "expires_in": int(data.get("expires_in") or 0),
                       "interval": int(data.get("interval") or 5)})

    async def device_exchange(request: Request) -> Response:
        token = caller_of(request)
        body = json.loads(await request.body())
        code = body["device_code"]
        pid = request.path_params["externalauth"]

        def check() -> Caller:
            caller = session(db, token)
            provider(pid)
            found = db.rows("SELECT user_id, provider_id, expires_at FROM device_authorizations "
                            "WHERE code_hash = ?", (sha256(code),))
            if not found or found[0][0] != caller.user_id or found[0][1] != pid:
                raise Failure(400, "Failed to exchange device code.", "invalid_grant")
            return caller

        caller = await off_loop(check)
        p = provider(pid)
        tokens = await calls.post_form(p, p.token_url,
                                       {"grant_type": DEVICE_GRANT, "device_code": code})
        lifetime = int(tokens.get("expires_in") or 0) or None
        now = datetime.now(UTC)
        expires = now + timedelta(seconds=lifetime) if lifetime else None

        def store() -> None:
            with db.transaction():
                db.rows("DELETE FROM device_authorizations WHERE code_hash = ?", (sha256(code),))
                db.rows("INSERT INTO external_auth_links (user_id, provider_id, access_token, "
                        "refresh_token, expires_at, extra, refresh_failure_reason, created_at, "
                        "updated_at, token_key_id, token_lifetime) "
                        "VALUES (?, ?, ?, ?, ?, '{}', '', ?, ?, '', ?) "
                        "ON CONFLICT (user_id, provider_id) DO UPDATE SET "
                        "access_token = excluded.access_token, "
                        "refresh_token = excluded.refresh_token, "
                        "expires_at = excluded.expires_at, extra = excluded.extra, "
                        "refresh_failure_reason = '', refresh_failed_at = NULL, "
                        "refresh_retry_at = NULL, refresh_retry_reason = '', "
                        "token_key_id = excluded.token_key_id, "
                        "version = external_auth_links.version + 1, "
                        "token_lifetime = excluded.token_lifetime, "
                        "updated_at = excluded.updated_at",
                        (caller.user_id, p.id, tokens["access_token"],
                         tokens.get("refresh_token", ""), db.stamp(expires) if expires else None,
                         db.stamp(now), db.stamp(now), lifetime))
                audit(db, caller, p.id, "link", "device")

        await off_loop(store)
        return Response(status_code=204)

    async def hand_off(request: Request) -> Response:
        token = caller_of(request)
        query = request.query_params
        pid, match = query.get("id") or "", query.get("match") or query.get("url") or ""

        def read() -> tuple[Caller, Link | None]:
            caller = agent(db, token) if token.count("-") != 1 else session(db, token)
            return caller, link_of(db, caller, pid) if pid in providers else None

        caller, link = await off_loop(read)
        if pid and match:
            raise Failure(400, "'url' and 'id' cannot be provided together!")
        if not pid:
            raise Failure(400, "'url' or 'id' must be provided!")
        p = providers.get(pid)
        if p is None:
            raise Failure(404, f"No external auth provider found with the id {pid!r}.",
                          "Configured providers: " + ", ".join(providers))
        body = {"access_token": "", "token_extra": None, "url": f"{base_url}/external-auth/{p.id}",
                "type": p.type, "username": "", "password": "", "expires": ZERO_TIME}
        if link is not None and state(link)[0]:
            verdict = await calls.verdict(p, link.access_token)
            if verdict.valid:
                await off_loop(audit, db, caller, p.id, "token read", caller.kind,
                               f"{caller.kind} token {caller.key_id}")
                body.update(access_token=link.access_token, url="",
                            username=link.access_token, expires=shown(link.expires_at))
        return answer(body, NO_STORE)

    async def healthz(request: Request) -> Response:
        await off_loop(db.rows, "SELECT 1")
        return answer({"status": "ok"})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await calls.close()
            db.close()

    prefix = "/api/v2/external-auth"
    return Starlette(
        routes=[
            Route(prefix, list_links, methods=["GET"]),
            Route(prefix + "/{externalauth}", get_by_id, methods=["GET"]),
            Route(prefix + "/{externalauth}/device", device_start, methods=["GET"]),
            Route(prefix + "/{externalauth}/device", device_exchange, methods=["POST"]),
            Route(HANDOFF, hand_off, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        exception_handlers={Exception: failed, Failure: failed},
        lifespan=lifespan,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="extauth's answers, bare")
    parser.add_argument("--db", required=True, help="a SQLite file or a postgresql:// URL")
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8082)
    args = parser.parse_args()
    app = create_app(args.db, args.config, f"http://{args.host}:{args.port}")
    uvicorn.run(app, host=args.host, port=args.port, workers=1, log_level="warning",
                access_log=False, server_header=False, timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main()
