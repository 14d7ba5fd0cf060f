"""``create_app(settings)``: the connexion AsyncApp serving ``openapi.yaml``.

The spec is the only route table. Around it sit the lifespan (database,
OAuth client, the ``Links`` and ``TokenHandoff`` services in request state),
the error handlers that give every non-2xx answer Coder's ``Response`` body,
and, with ``--demo``, the demo OAuth provider mounted at ``/demo/``.
"""

from __future__ import annotations

import asyncio
import gc
import http
import json
import logging
import re
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import yaml

with warnings.catch_warnings():
    # connexion imports starlette.testclient, which warns that it will move
    # from httpx to httpx2; nothing here uses the test client.
    warnings.simplefilter("ignore")
    import connexion  # noqa: F401

from connexion.exceptions import (
    BadRequestProblem,
    ExtraParameterProblem,
    NonConformingResponse,
    ProblemException,
    Unauthorized,
)
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from connexion.options import SwaggerUIOptions
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp

from extauth import metrics, pages
from extauth._connexion import asgi_app, ui_app
from extauth.crypto import Cipher
from extauth.edge import API_PREFIX, Edge
from extauth.errors import (
    SIGNED_OUT,
    BadRequestError,
    ExtauthError,
    UnauthorizedError,
    database_unreachable,
)
from extauth.handoff import TokenHandoff
from extauth.links import Links
from extauth.observe import METHODS, Observed, Operations, path_pattern
from extauth.providers.oauth import OAuthClient
from extauth.sessions import MISSING_DETAIL
from extauth.settings import Settings, load_settings
from extauth.shutdown import GracePeriod, finish
from extauth.store import StoreUnavailableError, open_store

log = logging.getLogger("extauth")


def spec_path() -> Path:
    """``openapi.yaml``: inside the installed package, or at the checkout's root."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "openapi.yaml", here.parent / "openapi.yaml"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError("openapi.yaml is neither in the package nor at the checkout root")


# libyaml's parser when PyYAML has it: the spec is read at every start (and
# by every in-process test), and the pure-Python parser takes 8 times longer.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_spec(text: str) -> dict[str, Any]:
    spec: dict[str, Any] = yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 - a safe loader
    return spec


def load_spec() -> dict[str, Any]:
    return parse_spec(spec_path().read_text(encoding="utf-8"))


# -- errors ------------------------------------------------------------------------


class _Allow:
    """The methods the spec declares for a request path, for 405 answers."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.routes: list[tuple[re.Pattern[str], str]] = []
        for path, item in spec.get("paths", {}).items():
            methods = sorted(m.upper() for m in item if m in METHODS)
            if "GET" in methods:
                methods.append("HEAD")
            self.routes.append((path_pattern(path), ", ".join(sorted(methods))))

    def __call__(self, path: str) -> str:
        for pattern, methods in self.routes:
            if pattern.match(path):
                return methods
        return ""


