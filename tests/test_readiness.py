"""``/readyz``: 200 only when the database answers, its schema is this server's
and the configured keys decrypt the stored tokens; 503 with the reason
otherwise. ``/healthz`` stays the cheap liveness check."""

from __future__ import annotations

import os

import pytest

from extauth.crypto import Cipher, key_id
from extauth.links import expires_at
from extauth.readiness import problem
from extauth.store import open_store
from tests.conftest import Api, sql
from tests.fake_provider import FakeProvider

K1, K2 = os.urandom(32), os.urandom(32)


def _not_ready(api: Api) -> str:
    r = api.get("/readyz")
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["message"] == "The service is not ready."
    assert set(body) == {"message", "detail"}
    detail: str = body["detail"]
    # liveness is not readiness: the process and its database still answer
    assert api.get("/healthz").json() == {"status": "ok"}
    return detail


def _seed(db: str, keys: tuple[bytes, ...], user: str, fake: FakeProvider) -> None:
    """A link for ``user`` written under ``keys`` (as by an earlier server)."""
    store = open_store(db, Cipher(keys))
    try:
        store.migrate()
        found = store.get_user(user) or store.create_user(user)
        store.upsert_link(found.id, "fake", *fake.issue(), expires_at(3600))
    finally:
        store.close()


def test_ready_on_an_empty_database(api: Api) -> None:
    r = api.get("/readyz")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"status": "ok"}


def test_ready_when_the_configured_key_decrypts_the_links(make_api, fake: FakeProvider,
                                                           database: str) -> None:
    _seed(database, (K1,), "alice", fake)
    api = make_api(fake.config(), encryption_keys=(K2, K1))
    assert api.get("/readyz").json() == {"status": "ok"}


def test_not_ready_when_the_links_key_is_not_configured(make_api, fake: FakeProvider,
                                                         database: str) -> None:
    _seed(database, (K1,), "alice", fake)
    api = make_api(fake.config(), encryption_keys=(K2,))
    assert _not_ready(api) == (f"links are encrypted with key {key_id(K1)}, which is not "
                               "configured (EXTAUTH_ENCRYPTION_KEYS)")


def test_not_ready_when_started_without_the_keys(make_api, fake: FakeProvider,
                                                  database: str) -> None:
    _seed(database, (K1,), "alice", fake)
    api = make_api(fake.config())
    assert f"key {key_id(K1)}, which is not configured" in _not_ready(api)


def test_a_link_left_under_a_dropped_key_does_not_make_it_unready(
        make_api, fake: FakeProvider, database: str) -> None:
    """After a rotation that could not rewrite every link: those links report
    themselves; the server still serves the others."""
    _seed(database, (K1,), "alice", fake)
    _seed(database, (K2,), "bob", fake)
    api = make_api(fake.config(), encryption_keys=(K2,))
    assert api.get("/readyz").status_code == 200


def test_not_ready_when_a_link_under_a_configured_key_does_not_decrypt(
        make_api, fake: FakeProvider) -> None:
    api = make_api(fake.config(), encryption_keys=(K1,))
    alice = api.store.create_user("alice")
    api.store.upsert_link(alice.id, "fake", *fake.issue(), expires_at(3600))
    # damaged on disk: the authentication tag no longer matches
    sql(api, "UPDATE external_auth_links SET access_token = access_token || 'AAAA'")
    detail = _not_ready(api)
    assert detail.startswith(f"a link under key {key_id(K1)} does not decrypt: ")
    assert "damaged or moved" in detail


@pytest.mark.parametrize("offset, why", [
    (1, "newer than this server's {latest}"),
    (-1, "this server needs {latest}"),
])
def test_not_ready_unless_the_schema_is_this_servers(api: Api, offset: int, why: str) -> None:
    latest = api.store.latest_version
    version = latest + offset
    why = why.format(latest=latest)
    sql(api, "DELETE FROM schema_migrations WHERE version > ?", (version,))
    sql(api, "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?) "
             "ON CONFLICT DO NOTHING", (version, "2026-01-01T00:00:00.000000Z"))
    detail = _not_ready(api)
    assert detail.startswith(f"the database schema is at version {version}")
    assert why in detail


@pytest.mark.sqlite
def test_readiness_costs_index_lookups_not_scans(make_api, fake: FakeProvider) -> None:
    """Every query of the check is answered from an index (or the tiny tables)."""
    api = make_api(fake.config(), encryption_keys=(K1,))
    plans: list[str] = []
    store = api.store
    store.db.conn.set_trace_callback(plans.append)
    try:
        assert problem(store) == ""
    finally:
        store.db.conn.set_trace_callback(None)
    on_links = [query for query in plans if "external_auth_links" in query]
    assert len(on_links) == 2  # one sample per configured key, one look for any other key
    for query in on_links:
        plan = " ".join(str(r) for r in store.db.execute(f"EXPLAIN QUERY PLAN {query}"))
        assert "USING COVERING INDEX" in plan or "USING INDEX" in plan, (query, plan)
