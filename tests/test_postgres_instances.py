"""Several extauth instances on one PostgreSQL database (real servers, real
processes): one refresh per link across instances against panva's
oidc-provider with rotation, an instance killed in the middle of a refresh,
and a deployment moved from SQLite with ``extauth db copy``."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from extauth.crypto import Cipher
from extauth.links import expires_at
from extauth.store import Store, open_store
from extauth.store._copy import TABLES
from tests.conftest import sql
from tests.fake_provider import Answer, FakeProvider
from tests.live import EXTAUTH, LiveServer, cli
from tests.oidc_provider import OidcProvider
from tests.postgres import PostgresServer
from tests.test_e2e_refresh import _link_by_device_flow

pytestmark = [pytest.mark.postgres, pytest.mark.live]
API = "/api/v2/external-auth"
N = 24
KEY = os.urandom(32)
KEYS = {"EXTAUTH_ENCRYPTION_KEYS": base64.b64encode(KEY).decode()}


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    """A PostgreSQL schema of the test's own (these tests are about PostgreSQL)."""
    return postgres_server.new_schema()


@pytest.fixture
def store(pg_url: str) -> Iterator[Store]:
    opened = open_store(pg_url, Cipher((KEY,)))
    yield opened
    opened.close()


def _burst(servers: list[LiveServer], token: str) -> list[bool]:
    def one(i: int) -> bool:
        server = servers[i % len(servers)]
        path = f"{API}/{'oidc' if i % 4 < 2 else ''}".rstrip("/")
        r = httpx.get(f"{server.url}{path}", headers={"Coder-Session-Token": token}, timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
        return bool(body["authenticated"] if "authenticated" in body
                    else body["links"][0]["authenticated"])

    with ThreadPoolExecutor(N) as pool:
        return list(pool.map(one, range(N)))


@pytest.mark.e2e
def test_two_instances_refresh_once_against_a_rotating_provider(
        tmp_path: Path, pg_url: str, store: Store) -> None:
    oidc = OidcProvider(tmp_path, rotate_refresh=True).start()
    servers = [LiveServer(tmp_path, [oidc.provider_config()], db=pg_url, env=KEYS)
               for _ in range(2)]
    try:
        for server in servers:
            server.start()
        token = servers[0].token("alice")
        _link_by_device_flow(servers[0], oidc, token)
        user = store.get_user("alice")
        assert user is not None
        before = store.get_link(user.id, "oidc")
        assert before is not None and before.refresh_token
        sql(store, "UPDATE external_auth_links SET expires_at = '2020-01-01T00:00:00.000000Z'")
        assert _burst(servers, token) == [True] * N
        refreshes = [e.outcome for e in store.audit_events(provider_id="oidc")
                     if e.action == "refresh"]
        assert refreshes == ["ok"]
        after = store.get_link(user.id, "oidc")
        assert after is not None and after.refresh_token != before.refresh_token
        # the grant survived: the new access token works at the provider itself
        assert oidc.userinfo(after.access_token).status_code == 200
        assert _burst(servers[1:], token) == [True] * N  # and the link works afterwards
    finally:
        for server in servers:
            server.stop()
        oidc.stop()


def test_an_instance_killed_in_a_refresh_leaves_the_link_to_the_other(
        tmp_path: Path, pg_url: str, store: Store, fake: FakeProvider) -> None:
    """The first instance dies with the refresh lease held and its call in flight
    (the provider has not answered, so the refresh token is still good): the
    other instance refreshes once the lease has expired, and only then."""
    env = {**KEYS, "EXTAUTH_PROVIDER_TIMEOUT": "2", "EXTAUTH_REFRESH_RETRY_SECONDS": "0.5"}
    first, second = (LiveServer(tmp_path, [fake.config()], db=pg_url, env=env)
                     for _ in range(2))
    try:
        first.start()
        second.start()
        token = first.token("alice")
        user = store.get_user("alice")
        assert user is not None
        _, refresh = fake.issue()
        store.upsert_link(user.id, "fake", "at-old", refresh, expires_at(-60))
        fake.script("token", Answer(json={}, delay=30))  # the first call hangs
        with ThreadPoolExecutor(1) as pool:
            pool.submit(httpx.get, f"{first.url}{API}/fake",
                        headers={"Coder-Session-Token": token}, timeout=60)
            deadline = time.monotonic() + 20
            while not fake.seen("token"):
                assert time.monotonic() < deadline, "the first instance never refreshed"
                time.sleep(0.02)
            assert first.proc is not None
            os.kill(first.proc.pid, signal.SIGKILL)
            first.proc.wait(timeout=10)
        killed_at = time.monotonic()
        r = httpx.get(f"{second.url}{API}/fake", headers={"Coder-Session-Token": token},
                      timeout=60)
        waited = time.monotonic() - killed_at
        assert r.status_code == 200 and r.json()["authenticated"] is True, r.text
        assert waited > 5, "the other instance did not wait for the lease"
        presented = [s.form["refresh_token"] for s in fake.seen("token")]
        assert presented == [refresh, refresh]  # the first call never reached its end
        assert refresh in fake.used_refresh and not (fake.revoked & set(fake.refresh))
        assert [e.outcome for e in store.audit_events() if e.action == "refresh"] == ["ok"]
    finally:
        first.stop()
        second.stop()


def test_db_copy_moves_a_sqlite_deployment_to_postgres(
        tmp_path: Path, pg_url: str, store: Store, fake: FakeProvider) -> None:
    old = tmp_path / "old.db"
    seeded = open_store(old, Cipher((KEY,)))
    seeded.migrate()
    tokens = {}
    for name in ("alice", "bob", "carol"):
        tokens[name] = cli("users", "create", name, db=old, env=KEYS).stdout.strip()
        user = seeded.get_user(name)
        assert user is not None
        seeded.upsert_link(user.id, "fake", *fake.issue(login=name), expires_at(3600))
    agent = cli("agents", "create", "alice", db=old, env=KEYS).stdout.strip()
    seeded.close()
    # A copy that stopped after its first batch of users: the next one goes on.
    partial = open_store(old)
    store.migrate()
    store.insert_rows(TABLES[0], next(partial.rows_after(TABLES[0], None, 1)))
    partial.close()
    copy = [*EXTAUTH, "db", "copy", "--from", str(old), "--to", pg_url, "--batch", "2"]
    r = subprocess.run(copy, capture_output=True, text=True, timeout=60,
                       env={**os.environ, **KEYS})
    assert r.returncode == 0, r.stderr
    assert "users: 2 copied, 3 of 3 there" in r.stderr
    assert "external_auth_links: 3 copied, 3 of 3 there" in r.stderr
    again = subprocess.run(copy, capture_output=True, text=True, timeout=60,
                           env={**os.environ, **KEYS})
    assert again.returncode == 0 and "external_auth_links: 0 copied" in again.stderr
    # the tokens of the file stay encrypted as they were, under the same key
    raw = sql(store, "SELECT access_token, token_key_id FROM external_auth_links")
    assert {r["token_key_id"] for r in raw} == {Cipher((KEY,)).primary_id}
    assert not [r for r in raw if r["access_token"].startswith("fake_at_")]
    server = LiveServer(tmp_path, [fake.config()], db=pg_url, env=KEYS).start()
    try:
        for name, token in tokens.items():
            body = httpx.get(f"{server.url}{API}/fake",
                             headers={"Coder-Session-Token": token}).json()
            assert (body["authenticated"], body["user"]["login"]) == (True, name)
        handed = httpx.get(f"{server.url}/api/v2/workspaceagents/me/external-auth",
                           params={"id": "fake"}, headers={"Coder-Session-Token": agent})
        assert handed.status_code == 200 and handed.json()["access_token"]
        # new rows get new ids: the copied ones did not take them
        assert cli("users", "create", "dave", db=pg_url, env=KEYS).returncode == 0
    finally:
        server.stop()