class _Browser:
    """The paths a person opens in a browser, from the spec's marks.

    ``x-extauth-page: true``: the operation is a page, whose errors are pages
    too. ``x-extauth-signed-out: sign-in`` (and every page): without a session
    the browser is sent to the sign-in page, which comes back here, instead of
    getting a 401.
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        self.routes: list[tuple[re.Pattern[str], bool, bool]] = []
        for path, item in spec.get("paths", {}).items():
            ops = [op for method, op in item.items() if method in METHODS]
            page = any(op.get("x-extauth-page") is True for op in ops)
            sign_in = page or any(op.get("x-extauth-signed-out") == "sign-in" for op in ops)
            if sign_in:
                self.routes.append((path_pattern(path), page, sign_in))

    def __call__(self, path: str) -> tuple[bool, bool]:
        """(errors are pages, a missing session goes to sign in) for ``path``."""
        for pattern, page, sign_in in self.routes:
            if pattern.match(path):
                return page, sign_in
        return False, False


def _json_response(status: int, body: dict[str, Any], headers: dict[str, str]) -> ConnexionResponse:
    return ConnexionResponse(
        status_code=status,
        mimetype="application/json",
        content_type="application/json",
        body=json.dumps(body),
        headers=headers,
    )


def _translate(exc: Exception, allow: _Allow, path: str) -> ExtauthError:
    """Any exception that reaches the edge, as an ExtauthError."""
    if isinstance(exc, ExtauthError):
        return exc
    if isinstance(exc, StoreUnavailableError):
        log.warning("%s (at %s)", exc, path)
        return database_unreachable()
    if isinstance(exc, Unauthorized):
        # connexion's own 401: no security scheme found a token (or an
        # Authorization header without one). A token that was found is judged by
        # handlers.security, whose failures are ExtauthErrors.
        return UnauthorizedError(detail=MISSING_DETAIL)
    if isinstance(exc, ExtraParameterProblem):
        return BadRequestError("Validation failed.", detail=str(exc.detail))
    if isinstance(exc, BadRequestProblem):
        return BadRequestError("Invalid request.", detail=str(exc.detail or exc.title))
    if isinstance(exc, NonConformingResponse):
        log.error("response does not conform to openapi.yaml at %s: %s", path, exc.detail)
        return ExtauthError("An internal server error occurred.", status=500)
    if isinstance(exc, HTTPException):
        status = exc.status_code
        if status == 404:
            return ExtauthError("Route not found.", status=404)
        if status == 405:
            methods = allow(path)
            return ExtauthError(
                "Method not allowed.",
                detail=f"{path} accepts {methods}" if methods else "",
                status=405,
                headers={"Allow": methods},
            )
        if status == 415:
            return ExtauthError(
                "Unsupported Content-Type.",
                detail=f"{exc.detail} Send the body as application/json.",
                status=415,
            )
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = "Request failed"
        return ExtauthError(f"{phrase}.", detail=str(exc.detail or ""), status=status)
    log.exception("unexpected error at %s", path, exc_info=exc)
    return ExtauthError("An internal server error occurred.", status=500)


def _error_handler(allow: _Allow, browser: _Browser) -> Any:
    def handle(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
        path = request.url.path
        err = _translate(exc, allow, path)
        page, sign_in = browser(path)
        if sign_in and err.status == 401 and err.message == SIGNED_OUT:
            return ConnexionResponse(status_code=303, headers={
                "Location": pages.sign_in_url(path, request.url.query),
                "Cache-Control": "no-store",
            })
        headers = dict(err.headers)
        if page:
            return ConnexionResponse(
                status_code=err.status,
                mimetype="text/html",
                content_type="text/html; charset=utf-8",
                body=pages.error_page(err),
                headers={**headers, **pages.SECURITY_HEADERS},
            )
        if err.status == 401:
            headers.setdefault(
                "WWW-Authenticate",
                'Bearer realm="extauth", error="invalid_token", '
                'error_description="The access token is invalid"',
            )
        return _json_response(err.status, err.body(), headers)

    return handle


# -- the outer ASGI layer -----------------------------------------------------------


def create_app(settings: Settings) -> Observed:
    """The ASGI app for ``settings``: connexion around ``openapi.yaml``."""
    spec_text = spec_path().read_text(encoding="utf-8")
    spec = parse_spec(spec_text)
    store = open_store(settings.database, Cipher(settings.encryption_keys),
                       pool_size=settings.db_pool_size, timeout=settings.db_timeout)
    if settings.metrics_address:
        metrics.enable()
    demo_app = None
    if settings.demo:
        from extauth import demo

        demo_app, provider = demo.create(settings.base_url())
        settings = demo.with_demo_provider(settings, provider)

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        store.migrate()
        client = OAuthClient(timeout=settings.provider_timeout)
        links = Links(settings, store, client)
        handoff = TokenHandoff(links)
        purged = links.audit.purge()
        if purged:
            log.info("deleted %d audit event(s) older than %d days", purged,
                     settings.audit_retention_days)
        # Everything loaded so far lives as long as the process: keep it out of
        # the collector's way, and collect the young generation less often
        # (each request allocates many short-lived objects).
        gc.collect()
        gc.freeze()
        gc.set_threshold(7000, 20, 20)
        revoking = asyncio.ensure_future(links.revocations.run())
        grace = GracePeriod(settings.shutdown_seconds)
        grace.watch()
        try:
            yield {"links": links, "handoff": handoff}
        finally:
            await finish(grace, links, revoking)
            await handoff.watcher.aclose()
            await client.aclose()
            store.close()

    app = asgi_app(__name__, lifespan=lifespan, validate_responses=settings.validate_responses,
                   stock=settings.stock_connexion)
    app.add_api(
        spec,
        base_path="",
        validate_responses=settings.validate_responses,
        resolver_error=None,
    )
    handler = _error_handler(_Allow(spec), _Browser(spec))
    handlers = [(exc_class, handler)
                for exc_class in (ExtauthError, ProblemException, HTTPException, Exception)]
    for exc_class, fn in handlers:
        app.add_error_handler(exc_class, fn)
    def ui() -> ASGIApp:
        built: ASGIApp = ui_app(spec, SwaggerUIOptions(
            serve_spec=False,
            spec_path=f"{API_PREFIX}/openapi.json",
            swagger_ui_path=f"{API_PREFIX}/ui",
        ), handlers)
        return built

    edge = Edge(app, settings.max_body_bytes, spec_text, json.dumps(spec).encode(), ui,
                demo_app)
    return Observed(edge, Operations(spec, [p.id for p in settings.providers]))


def create_app_from_env() -> Observed:
    """Factory for uvicorn workers: settings come from ``EXTAUTH_*`` variables."""
    return create_app(load_settings())
