"""The web flow: authorization code with PKCE through /external-auth/{id}/callback."""

from __future__ import annotations

import base64
import hashlib
import os
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from extauth.crypto import key_id
from extauth.links import hash_state
from tests.conftest import Api, sql
from tests.fake_provider import Answer, FakeProvider

CALLBACK = "/external-auth/fake/callback"


def _start(api: Api, headers: dict[str, str], _path: str = CALLBACK,
           **params: str) -> dict[str, str]:
    r = api.get(_path, headers=headers, params=params, follow_redirects=False)
    assert r.status_code == 307, r.text
    location = r.headers["location"]
    return {"url": location, **{k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}}


def _provider_approves(started: dict[str, str]) -> str:
    """The fake's authorize endpoint approves and sends the browser back: our path+query."""
    r = httpx.get(started["url"], follow_redirects=False)
    assert r.status_code == 302
    back = urlsplit(r.headers["location"])
    return f"{back.path}?{back.query}"


def test_start_redirects_to_the_provider_with_state_and_pkce(api: Api, fake: FakeProvider) -> None:
    started = _start(api, api.login())
    assert started["url"].startswith(f"{fake.url}/authorize?")
    assert started["client_id"] == fake.CLIENT_ID
    assert started["redirect_uri"] == "http://127.0.0.1:8080/external-auth/fake/callback"
    assert started["response_type"] == "code"
    assert started["scope"] == "repo read:user"
    assert started["code_challenge_method"] == "S256"
    assert len(started["code_challenge"]) == 43
    [row] = sql(api, "SELECT user_id, provider_id, code_verifier, state_hash FROM oauth_states")
    assert (row["user_id"], row["provider_id"]) == (api.user_id("alice"), "fake")
    assert row["state_hash"] == hash_state(started["state"])  # the state itself is not kept
    digest = hashlib.sha256(row["code_verifier"].encode()).digest()
    assert base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == started["code_challenge"]


@pytest.mark.sqlite
def test_the_state_is_nowhere_in_the_file(api: Api, fake: FakeProvider) -> None:
    started = _start(api, api.login())
    assert started["state"].encode() not in api.settings.db_path.read_bytes()


def test_auth_url_query_parameters_are_kept(make_api, fake: FakeProvider) -> None:
    api = make_api(fake.config(auth_url=f"{fake.url}/authorize?audience=api://x"))
    started = _start(api, api.login())
    assert started["audience"] == "api://x" and started["state"]


def test_no_pkce_when_the_provider_says_none(make_api, fake: FakeProvider) -> None:
    api = make_api(fake.config(pkce_methods="none"))
    started = _start(api, api.login())
    assert "code_challenge" not in started


def test_round_trip_links_and_redirects(api: Api, fake: FakeProvider) -> None:
    headers = api.login()
    back = _provider_approves(_start(api, headers, redirect="/workspaces?tab=git"))
    r = api.get(back, headers=headers, follow_redirects=False)
    assert r.status_code == 307
    assert r.headers["location"] == "/workspaces?tab=git"
    link = api.store.get_link(api.user_id("alice"), "fake")
    assert link is not None and link.access_token in fake.access
    form = fake.seen("token")[0].form
    assert form["grant_type"] == "authorization_code" and form["code_verifier"]
    assert api.get("/api/v2/external-auth/fake", headers=headers).json()["authenticated"] is True


def test_default_redirect_is_the_providers_status(api: Api, fake: FakeProvider) -> None:
    headers = api.login()
    back = _provider_approves(_start(api, headers))
    r = api.get(back, headers=headers, follow_redirects=False)
    assert r.headers["location"] == "/external-auth/fake?redirected=true"


