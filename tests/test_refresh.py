"""Refresh: single-flight, compare-and-swap, failure classes, never a lost token."""

from __future__ import annotations

import pytest

from extauth.errors import ProviderError, ProviderRateLimitedError
from extauth.links import expires_at
from extauth.providers.oauth import OAuthError
from extauth.refresh import Failure, classify
from extauth.settings import ProviderConfig, build_provider
from tests.conftest import Api, link, started_device_code
from tests.fake_provider import Answer, FakeProvider

FAKE = "/api/v2/external-auth/fake"


GENERIC = build_provider(FakeProvider().config(), "test")
GITEA = build_provider(FakeProvider().config(type="gitea"), "test")


@pytest.mark.parametrize("p, exc, kind", [
    # only an answer about the token itself retires the refresh token
    (GENERIC, OAuthError("invalid_grant", status=400), Failure.TOKEN),
    (GENERIC, OAuthError("bad_refresh_token", status=200), Failure.TOKEN),
    (GITEA, OAuthError("unauthorized_client", status=400), Failure.TOKEN),
    # our client's credentials or permissions: the config is wrong, not the token
    (GENERIC, OAuthError("unauthorized_client", status=400), Failure.CLIENT),
    (GENERIC, OAuthError("incorrect_client_credentials", status=200), Failure.CLIENT),
    (GENERIC, OAuthError("invalid_client", status=401), Failure.CLIENT),
    (GENERIC, OAuthError("unsupported_grant_type", status=400), Failure.CLIENT),
    (GENERIC, ProviderError("x", upstream_status=401), Failure.CLIENT),
    # anything else may pass: the token is kept
    (GENERIC, OAuthError("something_else", status=400), Failure.TRANSIENT),
    (GENERIC, OAuthError("something_else", status=500), Failure.TRANSIENT),
    (GENERIC, OAuthError("temporarily_unavailable", status=400), Failure.TRANSIENT),
    (GENERIC, OAuthError("server_error", status=200), Failure.TRANSIENT),
    (GENERIC, ProviderError("x", upstream_status=500), Failure.TRANSIENT),
    (GENERIC, ProviderError("x", upstream_status=503), Failure.TRANSIENT),
    (GENERIC, ProviderError("x", upstream_status=403), Failure.TRANSIENT),
    (GENERIC, ProviderError("x", upstream_status=400), Failure.TRANSIENT),
    (GENERIC, ProviderError("timeout"), Failure.TRANSIENT),
    (GENERIC, ProviderRateLimitedError("x"), Failure.TRANSIENT),
])
def test_refresh_decision_table(p: ProviderConfig, exc: Exception, kind: Failure) -> None:
    assert classify(p, exc) is kind


def _expired(api: Api, fake: FakeProvider, user: str = "alice") -> tuple[str, str]:
    return link(api, fake, user=user, expires_in=-60)


def _stored(api: Api, user: str = "alice"):  # type: ignore[no-untyped-def]
    stored = api.store.get_link(api.user_id(user), "fake")
    assert stored is not None
    return stored


def test_get_refreshes_an_expired_token_before_validating(api: Api, fake: FakeProvider) -> None:
    headers = api.login()
    old_access, old_refresh = _expired(api, fake)
    body = api.get(FAKE, headers=headers).json()
    assert body["authenticated"] is True and body["user"]["login"] == "octocat"
    assert fake.refreshes == 1
    assert fake.seen("token")[0].form["refresh_token"] == old_refresh
    new = _stored(api)
    assert new.access_token != old_access and new.refresh_token != old_refresh
    assert new.access_token in fake.access and new.expires_at is not None
    assert fake.seen("validate")[0].headers["authorization"] == f"Bearer {new.access_token}"


def test_list_refreshes_expired_links(api: Api, fake: FakeProvider) -> None:
    headers = api.login()
    _expired(api, fake)
    [listed] = api.get("/api/v2/external-auth", headers=headers).json()["links"]
    assert (listed["authenticated"], listed["validate_error"]) == (True, "")
    assert fake.refreshes == 1
    assert api.get("/api/v2/external-auth", headers=headers).json()["links"][0][
        "authenticated"] is True
    assert fake.refreshes == 1  # fresh now: no second refresh


def test_a_token_about_to_expire_is_refreshed(api: Api, fake: FakeProvider) -> None:
    headers = api.login()
    link(api, fake, expires_in=10)
    assert api.get(FAKE, headers=headers).json()["authenticated"] is True
    assert fake.refreshes == 1


def test_a_fresh_token_is_not_refreshed(api: Api, fake: FakeProvider) -> None:
    headers = api.login()
    link(api, fake, expires_in=3600)
    assert api.get(FAKE, headers=headers).json()["authenticated"] is True
    assert fake.refreshes == 0


def test_the_old_refresh_token_is_kept_when_none_is_returned(api: Api, fake: FakeProvider) -> None:
    headers = api.login()
    _, old_refresh = _expired(api, fake)
    fake.script("token", Answer(json={"access_token": "new-at", "expires_in": 3600}))
    fake.access["new-at"] = "octocat"
    assert api.get(FAKE, headers=headers).json()["authenticated"] is True
    stored = _stored(api)
    assert (stored.access_token, stored.refresh_token) == ("new-at", old_refresh)


