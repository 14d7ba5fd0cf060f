"""Paths that used to lose or leak a grant, each against the fake provider: key
rotation during a refresh, a client misconfiguration, short-lived tokens,
waiters repeating a failing refresh, and unlinking while a refresh runs or
while the provider cannot revoke."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import yaml
from click.testing import CliRunner

from extauth.cli import main
from extauth.crypto import Cipher, key_id
from extauth.links import expires_at
from tests.conftest import Api, expire, link, sql, started_device_code
from tests.fake_provider import Answer, FakeProvider

FAKE = "/api/v2/external-auth/fake"
LIST = "/api/v2/external-auth"
K1, K2 = os.urandom(32), os.urandom(32)


def wait_until(condition: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never came true"
        time.sleep(0.01)


def together(n: int, call: Callable[[], httpx.Response]) -> list[httpx.Response]:
    """``call`` from ``n`` threads at once."""
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: call(), range(n)))


def _stored(api: Api, user: str = "alice"):  # type: ignore[no-untyped-def]
    stored = api.store.get_link(api.user_id(user), "fake")
    assert stored is not None
    return stored


# -- rotation of encryption keys -----------------------------------------------------


def test_rotating_keys_during_a_refresh_keeps_the_new_pair(make_api, fake: FakeProvider,
                                                         store_at) -> None:
    """Re-encrypting a link does not change its tokens: the refresh in flight
    still stores the pair the provider issued, so the next refresh is no reuse."""
    api = make_api(fake.config(), encryption_keys=(K2, K1))
    headers = api.login()
    access, refresh = fake.issue()
    store_at(api.settings.database, Cipher((K1,))).upsert_link(
        api.user_id("alice"), "fake", access, refresh, expires_at(-60))
    fake.refresh_delay = 0.5
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(api.get, FAKE, headers=headers)
        wait_until(lambda: fake.seen("token"))
        assert api.store.reseal_batch()[0] == 1  # while the provider answers
        assert pending.result().json()["authenticated"] is True
    stored = _stored(api)
    assert stored.key_id == key_id(K2)
    assert stored.refresh_token in fake.refresh  # the pair the provider issued
    expire(api)
    assert api.get(FAKE, headers=headers).json()["authenticated"] is True
    assert fake.refreshes == 2 and not fake.seen("revoke")


# -- a provider refusing our client --------------------------------------------------


def test_a_wrong_client_secret_keeps_every_token_and_recovers(
    make_api, fake: FakeProvider, tmp_path: Path
) -> None:
    fake.require_client_secret = True
    wrong = make_api(fake.config(client_secret="not-the-secret"))
    alice, bob = wrong.login("alice"), wrong.login("bob")
    _, alice_refresh = link(wrong, fake, user="alice", expires_in=-60)
    _, bob_refresh = link(wrong, fake, user="bob", expires_in=-60)
    [listed] = wrong.get(LIST, headers=alice).json()["links"]
    assert (listed["authenticated"], listed["has_refresh_token"]) == (False, True)
    assert "the provider refuses our client" in listed["validate_error"]
    assert "invalid_client" in listed["validate_error"]
    stored = _stored(wrong, "alice")
    assert (stored.refresh_token, stored.refresh_failure_reason) == (alice_refresh, "")
    # backing off: bob's expired link does not ask the provider again
    assert wrong.get(FAKE, headers=bob).json()["authenticated"] is False
    assert fake.refreshes == 1
    assert _stored(wrong, "bob").refresh_token == bob_refresh
    # the operator sees it
    config = tmp_path / "extauth.yaml"
    config.write_text(yaml.safe_dump({"external_auth": [
        fake.config(client_secret="not-the-secret")]}))
    shown = CliRunner().invoke(main, ["providers", "list", "--config", str(config),
                                      "--db", wrong.settings.database])
    assert shown.exit_code == 0
    assert "refusing our client" in shown.stdout and "invalid_client" in shown.stdout
    # the config is fixed: both links refresh by themselves
    right = make_api(fake.config())
    assert right.get(FAKE, headers=alice).json()["authenticated"] is True
    assert right.get(FAKE, headers=bob).json()["authenticated"] is True
    assert fake.refreshes == 3
    assert right.store.provider_refusal("fake") is None


def test_a_proxy_login_page_does_not_retire_the_refresh_token(api: Api,
                                                              fake: FakeProvider) -> None:
    headers = api.login()
    _, refresh = link(api, fake, expires_in=-60)
    fake.script("token", Answer(status=401, text="<html>Sign in to the proxy</html>",
                                content_type="text/html"))
    body = api.get(FAKE, headers=headers).json()
    assert body["authenticated"] is False
    stored = _stored(api)
    assert (stored.refresh_token, stored.refresh_failure_reason) == (refresh, "")


# -- short-lived tokens ---------------------------------------------------------------


def test_tokens_that_live_twenty_seconds_are_refreshed_once(api: Api,
                                                            fake: FakeProvider) -> None:
    """The leeway is a third of a short lifetime: a fresh token is never due."""
    headers = api.login()
    link(api, fake, expires_in=-60)
    fake.expires_in = 20
    fake.refresh_delay = 0.2
    answers = together(8, lambda: api.get(FAKE, headers=headers))
    assert [r.json()["authenticated"] for r in answers] == [True] * 8
    for _ in range(5):
        assert api.get(FAKE, headers=headers).json()["authenticated"] is True
    assert fake.refreshes == 1
    assert _stored(api).lifetime == 20


# -- one caller per link --------------------------------------------------------------


def test_concurrent_requests_in_one_process_refresh_once(api: Api, fake: FakeProvider) -> None:
    """The lease belongs to the process; its requests share one refresh."""
    headers = api.login()
    link(api, fake, expires_in=-60)
    fake.refresh_delay = 0.3
    answers = together(10, lambda: api.get(FAKE, headers=headers))
    assert [r.json()["authenticated"] for r in answers] == [True] * 10
    assert fake.refreshes == 1


def test_waiters_share_a_failing_refresh_and_it_is_remembered(make_api,
                                                              fake: FakeProvider) -> None:
    api = make_api(fake.config(), refresh_retry_seconds=1.0)
    headers = api.login()
    _, refresh = link(api, fake, expires_in=-60)
    fake.script("token", *[Answer(status=503, text="down")] * 50)
    started = time.monotonic()
    answers = together(5, lambda: api.get(LIST, headers=headers))
    took = time.monotonic() - started
    notes = [r.json()["links"][0]["validate_error"] for r in answers]
    assert all("refreshing failed and will be retried" in n for n in notes)
    # one retry loop in all: attempts at 0, 0.25 and 0.75 s within a 1 s budget
    assert 1 <= fake.refreshes <= 3, fake.refreshes
    assert took < 4.0, f"the waiters ran the budget again: {took:.1f}s"
    calls = fake.refreshes
    assert "will be retried" in api.get(LIST, headers=headers).json()["links"][0][
        "validate_error"]
    assert fake.refreshes == calls  # remembered: the provider is not asked again yet
    assert _stored(api).refresh_token == refresh


# -- revocation that really happens ----------------------------------------------------


def test_a_revocation_the_provider_did_not_confirm_is_retried(make_api,
                                                              fake: FakeProvider) -> None:
    api = make_api(fake.config(), revoke_retry_seconds=0.1)
    headers = api.login()
    _, refresh = link(api, fake)
    fake.script("revoke", Answer(status=503, text="down"), Answer(status=503, text="down"))
    body = api.delete(FAKE, headers=headers).json()
    assert body["token_revoked"] is False
    assert "503" in body["token_revocation_error"]
    assert "keeps trying" in body["token_revocation_error"]
    assert api.store.get_link(api.user_id("alice"), "fake") is None

    def trail() -> list[tuple[str, str]]:
        return [(e.action, e.outcome) for e in reversed(api.store.audit_events())]

    wait_until(lambda: ("revoke", "ok") in trail())
    assert trail()[-3:] == [("unlink", ""), ("revoke", "failed"), ("revoke", "ok")]
    assert api.store.pending_revocations() == []
    assert refresh in fake.revoked
    assert len(fake.seen("revoke")) == 3


def test_pending_revocations_are_listed_without_tokens(make_api, fake: FakeProvider) -> None:
    api = make_api(fake.config(), revoke_retry_seconds=3600, encryption_keys=(K1,))
    headers = api.login()
    access, refresh = link(api, fake)
    fake.script("revoke", Answer(status=503, text="down"))
    assert api.delete(FAKE, headers=headers).json()["token_revoked"] is False
    [pending] = api.store.pending_revocations()
    assert (pending.user_name, pending.provider_id, pending.attempts) == ("alice", "fake", 1)
    assert pending.refresh_token == refresh and pending.key_id == key_id(K1)
    shown = CliRunner().invoke(main, ["revocations", "--db", api.settings.database],
                               env={"EXTAUTH_ENCRYPTION_KEYS": ""})
    assert shown.exit_code == 0
    assert "alice\tfake\tunlink\t1" in shown.stdout and "503" in shown.stdout
    assert access not in shown.stdout and refresh not in shown.stdout
    raw = sql(api, "SELECT * FROM pending_revocations")
    assert access not in repr(raw) and refresh not in repr(raw)


def test_tokens_refreshed_while_unlinking_are_revoked(api: Api, fake: FakeProvider) -> None:
    """The refresh's new pair lands after the link is gone: it is revoked too."""
    headers = api.login()
    _, old_refresh = link(api, fake, expires_in=-60)
    fake.refresh_delay = 0.5
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(api.get, FAKE, headers=headers)
        wait_until(lambda: fake.seen("token"))
        assert api.delete(FAKE, headers=headers).status_code == 200
        pending.result()
    [new_refresh] = [r for r in fake.refresh if r != old_refresh]
    assert new_refresh in fake.revoked  # before the request that refreshed answered
    assert fake.refresh[new_refresh] in fake.revoked  # its access token with it
    assert api.store.get_link(api.user_id("alice"), "fake") is None
    assert not api.store.pending_revocations()


