"""Device flow: start (RFC 8628 3.1) and exchange (3.4), against the fake provider."""

from __future__ import annotations

import base64

import pytest

from tests.conftest import Api, started_device_code
from tests.fake_provider import Answer, FakeProvider

DEVICE = "/api/v2/external-auth/fake/device"


def test_device_start_returns_the_providers_authorization(api: Api, fake: FakeProvider) -> None:
    r = api.get(DEVICE, headers=api.login())
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["user_code"] == "WDJB-MJHT"
    assert body["device_code"].startswith("dc_")
    assert body["verification_uri"] == f"{fake.url}/device"
    assert (body["expires_in"], body["interval"]) == (900, 5)
    seen = fake.seen("device")[0]
    assert seen.headers["accept"] == "application/json"
    assert seen.form["scope"] == "repo read:user"
    assert seen.headers["authorization"] == "Basic " + base64.b64encode(
        f"{fake.CLIENT_ID}:{fake.CLIENT_SECRET}".encode()).decode()


def test_device_start_without_device_flow_is_400(make_api, fake: FakeProvider) -> None:
    api = make_api(fake.config(device_flow=False))
    r = api.get(DEVICE, headers=api.login())
    assert r.status_code == 400
    assert r.json() == {"message": "Git auth device flow not supported."}
    assert fake.requests == []


def test_device_start_reads_a_form_encoded_answer(api: Api, fake: FakeProvider) -> None:
    fake.script("device", Answer(form={
        "device_code": "dc_form", "user_code": "ABCD-EFGH",
        "verification_uri": "https://github.com/login/device",
        "expires_in": "899", "interval": "5"}))
    r = api.get(DEVICE, headers=api.login())
    assert r.status_code == 200
    assert r.json()["device_code"] == "dc_form"
    assert r.json()["expires_in"] == 899


@pytest.mark.parametrize("expires_in", [None, 0, -5])
def test_device_start_without_a_lifetime_says_the_one_kept(api: Api, fake: FakeProvider,
                                                            expires_in: int | None) -> None:
    body = {"device_code": "dc_x", "user_code": "ABCD-EFGH",
            "verification_uri": "https://github.com/login/device", "interval": 5}
    if expires_in is not None:
        body["expires_in"] = expires_in
    fake.script("device", Answer(json=body))
    r = api.get(DEVICE, headers=api.login())
    assert r.status_code == 200 and r.json()["expires_in"] == 900


@pytest.mark.parametrize("answer, detail_part", [
    (Answer(status=500, text="boom"), "boom"),
    (Answer(text="<html>hello</html>", content_type="text/html"), "text/html"),
    (Answer(json={"user_code": "X"}), "device_code"),
    (Answer(status=400, json={"error": "invalid_client", "error_description": "bad client"}),
     "invalid_client: bad client"),
])
def test_device_start_bad_provider_answer_is_502(
    api: Api, fake: FakeProvider, answer: Answer, detail_part: str
) -> None:
    fake.script("device", answer)
    r = api.get(DEVICE, headers=api.login())
    assert r.status_code == 502
    body = r.json()
    assert "'fake'" in body["message"]
    assert detail_part in body.get("detail", "") + body["message"]
    assert fake.CLIENT_SECRET not in r.text


def test_device_start_provider_timeout_is_502(make_api, fake: FakeProvider) -> None:
    api = make_api(fake.config(), provider_timeout=0.3)
    fake.script("device", Answer(delay=1.0, json={}))
    r = api.get(DEVICE, headers=api.login())
    assert r.status_code == 502
    assert r.json()["message"] == (
        "Provider 'fake' did not answer the device authorization within 0.3s.")


def test_device_start_rate_limited_is_429_with_retry_after(api: Api, fake: FakeProvider) -> None:
    fake.script("device", Answer(status=429, text="Please wait a few minutes before you try again",
                                 headers={"Retry-After": "120"}))
    r = api.get(DEVICE, headers=api.login())
    assert r.status_code == 429
    assert r.headers["retry-after"] == "120"
    assert "Try again in 120 seconds" in r.json()["message"]


