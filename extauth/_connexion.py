"""connexion, made cheaper through its extension points.

Profiling extauth under load showed connexion re-deriving per request what
never changes: ``inspect.signature`` of the security function (twice per
request), the handler's whole decorator stack, URI parsers and validators
(rebuilt on every call). Here each is done once, within connexion's
extension points (its middleware list and the classes its layers use):

- where every alternative security scheme of an operation names one
  token-info function that finds the token itself (``picks_its_own_token``),
  one call of it instead of one try per scheme, each inspecting the
  function's signature;
- an operation class whose decorated handler is built once and kept;
- a handler-argument builder that works out once per operation which
  parameters the handler takes and how each is typed (connexion does it on
  every call, and parses a form body even for a GET);
- a parameter validator that compiles each parameter's schema once (connexion
  deep-copies it and builds a new jsonschema validator for every value);
- a request-validation middleware whose per-operation parts (URI parser,
  parameter validator, body validators) are built once, not per request;
- a middleware chain without the layers a request does not need: the Swagger
  UI is served apart (``ui_app``), and response validation is in the chain
  only when it is switched on.

Behaviour is unchanged; the tests run through these classes, and again through
connexion's own (``asgi_app(stock=True)``, ``EXTAUTH_STOCK_CONNEXION=1``).

This is the only module that uses private names of connexion (its operation
class through ``_middleware_app``, copies of two ``__call__`` methods, private
helpers of its parameter decorator, overridden private methods, and where its
router leaves the operation it matched: ``operation_id``). Each
connexion function copied or overridden here is listed, with a hash of its
source, in ``tests/test_connexion_guard.py``: a connexion upgrade that changes
one fails that test until someone has compared the two.

Both apps give bad JSON bodies Coder's answers through
``extauth.json_bodies.JSONBodyValidator``, which uses only connexion's public
validator protocol (``validator_map``) and so lives outside this module.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from connexion import AsyncApp, context
from connexion.apps.asynchronous import AsyncApi, AsyncOperation
from connexion.decorators import StarletteDecorator
from connexion.decorators.parameter import (
    CONTEXT_NAME,
    _get_query_defaults,
    _get_val_from_param,
    sanitized,
    unwrap_decorators,
)
from connexion.exceptions import OAuthResponseProblem
from connexion.middleware.abstract import ROUTING_CONTEXT
from connexion.middleware.context import ContextMiddleware
from connexion.middleware.exceptions import ExceptionMiddleware
from connexion.middleware.lifespan import LifespanMiddleware
from connexion.middleware.main import ConnexionMiddleware
from connexion.middleware.request_validation import (
    RequestValidationAPI,
    RequestValidationMiddleware,
    RequestValidationOperation,
)
from connexion.middleware.response_validation import ResponseValidationMiddleware
from connexion.middleware.routing import RoutingMiddleware
from connexion.middleware.security import SecurityAPI, SecurityMiddleware, SecurityOperation
from connexion.middleware.server_error import ServerErrorMiddleware
from connexion.middleware.swagger_ui import SwaggerUIMiddleware
from connexion.operations import OpenAPIOperation
from connexion.options import SwaggerUIOptions
from connexion.utils import (
    deep_merge,
    get_function_from_name,
    inspect_function_arguments,
    is_json_mimetype,
    is_null,
    is_nullable,
)
from connexion.validators import FormDataValidator
from connexion.validators import ParameterValidator as _ParameterValidator
from jsonschema import Draft4Validator, ValidationError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from extauth.json_bodies import JSONBodyValidator

TokenInfo = Callable[..., Awaitable[dict[str, Any] | None]]


_INFO_FUNC_KEYS = ("x-apikeyInfoFunc", "x-bearerInfoFunc")


def operation_id(scope: Scope) -> str:
    """The operationId connexion's router matched the request to ("" before
    routing, or for no operation): its routing layer leaves it in the scope's
    extensions for the layers after it, security among them."""
    routing = scope.get("extensions", {}).get(ROUTING_CONTEXT, {})
    return str(routing.get("operation_id") or "")


def picks_its_own_token(function: TokenInfo) -> TokenInfo:
    """Mark a token-info function that finds the token in the request itself,
    whichever scheme it is named by (``function(None, request=request)``), and
    raises connexion's ``OAuthProblem`` when there is none."""
    function.picks_its_own_token = True  # type: ignore[attr-defined]
    return function