def test_permanent_failure_is_recorded_and_not_retried(api: Api, fake: FakeProvider) -> None:
    headers = api.login()
    _expired(api, fake)
    fake.script("token", Answer(status=400, json={"error": "invalid_grant",
                                                  "error_description": "revoked"}))
    assert api.get(FAKE, headers=headers).json()["authenticated"] is False
    stored = _stored(api)
    assert stored.refresh_token == ""
    assert stored.refresh_failure_reason == "invalid_grant: revoked"
    [listed] = api.get("/api/v2/external-auth", headers=headers).json()["links"]
    assert listed["authenticated"] is False and listed["has_refresh_token"] is False
    assert "refreshing failed just now with: invalid_grant: revoked" in listed["validate_error"]
    assert fake.refreshes == 1  # later calls fail locally, without asking the provider
    # linking again clears the failure
    fake.script("token", Answer(json={"access_token": "again", "refresh_token": "again-r"}))
    fake.access["again"] = "octocat"
    assert api.post(f"{FAKE}/device", headers=headers,
                    json={"device_code": started_device_code(api, headers)}).status_code == 204
    assert _stored(api).refresh_failure_reason == ""
    assert api.get(FAKE, headers=headers).json()["authenticated"] is True


def test_github_style_200_bad_refresh_token_is_permanent(api: Api, fake: FakeProvider) -> None:
    headers = api.login()
    _expired(api, fake)
    fake.script("token", Answer(status=200, json={"error": "bad_refresh_token"}))
    assert api.get(FAKE, headers=headers).json()["authenticated"] is False
    assert _stored(api).refresh_failure_reason == "bad_refresh_token"


def test_transient_failure_is_retried(make_api, fake: FakeProvider) -> None:
    api = make_api(fake.config(), refresh_retry_seconds=5.0)
    headers = api.login()
    _, old_refresh = _expired(api, fake)
    fake.script("token", Answer(status=503, text="maintenance"),
                Answer(status=500, json={"error": "server_error"}))
    assert api.get(FAKE, headers=headers).json()["authenticated"] is True
    assert fake.refreshes == 3
    assert _stored(api).refresh_token != old_refresh


@pytest.mark.parametrize("answer", [
    Answer(status=503, text="maintenance"),
    Answer(status=403, json={"message": "API rate limit exceeded"},
           headers={"X-RateLimit-Remaining": "0"}),
    Answer(status=429, text="slow down", headers={"Retry-After": "60"}),
    Answer(status=200, json={}, delay=1.0),
])
def test_transient_failure_never_clears_the_refresh_token(
    make_api, fake: FakeProvider, answer: Answer
) -> None:
    api = make_api(fake.config(), refresh_retry_seconds=0.3, provider_timeout=0.5)
    headers = api.login()
    old_access, old_refresh = _expired(api, fake)
    for _ in range(5):
        fake.script("token", answer)
    [listed] = api.get("/api/v2/external-auth", headers=headers).json()["links"]
    assert listed["authenticated"] is False
    assert "will be retried" in listed["validate_error"]
    assert old_refresh not in listed["validate_error"]
    stored = _stored(api)
    assert (stored.access_token, stored.refresh_token) == (old_access, old_refresh)
    assert stored.refresh_failure_reason == ""
    assert listed["has_refresh_token"] is True


def test_no_refresh_provider_never_refreshes(make_api, fake: FakeProvider) -> None:
    api = make_api(fake.config(no_refresh=True))
    headers = api.login()
    _expired(api, fake)
    [listed] = api.get("/api/v2/external-auth", headers=headers).json()["links"]
    assert listed["authenticated"] is False
    assert "refreshing is disabled" in listed["validate_error"]
    assert fake.requests == []


def test_a_failure_never_overwrites_a_token_stored_meanwhile(api: Api, fake: FakeProvider) -> None:
    user = api.store.create_user("carol")
    api.store.upsert_link(user.id, "fake", "at-1", "rt-1", expires_at(-60))
    read = api.store.get_link(user.id, "fake")
    assert read is not None
    api.store.upsert_link(user.id, "fake", "at-2", "rt-2", expires_at(3600))  # a relink
    assert api.store.record_refresh_failure(read, "invalid_grant") is False
    assert api.store.replace_tokens(read, "at-x", "rt-x", None) is None
    kept = api.store.get_link(user.id, "fake")
    assert kept is not None
    assert (kept.access_token, kept.refresh_token, kept.refresh_failure_reason) == (
        "at-2", "rt-2", "")


def test_a_stale_refresh_never_writes_over_a_link_made_again(api: Api, fake: FakeProvider) -> None:
    """Unlinked and linked again while a refresh ran: the new row starts at version
    1 too, and must still not take the old refresh's outcome."""
    user = api.store.create_user("carol")
    api.store.upsert_link(user.id, "fake", "at-1", "rt-1", expires_at(-60))
    read = api.store.get_link(user.id, "fake")
    assert read is not None and read.version == 1
    api.store.delete_link(user.id, "fake")
    api.store.upsert_link(user.id, "fake", "at-new", "rt-new", expires_at(3600))
    fresh = api.store.get_link(user.id, "fake")
    assert fresh is not None and fresh.version == 1
    assert api.store.record_refresh_failure(read, "invalid_grant") is False
    assert api.store.replace_tokens(read, "at-old-grant", "rt-old-grant", None) is None
    kept = api.store.get_link(user.id, "fake")
    assert kept is not None
    assert (kept.access_token, kept.refresh_token, kept.refresh_failure_reason) == (
        "at-new", "rt-new", "")


def test_reusing_a_rotated_refresh_token_revokes_the_grant_at_the_fake(fake: FakeProvider) -> None:
    """The fake behaves like a provider with reuse detection (the tests rely on it)."""
    import httpx

    access, refresh = fake.issue()
    first = httpx.post(f"{fake.url}/token", data={"grant_type": "refresh_token",
                                                  "refresh_token": refresh}).json()
    again = httpx.post(f"{fake.url}/token", data={"grant_type": "refresh_token",
                                                  "refresh_token": refresh})
    assert again.status_code == 400
    assert first["access_token"] in fake.revoked and first["refresh_token"] in fake.revoked