@pytest.mark.parametrize("redirect, expected", [
    ("https://evil.example/steal?x=1", "/steal?x=1"),
    ("//evil.example/steal", "/steal"),
    ("javascript:alert(1)", "/external-auth/fake?redirected=true"),
    # browsers read a backslash as a slash: "/\\evil" is "//evil", another site
    ("/\\evil.example/steal", "/external-auth/fake?redirected=true"),
    ("/ok\\..\\x", "/external-auth/fake?redirected=true"),
])
def test_redirect_is_reduced_to_path_and_query(
    api: Api, fake: FakeProvider, redirect: str, expected: str
) -> None:
    headers = api.login()
    back = _provider_approves(_start(api, headers, redirect=redirect))
    assert api.get(back, headers=headers, follow_redirects=False).headers["location"] == expected


def test_a_state_is_used_once(api: Api, fake: FakeProvider) -> None:
    headers = api.login()
    back = _provider_approves(_start(api, headers))
    assert api.get(back, headers=headers, follow_redirects=False).status_code == 307
    r = api.get(back, headers=headers, follow_redirects=False)
    assert r.status_code == 401
    assert r.json()["message"] == "State mismatched."


def test_another_users_state_is_refused(api: Api, fake: FakeProvider) -> None:
    back = _provider_approves(_start(api, api.login("bob")))
    r = api.get(back, headers=api.login("alice"), follow_redirects=False)
    assert (r.status_code, r.json()["message"]) == (401, "State mismatched.")
    assert api.store.get_link(api.user_id("alice"), "fake") is None
    assert fake.seen("token") == []


def test_a_state_is_bound_to_its_provider(make_api, fake: FakeProvider) -> None:
    """A state started for one provider cannot finish the flow at another."""
    api = make_api(fake.config(), fake.config(id="other"))
    headers = api.login()
    back = _provider_approves(_start(api, headers, _path="/external-auth/other/callback"))
    assert back.startswith("/external-auth/other/callback?")
    r = api.get(back.replace("/other/", "/fake/"), headers=headers, follow_redirects=False)
    assert (r.status_code, r.json()["message"]) == (401, "State mismatched.")
    assert fake.seen("token") == []
    assert api.store.get_link(api.user_id("alice"), "fake") is None


def test_the_pkce_verifier_is_sealed_when_keys_are_set(make_api, fake: FakeProvider) -> None:
    key = os.urandom(32)
    api = make_api(fake.config(), encryption_keys=(key,))
    headers = api.login()
    started = _start(api, headers)
    [stored] = [r["code_verifier"] for r in sql(api, "SELECT code_verifier FROM oauth_states")]
    assert stored.startswith(f"{key_id(key)}:")
    back = _provider_approves(started)
    assert api.get(back, headers=headers, follow_redirects=False).status_code == 307
    verifier = fake.seen("token")[0].form["code_verifier"]  # the fake checked it
    assert verifier and verifier not in stored


def test_an_expired_state_is_refused(api: Api, fake: FakeProvider) -> None:
    headers = api.login()
    back = _provider_approves(_start(api, headers))
    sql(api, "UPDATE oauth_states SET expires_at = '2020-01-01T00:00:00.000000Z'")
    r = api.get(back, headers=headers, follow_redirects=False)
    assert (r.status_code, r.json()["message"]) == (401, "State mismatched.")


def test_code_without_state_is_400(api: Api) -> None:
    r = api.get(CALLBACK, headers=api.login(), params={"code": "abc"})
    assert (r.status_code, r.json()) == (400, {"message": "State must be provided."})


def test_provider_error_is_400(api: Api) -> None:
    r = api.get(CALLBACK, headers=api.login(), params={
        "error": "access_denied", "error_description": "The user denied access."})
    assert r.status_code == 400
    assert r.json() == {"message": "Encountered error in oidc process: access_denied",
                        "detail": "The user denied access."}


def test_a_wrong_pkce_verifier_fails_the_exchange(api: Api, fake: FakeProvider) -> None:
    headers = api.login()
    back = _provider_approves(_start(api, headers))
    sql(api, "UPDATE oauth_states SET code_verifier = 'not-the-verifier'")
    r = api.get(back, headers=headers, follow_redirects=False)
    assert r.status_code == 500
    assert r.json() == {"message": "Internal error exchanging Oauth code.",
                        "detail": "invalid_grant: PKCE verification failed"}
    assert api.store.get_link(api.user_id("alice"), "fake") is None