def _own_token_check(security: list[dict[str, list[str]]] | None,
                     schemes: dict[str, dict[str, Any]]) -> TokenInfo | None:
    """The one token-info function behind every scheme of ``security``, if it
    picks its own token and no scheme asks for scopes; otherwise None."""
    names = set()
    for requirement in security or []:
        if len(requirement) != 1:  # no requirement, or schemes that must all pass
            return None
        for scheme_name, scopes in requirement.items():
            scheme = schemes[scheme_name]
            name = next((scheme[k] for k in _INFO_FUNC_KEYS if k in scheme), None)
            if scopes or name is None:
                return None
            names.add(name)
    if len(names) != 1:
        return None
    function: TokenInfo = get_function_from_name(names.pop())
    return function if getattr(function, "picks_its_own_token", False) else None


class _OneCallSecurityOperation(SecurityOperation):
    """connexion tries each alternative scheme in turn, each parsing its part of
    the request; when they all name one function that picks the token itself,
    that function is called once."""

    def _get_verification_fn(self) -> Any:
        function = _own_token_check(self.security, self.security_schemes)
        if function is None:
            return super()._get_verification_fn()

        async def verify(request: Any) -> None:
            token_info = await function(None, request=request)
            if token_info is None:
                raise OAuthResponseProblem(detail="Provided authorization is not valid")
            request.context.update({"user": token_info.get("sub"), "token_info": token_info})

        return verify


class _OneCallSecurityApi(SecurityAPI):
    def make_operation(self, operation: Any) -> SecurityOperation:
        return _OneCallSecurityOperation.from_operation(
            operation, next_app=self.next_app,
            security_handler_factory=self.security_handler_factory)


class Security(SecurityMiddleware):
    api_cls = _OneCallSecurityApi


class _Arguments:
    """The handler's keyword arguments, as connexion's parameter decorator builds
    them for an OpenAPI 3 operation with a JSON body (or none): path and query
    parameters typed by their schemas, query defaults, the body under its
    ``x-body-name``, and context values (``token_info``, ``user``) the handler
    names. What depends only on the operation is worked out here, once."""

    def __init__(self, operation: Any, function: Callable[..., Any]) -> None:
        arguments, _ = inspect_function_arguments(unwrap_decorators(function))
        self.arguments = set(arguments)
        params = operation.parameters
        self.path = {p["name"]: (sanitized(p["name"]), p) for p in params if p["in"] == "path"}
        self.query = {p["name"]: (sanitized(p["name"]), p) for p in params
                      if p["in"] == "query" and sanitized(p["name"]) in self.arguments}
        self.query_defaults = _get_query_defaults(
            {p["name"]: p for p in params if p["in"] == "query"})
        self.body_name = ""
        if operation.is_request_body_defined:
            name = sanitized(operation.body_name(None))
            if name in self.arguments:
                self.body_name = name
                self.operation = operation
        self.wants_context = CONTEXT_NAME in self.arguments

    @staticmethod
    def applies(operation: Any, function: Callable[..., Any], pythonic: bool) -> bool:
        """Whether this builder gives the same arguments as connexion's for this
        operation; otherwise connexion's own decorator is used."""
        _, has_kwargs = inspect_function_arguments(unwrap_decorators(function))
        return (isinstance(operation, OpenAPIOperation) and not pythonic and not has_kwargs
                and all(is_json_mimetype(c) for c in operation.consumes))

    async def __call__(self, request: Any) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        for name, value in request.path_params.items():
            entry = self.path.get(name)
            if entry is None:  # not in the spec: passed on as it came
                kwargs[sanitized(name)] = value
            else:
                kwargs[entry[0]] = _get_val_from_param(value, entry[1])
        if self.query:
            given = request.query_params
            if self.query_defaults:
                given = deep_merge(copy.deepcopy(self.query_defaults), given)
            for name, value in given.items():
                entry = self.query.get(name)
                if entry is not None:
                    kwargs[entry[0]] = _get_val_from_param(value, entry[1])
        if self.body_name:
            body = await request.get_body()
            if is_null(body):
                # As connexion: the schema of the request's own content type says
                # whether no body is null or the default.
                schema = self.operation.body_schema(request.content_type)
                if is_nullable(schema):
                    body = None
                elif body is None:
                    body = copy.deepcopy(schema.get("default", {}))
            kwargs[self.body_name] = body
        found = context.context
        for key, value in found.items():
            if key in self.arguments:
                kwargs[key] = value
        if self.wants_context:
            kwargs[CONTEXT_NAME] = found
        return kwargs


