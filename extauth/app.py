"""``create_app(settings)``: the connexion AsyncApp serving ``openapi.yaml``.

The spec is the only route table. Around it sit the lifespan (database,
OAuth client, the ``Links`` and ``TokenHandoff`` services in request state),
the error handlers that give every non-2xx answer Coder's ``Response`` body,
and, with ``--demo``, the demo OAuth provider mounted at ``/demo/``.
"""

from __future__ import annotations

import gc
import http
import json
import logging
import os
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
    import connexion

from connexion.exceptions import (
    BadRequestProblem,
    ExtraParameterProblem,
    NonConformingResponse,
    ProblemException,
    Unauthorized,
)
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from connexion.options import SwaggerUIOptions
from connexion.validators.json import JSONRequestBodyValidator
from jsonschema import ValidationError
from starlette.exceptions import HTTPException
from starlette.types import Scope

from extauth._connexion import (
    CachedApi,
    ParameterValidator,
    middlewares,
    ui_app,
)
from extauth.crypto import Cipher
from extauth.edge import API_PREFIX, Edge
from extauth.errors import (
    BadRequestError,
    ExtauthError,
    UnauthorizedError,
    Validation,
)
from extauth.handoff import TokenHandoff
from extauth.links import Links
from extauth.providers.oauth import OAuthClient
from extauth.sessions import MISSING_DETAIL
from extauth.settings import Settings, load_settings
from extauth.store import Store

log = logging.getLogger("extauth")


def spec_path() -> Path:
    """``openapi.yaml``: inside the installed package, or at the checkout's root."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "openapi.yaml", here.parent / "openapi.yaml"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError("openapi.yaml is neither in the package nor at the checkout root")


def load_spec() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(spec_path().read_text(encoding="utf-8"))
    return spec


# -- request bodies -------------------------------------------------------------


class JSONBodyValidator(JSONRequestBodyValidator):
    """JSON bodies with Coder's messages; the schema validator is built once."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._compiled = super()._validator

    @property
    def _validator(self) -> Any:
        return self._compiled

    async def _parse(self, stream: Any, scope: Scope) -> Any:
        raw = b"".join([message async for message in stream])
        if not raw:
            return _EMPTY
        try:
            value = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
            # A lone surrogate ("\ud800") parses, but is not text: refuse it here
            # rather than fail when the value is sent on.
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeError:
            raise BadRequestError(
                "Request body must be valid JSON.", detail="the body is not valid UTF-8 text"
            ) from None
        except (ValueError, RecursionError) as exc:
            raise BadRequestError("Request body must be valid JSON.",
                                  detail=_clip(str(exc))) from None
        return value

    def _validate(self, body: Any) -> Any:
        if body is _EMPTY:
            raise BadRequestError("Request body must be valid JSON.", detail="the body is empty")
        errors = sorted(self._compiled.iter_errors(body), key=lambda e: list(e.path))
        if errors:
            raise BadRequestError(
                "Validation failed.",
                validations=[_validation(e) for e in errors[:10]],
            )
        return body


_EMPTY = object()
_CLIP = 200


def _clip(text: str) -> str:
    """Error texts quote the offending value: never echo a huge one back."""
    return text if len(text) <= _CLIP else text[:_CLIP] + "..."


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _validation(error: ValidationError) -> Validation:
    path = [str(p) for p in error.absolute_path]
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = next(
            (n for n in error.validator_value if n not in error.instance), "body"
        )
        return Validation(".".join([*path, missing]), f"{missing!r} is required")
    return Validation(_clip(".".join(path)) or "body", _clip(error.message))


# -- errors ------------------------------------------------------------------------


class _Allow:
    """The methods the spec declares for a request path, for 405 answers."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.routes: list[tuple[re.Pattern[str], str]] = []
        for path, item in spec.get("paths", {}).items():
            methods = sorted(m.upper() for m in item if m in _METHODS)
            if "GET" in methods:
                methods.append("HEAD")
            pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path))
            self.routes.append((re.compile(f"^{pattern}$"), ", ".join(sorted(methods))))

    def __call__(self, path: str) -> str:
        for pattern, methods in self.routes:
            if pattern.match(path):
                return methods
        return ""


_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


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
    if isinstance(exc, Unauthorized):
        detail = str(getattr(exc, "detail", "") or "")
        if detail == "No authorization token provided":
            if path.endswith("/callback"):
                return UnauthorizedError(
                    detail="Sign in first: open this URL once with "
                    "?coder_session_token=<your session token> (it sets the "
                    "coder_session_token cookie), or send that cookie."
                )
            return UnauthorizedError(detail=MISSING_DETAIL)
        return UnauthorizedError(detail=f"{detail.rstrip('.')}: expected 'Bearer <token>'.")
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


def _error_handler(allow: _Allow) -> Any:
    def handle(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
        err = _translate(exc, allow, request.url.path)
        headers = dict(err.headers)
        if err.status == 401:
            headers.setdefault(
                "WWW-Authenticate",
                'Bearer realm="extauth", error="invalid_token", '
                'error_description="The access token is invalid"',
            )
        return _json_response(err.status, err.body(), headers)

    return handle


# -- the outer ASGI layer -----------------------------------------------------------


def create_app(settings: Settings) -> Edge:
    """The ASGI app for ``settings``: connexion around ``openapi.yaml``."""
    spec = load_spec()
    store = Store(settings.db_path, Cipher(settings.encryption_keys))
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
        links.audit.purge()
        # Everything loaded so far lives as long as the process: keep it out of
        # the collector's way, and collect the young generation less often
        # (each request allocates many short-lived objects).
        gc.collect()
        gc.freeze()
        gc.set_threshold(7000, 20, 20)
        try:
            yield {"links": links, "handoff": handoff}
        finally:
            await handoff.watcher.aclose()
            await client.aclose()
            store.close()

    app = connexion.AsyncApp(
        __name__,
        lifespan=lifespan,
        middlewares=middlewares(settings.validate_responses),
        validator_map={
            "body": {"application/json": JSONBodyValidator},
            "parameter": ParameterValidator,
        },
    )
    # connexion has no option for its operation class; its ASGI app takes one.
    app._middleware_app.api_cls = CachedApi
    app.add_api(
        spec,
        base_path="",
        validate_responses=settings.validate_responses,
        resolver_error=None,
    )
    handler = _error_handler(_Allow(spec))
    handlers = [(exc_class, handler)
                for exc_class in (ExtauthError, ProblemException, HTTPException, Exception)]
    for exc_class, fn in handlers:
        app.add_error_handler(exc_class, fn)
    ui = ui_app(spec, SwaggerUIOptions(
        serve_spec=False,
        spec_path=f"{API_PREFIX}/openapi.json",
        swagger_ui_path=f"{API_PREFIX}/ui",
    ), handlers)
    return Edge(app, settings.max_body_bytes, spec_path().read_text(encoding="utf-8"), ui,
                demo_app)


def create_app_from_env() -> Edge:
    """Factory for uvicorn workers: settings come from ``EXTAUTH_*`` variables."""
    demo = os.environ.get("EXTAUTH_DEMO", "") == "1"
    return create_app(load_settings(demo=demo or None))
