"""The token hand-off (Coder's workspace-agent endpoint) as Coder's agents call it:
choosing the provider, the answer per type, refresh and validation on the way,
provider trouble, the link page, no-store and the audit trail."""

from __future__ import annotations

from typing import Any

import pytest

from extauth.links import expires_at
from tests.conftest import Api, link
from tests.fake_provider import Answer, FakeProvider

HANDOFF = "/api/v2/workspaceagents/me/external-auth"
GITAUTH = "/api/v2/workspaceagents/me/gitauth"
KEYS = {"access_token", "token_extra", "url", "type", "username", "password", "expires"}


def ask(api: Api, headers: dict[str, str], path: str = HANDOFF, **params: str) -> Any:
    r = api.get(path, params=params, headers=headers)
    assert r.headers["cache-control"] == "no-store", r.headers
    assert r.headers["content-type"] == "application/json", r.headers
    return r


def ok(r: Any) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert set(body) == KEYS
    return body


@pytest.fixture
def alice(api: Api) -> dict[str, str]:
    return api.login("alice")


# -- choosing the provider -------------------------------------------------------------------


@pytest.mark.parametrize("path", [HANDOFF, GITAUTH])
def test_by_id_with_an_empty_match_as_coders_agents_send_it(
        api: Api, fake: FakeProvider, alice: dict[str, str], path: str) -> None:
    access, _ = link(api, fake)
    body = ok(ask(api, alice, path, id="fake", match=""))
    assert body["access_token"] == access and body["url"] == ""
    assert body["type"] == "fake-oauth"
    assert (body["username"], body["password"]) == (access, "")


@pytest.mark.parametrize("path", [HANDOFF, GITAUTH])
@pytest.mark.parametrize("name", ["match", "url"])
def test_by_match_with_an_empty_id(api: Api, make_api: Any, fake: FakeProvider, path: str,
                                   name: str) -> None:
    api = make_api(fake.config(regex=r"^https://git\.example\.com/"),
                   fake.config(id="other", regex=r"^https://other\.example\.com/"))
    headers = api.login("alice")
    access, _ = link(api, fake)
    body = ok(ask(api, headers, path, id="", **{name: "https://git.example.com/acme/app.git"}))
    assert body["access_token"] == access and body["type"] == "fake-oauth"


@pytest.mark.parametrize("params, message", [
    ({}, "'url' or 'id' must be provided!"),
    ({"id": "", "match": ""}, "'url' or 'id' must be provided!"),
    ({"id": "fake", "match": "https://x"}, "'url' and 'id' cannot be provided together!"),
    ({"id": "fake", "url": "https://x"}, "'url' and 'id' cannot be provided together!"),
])
def test_neither_or_both_is_400(api: Api, alice: dict[str, str], params: dict[str, str],
                                message: str) -> None:
    r = ask(api, alice, **params)
    assert (r.status_code, r.json()) == (400, {"message": message})


def test_no_provider_matches_is_404_listing_the_regexes(make_api: Any, fake: FakeProvider) -> None:
    api = make_api(fake.config(regex=r"^https://git\.example\.com/"), fake.config(id="plain"))
    r = ask(api, api.login(), match="https://elsewhere.example.com/x.git", id="")
    assert r.status_code == 404
    assert r.json() == {
        "message": "No matching external auth provider found in Coder for the url "
                   '"https://elsewhere.example.com/x.git".',
        "detail": "The configured providers' regexes do not match it: "
                  'fake="^https://git\\\\.example\\\\.com/", plain="".',
    }


def test_an_unknown_id_is_404(api: Api, alice: dict[str, str]) -> None:
    r = ask(api, alice, id="nope", match="")
    assert r.status_code == 404
    assert r.json() == {"message": "No external auth provider found with the id 'nope'.",
                        "detail": "Configured providers: fake"}


def test_several_matches_are_409(make_api: Any, fake: FakeProvider) -> None:
    api = make_api(fake.config(regex=r"example\.com"),
                   fake.config(id="two", regex=r"^https://git\.example\.com/"),
                   fake.config(id="three", regex=r"^https://other\.example\.com/"))
    r = ask(api, api.login(), match="https://git.example.com/a.git")
    assert r.status_code == 409
    body = r.json()
    assert body["message"] == ('Multiple external auth providers match the url '
                               '"https://git.example.com/a.git".')
    assert body["detail"].startswith('Matching providers: fake="example\\\\.com", two=')
    assert "three" not in body["detail"]


def test_a_provider_without_regex_is_never_matched(make_api: Any, fake: FakeProvider) -> None:
    api = make_api(fake.config())  # a generic type: no default regex
    assert ask(api, api.login(), match=fake.url).status_code == 404


