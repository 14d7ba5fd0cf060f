"""Agent tokens: made by the CLI, stored hashed, bound to one user, good for the
token hand-off only, refused with Coder's agent messages in every wrong shape."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from extauth import sessions
from extauth.cli import main
from extauth.store import open_store
from tests.conftest import Api, link, sql
from tests.fake_provider import FakeProvider

HANDOFF = "/api/v2/workspaceagents/me/external-auth"
LIST = "/api/v2/external-auth"


def run(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, list(args), env={}, catch_exceptions=False)


def agent_token(api: Api, user: str = "alice", **kwargs: object) -> str:
    found = api.store.get_user(user) or api.store.create_user(user)
    return sessions.create_agent_token(api.store, found, **kwargs)  # type: ignore[arg-type]


def linked(api: Api, fake: FakeProvider, user: str = "alice") -> str:
    """A link for ``user`` (created if need be); its access token."""
    if api.store.get_user(user) is None:
        api.store.create_user(user)
    access, _ = link(api, fake, user=user)
    return access


def _401(r) -> dict:  # type: ignore[no-untyped-def]
    assert r.status_code == 401, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["www-authenticate"].startswith('Bearer realm="extauth"')
    body: dict = r.json()
    return body


# -- the CLI -------------------------------------------------------------------------------


def test_agents_create_prints_only_a_uuid4_and_stores_its_hash(tmp_path: Path) -> None:
    db = str(tmp_path / "cli.db")
    run("users", "create", "alice", "--db", db)
    r = run("agents", "create", "alice", "--name", "laptop", "--lifetime", "30d", "--db", db)
    assert r.exit_code == 0, r.stderr
    token = r.stdout.strip()
    assert uuid.UUID(token).version == 4 and r.stdout == token + "\n"
    store = open_store(db)
    [agent] = store.agent_tokens()
    assert (agent.user_name, agent.name) == ("alice", "laptop")
    assert agent.expires_at is not None
    assert timedelta(days=29) < agent.expires_at - agent.created_at <= timedelta(days=30)
    assert store.agent_token_by_hash(sessions.hash_secret(token)) == agent
    assert token.encode() not in (tmp_path / "cli.db").read_bytes()


def test_agents_list_and_delete(tmp_path: Path) -> None:
    db = str(tmp_path / "cli.db")
    run("users", "create", "alice", "--db", db)
    run("users", "create", "bob", "--db", db)
    alice = run("agents", "create", "alice", "--name", "ws1", "--db", db).stdout.strip()
    bob = run("agents", "create", "bob", "--db", db).stdout.strip()
    listed = run("agents", "list", "--db", db).stdout
    assert listed.count("\n") == 2 and alice not in listed and bob not in listed
    assert "\talice\tws1\t" in listed and "\tbob\t-\t" in listed and "expires never" in listed
    only_bob = run("agents", "list", "bob", "--db", db).stdout
    assert only_bob.count("\n") == 1 and "\tbob\t" in only_bob
    [alice_agent] = open_store(db).agent_tokens(open_store(db).get_user("alice").id)  # type: ignore[union-attr]
    r = run("agents", "delete", alice_agent.id, "--db", db)
    assert r.exit_code == 0 and f"deleted agent token {alice_agent.id}" in r.stderr
    assert "\talice\t" not in run("agents", "list", "--db", db).stdout
    r = run("agents", "delete", alice_agent.id, "--db", db)
    assert r.exit_code == 1 and "no agent token with id" in r.stderr


@pytest.mark.parametrize("args, code, message", [
    (("agents", "create", "ghost"), 1, "no user named 'ghost'"),
    (("agents", "list", "ghost"), 1, "no user named 'ghost'"),
    (("agents", "create", "alice", "--lifetime", "soon"), 2, "--lifetime"),
])
def test_agents_commands_refuse(tmp_path: Path, args: tuple[str, ...], code: int,
                                message: str) -> None:
    db = str(tmp_path / "cli.db")
    run("users", "create", "alice", "--db", db)
    r = run(*args, "--db", db)
    assert r.exit_code == code and message in r.stderr


# -- what they open, and what not ------------------------------------------------------------


def test_an_agent_token_reads_its_users_link(api: Api, fake: FakeProvider) -> None:
    access = linked(api, fake)
    r = api.get(HANDOFF, params={"id": "fake", "match": ""},
                headers={"Coder-Session-Token": agent_token(api)})
    assert r.status_code == 200, r.text
    assert r.json()["access_token"] == access


@pytest.mark.parametrize("how", ["header", "cookie", "query", "bearer"])
def test_every_way_to_send_an_agent_token_works(api: Api, fake: FakeProvider, how: str) -> None:
    access = linked(api, fake)
    token = agent_token(api)
    kwargs: dict = {
        "header": {"headers": {"Coder-Session-Token": token}},
        "cookie": {"headers": {"Cookie": f"coder_session_token={token}"}},
        "query": {"params": {"coder_session_token": token, "id": "fake"}},
        "bearer": {"headers": {"Authorization": f"Bearer {token}"}},
    }[how]
    kwargs.setdefault("params", {"id": "fake"})
    r = api.get(HANDOFF, **kwargs)
    assert r.status_code == 200, r.text
    assert r.json()["access_token"] == access


def test_an_upper_case_agent_token_is_the_same_token(api: Api, fake: FakeProvider) -> None:
    access = linked(api, fake)
    r = api.get(HANDOFF, params={"id": "fake"},
                headers={"Coder-Session-Token": agent_token(api).upper()})
    assert r.status_code == 200 and r.json()["access_token"] == access


@pytest.mark.parametrize("method, path", [
    ("get", LIST), ("get", LIST + "/fake"), ("delete", LIST + "/fake"),
    ("get", LIST + "/fake/device"), ("post", LIST + "/fake/device"),
])
def test_an_agent_token_opens_nothing_else(api: Api, fake: FakeProvider, method: str,
                                           path: str) -> None:
    linked(api, fake)
    r = api.request(method, path, headers={"Coder-Session-Token": agent_token(api)},
                    json={"device_code": "x"} if method == "post" else None)
    assert r.status_code == 401, r.text
    assert r.json()["detail"] == (
        "Invalid API key format: incorrect amount of API key parts, expected 2 got 5")
    assert api.store.get_link(api.user_id("alice"), "fake") is not None  # DELETE did nothing
    assert fake.requests == []


def test_an_agent_token_does_not_sign_a_browser_in(api: Api, fake: FakeProvider) -> None:
    linked(api, fake)
    r = api.get("/external-auth/fake/callback", follow_redirects=False,
                headers={"Coder-Session-Token": agent_token(api)})
    assert (r.status_code, r.headers["location"]) == (
        303, "/login?redirect=/external-auth/fake/callback")
    assert fake.requests == []


V1 = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"


@pytest.mark.parametrize("token", [
    "abc", "not-a-uuid-at-all", V1, "{" + str(uuid.uuid4()) + "}", uuid.uuid4().hex,
    str(uuid.uuid4()) + "0", "urn:uuid:" + str(uuid.uuid4()),
    str(uuid.uuid4())[:-1] + "g",
])
def test_a_malformed_agent_token_is_invalid(api: Api, token: str) -> None:
    body = _401(api.get(HANDOFF, params={"id": "fake"}, headers={"Coder-Session-Token": token}))
    assert body == {"message": "Workspace agent token invalid.",
                    "detail": f"An agent token must be a valid UUIDv4. (len {len(token)})"}


def test_an_unknown_agent_token_is_not_authorized(api: Api) -> None:
    body = _401(api.get(HANDOFF, params={"id": "fake"},
                        headers={"Coder-Session-Token": str(uuid.uuid4())}))
    assert body == {"message": "Workspace agent not authorized.",
                    "detail": "The agent token is unknown or was deleted."}


def test_a_deleted_agent_token_is_not_authorized(api: Api) -> None:
    token = agent_token(api)
    [agent] = api.store.agent_tokens()
    assert api.store.delete_agent_token(agent.id)
    body = _401(api.get(HANDOFF, params={"id": "fake"}, headers={"Coder-Session-Token": token}))
    assert body["message"] == "Workspace agent not authorized."


def test_an_expired_agent_token_is_not_authorized(api: Api) -> None:
    token = agent_token(api, lifetime=timedelta(hours=1))
    sql(api, "UPDATE agent_tokens SET expires_at = '2020-01-01T00:00:00.000000Z'")
    body = _401(api.get(HANDOFF, params={"id": "fake"}, headers={"Coder-Session-Token": token}))
    assert body == {"message": "Workspace agent not authorized.",
                    "detail": 'The agent token expired at "2020-01-01 00:00:00.000000 +0000 UTC".'}


def test_a_deleted_users_agent_tokens_go_with_them(api: Api) -> None:
    token = agent_token(api, "carol")
    sql(api, "DELETE FROM users WHERE name = 'carol'")
    body = _401(api.get(HANDOFF, params={"id": "fake"}, headers={"Coder-Session-Token": token}))
    assert body["message"] == "Workspace agent not authorized."
    assert api.store.agent_tokens() == []


@pytest.mark.parametrize("token, detail", [
    ("0123456789-" + "x" * 22, "API key is invalid."),
    ("short-" + "s" * 22, "Invalid API key format: invalid API key ID length, expected 10 got 5"),
])
def test_a_session_shaped_token_gets_the_session_messages(api: Api, token: str,
                                                          detail: str) -> None:
    body = _401(api.get(HANDOFF, params={"id": "fake"}, headers={"Coder-Session-Token": token}))
    assert body["detail"] == detail


def test_no_token_is_401(api: Api) -> None:
    body = _401(api.get(HANDOFF, params={"id": "fake"}))
    assert body["detail"] == 'Cookie "coder_session_token" or query parameter must be provided.'


def test_one_users_agent_token_never_reads_another_users_link(api: Api,
                                                              fake: FakeProvider) -> None:
    alice_access = linked(api, fake, "alice")
    bob = agent_token(api, "bob")
    for params in ({"id": "fake"}, {"match": "https://anything", "id": ""}):
        r = api.get(HANDOFF, params=params, headers={"Coder-Session-Token": bob})
        if r.status_code == 200:
            assert r.json()["access_token"] == ""
        assert alice_access not in r.text
    bob_session = api.login("bob")
    r = api.get(HANDOFF, params={"id": "fake"}, headers=bob_session)
    assert r.status_code == 200 and r.json()["access_token"] == "" and alice_access not in r.text
    alice = agent_token(api, "alice")
    r = api.get(HANDOFF, params={"id": "fake"}, headers={"Coder-Session-Token": alice})
    assert r.json()["access_token"] == alice_access
