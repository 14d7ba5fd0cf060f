"""Session tokens: every way to send one, and Coder's 401 for every way to fail."""

from __future__ import annotations

from datetime import timedelta

import pytest

from extauth import sessions
from extauth.app import load_spec
from extauth.errors import SIGNED_OUT, UnauthorizedError
from extauth.links import expires_at
from extauth.store import open_store
from handlers.security import LOOKED_UP_BY_THE_OPERATION
from tests.conftest import Api, sql

LIST = "/api/v2/external-auth"
HANDOFF = "/api/v2/workspaceagents/me/external-auth"


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


# -- the operations that look the token up with their own read ------------------------


def _failing_tokens(api: Api) -> dict[str, tuple[str, str]]:
    """Tokens of the right shape that open no session, each with its 401 detail."""
    token = api.login()["Coder-Session-Token"]
    wrong = token[:11] + ("A" if token[11] != "A" else "B") + token[12:]
    user = api.store.create_user("old")
    expired = sessions.create_token(api.store, user, timedelta(seconds=1))
    sql(api, "UPDATE api_keys SET expires_at = '2020-01-01T00:00:00.000000Z' WHERE id = ?",
        (expired[:10],))
    deleted = api.login("bob")["Coder-Session-Token"]
    assert api.store.delete_api_key(deleted[:10])
    return {
        "unknown": ("0123456789-" + "x" * 22, "API key is invalid."),
        "wrong secret": (wrong, "API key secret is invalid."),
        "expired": (expired, 'API key expired at "2020-01-01 00:00:00.000000 +0000 UTC".'),
        "deleted": (deleted, "API key is invalid."),
    }


@pytest.mark.parametrize("path", [
    LIST, LIST + "/fake", LIST + "/nope",  # an unknown provider is not news to them
    HANDOFF + "?id=fake", HANDOFF + "?id=nope", HANDOFF + "?id=fake&match=x", HANDOFF,
])
def test_a_token_that_opens_no_session_is_the_first_answer(api: Api, path: str) -> None:
    tokens = _failing_tokens(api)
    link_user = api.user_id("alice")
    api.store.upsert_link(link_user, "fake", "gho_x", "", expires_at(3600))
    for name, (token, detail) in tokens.items():
        r = api.get(path, headers={"Coder-Session-Token": token})
        assert _detail(r) == detail, name


def test_the_operations_that_look_the_token_up_cannot_fail_validation_first() -> None:
    """Their token is looked up after connexion's request validation: were a request
    able to fail it, a caller without a session would learn of a 400 before the 401."""
    spec = load_spec()
    found = {}
    for item in spec["paths"].values():
        for method, op in item.items():
            if not isinstance(op, dict) or "operationId" not in op:
                continue
            schemes = {name for req in op.get("security", spec["security"]) for name in req}
            by_handler = {spec["components"]["securitySchemes"][name].get("x-apikeyInfoFunc")
                          for name in schemes}
            if (op["operationId"] in LOOKED_UP_BY_THE_OPERATION
                    or "handlers.security.agent_or_session_token" in by_handler):
                found[op["operationId"]] = (method, [*item.get("parameters", []),
                                                     *op.get("parameters", [])], op)
    assert set(LOOKED_UP_BY_THE_OPERATION) <= set(found)
    for operation, (method, parameters, op) in found.items():
        assert method == "get" and "requestBody" not in op, operation
        for param in parameters:
            param = spec["components"]["parameters"][param["$ref"].rsplit("/", 1)[1]] \
                if "$ref" in param else param
            assert param["schema"] == {"type": "string"}, (operation, param["name"])
            assert param["in"] == "path" or not param.get("required"), (operation, param["name"])


def test_a_key_and_its_links_are_read_together(database: str, store_at) -> None:  # type: ignore[no-untyped-def]
    store = store_at(database)
    store.migrate()
    alice, bob = store.create_user("alice"), store.create_user("bob")
    token = sessions.create_token(store, alice)
    for user, provider in ((alice, "zeta"), (alice, "alpha"), (bob, "alpha")):
        store.upsert_link(user.id, provider, f"gho_{user.name}_{provider}", "", None)
    key, links = store.api_key_and_links(token[:10])
    assert key == store.get_api_key(token[:10])
    assert [(x.user_id, x.provider_id) for x in links] == [(alice.id, "alpha"), (alice.id, "zeta")]
    assert links == store.links_for_user(alice.id)
    key, links = store.api_key_and_links(token[:10], "zeta")
    assert key is not None and links == [store.get_link(alice.id, "zeta")]
    assert store.api_key_and_links(token[:10], "nope")[1] == []
    assert store.api_key_and_links("0123456789") == (None, [])
    lonely = sessions.create_token(store, store.create_user("carol"))
    key, links = store.api_key_and_links(lonely[:10])
    assert key is not None and key.user_name == "carol" and links == []

    agent = sessions.create_agent_token(store, bob, "laptop")
    found, links = store.agent_token_and_links(sessions.hash_secret(agent), "alpha")
    assert found == store.agent_token_by_hash(sessions.hash_secret(agent))
    assert links == [store.get_link(bob.id, "alpha")]
    assert store.agent_token_and_links(sessions.hash_secret("nope")) == (None, [])


def test_a_credential_is_checked_before_its_links_are_used(database: str, store_at) -> None:  # type: ignore[no-untyped-def]
    store = store_at(database)
    store.migrate()
    alice = store.create_user("alice")
    token = sessions.create_token(store, alice)
    store.upsert_link(alice.id, "fake", "gho_alice", "", None)
    session, links = sessions.authenticate_reading(store, sessions.credential(token), "fake")
    assert (session.user_id, session.kind) == (alice.id, "session")
    assert [x.access_token for x in links] == ["gho_alice"]
    wrong = token[:11] + ("A" if token[11] != "A" else "B") + token[12:]
    with pytest.raises(UnauthorizedError, match="API key secret is invalid"):
        sessions.authenticate_reading(store, sessions.credential(wrong), "fake")
    agent = sessions.create_agent_token(store, alice)
    with pytest.raises(UnauthorizedError, match="expected 2 got 5"):
        sessions.credential(agent)  # where only a session token opens
    session, links = sessions.authenticate_reading(
        store, sessions.credential(agent, agents=True), "fake")
    assert (session.user_id, session.kind) == (alice.id, "agent") and len(links) == 1
    assert "gho" not in repr(sessions.credential(token)) and token not in repr(
        sessions.credential(token))
