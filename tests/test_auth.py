"""Session tokens: every way to send one, and Coder's 401 for every way to fail."""

from __future__ import annotations

from datetime import timedelta

import pytest

from extauth import sessions
from extauth.errors import SIGNED_OUT
from extauth.store import open_store
from tests.conftest import Api, sql

LIST = "/api/v2/external-auth"


def _detail(r) -> str:  # type: ignore[no-untyped-def]
    assert r.status_code == 401, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.headers["www-authenticate"].startswith('Bearer realm="extauth"')
    body = r.json()
    assert body["message"] == SIGNED_OUT
    return str(body["detail"])


def test_missing_token_is_401(api: Api) -> None:
    assert _detail(api.get(LIST)) == (
        'Cookie "coder_session_token" or query parameter must be provided.')


@pytest.mark.parametrize("token, detail", [
    ("abc", "Invalid API key format: incorrect amount of API key parts, expected 2 got 1"),
    ("a-b-c", "Invalid API key format: incorrect amount of API key parts, expected 2 got 3"),
    ("short-" + "s" * 22, "Invalid API key format: invalid API key ID length, expected 10 got 5"),
    ("0123456789-short",
     "Invalid API key format: invalid API key secret length, expected 22 got 5"),
    ("", 'Cookie "coder_session_token" or query parameter must be provided.'),
])
def test_malformed_token_is_401(api: Api, token: str, detail: str) -> None:
    assert _detail(api.get(LIST, headers={"Coder-Session-Token": token})) == detail


def test_unknown_token_id_is_401(api: Api) -> None:
    r = api.get(LIST, headers={"Coder-Session-Token": "0123456789-" + "x" * 22})
    assert _detail(r) == "API key is invalid."


def test_wrong_secret_is_401(api: Api) -> None:
    token = api.login()["Coder-Session-Token"]
    wrong = token[:11] + ("A" if token[11] != "A" else "B") + token[12:]
    assert _detail(api.get(LIST, headers={"Coder-Session-Token": wrong})) == (
        "API key secret is invalid.")


def test_expired_token_is_401(api: Api) -> None:
    user = api.store.create_user("old")
    token = sessions.create_token(api.store, user, timedelta(seconds=1))
    sql(api, "UPDATE api_keys SET expires_at = '2020-01-01T00:00:00.000000Z'")
    assert _detail(api.get(LIST, headers={"Coder-Session-Token": token})) == (
        'API key expired at "2020-01-01 00:00:00.000000 +0000 UTC".')


def test_deleted_token_is_401(api: Api) -> None:
    token = api.login()["Coder-Session-Token"]
    assert api.store.delete_api_key(token[:10])
    assert _detail(api.get(LIST, headers={"Coder-Session-Token": token})) == "API key is invalid."


@pytest.mark.parametrize("how", ["header", "cookie", "query", "bearer", "bearer-lowercase",
                                 "access_token"])
def test_every_way_to_send_the_token_works(api: Api, how: str) -> None:
    token = api.login()["Coder-Session-Token"]
    kwargs: dict = {
        "header": {"headers": {"Coder-Session-Token": token}},
        "cookie": {"headers": {"Cookie": f"coder_session_token={token}"}},
        "query": {"params": {"coder_session_token": token}},
        "bearer": {"headers": {"Authorization": f"Bearer {token}"}},
        "bearer-lowercase": {"headers": {"Authorization": f"bearer {token}"}},
        # Coder's fifth source, after all the others (httpmw.APITokenFromRequest).
        "access_token": {"params": {"access_token": token}},
    }[how]
    r = api.get(LIST, **kwargs)
    assert r.status_code == 200
    assert r.json()["links"] == []


def test_coders_order_decides_between_conflicting_tokens(api: Api) -> None:
    good = api.login()["Coder-Session-Token"]
    bad = "0123456789-" + "x" * 22
    # The cookie comes first in Coder's order: a bad cookie fails even beside a good header.
    r = api.get(LIST, headers={"Cookie": f"coder_session_token={bad}",
                               "Coder-Session-Token": good})
    assert _detail(r) == "API key is invalid."
    r = api.get(LIST, headers={"Cookie": f"coder_session_token={good}",
                               "Coder-Session-Token": bad})
    assert r.status_code == 200
    r = api.get(LIST, headers={"Coder-Session-Token": bad, "Authorization": f"Bearer {good}"})
    assert _detail(r) == "API key is invalid."
    r = api.get(LIST, headers={"Authorization": f"Bearer {bad}"}, params={"access_token": good})
    assert _detail(r) == "API key is invalid."
    r = api.get(LIST, headers={"Authorization": f"Bearer {good}"}, params={"access_token": bad})
    assert r.status_code == 200


def test_an_access_token_in_the_query_never_becomes_a_cookie(api: Api) -> None:
    token = api.login()["Coder-Session-Token"]
    r = api.get("/external-auth/fake/callback", params={"access_token": token},
                follow_redirects=False)
    assert r.status_code == 307
    assert "set-cookie" not in r.headers


@pytest.mark.parametrize("value", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer  ", "Token abc"])
def test_other_authorization_schemes_are_401(api: Api, value: str) -> None:
    """No token is no token, as Coder says, however connexion put it."""
    assert _detail(api.get(LIST, headers={"Authorization": value})) == (
        'Cookie "coder_session_token" or query parameter must be provided.')


def test_only_a_hash_of_the_secret_is_stored(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = open_store(tmp_path / "x.db")
    store.migrate()
    token = sessions.create_token(store, store.create_user("u"))
    key_id, secret = token.split("-")
    assert len(key_id) == 10 and len(secret) == 22
    row = store.get_api_key(key_id)
    assert row is not None and row.secret_hash == sessions.hash_secret(secret)
    assert secret.encode() not in (tmp_path / "x.db").read_bytes()


def test_every_operation_needs_a_session(api: Api) -> None:
    for method, path in [("get", LIST), ("get", LIST + "/fake"), ("delete", LIST + "/fake"),
                         ("get", LIST + "/fake/device"), ("post", LIST + "/fake/device")]:
        r = api.request(method, path, json={"device_code": "x"} if method == "post" else None)
        assert r.status_code == 401, (method, path)


@pytest.mark.parametrize("text, expected", [
    ("30d", timedelta(days=30)), ("12h", timedelta(hours=12)), ("1d12h", timedelta(hours=36)),
    ("90m", timedelta(minutes=90)),
])
def test_parse_lifetime(text: str, expected: timedelta) -> None:
    assert sessions.parse_lifetime(text) == expected


@pytest.mark.parametrize("text", ["", "0d", "abc", "5 days", "-1h"])
def test_parse_lifetime_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        sessions.parse_lifetime(text)