def test_linking_again_drops_a_grant_wide_revocation(make_api, fake: FakeProvider) -> None:
    """GitHub's revocation ends the whole app authorization: retried after the
    user linked again, it would end the new link too."""
    api = make_api(fake.config(type="github", revoke_url=f"{fake.url}/applications/x/grant"),
                   revoke_retry_seconds=3600)
    headers = api.login()
    link(api, fake)
    fake.script("revoke", Answer(status=503, text="down"))
    assert api.delete(FAKE, headers=headers).json()["token_revoked"] is False
    assert len(api.store.pending_revocations()) == 1
    device = api.get(f"{FAKE}/device", headers=headers).json()
    fake.approve(device["device_code"])
    assert api.post(f"{FAKE}/device", headers=headers,
                    json={"device_code": device["device_code"]}).status_code == 204
    assert api.store.pending_revocations() == []
    assert ("revoke", "superseded") in [(e.action, e.outcome) for e in api.store.audit_events()]


def test_a_grant_wide_retry_never_ends_a_link_made_since(make_api,
                                                          fake: FakeProvider) -> None:
    """A link that reached the database without dropping the pending record (it
    was claimed for a retry at that moment): the retry drops it, unsent."""
    api = make_api(fake.config(type="github", revoke_url=f"{fake.url}/applications/x/grant"),
                   revoke_retry_seconds=0.2)
    headers = api.login()
    link(api, fake)
    fake.script("revoke", Answer(status=503, text="down"))
    assert api.delete(FAKE, headers=headers).json()["token_revoked"] is False
    access, _ = link(api, fake)  # written as another instance would, mid-claim
    wait_until(lambda: not api.store.pending_revocations())
    assert ("revoke", "superseded") in [(e.action, e.outcome) for e in api.store.audit_events()]
    assert len(fake.seen("revoke")) == 1 and access not in fake.revoked
    assert api.get(FAKE, headers=headers).json()["authenticated"] is True