def test_provider_down_during_exchange_is_502(api: Api, fake: FakeProvider) -> None:
    headers = api.login()
    back = _provider_approves(_start(api, headers))
    fake.script("token", Answer(status=503, text="down"))
    r = api.get(back, headers=headers, follow_redirects=False)
    assert r.status_code == 502 and "'fake'" in r.json()["message"]


def test_provider_rate_limiting_the_exchange_is_429(api: Api, fake: FakeProvider) -> None:
    """Said as the contract declares it (responses are validated here)."""
    headers = api.login()
    back = _provider_approves(_start(api, headers))
    fake.script("token", Answer(status=429, text="slow down", headers={"Retry-After": "7"}))
    r = api.get(back, headers=headers, follow_redirects=False)
    assert r.status_code == 429, r.text
    assert r.headers["retry-after"] == "7"
    spec = api.get("/api/v2/openapi.json").json()
    for path in (CALLBACK, "/gitauth/fake/callback"):
        declared = spec["paths"][path.replace("fake", "{externalauth}")]["get"]["responses"]
        assert "429" in declared, path


@pytest.mark.parametrize("credentials", [
    {}, {"Cookie": "coder_session_token=0123456789-" + "x" * 22}])
def test_a_browser_without_a_session_is_sent_to_sign_in(
    api: Api, credentials: dict[str, str]
) -> None:
    """As Coder: 303 to the sign-in page, which comes back here with the query kept
    (less any token in it)."""
    r = api.get(CALLBACK, headers=credentials, follow_redirects=False, params={
        "code": "c", "state": "s t", "coder_session_token": "0123456789-" + "y" * 22})
    assert r.status_code == 303
    assert r.headers["location"] == (
        "/login?redirect=/external-auth/fake/callback%3Fcode%3Dc%26state%3Ds%2Bt")
    assert "set-cookie" not in r.headers
    back = parse_qs(urlsplit(r.headers["location"]).query)["redirect"][0]
    assert back == "/external-auth/fake/callback?code=c&state=s+t"


def _planted(api: Api, fake: FakeProvider, victim: dict[str, str]) -> httpx.Response:
    """The planting attack: the victim's browser opens the callback with the
    attacker's token in the URL, the provider approves (silently, as it does for
    an app approved before), and the browser comes back with only its own
    cookies. Returns the answer to that return."""
    attacker = api.login("mallory")["Coder-Session-Token"]
    r = api.get(CALLBACK, params={"coder_session_token": attacker}, headers=victim,
                follow_redirects=False)
    # The token authenticates this one request (Coder's token order)...
    assert r.status_code == 307, r.text
    # ...and never becomes a cookie.
    assert "set-cookie" not in r.headers
    back = _provider_approves({"url": r.headers["location"]})
    return api.get(back, headers=victim, follow_redirects=False)


def test_a_token_in_the_query_plants_no_session(api: Api, fake: FakeProvider) -> None:
    r = _planted(api, fake, victim={})
    assert r.status_code == 303 and r.headers["location"].startswith("/login?redirect=")
    assert "set-cookie" not in r.headers
    assert api.store.get_link(api.user_id("mallory"), "fake") is None
    assert fake.seen("token") == [], "no code was exchanged"


def test_a_token_in_the_query_does_not_override_a_signed_in_victim(
    api: Api, fake: FakeProvider
) -> None:
    """The cookie comes first in Coder's order: the victim's own session runs the
    flow, and the provider account ends up where it belongs."""
    victim = {"Cookie": f"coder_session_token={api.login('alice')['Coder-Session-Token']}"}
    r = _planted(api, fake, victim)
    assert r.status_code == 307, r.text
    assert "set-cookie" not in r.headers
    assert api.store.get_link(api.user_id("mallory"), "fake") is None
    assert api.store.get_link(api.user_id("alice"), "fake") is not None