def test_a_presets_default_regex_applies(make_api: Any, fake: FakeProvider) -> None:
    api = make_api(fake.config(id="gh", type="github", auth_url=None))  # github.com's regex
    body = ok(ask(api, api.login(), match="https://github.com/coder/coder.git", id=""))
    assert body["type"] == "github" and body["url"].endswith("/external-auth/gh")


def test_a_long_match_is_not_echoed_whole(make_api: Any, fake: FakeProvider) -> None:
    api = make_api(fake.config())
    r = ask(api, api.login(), match="https://x/" + "a" * 4000)
    assert r.status_code == 404 and len(r.text) < 1000


def test_a_match_longer_than_any_url_is_400(make_api: Any, fake: FakeProvider) -> None:
    api = make_api(fake.config(regex=r"^https://git\.example\.com/"))
    r = ask(api, api.login(), match="https://" + "a" * 5000 + "!")
    assert r.status_code == 400
    assert r.json() == {"message": "'url' is too long.",
                        "detail": "at most 4096 characters, got 5009"}


# -- the answer ------------------------------------------------------------------------------


def test_not_linked_answers_the_link_page(make_api: Any, fake: FakeProvider) -> None:
    api = make_api(fake.config(), access_url="https://extauth.example.com/")
    body = ok(ask(api, api.login(), id="fake"))
    assert body == {"access_token": "", "token_extra": None,
                    "url": "https://extauth.example.com/external-auth/fake",
                    "type": "fake-oauth", "username": "", "password": "",
                    "expires": "0001-01-01T00:00:00Z"}
    assert fake.requests == []


@pytest.mark.parametrize("ptype, username, password", [
    ("gitlab", "oauth2", "TOKEN"),
    ("bitbucket-cloud", "x-token-auth", "TOKEN"),
    ("bitbucket-server", "x-token-auth", "TOKEN"),
    ("github", "TOKEN", ""),
    ("gitea", "TOKEN", ""),
    ("azure-devops", "TOKEN", ""),
    ("fake-oauth", "TOKEN", ""),
])
def test_username_and_password_follow_coders_conventions(
        make_api: Any, fake: FakeProvider, ptype: str, username: str, password: str) -> None:
    api = make_api(fake.config(type=ptype))
    headers = api.login()
    access, _ = link(api, fake)
    body = ok(ask(api, headers, id="fake"))
    assert body["type"] == ptype and body["access_token"] == access
    assert (body["username"], body["password"]) == (
        username.replace("TOKEN", access), password.replace("TOKEN", access))


def test_token_extra_holds_the_extra_keys(make_api: Any, fake: FakeProvider) -> None:
    api = make_api(fake.config(extra_token_keys=["authed_user", "team"]))
    headers = api.login()
    access, refresh = fake.issue()
    api.store.upsert_link(api.user_id("alice"), "fake", access, refresh, expires_at(3600),
                          {"authed_user": {"id": "U1", "access_token": "xoxp-1"}})
    body = ok(ask(api, headers, id="fake"))
    assert body["token_extra"] == {"authed_user": {"id": "U1", "access_token": "xoxp-1"},
                                   "team": None}


def test_the_expiry_is_told(api: Api, fake: FakeProvider, alice: dict[str, str]) -> None:
    link(api, fake, expires_in=3600)
    stored = api.store.get_link(api.user_id("alice"), "fake")
    assert stored is not None and stored.expires_at is not None
    body = ok(ask(api, alice, id="fake"))
    assert body["expires"] == stored.expires_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    link(api, fake, expires_in=None)
    assert ok(ask(api, alice, id="fake"))["expires"] == "0001-01-01T00:00:00Z"


# -- refresh and validation on the way --------------------------------------------------------


def test_a_token_about_to_expire_is_refreshed_once_first(api: Api, fake: FakeProvider,
                                                         alice: dict[str, str]) -> None:
    old, _ = link(api, fake, expires_in=10)
    body = ok(ask(api, alice, id="fake"))
    stored = api.store.get_link(api.user_id("alice"), "fake")
    assert stored is not None and stored.access_token != old
    assert body["access_token"] == stored.access_token
    assert fake.refreshes == 1
    assert fake.seen("validate")[-1].headers["authorization"] == f"Bearer {stored.access_token}"


def test_a_token_the_provider_refuses_answers_the_link_page(
        api: Api, fake: FakeProvider, alice: dict[str, str]) -> None:
    access, _ = link(api, fake)
    fake.revoked.add(access)
    body = ok(ask(api, alice, id="fake"))
    assert body["access_token"] == "" and body["url"].endswith("/external-auth/fake")
    assert access not in str(body)


def test_a_refresh_that_failed_for_good_answers_the_link_page(
        api: Api, fake: FakeProvider, alice: dict[str, str]) -> None:
    link(api, fake, expires_in=-10)
    fake.script("token", Answer(400, json={"error": "invalid_grant"}))
    body = ok(ask(api, alice, id="fake"))
    assert body["access_token"] == "" and body["url"]
    stored = api.store.get_link(api.user_id("alice"), "fake")
    assert stored is not None and stored.refresh_failure_reason == "invalid_grant"
    assert ok(ask(api, alice, id="fake"))["access_token"] == ""
    assert fake.refreshes == 1  # never tried again