def test_device_start_rate_limited_without_header_has_a_default_retry_after(
    api: Api, fake: FakeProvider
) -> None:
    fake.script("device", Answer(status=429, text="slow down"))
    r = api.get(DEVICE, headers=api.login())
    assert r.status_code == 429
    assert r.headers["retry-after"] == "60"


def _exchange(api: Api, headers: dict[str, str],  # type: ignore[no-untyped-def]
              code: str | None = None):
    """Exchange ``code``, or the code of a device flow started for the caller now."""
    code = code or started_device_code(api, headers)
    return api.post(DEVICE, headers=headers, json={"device_code": code})


def test_exchange_pending_is_400_with_the_oauth_code(api: Api, fake: FakeProvider) -> None:
    headers = api.login()
    code = api.get(DEVICE, headers=headers).json()["device_code"]
    r = _exchange(api, headers, code)
    assert r.status_code == 400
    assert r.json() == {"message": "Failed to exchange device code.",
                        "detail": "authorization_pending"}
    assert api.store.get_link(api.user_id("alice"), "fake") is None
    form = fake.seen("token")[0].form
    assert form == {"grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                    "device_code": code}


@pytest.mark.parametrize("code", [
    "authorization_pending", "slow_down", "expired_token", "access_denied",
    "incorrect_device_code",
])
def test_exchange_github_style_200_error_is_400(api: Api, fake: FakeProvider, code: str) -> None:
    fake.script("token", Answer(status=200, json={
        "error": code, "error_description": "see docs", "interval": 10}))
    r = _exchange(api, api.login())
    assert r.status_code == 400
    assert r.json() == {"message": "Failed to exchange device code.", "detail": code}


def test_exchange_form_encoded_error_is_400(api: Api, fake: FakeProvider) -> None:
    fake.script("token", Answer(form={"error": "slow_down", "interval": "10"}))
    r = _exchange(api, api.login())
    assert r.status_code == 400
    assert r.json()["detail"] == "slow_down"


def test_exchange_success_stores_the_link(api: Api, fake: FakeProvider) -> None:
    headers = api.login()
    code = api.get(DEVICE, headers=headers).json()["device_code"]
    fake.approve(code)
    r = _exchange(api, headers, code)
    assert r.status_code == 204
    assert r.content == b""
    link = api.store.get_link(api.user_id("alice"), "fake")
    assert link is not None
    assert link.access_token in fake.access
    assert link.refresh_token in fake.refresh
    assert link.expires_at is not None
    status = api.get("/api/v2/external-auth/fake", headers=headers).json()
    assert status["authenticated"] is True
    assert status["user"]["login"] == "octocat"


def test_exchange_without_expires_in_stores_a_token_that_never_expires(
    api: Api, fake: FakeProvider
) -> None:
    fake.script("token", Answer(form={"access_token": "gho_abc", "token_type": "bearer",
                                      "scope": "repo"}))
    r = _exchange(api, api.login())
    assert r.status_code == 204
    link = api.store.get_link(api.user_id("alice"), "fake")
    assert link is not None and link.expires_at is None and link.refresh_token == ""
    listed = api.get("/api/v2/external-auth", headers=api.login()).json()["links"][0]
    assert listed["expires"] == "0001-01-01T00:00:00Z"
    assert listed["has_refresh_token"] is False


def test_exchange_again_replaces_the_tokens_and_keeps_created_at(
    api: Api, fake: FakeProvider
) -> None:
    headers = api.login()
    fake.script("token", Answer(json={"access_token": "first"}),
                Answer(json={"access_token": "second"}))
    assert _exchange(api, headers).status_code == 204
    first = api.store.get_link(api.user_id("alice"), "fake")
    assert _exchange(api, headers).status_code == 204
    second = api.store.get_link(api.user_id("alice"), "fake")
    assert first is not None and second is not None
    assert second.access_token == "second"
    assert second.created_at == first.created_at
    assert second.updated_at > first.updated_at


@pytest.mark.parametrize("answer, status", [
    (Answer(status=503, text="maintenance"), 502),
    (Answer(status=200, json={"token_type": "bearer"}), 502),
    (Answer(status=200, text="not json at all"), 502),
    (Answer(status=429, text="too many", headers={"Retry-After": "7"}), 429),
])
def test_exchange_provider_failure_keeps_the_stored_link(
    api: Api, fake: FakeProvider, answer: Answer, status: int
) -> None:
    headers = api.login()
    fake.script("token", Answer(json={"access_token": "kept", "refresh_token": "kept-r"}))
    assert _exchange(api, headers).status_code == 204
    fake.script("token", answer)
    r = _exchange(api, headers)
    assert r.status_code == status
    assert "'fake'" in r.json()["message"]
    link = api.store.get_link(api.user_id("alice"), "fake")
    assert link is not None and link.access_token == "kept" and link.refresh_token == "kept-r"


def test_exchange_never_echoes_the_device_code_or_secret(api: Api, fake: FakeProvider) -> None:
    headers = api.login()
    code = started_device_code(api, headers)
    fake.script("token", Answer(status=500, text=f"bad code {code} {fake.CLIENT_SECRET}"))
    r = _exchange(api, headers, code)
    assert r.status_code == 502
    assert code not in r.text
    assert fake.CLIENT_SECRET not in r.text


def test_exchange_without_device_flow_is_400(make_api, fake: FakeProvider) -> None:
    api = make_api(fake.config(device_flow=False))
    r = _exchange(api, api.login(), "dc_x")
    assert r.status_code == 400
    assert r.json() == {"message": "Git auth provider does not support device flow."}


@pytest.mark.parametrize("body, message, field", [
    ({}, "Validation failed.", "device_code"),
    ({"device_code": ""}, "Validation failed.", "device_code"),
    ({"device_code": 5}, "Validation failed.", "device_code"),
    ([], "Validation failed.", "body"),
])
def test_exchange_invalid_body_is_400_with_validations(
    api: Api, fake: FakeProvider, body: object, message: str, field: str
) -> None:
    r = api.post(DEVICE, headers=api.login(), json=body)
    assert r.status_code == 400
    assert r.json()["message"] == message
    assert r.json()["validations"][0]["field"] == field
    assert fake.requests == []


@pytest.mark.parametrize("raw", [b"{", b'{"device_code": "a"', b"\xff\xfe", b"nul\x00l"])
def test_exchange_malformed_json_is_400(api: Api, fake: FakeProvider, raw: bytes) -> None:
    headers = {**api.login(), "Content-Type": "application/json"}
    r = api.post(DEVICE, headers=headers, content=raw)
    assert r.status_code == 400
    assert r.json()["message"] == "Request body must be valid JSON."
    assert fake.requests == []


def test_exchange_without_body_is_400(api: Api) -> None:
    r = api.post(DEVICE, headers=api.login())
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/json"
    assert r.json()["message"]


def test_a_device_code_works_only_for_the_user_who_started_the_flow(
    api: Api, fake: FakeProvider
) -> None:
    """Someone who learns another user's approved device code (a log, a shared
    screen) gets the same answer as for a code that never existed."""
    alice, mallory = api.login("alice"), api.login("mallory")
    code = started_device_code(api, alice)
    fake.approve(code)
    stolen = _exchange(api, mallory, code)
    unknown = _exchange(api, mallory, "dc_never_issued")
    assert stolen.status_code == unknown.status_code == 400
    assert stolen.json() == unknown.json() == {"message": "Failed to exchange device code.",
                                               "detail": "invalid_grant"}
    assert not fake.seen("token")  # the provider was never asked
    assert api.store.get_link(api.user_id("mallory"), "fake") is None
    assert _exchange(api, alice, code).status_code == 204
    assert api.store.get_link(api.user_id("alice"), "fake") is not None
    assert _exchange(api, alice, code).json()["detail"] == "invalid_grant"  # used up


def test_a_device_code_is_bound_to_its_provider(make_api, fake: FakeProvider) -> None:
    api = make_api(fake.config(), fake.config(id="other"))
    headers = api.login()
    code = started_device_code(api, headers, "other")
    fake.approve(code)
    r = _exchange(api, headers, code)  # at /fake
    assert (r.status_code, r.json()["detail"]) == (400, "invalid_grant")
    assert api.post("/api/v2/external-auth/other/device", headers=headers,
                    json={"device_code": code}).status_code == 204