def test_provider_without_auth_url_has_no_web_flow(make_api, fake: FakeProvider) -> None:
    api = make_api(fake.config(auth_url=None))
    r = api.get(CALLBACK, headers=api.login())
    assert r.status_code == 400
    assert r.json() == {"message": "Provider 'fake' has no web flow.",
                        "detail": "its auth_url is not set"}


def test_extra_token_keys_are_kept_with_the_link(make_api, fake: FakeProvider) -> None:
    api = make_api(fake.config(extra_token_keys=["authed_user", "team"]))
    headers = api.login()
    back = _provider_approves(_start(api, headers))
    fake.script("token", Answer(json={
        "ok": True, "access_token": "xoxb-bot", "team": {"id": "T1"},
        "authed_user": {"id": "U1", "access_token": "xoxp-user"}, "ignored": 1}))
    assert api.get(back, headers=headers, follow_redirects=False).status_code == 307
    link = api.store.get_link(api.user_id("alice"), "fake")
    assert link is not None
    assert link.extra == {"authed_user": {"id": "U1", "access_token": "xoxp-user"},
                          "team": {"id": "T1"}}


# -- Coder's ways into the callback ------------------------------------------------------


@pytest.mark.parametrize("query", ["code=&state=", "code=", "code=&state=&error=",
                                   "error=&error_description="])
def test_empty_parameters_are_absent_and_start_the_flow(
    api: Api, fake: FakeProvider, query: str
) -> None:
    """Coder reads them with Query().Get: empty is absent."""
    r = api.get(f"{CALLBACK}?{query}", headers=api.login(), follow_redirects=False)
    assert r.status_code == 307, r.text
    assert r.headers["location"].startswith(f"{fake.url}/authorize?")
    assert sql(api, "SELECT COUNT(*) AS n FROM oauth_states")[0]["n"] == 1


def test_an_empty_error_beside_a_code_is_no_error(api: Api, fake: FakeProvider) -> None:
    headers = api.login()
    back = _provider_approves(_start(api, headers))
    r = api.get(f"{back}&error=&error_description=", headers=headers, follow_redirects=False)
    assert r.status_code == 307, r.text
    assert api.store.get_link(api.user_id("alice"), "fake") is not None


def test_a_code_with_an_empty_state_is_400(api: Api) -> None:
    r = api.get(f"{CALLBACK}?code=abc&state=", headers=api.login())
    assert (r.status_code, r.json()) == (400, {"message": "State must be provided."})


def test_the_legacy_gitauth_path_runs_the_same_flow(api: Api, fake: FakeProvider) -> None:
    headers = api.login()
    legacy = "/gitauth/fake/callback"
    r = api.get(legacy, headers=headers, params={"redirect": "/done"}, follow_redirects=False)
    assert r.status_code == 307
    started = {k: v[0] for k, v in parse_qs(urlsplit(r.headers["location"]).query).items()}
    # The redirect URI registered at providers is the new path, as in Coder.
    assert started["redirect_uri"] == "http://127.0.0.1:8080/external-auth/fake/callback"
    back = _provider_approves({"url": r.headers["location"]})
    r = api.get(back.replace(CALLBACK, legacy), headers=headers, follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (307, "/done")
    link = api.store.get_link(api.user_id("alice"), "fake")
    assert link is not None and link.access_token in fake.access
    r = api.get(f"{legacy}?error=access_denied", headers=headers)
    assert (r.status_code, r.json()["message"]) == (
        400, "Encountered error in oidc process: access_denied")
    r = api.get("/gitauth/nope/callback", headers=headers)
    assert r.status_code == 404
    r = api.get(legacy, follow_redirects=False)  # no session: sign in first, then back here
    assert (r.status_code, r.headers["location"]) == (303, "/login?redirect=/gitauth/fake/callback")
