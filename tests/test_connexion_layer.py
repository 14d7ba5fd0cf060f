"""extauth's cheaper connexion classes (``extauth/_connexion.py``) against stock
connexion (``asgi_app(stock=True)``): the same spec, the same handlers, the
same answers.

The handlers echo the keyword arguments they were called with, so any
difference in how arguments are typed, defaulted or named shows up, as does
any difference in validation and security.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import connexion  # noqa: F401
    from starlette.testclient import TestClient

from connexion.exceptions import OAuthProblem, OAuthResponseProblem
from connexion.lifecycle import ConnexionResponse

from extauth._connexion import _own_token_check, asgi_app, picks_its_own_token
from extauth.errors import ExtauthError

HERE = __name__

SPEC: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "echo", "version": "1"},
    "components": {"securitySchemes": {
        "key": {"type": "apiKey", "in": "header", "name": "X-Key",
                "x-apikeyInfoFunc": f"{HERE}.key_info"},
        # Two schemes naming one function that picks its own token.
        "ownHeader": {"type": "apiKey", "in": "header", "name": "X-Own",
                      "x-apikeyInfoFunc": f"{HERE}.own_token"},
        "ownBearer": {"type": "http", "scheme": "bearer",
                      "x-bearerInfoFunc": f"{HERE}.own_token"},
    }},
    "paths": {
        "/items/{item_id}": {
            "parameters": [{"name": "item_id", "in": "path", "required": True,
                            "schema": {"type": "integer"}}],
            "get": {
                "operationId": f"{HERE}.get_item",
                "parameters": [
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 10}},
                    {"name": "tags", "in": "query", "style": "form", "explode": False,
                     "schema": {"type": "array", "items": {"type": "string"}}},
                    {"name": "flag", "in": "query", "schema": {"type": "boolean"}},
                    {"name": "not-taken", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {"200": {"description": "the arguments"}},
            },
            "post": {
                "operationId": f"{HERE}.post_item",
                "security": [{"key": []}],
                "requestBody": {"x-body-name": "payload", "content": {"application/json": {
                    "schema": {"type": "object", "nullable": True, "default": {"a": 1}}}}},
                "responses": {"200": {"description": "the arguments"}},
            },
        },
        "/notes": {
            "post": {
                "operationId": f"{HERE}.post_note",
                "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": {"200": {"description": "the arguments"}},
            },
        },
        "/things/{name}": {
            "put": {
                "operationId": f"{HERE}.put_thing",
                "security": [{"ownHeader": []}, {"ownBearer": []}],
                "parameters": [{"name": "name", "in": "path", "required": True,
                                "schema": {"type": "string", "maxLength": 5}}],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"type": "object", "required": ["n"],
                               "properties": {"n": {"type": "number"}}}}}},
                "responses": {"200": {"description": "the arguments"}},
            },
        },
    },
}


async def key_info(token: str, request: Any) -> dict[str, Any] | None:
    return {"sub": f"user-{token}"} if token.startswith("k") else None


@picks_its_own_token
async def own_token(token: str | None, request: Any) -> dict[str, Any]:
    """The header first, then the bearer token, whichever scheme asked."""
    bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
    value = request.headers.get("x-own") or bearer
    if not value:
        raise OAuthProblem(detail="No authorization token provided")
    if value == "bad":
        raise OAuthResponseProblem(detail="bad token")
    return {"sub": f"own-{value}"}


def _echo(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: [type(v).__name__, v if k != "context_" else sorted(v)]
            for k, v in sorted(kwargs.items())}


async def get_item(item_id: int, limit: int, tags: list[str] | None = None,
                   flag: bool | None = None) -> dict[str, Any]:
    return _echo({"item_id": item_id, "limit": limit, "tags": tags, "flag": flag})


async def post_item(item_id: int, payload: Any, user: str, token_info: dict[str, Any]
                    ) -> dict[str, Any]:
    return _echo({"item_id": item_id, "payload": payload, "user": user,
                  "token_info": token_info})


async def post_note(body: Any) -> dict[str, Any]:
    return _echo({"body": body})


def put_thing(name: str, body: dict[str, Any], context_: dict[str, Any]) -> dict[str, Any]:
    return _echo({"name": name, "body": body, "context_": context_})


def _error(request: Any, exc: ExtauthError) -> ConnexionResponse:
    return ConnexionResponse(status_code=exc.status, content_type="application/json",
                             body=json.dumps(exc.body()))


def _app(ours: bool) -> Any:
    app = asgi_app(__name__, lifespan=None, validate_responses=True, stock=not ours)
    app.add_api(SPEC, validate_responses=True)
    app.add_error_handler(ExtauthError, _error)
    return app


@pytest.fixture(scope="module")
def clients() -> Iterator[tuple[TestClient, TestClient]]:
    with TestClient(_app(False)) as stock, TestClient(_app(True)) as ours:
        yield stock, ours


KEY = {"X-Key": "k1"}
OWN = {"X-Own": "o1"}
REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/items/5", {}),
    ("GET", "/items/5?limit=3&tags=a,b&flag=true&not-taken=x", {}),
    ("GET", "/items/5?tags=a&tags=b&limit=7&limit=8", {}),
    ("GET", "/items/x", {}),
    ("GET", "/items/5?limit=many", {}),
    ("GET", "/items/5?flag=maybe", {}),
    ("POST", "/items/5", {"json": {"b": 2}, "headers": KEY}),
    ("POST", "/items/5", {"headers": KEY}),
    ("POST", "/items/5", {"content": b"null",
                          "headers": {**KEY, "Content-Type": "application/json"}}),
    ("POST", "/items/5", {"json": [1], "headers": KEY}),
    ("POST", "/items/5", {"json": {"b": 2}}),
    ("POST", "/items/5", {"json": {"b": 2}, "headers": {"X-Key": "bad"}}),
    ("POST", "/items/5", {"content": b"a=1", "headers": {
        **KEY, "Content-Type": "application/x-www-form-urlencoded"}}),
    ("PUT", "/things/abc", {"json": {"n": 1.5}, "headers": OWN}),
    ("PUT", "/things/abc", {"json": {"n": 1.5}, "headers": {"Authorization": "Bearer b1"}}),
    ("PUT", "/things/abc", {"json": {"n": 1.5}, "headers": {"X-Own": "bad"}}),
    ("PUT", "/things/abc", {"json": {"n": 1.5}, "headers": {"Authorization": "Bearer bad"}}),
    ("PUT", "/things/abc", {"json": {"n": 1.5}}),
    ("PUT", "/things/abc", {"json": {"n": "x"}, "headers": OWN}),
    ("PUT", "/things/abcdefg", {"json": {"n": 1}, "headers": OWN}),
    ("PUT", "/things/abc", {"headers": OWN}),
    ("DELETE", "/things/abc", {"headers": OWN}),
    ("POST", "/notes", {"json": {"x": 1}}),
    ("POST", "/notes", {"headers": {"Content-Type": "application/json"}}),
    ("POST", "/notes", {}),
    ("GET", "/nowhere", {}),
]


@pytest.mark.parametrize(("method", "path", "kwargs"), REQUESTS,
                         ids=[f"{m} {p} {sorted(k)}" for m, p, k in REQUESTS])
def test_same_answer_as_stock_connexion(clients: tuple[TestClient, TestClient], method: str,
                                        path: str, kwargs: dict[str, Any]) -> None:
    stock, ours = (c.request(method, path, **kwargs) for c in clients)
    assert ours.status_code == stock.status_code, (stock.text, ours.text)
    assert ours.headers.get("content-type") == stock.headers.get("content-type")
    assert ours.content == stock.content


def test_handlers_saw_typed_arguments(clients: tuple[TestClient, TestClient]) -> None:
    """The comparison above is only worth something if the echo carries the types."""
    _, ours = clients
    got = ours.get("/items/5?tags=a,b&flag=true").json()
    assert got == {"item_id": ["int", 5], "limit": ["int", 10], "tags": ["list", ["a", "b"]],
                   "flag": ["bool", True]}
    got = ours.post("/items/5", json={"b": 2}, headers=KEY).json()
    assert got["payload"] == ["dict", {"b": 2}]
    assert got["user"] == ["str", "user-k1"]
    got = ours.put("/things/abc", json={"n": 2}, headers=OWN).json()
    assert got["context_"][1] == ["token_info", "user"]
    assert ours.put("/things/abc", json={"n": 2}, headers={"X-Own": "bad"}).status_code == 401


def test_one_call_for_all_schemes_only_where_it_applies() -> None:
    schemes = SPEC["components"]["securitySchemes"]
    both = [{"ownHeader": []}, {"ownBearer": []}]
    assert _own_token_check(both, schemes) is own_token
    assert _own_token_check([{"key": []}], schemes) is None  # not marked
    assert _own_token_check([*both, {"key": []}], schemes) is None  # two functions
    assert _own_token_check([{"ownHeader": ["admin"]}], schemes) is None  # scopes
    assert _own_token_check([{"ownHeader": [], "ownBearer": []}], schemes) is None  # AND
    assert _own_token_check([{}], schemes) is None  # anonymous allowed
    assert _own_token_check(None, schemes) is None
