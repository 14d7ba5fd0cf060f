"""The contract: openapi.yaml is valid, fully bound, and what the server serves."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import yaml
from openapi_spec_validator import OpenAPIV30SpecValidator, validate
from openapi_spec_validator.readers import read_from_filename

import handlers.agents
import handlers.external_auth
import handlers.health
import handlers.pages
from extauth.app import create_app, spec_path
from extauth.settings import Settings
from tests.conftest import Api, TestClient

SPEC = yaml.safe_load(spec_path().read_text())
METHODS = {"get", "post", "put", "delete", "patch", "head", "options", "trace"}


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in SPEC["paths"].items()
            for method, op in item.items() if method in METHODS]


def test_spec_is_valid_openapi_3_0() -> None:
    spec, base_uri = read_from_filename(str(spec_path()))
    validate(spec, base_uri=base_uri, cls=OpenAPIV30SpecValidator)
    assert spec["openapi"] == "3.0.3"


HANDLERS = {m.__name__: m for m in (handlers.agents, handlers.external_auth, handlers.health,
                                    handlers.pages)}


def test_every_operation_id_is_unique_and_bound_to_a_handler() -> None:
    ids = [op["operationId"] for _, _, op in _operations()]
    assert len(ids) == len(set(ids))
    for op_id in ids:
        module, _, name = op_id.rpartition(".")
        assert module in HANDLERS, op_id
        assert callable(getattr(HANDLERS[module], name)), op_id


def test_every_public_handler_is_in_the_spec() -> None:
    ids = {op["operationId"] for _, _, op in _operations()}
    for module in HANDLERS.values():
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if fn.__module__ == module.__name__ and not name.startswith("_"):
                assert f"{module.__name__}.{name}" in ids, name


def _resolved(response: dict[str, Any]) -> dict[str, Any]:
    ref = response.get("$ref", "")
    return SPEC["components"]["responses"][ref.split("/")[-1]] if ref else response


def test_every_operation_declares_its_errors_with_the_response_schema() -> None:
    """API errors are Coder's Response JSON; a page's errors are pages (HTML), and a
    page without a session sends the browser to sign in (303) instead of a 401."""
    for path, method, op in _operations():
        codes = set(op["responses"])
        page = op.get("x-extauth-page") is True
        if op.get("security") != []:
            assert {"303" if page else "401", "500"} <= codes, (method, path)
        if op.get("x-extauth-signed-out") == "sign-in" or (page and op.get("security") != []):
            assert op["responses"]["303"] == {"$ref": "#/components/responses/SignInFirst"}
        if "{externalauth}" in path:
            assert "404" in codes, (method, path)
        for code, response in op["responses"].items():
            if code.startswith(("4", "5")):
                content = _resolved(response)["content"]
                if page:
                    assert content["text/html"]["schema"] == {"type": "string"}, (path, code)
                    assert set(content) <= {"text/html", "application/json"}, (path, code)
                if not page or "application/json" in content:
                    schema = content["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Response"}, (path, code)


def test_a_missing_handler_stops_start_up(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    broken = yaml.safe_load(spec_path().read_text())
    broken["paths"]["/healthz"]["get"]["operationId"] = "handlers.health.does_not_exist"
    written = tmp_path / "openapi.yaml"
    written.write_text(yaml.safe_dump(broken))
    monkeypatch.setattr("extauth.app.spec_path", lambda: written)
    app = create_app(Settings(database=str(tmp_path / "x.db")))
    with pytest.raises(Exception, match="does_not_exist"):
        TestClient(app).__enter__()  # start-up: the lifespan runs, operations resolve


def test_served_spec_is_the_file(api: Api) -> None:
    r = api.get("/api/v2/openapi.json")
    assert r.status_code == 200
    assert r.json() == SPEC


def test_swagger_ui_is_served(api: Api) -> None:
    r = api.get("/api/v2/ui/")
    assert r.status_code == 200
    assert "swagger-ui" in r.text
    assert "/api/v2/openapi.json" in r.text


def test_swagger_ui_edges_answer_like_the_api(api: Api) -> None:
    """The UI is its own small app: its redirects, static files and errors."""
    r = api.get("/api/v2/ui", follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (307, "/api/v2/ui/")
    assert api.get("/api/v2/ui/swagger-ui.css").headers["content-type"].startswith("text/css")
    r = api.get("/api/v2/ui/nothing-here")
    assert (r.status_code, r.json()) == (404, {"message": "Route not found."})
    r = api.post("/api/v2/ui/")
    assert (r.status_code, r.json()["message"]) == (405, "Method not allowed.")


def test_healthz(api: Api) -> None:
    r = api.get("/healthz")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})