class _DecorateOnce(StarletteDecorator):
    """connexion's decorator rebuilds the parameter and response decorators (and
    inspects the handler's signature and builds a URI parser) on every call;
    they depend only on the operation, so build them once. The request itself
    is still per call."""

    def __init__(self, operation: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._operation = operation
        self._uri_parser = operation.uri_parser_class(
            operation.parameters, operation.body_definition())

    def decorate(self, function: Callable[..., Any]) -> Callable[..., Any]:
        if not _Arguments.applies(self._operation, function, self.pythonic_params):
            decorated: Callable[..., Any] = super().decorate(function)
            return decorated
        function = self._sync_async_decorator(function)
        arguments = _Arguments(self._operation, function)

        @functools.wraps(function)
        async def with_arguments(request: Any) -> Any:
            return await function(**await arguments(request))

        respond = self._response_decorator_cls(framework=self.framework, jsonifier=self.jsonifier)
        decorated = respond(with_arguments)
        return decorated

    def __call__(self, function: Callable[..., Any]) -> Callable[..., Any]:
        decorated = self.decorate(function)
        uri_parser = self._uri_parser

        @functools.wraps(function)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            request = self.framework.get_request(
                uri_parser=uri_parser, scope=context.scope, receive=context.receive
            )
            return await decorated(request)

        return wrapper


class CachedOperation(AsyncOperation):
    """An operation whose decorated handler is built once, not per request."""

    spec_operation: Any = None

    @functools.cached_property
    def fn(self) -> Callable[..., Any]:
        return _DecorateOnce(self.spec_operation, pythonic_params=self.pythonic_params,
                             jsonifier=self.jsonifier)(self._fn)


class CachedApi(AsyncApi):
    def make_operation(self, operation: Any) -> AsyncOperation:
        cached = CachedOperation.from_operation(
            operation, pythonic_params=self.pythonic_params, jsonifier=self.jsonifier
        )
        cached.spec_operation = operation
        return cached


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


class _ValidateOnceOperation(RequestValidationOperation):
    """connexion's request validation, with the URI parser, the parameter
    validator and the body validators built when the app starts (connexion
    builds each of them again for every request)."""

    _MAX_BODY_VALIDATORS = 8  # per operation; the key holds the client's charset

    def __init__(self, next_app: ASGIApp, **kwargs: Any) -> None:
        super().__init__(next_app, **kwargs)
        op = self._operation
        self._uri_parser = op.uri_parser_class(op.parameters, op.body_definition())
        self._parameters = self._validator_map["parameter"](
            op.parameters,
            uri_parser=self._uri_parser,
            strict_validation=self.strict_validation,
            security_query_params=self.security_query_params,
        )
        self._bodies: dict[tuple[str, str], Any] = {}

    def _body_validator(self, mime_type: str, encoding: str) -> Any:
        key = (mime_type, encoding)
        validator = self._bodies.get(key)
        if validator is not None:
            return validator
        factory = self._validator_map["body"].get(mime_type)
        if factory is None:
            return None
        op = self._operation
        validator = factory(
            schema=op.body_schema(mime_type),
            required=op.request_body.get("required", False),
            nullable=is_nullable(op.body_definition(mime_type)),
            encoding=encoding,
            strict_validation=self.strict_validation,
            uri_parser=self._uri_parser,
        )
        if len(self._bodies) < self._MAX_BODY_VALIDATORS:
            self._bodies[key] = validator
        return validator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._parameters.validate(scope)
        if not self._operation.consumes:  # no request body: nothing else to check
            await self.next_app(scope, receive, send)
            return
        mime_type, encoding = self.extract_content_type(scope["headers"])
        self.validate_mime_type(mime_type)
        if self._operation.body_schema(mime_type):
            validator = self._body_validator(mime_type, encoding)
            if validator is not None:
                receive, scope = await validator.wrap_receive(receive, scope=scope)
        await self.next_app(scope, receive, send)


class _ValidateOnceApi(RequestValidationAPI):
    def make_operation(self, operation: Any) -> RequestValidationOperation:
        return _ValidateOnceOperation(
            self.next_app,
            operation=operation,
            strict_validation=self.strict_validation,
            validator_map=self.validator_map,
        )


class RequestValidation(RequestValidationMiddleware):
    api_cls = _ValidateOnceApi


# -- the app ------------------------------------------------------------------------


def asgi_app(import_name: str, *, lifespan: Any, validate_responses: bool,
             stock: bool = False) -> AsyncApp:
    """connexion's AsyncApp for the API: with the cheaper classes of this module,
    or (``stock``) with connexion's own classes and middleware chain, given
    only public options."""
    # Coder's JSON bodies, and the sign-in page's form.
    bodies = {"application/json": JSONBodyValidator,
              "application/x-www-form-urlencoded": FormDataValidator}
    if stock:
        # The spec and Swagger UI are served outside connexion (extauth.edge).
        return AsyncApp(import_name, lifespan=lifespan, validator_map={"body": bodies},
                        swagger_ui_options=SwaggerUIOptions(swagger_ui=False, serve_spec=False))
    app = AsyncApp(import_name, lifespan=lifespan, middlewares=middlewares(validate_responses),
                   validator_map={"body": bodies, "parameter": ParameterValidator})
    # connexion has no option for its operation class; its ASGI app takes one.
    app._middleware_app.api_cls = CachedApi
    return app


def middlewares(validate_responses: bool) -> list[Any]:
    """connexion's default chain, minus the Swagger UI (see ``ui_app``) and, when
    responses are not validated, the response-validation layer."""
    chain: list[Any] = [
        ServerErrorMiddleware,
        ExceptionMiddleware,
        RoutingMiddleware,
        Security,
        RequestValidation,
    ]
    if validate_responses:
        chain.append(ResponseValidationMiddleware)
    return [*chain, LifespanMiddleware, ContextMiddleware]


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    raise HTTPException(status_code=404)


def ui_app(spec: dict[str, Any], options: SwaggerUIOptions,
           error_handlers: list[tuple[type[Exception], Any]]) -> ConnexionMiddleware:
    """connexion's Swagger UI on its own: every request to it would otherwise walk
    one more router in the API's chain."""
    ui = ConnexionMiddleware(
        _not_found,
        middlewares=[ServerErrorMiddleware, ExceptionMiddleware, SwaggerUIMiddleware],
        swagger_ui_options=options,
    )
    ui.add_api(spec, base_path="")
    for exc_class, handler in error_handlers:
        ui.add_error_handler(exc_class, handler)
    return ui