# -- what a provider says, as clients see it ------------------------------------------


def test_a_device_exchange_error_is_cut_and_scrubbed(api: Api, fake: FakeProvider) -> None:
    headers = api.login()
    code = started_device_code(api, headers)
    echo = f"{code} {fake.CLIENT_SECRET} " * 200
    fake.script("token", Answer(status=400, json={"error": f"{code}_x{'y' * 5000}",
                                                  "error_description": echo}))
    r = api.post(f"{FAKE}/device", headers=headers, json={"device_code": code})
    assert r.status_code == 400
    detail = r.json()["detail"]
    assert len(detail) <= 70 and detail.startswith("****_xyyy")
    assert code not in r.text and fake.CLIENT_SECRET not in r.text


def test_a_refresh_failure_shown_to_clients_is_cut_and_scrubbed(api: Api,
                                                                fake: FakeProvider) -> None:
    headers = api.login()
    _, refresh = link(api, fake, expires_in=-60)
    fake.script("token", Answer(status=400, json={
        "error": "invalid_grant",
        "error_description": f"refresh token {refresh} is revoked\n" + "z" * 10_000}))
    [listed] = api.get(LIST, headers=headers).json()["links"]
    assert "invalid_grant: refresh token **** is revoked z" in listed["validate_error"]
    assert refresh not in listed["validate_error"] and len(listed["validate_error"]) < 400


def test_a_code_exchange_error_never_echoes_the_code_or_verifier(api: Api,
                                                                 fake: FakeProvider) -> None:
    headers = api.login()
    r = api.get("/external-auth/fake/callback", headers=headers, follow_redirects=False)
    back = httpx.get(r.headers["location"], follow_redirects=False).headers["location"]
    code = parse_qs(urlsplit(back).query)["code"][0]
    fake.script("token", Answer(status=400, json={"error": "invalid_grant",
                                                  "error_description": f"bad {code} " * 50}))
    # the verifier is echoed too: the fake's answer cannot know it, so check what was sent
    r = api.get(back, headers=headers, follow_redirects=False)
    verifier = fake.seen("token")[0].form["code_verifier"]
    assert r.status_code == 500
    assert code not in r.text and verifier not in r.text and len(r.json()["detail"]) < 300


def test_a_huge_provider_error_in_the_callback_is_cut(api: Api) -> None:
    r = api.get("/external-auth/fake/callback", headers=api.login(),
                params={"error": "e" * 5000, "error_description": "d" * 50_000})
    assert r.status_code == 400
    assert len(r.json()["message"]) < 120 and len(r.json()["detail"]) <= 203
