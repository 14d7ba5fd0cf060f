"""What extauth/_connexion.py takes from connexion, guarded.

The cheaper connexion classes copy or override connexion functions, and call
private helpers of its parameter decorator. This test records a hash of the
source of each of them: after an upgrade of connexion, any that changed fails
here until someone has compared connexion's new code with ours (and updated
the hash). The app also builds from connexion's own classes
(``EXTAUTH_STOCK_CONNEXION=1``); the in-process tests run both ways.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import warnings
from typing import Any

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import connexion  # noqa: F401

from connexion.apps.asynchronous import AsyncApi
from connexion.middleware.main import ConnexionMiddleware

from extauth._connexion import CachedApi, asgi_app, middlewares

# connexion 3.3.0. The object, and what of ours depends on it.
GUARDED: dict[str, tuple[str, str]] = {
    # _OneCallSecurityOperation and _OneCallSecurityApi
    "connexion.middleware.security.SecurityOperation._get_verification_fn":
        ("3e06412c6ce7", "overridden"),
    "connexion.middleware.security.SecurityAPI.make_operation": ("8051a99c0921", "overridden"),
    "connexion.security.AbstractSecurityHandler._generic_check":
        ("28e23fb07ef6", "what a token-info result means, copied into verify()"),
    "connexion.security.SecurityHandlerFactory.verify_security":
        ("eb34fea712e0", "the context it sets, copied into verify()"),
    # _Arguments: connexion's parameter decorator, worked out once per operation
    "connexion.decorators.parameter.AsyncParameterDecorator.__call__": ("c3223e31eb92", "copied"),
    "connexion.decorators.parameter.BaseParameterDecorator._maybe_get_body":
        ("181830672481", "copied"),
    "connexion.decorators.parameter.prep_kwargs": ("46eb57dd9685", "copied"),
    "connexion.decorators.parameter.get_arguments": ("b2912a96f010", "copied"),
    "connexion.decorators.parameter._get_path_arguments": ("dce2f42b8282", "copied"),
    "connexion.decorators.parameter._get_query_arguments": ("77f3e0a63d78", "copied"),
    "connexion.decorators.parameter._get_body_argument": ("ad0202326b99", "copied"),
    "connexion.decorators.parameter._get_val_from_param": ("23ae7326c64a", "called"),
    "connexion.decorators.parameter._get_query_defaults": ("e8c78eeae75a", "called"),
    # _DecorateOnce, CachedOperation, CachedApi
    "connexion.decorators.main.BaseDecorator.decorate": ("ecc6529a1827", "overridden"),
    "connexion.decorators.main.ASGIDecorator.__call__": ("7397ac94437e", "overridden"),
    "connexion.apps.asynchronous.AsyncOperation.fn": ("9cad70e32840", "overridden"),
    "connexion.apps.asynchronous.AsyncApi.make_operation": ("555eaf3ca123", "overridden"),
    "connexion.apps.asynchronous.AsyncApp.__init__":
        ("624f5070177b", "asgi_app sets the api_cls of the app it builds"),
    # ParameterValidator
    "connexion.validators.parameter.ParameterValidator.validate_parameter":
        ("2d9293659a1c", "overridden"),
    # _ValidateOnceOperation and _ValidateOnceApi
    "connexion.middleware.request_validation.RequestValidationOperation.__call__":
        ("af4727162119", "copied; it also calls JSONBodyValidator"),
    "connexion.middleware.request_validation.RequestValidationAPI.make_operation":
        ("55b32cb8b0ab", "overridden"),
    # JSONBodyValidator replaces the base class's protocol method
    "connexion.validators.abstract.AbstractRequestBodyValidator.wrap_receive":
        ("44c469448a6e", "replaced"),
    # operation_id(): where the router leaves the operation it matched
    "connexion.middleware.routing.RoutingOperation.__call__":
        ("634b2f09f237", "what it puts in the scope, read by operation_id()"),
    # middlewares(): connexion's default chain, less what a request does not need
    "connexion.middleware.main.ConnexionMiddleware.default_middlewares": ("738abcc95f63", "copied"),
}


def _resolve(dotted: str) -> Any:
    parts = dotted.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            target: Any = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            target = inspect.getattr_static(target, name)
        return target
    raise ImportError(dotted)


def _fingerprint(dotted: str) -> str:
    target = _resolve(dotted)
    if isinstance(target, list):
        text = "\n".join(f"{c.__module__}.{c.__qualname__}" for c in target)
    else:
        if isinstance(target, property):
            target = target.fget
        if isinstance(target, (staticmethod, classmethod)):
            target = target.__func__
        text = inspect.getsource(target)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@pytest.mark.parametrize("dotted", list(GUARDED))
def test_connexion_code_we_rely_on_is_unchanged(dotted: str) -> None:
    recorded, use = GUARDED[dotted]
    now = _fingerprint(dotted)
    assert now == recorded, (
        f"connexion's {dotted} ({use} in extauth/_connexion.py) changed: compare its new "
        f"source with extauth/_connexion.py, adapt ours, then record {now!r} here")


def test_the_fast_app_uses_extauths_classes() -> None:
    app = asgi_app(__name__, lifespan=None, validate_responses=False)
    assert app.middleware.middlewares == middlewares(False)
    assert app.middleware.app.api_cls is CachedApi


def test_the_stock_app_uses_connexions_own_classes() -> None:
    app = asgi_app(__name__, lifespan=None, validate_responses=True, stock=True)
    assert app.middleware.middlewares == ConnexionMiddleware.default_middlewares
    assert app.middleware.app.api_cls is AsyncApi
