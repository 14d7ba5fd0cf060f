"""connexion, made cheaper through its extension points.

Profiling extauth under load showed connexion re-deriving per request what
never changes: ``inspect.signature`` of the security function (twice per
request) and the handler's whole decorator stack (rebuilt on every call).
Both are done once here instead:

- security handlers (connexion's ``security_map``) that call the token-info
  function directly: it is ours, and its signature is known;
- an operation class whose decorated handler is built once and kept;
- a parameter validator that compiles each parameter's schema once (connexion
  deep-copies it and builds a new jsonschema validator for every value).

Behaviour is unchanged; the tests run through these classes.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from connexion import context
from connexion.apps.asynchronous import AsyncApi, AsyncOperation
from connexion.decorators import StarletteDecorator
from connexion.exceptions import OAuthResponseProblem
from connexion.security import ApiKeySecurityHandler, BearerSecurityHandler
from connexion.utils import is_null, is_nullable
from connexion.validators import ParameterValidator as _ParameterValidator
from jsonschema import Draft4Validator, ValidationError

TokenInfo = Callable[..., Awaitable[dict[str, Any] | None]]


class _DirectCheck:
    """``_generic_check`` without per-request signature inspection: our token-info
    function is ``async def f(token, request)``."""

    def _generic_check(self, func: TokenInfo, exception_msg: str) -> Any:
        async def wrapper(request: Any, *args: Any, required_scopes: Any = None) -> Any:
            token_info = await func(*args, request=request)
            if token_info is None:
                raise OAuthResponseProblem(detail=exception_msg)
            return token_info

        return wrapper


class ApiKeyHandler(_DirectCheck, ApiKeySecurityHandler):
    """apiKey schemes (header, cookie, query)."""


class BearerHandler(_DirectCheck, BearerSecurityHandler):
    """``Authorization: Bearer``."""


SECURITY_MAP = {"apiKey": ApiKeyHandler, "bearer": BearerHandler}


class _DecorateOnce(StarletteDecorator):
    """connexion's decorator rebuilds the parameter and response decorators (and
    inspects the handler's signature) on every call; they depend only on the
    handler, so build them once. The request itself is still per call."""

    def __call__(self, function: Callable[..., Any]) -> Callable[..., Any]:
        decorated = self.decorate(function)

        @functools.wraps(function)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            request = self.framework.get_request(
                uri_parser=self.uri_parser, scope=context.scope, receive=context.receive
            )
            return await decorated(request)

        return wrapper


class CachedOperation(AsyncOperation):
    """An operation whose decorated handler is built once, not per request."""

    @functools.cached_property
    def fn(self) -> Callable[..., Any]:
        return _DecorateOnce(pythonic_params=self.pythonic_params, jsonifier=self.jsonifier)(
            self._fn
        )


class CachedApi(AsyncApi):
    def make_operation(self, operation: Any) -> AsyncOperation:
        return CachedOperation.from_operation(
            operation, pythonic_params=self.pythonic_params, jsonifier=self.jsonifier
        )


class ParameterValidator(_ParameterValidator):
    """connexion's parameter validation, with each parameter's schema compiled once."""

    _compiled: dict[int, tuple[dict[str, Any], Any]] = {}

    @staticmethod
    def validate_parameter(parameter_type: str, value: Any, param: dict[str, Any],
                           param_name: str | None = None) -> str | None:
        if is_nullable(param) and is_null(value):
            return None
        if value is None:
            if param.get("required"):
                return f"Missing {parameter_type} parameter '{param['name']}'"
            return None
        # Keyed by identity: the spec's parameter dicts live as long as the app.
        entry = ParameterValidator._compiled.get(id(param))
        if entry is None or entry[0] is not param:
            compiled = Draft4Validator(param.get("schema", param),
                                       format_checker=Draft4Validator.FORMAT_CHECKER)
            entry = (param, compiled)
            ParameterValidator._compiled[id(param)] = entry
        try:
            entry[1].validate(value)
        except ValidationError as exc:
            return str(exc)
        return None
