"""Every non-2xx answer is Coder's Response JSON, connexion's own errors included."""

from __future__ import annotations

import pytest

from tests.conftest import Api
from tests.fake_provider import FakeProvider

DEVICE = "/api/v2/external-auth/fake/device"


def _error(r, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) <= {"message", "detail", "validations"}
    assert isinstance(body["message"], str) and body["message"]
    return body  # type: ignore[no-any-return]


@pytest.mark.parametrize("path", ["/", "/api/v2", "/api/v2/nothing", "/external-auth/fake/x",
                                  "/api/v2/external-auth/fake/device/extra"])
def test_unknown_route_is_404_route_not_found(api: Api, path: str) -> None:
    assert _error(api.get(path, headers=api.login()), 404) == {"message": "Route not found."}


@pytest.mark.parametrize("method, path, allow", [
    ("put", "/api/v2/external-auth/fake/device", "GET, HEAD, POST"),
    ("patch", "/api/v2/external-auth/fake", "DELETE, GET, HEAD"),
    ("post", "/api/v2/external-auth", "GET, HEAD"),
    ("delete", "/healthz", "GET, HEAD"),
])
def test_wrong_method_is_405_with_the_specs_methods(
    api: Api, method: str, path: str, allow: str
) -> None:
    r = api.request(method, path, headers=api.login())
    body = _error(r, 405)
    assert body["message"] == "Method not allowed."
    assert r.headers["allow"] == allow


def test_wrong_content_type_is_415(api: Api, fake: FakeProvider) -> None:
    r = api.post(DEVICE, headers={**api.login(), "Content-Type": "text/plain"},
                 content=b'{"device_code":"x"}')
    body = _error(r, 415)
    assert "application/json" in body["detail"]
    assert fake.requests == []


def test_huge_body_is_413(make_api, fake: FakeProvider) -> None:
    api = make_api(fake.config(), max_body_bytes=1024)
    r = api.post(DEVICE, headers=api.login(), json={"device_code": "x" * 2000})
    body = _error(r, 413)
    assert body["detail"] == "the limit is 1024 bytes"
    assert fake.requests == []


def test_deeply_nested_json_is_400(api: Api, fake: FakeProvider) -> None:
    raw = b'{"device_code": "x", "n": ' + b"[" * 20000 + b"]" * 20000 + b"}"
    r = api.post(DEVICE, headers={**api.login(), "Content-Type": "application/json"},
                 content=raw)
    _error(r, 400)
    assert fake.requests == []


@pytest.mark.parametrize("provider_id", [
    "a.b", "..", "%2e%2e", "caf\u00e9", "x" * 10_000, "fake%2Fdevice", "FAKE",
])
def test_odd_provider_ids_are_404(api: Api, provider_id: str) -> None:
    r = api.get(f"/api/v2/external-auth/{provider_id}", headers=api.login())
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/json"