def test_a_link_under_a_missing_key_answers_the_link_page(make_api: Any, fake: FakeProvider,
                                                          tmp_path: Any) -> None:
    key = b"k" * 32
    api = make_api(fake.config(), encryption_keys=(key,))
    headers = api.login()
    link(api, fake)
    api.client.__exit__(None, None, None)
    api = make_api(fake.config(), encryption_keys=(b"o" * 32,))
    body = ok(ask(api, headers, id="fake"))
    assert body["access_token"] == "" and body["url"].endswith("/external-auth/fake")


def test_a_provider_that_fails_validation_is_502_and_nothing_changes(
        api: Api, fake: FakeProvider, alice: dict[str, str]) -> None:
    access, _ = link(api, fake)
    before = api.store.get_link(api.user_id("alice"), "fake")
    fake.script("validate", Answer(500, text="down"))
    r = ask(api, alice, id="fake")
    assert r.status_code == 502
    assert "'fake'" in r.json()["message"] and access not in r.text
    assert api.store.get_link(api.user_id("alice"), "fake") == before


def test_a_refresh_that_fails_for_now_is_502_and_keeps_the_link(
        make_api: Any, fake: FakeProvider) -> None:
    api = make_api(fake.config(), refresh_retry_seconds=0.0)
    headers = api.login()
    link(api, fake, expires_in=-10)
    before = api.store.get_link(api.user_id("alice"), "fake")
    fake.script("token", Answer(503, text="maintenance"))
    r = ask(api, headers, id="fake")
    assert r.status_code == 502, r.text
    assert r.json()["message"] == "Provider 'fake' failed the token refresh with HTTP 503."
    after = api.store.get_link(api.user_id("alice"), "fake")
    assert before is not None and after is not None and after.refresh_token
    assert (after.access_token, after.refresh_token, after.version) == (
        before.access_token, before.refresh_token, before.version)
    assert "HTTP 503" in after.refresh_retry_reason  # remembered, not retried at once


def test_a_refresh_the_provider_asks_to_retry_is_502(make_api: Any, fake: FakeProvider) -> None:
    api = make_api(fake.config(), refresh_retry_seconds=0.0)
    headers = api.login()
    link(api, fake, expires_in=-10)
    fake.script("token", Answer(400, json={"error": "temporarily_unavailable"}))
    r = ask(api, headers, id="fake")
    assert r.status_code == 502, r.text
    assert r.json() == {
        "message": "Provider 'fake' could not refresh the token; try again.",
        "detail": "refreshing failed and will be retried: temporarily_unavailable"}


def test_a_rate_limited_refresh_is_429_with_retry_after(make_api: Any,
                                                        fake: FakeProvider) -> None:
    api = make_api(fake.config(), refresh_retry_seconds=1.0)
    headers = api.login()
    link(api, fake, expires_in=-10)
    fake.script("token", Answer(429, text="slow down", headers={"Retry-After": "120"}))
    r = ask(api, headers, id="fake")
    assert r.status_code == 429, r.text
    assert r.headers["retry-after"] == "120"
    assert "'fake'" in r.json()["message"]
    stored = api.store.get_link(api.user_id("alice"), "fake")
    assert stored is not None and stored.refresh_token and not stored.refresh_failure_reason


# -- the audit trail ---------------------------------------------------------------------------


def test_every_token_handed_out_is_a_token_read_event(api: Api, fake: FakeProvider,
                                                      alice: dict[str, str]) -> None:
    from extauth import sessions

    access, refresh = link(api, fake)
    user = api.store.get_user("alice")
    assert user is not None
    agent = sessions.create_agent_token(api.store, user, "ws")
    [agent_record] = api.store.agent_tokens()
    ok(ask(api, {"Coder-Session-Token": agent}, id="fake"))
    ok(ask(api, alice, id="fake"))
    reads = [e for e in api.store.audit_events("alice") if e.action == "token read"]
    assert [(e.outcome, e.provider_id) for e in reads] == [("session", "fake"), ("agent", "fake")]
    assert reads[1].detail == f"agent token {agent_record.id}"
    assert reads[0].detail == f"session token {alice['Coder-Session-Token'][:10]}"
    for e in reads:
        for secret in (access, refresh, agent, alice["Coder-Session-Token"]):
            assert secret not in e.detail
    # The link page hands out nothing: no event.
    api.store.delete_link(user.id, "fake")
    ok(ask(api, alice, id="fake"))
    assert len([e for e in api.store.audit_events("alice") if e.action == "token read"]) == 2
