"""Get by id (validation), list, and unlink (revocation), against the fake provider."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest

from extauth.links import expires_at
from tests.conftest import Api, link, started_device_code
from tests.fake_provider import Answer, FakeProvider

FAKE = "/api/v2/external-auth/fake"


def test_get_without_link_is_unauthenticated_and_calls_nothing(
    api: Api, fake: FakeProvider
) -> None:
    r = api.get(FAKE, headers=api.login())
    assert r.status_code == 200
    assert r.json() == {
        "authenticated": False, "device": True, "display_name": "fake-oauth",
        "supports_revocation": True, "user": None, "app_installable": False,
        "installations": [], "app_install_url": "",
    }
    assert fake.requests == []


def test_get_validates_with_bearer_and_fills_the_user(api: Api, fake: FakeProvider) -> None:
    headers = api.login()
    access, _ = link(api, fake)
    r = api.get(FAKE, headers=headers)
    assert r.status_code == 200
    body = r.json()
    assert body["authenticated"] is True
    assert body["user"] == {"id": 583231, "login": "octocat", "name": "The Octocat",
                            "avatar_url": "https://example.test/a.png",
                            "profile_url": "https://example.test/octocat"}
    assert fake.seen("validate")[0].headers["authorization"] == f"Bearer {access}"


def test_get_fills_app_installations(api: Api, fake: FakeProvider) -> None:
    headers = api.login()
    link(api, fake)
    fake.script("installations", Answer(json={"installations": [
        {"id": 7, "html_url": "https://example.test/settings/installations/7",
         "account": {"id": 9, "login": "acme", "avatar_url": "", "html_url": "https://e/acme"}},
        {"id": 8, "account": None},
    ]}))
    body = api.get(FAKE, headers=headers).json()
    assert body["app_installable"] is True
    assert body["installations"] == [{
        "id": 7, "configure_url": "https://example.test/settings/installations/7",
        "account": {"id": 9, "login": "acme", "avatar_url": "", "profile_url": "https://e/acme",
                    "name": ""}}]


def test_get_installations_failure_is_not_an_error(api: Api, fake: FakeProvider) -> None:
    headers = api.login()
    link(api, fake)
    fake.script("installations", Answer(status=500, text="down"))
    r = api.get(FAKE, headers=headers)
    assert r.status_code == 200
    assert (r.json()["app_installable"], r.json()["installations"]) == (False, [])
    assert r.json()["authenticated"] is True


@pytest.mark.parametrize("answer, authenticated", [
    (Answer(status=401, json={"message": "Bad credentials"}), False),
    (Answer(status=403, json={"message": "Forbidden"}), False),
    (Answer(status=403, json={"message": "rate"}, headers={"X-RateLimit-Remaining": "0"}), True),
    (Answer(status=403, json={"message": "rate"}, headers={"Retry-After": "30"}), True),
    (Answer(status=429, text="slow down"), True),
    (Answer(status=200, text="ok, not json"), True),
])
def test_get_validation_verdicts(
    api: Api, fake: FakeProvider, answer: Answer, authenticated: bool
) -> None:
    headers = api.login()
    link(api, fake)
    fake.script("validate", answer)
    r = api.get(FAKE, headers=headers)
    assert r.status_code == 200
    assert r.json()["authenticated"] is authenticated
    if not authenticated:
        assert r.json()["user"] is None


@pytest.mark.parametrize("answer", [
    Answer(status=500, text="Something went wrong!"),
    Answer(status=404, text="no such page"),
    Answer(status=200, json={}, delay=1.0),
])
def test_get_provider_failure_is_502_and_keeps_the_link(
    make_api, fake: FakeProvider, answer: Answer
) -> None:
    api = make_api(fake.config(), provider_timeout=0.3)
    headers = api.login()
    access, refresh = link(api, fake)
    fake.script("validate", answer)
    r = api.get(FAKE, headers=headers)
    assert r.status_code == 502
    assert "'fake'" in r.json()["message"]
    assert access not in r.text
    stored = api.store.get_link(api.user_id("alice"), "fake")
    assert stored is not None and (stored.access_token, stored.refresh_token) == (access, refresh)


def test_get_without_validate_url_is_authenticated_without_a_call(
    make_api, fake: FakeProvider
) -> None:
    api = make_api(fake.config(validate_url=None, app_installations_url=None))
    headers = api.login()
    link(api, fake)
    body = api.get(FAKE, headers=headers).json()
    assert (body["authenticated"], body["user"]) == (True, None)
    assert fake.requests == []


def test_get_expired_token_without_refresh_token_is_unauthenticated_without_a_call(
    api: Api, fake: FakeProvider
) -> None:
    headers = api.login()
    api.store.upsert_link(api.user_id("alice"), "fake", "gho_old", "", expires_at(-60))
    assert api.get(FAKE, headers=headers).json()["authenticated"] is False
    assert fake.requests == []


def test_get_unknown_provider_is_404_after_authentication(api: Api) -> None:
    assert api.get("/api/v2/external-auth/nope").status_code == 401
    r = api.get("/api/v2/external-auth/nope", headers=api.login())
    assert r.status_code == 404
    assert r.json() == {"message": "Resource not found or you do not have access to this resource"}


def test_list_shows_providers_and_links(make_api, fake: FakeProvider) -> None:
    api = make_api(fake.config(), fake.config(id="second", device_flow=False, revoke_url=None,
                                              validate_url=None, no_refresh=True,
                                              pkce_methods="none", display_name="Second"))
    headers = api.login()
    link(api, fake)
    body = api.get("/api/v2/external-auth", headers=headers).json()
    assert body["providers"] == [
        {"id": "fake", "type": "fake-oauth", "device": True, "display_name": "fake-oauth",
         "display_icon": "/emojis/1f511.png", "allow_refresh": True, "allow_validate": True,
         "supports_revocation": True, "code_challenge_methods_supported": ["S256"]},
        {"id": "second", "type": "fake-oauth", "device": False, "display_name": "Second",
         "display_icon": "/emojis/1f511.png", "allow_refresh": False, "allow_validate": False,
         "supports_revocation": False, "code_challenge_methods_supported": ["none"]},
    ]
    [listed] = body["links"]
    assert listed["provider_id"] == "fake"
    assert (listed["authenticated"], listed["validate_error"]) == (True, "")
    assert listed["has_refresh_token"] is True
    # Validated at the provider, as Coder does; nothing else asked.
    assert [r.endpoint for r in fake.requests] == ["validate"]


def test_list_reports_expired_and_orphaned_links(api: Api, fake: FakeProvider) -> None:
    headers = api.login()
    api.store.upsert_link(api.user_id("alice"), "fake", "gho_old", "", expires_at(-5))
    link(api, fake, provider="gone")
    links = {x["provider_id"]: x for x in api.get("/api/v2/external-auth",
                                                  headers=headers).json()["links"]}
    assert links["fake"]["authenticated"] is False
    assert "expired" in links["fake"]["validate_error"]
    assert links["gone"]["authenticated"] is False
    assert "no longer configured" in links["gone"]["validate_error"]


def test_delete_revokes_the_refresh_token(api: Api, fake: FakeProvider) -> None:
    headers = api.login()
    access, refresh = link(api, fake)
    r = api.delete(FAKE, headers=headers)
    assert r.status_code == 200
    assert r.json() == {"token_revoked": True}
    assert api.store.get_link(api.user_id("alice"), "fake") is None
    seen = fake.seen("revoke")[0]
    assert seen.form == {"token": refresh, "token_type_hint": "refresh_token"}
    assert seen.headers["authorization"].startswith("Basic ")
    assert api.get(FAKE, headers=headers).json()["authenticated"] is False


def test_delete_without_refresh_token_revokes_the_access_token(
    api: Api, fake: FakeProvider
) -> None:
    headers = api.login()
    api.store.upsert_link(api.user_id("alice"), "fake", "gho_only", "", None)
    assert api.delete(FAKE, headers=headers).json() == {"token_revoked": True}
    assert fake.seen("revoke")[0].form == {"token": "gho_only", "token_type_hint": "access_token"}


@pytest.mark.parametrize("answer, error_part", [
    (Answer(status=204), "failed to revoke token: 204"),
    (Answer(status=400, json={"error": "invalid_request"}), "400"),
    (Answer(status=200, delay=1.0), "no answer within 0.3s"),
])
def test_delete_reports_a_failed_revocation_and_still_unlinks(
    make_api, fake: FakeProvider, answer: Answer, error_part: str
) -> None:
    api = make_api(fake.config(), provider_timeout=0.3)
    headers = api.login()
    access, refresh = link(api, fake)
    fake.script("revoke", answer)
    r = api.delete(FAKE, headers=headers)
    assert r.status_code == 200
    assert r.json()["token_revoked"] is False
    assert error_part in r.json()["token_revocation_error"]
    assert refresh not in r.text and access not in r.text
    assert api.store.get_link(api.user_id("alice"), "fake") is None


def test_delete_without_revoke_url_reports_not_revoked(make_api, fake: FakeProvider) -> None:
    api = make_api(fake.config(revoke_url=None))
    headers = api.login()
    link(api, fake)
    assert api.delete(FAKE, headers=headers).json() == {"token_revoked": False}
    assert fake.requests == []


def test_delete_without_link_is_404(api: Api, fake: FakeProvider) -> None:
    r = api.delete(FAKE, headers=api.login())
    assert r.status_code == 404
    assert r.json()["message"] == "Resource not found or you do not have access to this resource"
    assert fake.requests == []


def test_delete_a_link_whose_provider_is_gone(api: Api, fake: FakeProvider) -> None:
    headers = api.login()
    link(api, fake, provider="gone")
    r = api.delete("/api/v2/external-auth/gone", headers=headers)
    assert r.status_code == 200
    assert r.json()["token_revoked"] is False
    assert "no longer configured" in r.json()["token_revocation_error"]
    assert api.store.get_link(api.user_id("alice"), "gone") is None


def test_users_never_see_or_change_each_others_links(api: Api, fake: FakeProvider) -> None:
    alice, bob = api.login("alice"), api.login("bob")
    link(api, fake, user="alice")
    assert api.get(FAKE, headers=bob).json()["authenticated"] is False
    assert api.get("/api/v2/external-auth", headers=bob).json()["links"] == []
    assert api.delete(FAKE, headers=bob).status_code == 404
    assert api.store.get_link(api.user_id("alice"), "fake") is not None
    assert api.get(FAKE, headers=alice).json()["authenticated"] is True
    # bob links his own; alice's stays hers
    fake.script("token", Answer(json={"access_token": "bobs"}))
    r = api.post(FAKE + "/device", headers=bob,
                 json={"device_code": started_device_code(api, bob)})
    assert r.status_code == 204
    alices = api.store.get_link(api.user_id("alice"), "fake")
    assert alices is not None and alices.access_token != "bobs"


def test_stored_times_read_back_exactly(api: Api) -> None:
    api.login()
    user_id = api.user_id("alice")
    # Microseconds, and an offset that must come back as the same instant in UTC.
    when = datetime(2031, 5, 17, 23, 59, 58, 123456, tzinfo=timezone(timedelta(hours=-7)))
    api.store.upsert_link(user_id, "fake", "gho_t", "ghr_t", when)
    stored = api.store.get_link(user_id, "fake")
    assert stored is not None and stored.expires_at == when
    assert stored.expires_at.utcoffset() == timedelta(0)
    assert stored.created_at.tzinfo is not None


def test_an_unusable_provider_is_listed_and_its_operations_say_why(
    make_api, fake: FakeProvider
) -> None:
    """Coder starts with a Bitbucket Server that has no auth URL; so does extauth,
    and the provider answers 503 with the reason while the others work."""
    api = make_api(fake.config(), {"type": "bitbucket-server", "client_id": "bb",
                                   "regex": r"bitbucket\.example"})
    headers = api.login()
    link(api, fake)
    link(api, fake, provider="bitbucket-server")
    body = api.get("/api/v2/external-auth", headers=headers).json()
    usable, unusable = body["providers"]
    assert "unusable" not in usable
    assert unusable["id"] == "bitbucket-server"
    assert unusable["unusable"].startswith("it has no token URL: set test[1]: 'auth_url'")
    links = {x["provider_id"]: x for x in body["links"]}
    assert links["fake"]["authenticated"] is True
    assert links["bitbucket-server"]["authenticated"] is False
    assert links["bitbucket-server"]["validate_error"].startswith(
        "The provider cannot be used as configured: it has no token URL")
    calls = [("GET", "/api/v2/external-auth/bitbucket-server", None),
             ("GET", "/api/v2/external-auth/bitbucket-server/device", None),
             ("POST", "/api/v2/external-auth/bitbucket-server/device", {"device_code": "x"}),
             ("GET", "/external-auth/bitbucket-server/callback", None),
             ("GET", "/api/v2/workspaceagents/me/external-auth?id=bitbucket-server&match=",
              None),
             ("GET", "/api/v2/workspaceagents/me/external-auth?match=bitbucket.example",
              None)]
    before = len(fake.requests)
    for method, path, json in calls:
        r = api.request(method, path, headers=headers, json=json)
        assert r.status_code == 503, (path, r.text)
        assert r.headers["content-type"] == "application/json"
        assert r.json()["message"] == "Provider 'bitbucket-server' cannot be used as configured."
        assert r.json()["detail"] == unusable["unusable"]
    assert len(fake.requests) == before
    r = api.delete("/api/v2/external-auth/bitbucket-server", headers=headers)
    assert (r.status_code, r.json()) == (200, {"token_revoked": False})
    assert api.store.get_link(api.user_id("alice"), "bitbucket-server") is None


# -- the list validates each link, as Coder's does -------------------------------------

LIST = "/api/v2/external-auth"


def test_list_shows_a_token_revoked_at_the_provider_as_unauthenticated(
    api: Api, fake: FakeProvider
) -> None:
    headers = api.login()
    access, _ = link(api, fake)
    fake.revoked.add(access)
    r = api.get(LIST, headers=headers)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    [listed] = r.json()["links"]
    assert listed["authenticated"] is False
    assert listed["validate_error"] == (
        "The token failed to validate: the provider rejected the token (HTTP 401); link again.")
    assert fake.seen("validate")[0].headers["authorization"] == f"Bearer {access}"
    stored = api.store.get_link(api.user_id("alice"), "fake")
    assert stored is not None and stored.access_token == access


@pytest.mark.parametrize("answer, error", [
    (Answer(status=500, text="Something went wrong!"),
     "Failed to validate token with provider 'fake': it answered HTTP 500."),
    (Answer(status=200, json={}, delay=1.0),
     "Provider 'fake' did not answer the token validation within 0.4s."),
    # Every read is quick, the whole answer is not: the provider timeout bounds it.
    (Answer(status=200, text="x" * 12, drip=0.15),
     "Provider 'fake' did not answer the token validation within 0.4s."),
])
def test_a_provider_that_fails_shows_on_its_link_not_on_the_list(
    make_api, fake: FakeProvider, answer: Answer, error: str
) -> None:
    api = make_api(fake.config(), fake.config(id="other"), provider_timeout=0.4)
    headers = api.login()
    access, refresh = link(api, fake)
    link(api, fake, provider="other")
    fake.script("validate", answer)
    r = api.get(LIST, headers=headers)
    assert r.status_code == 200, r.text
    links = {x["provider_id"]: x for x in r.json()["links"]}
    assert (links["fake"]["authenticated"], links["fake"]["validate_error"]) == (False, error)
    assert (links["other"]["authenticated"], links["other"]["validate_error"]) == (True, "")
    assert access not in r.text
    stored = api.store.get_link(api.user_id("alice"), "fake")
    assert stored is not None and (stored.access_token, stored.refresh_token) == (access, refresh)


def test_a_rate_limited_validation_keeps_the_link_authenticated(
    api: Api, fake: FakeProvider
) -> None:
    headers = api.login()
    link(api, fake)
    fake.script("validate", Answer(status=429, text="slow down"))
    [listed] = api.get(LIST, headers=headers).json()["links"]
    assert (listed["authenticated"], listed["validate_error"]) == (True, "")


def test_the_links_of_a_list_are_validated_at_once(make_api, fake: FakeProvider) -> None:
    api = make_api(fake.config(), fake.config(id="two"), fake.config(id="three"))
    headers = api.login()
    for provider in ("fake", "two", "three"):
        link(api, fake, provider=provider)
    user = {"id": 1, "login": "octocat"}
    fake.script("validate", *[Answer(json=user, delay=0.3)] * 3)
    body = api.get(LIST, headers=headers).json()
    assert [x["authenticated"] for x in body["links"]] == [True] * 3
    assert len(fake.seen("validate")) == 3
    assert fake.most_in_flight["/user"] == 3


def test_a_list_and_a_get_share_one_validation_in_flight(make_api, fake: FakeProvider) -> None:
    api = make_api(fake.config(app_installations_url=None), validate_cache_seconds=0)
    headers = api.login()
    link(api, fake)
    # One slow answer, and the token revoked: every caller must have had it.
    fake.script("validate", Answer(status=401, json={"message": "Bad credentials"}, delay=0.5))
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda path: api.get(path, headers=headers),
                                [LIST, FAKE, LIST]))
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert answers[1].json()["authenticated"] is False
    assert [r.json()["links"][0]["authenticated"] for r in (answers[0], answers[2])] == [False] * 2
    assert len(fake.seen("validate")) == 1
